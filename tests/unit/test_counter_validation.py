"""Request checks of counter_svc against the limits in counter.proto."""

from __future__ import annotations

import grpc
import pytest

from counter_svc import validation
from counter_svc.errors import (
    ContentionError,
    CounterOverflowError,
    InvalidArgumentError,
    RequestIdReusedError,
    status_code_for,
)


@pytest.mark.parametrize("name", ["a", "n" * 64, "Az09_-.", "..", "page-01"])
def test_valid_names_pass(name):
    assert validation.validate_name(name) == name


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("", "got an empty string"),
        ("n" * 65, "got 65 characters"),
        ("a/b", "got '/' at index 1"),
        ("a b", "got ' ' at index 1"),
        ("abc\n", "got '\\n' at index 3"),
        ("café", "got 'é' at index 3"),
    ],
)
def test_invalid_names_name_field_and_value(name, shown):
    with pytest.raises(InvalidArgumentError) as caught:
        validation.validate_name(name)

    assert caught.value.field == "name"
    assert str(caught.value) == f"name: must be {validation.NAME_RULE}; {shown}"


@pytest.mark.parametrize("delta", [1, -1, 1_000_000, -1_000_000])
def test_valid_deltas_pass(delta):
    assert validation.validate_delta(delta) == delta


@pytest.mark.parametrize("delta", [0, 1_000_001, -1_000_001, 2**63 - 1, -(2**63)])
def test_invalid_deltas_are_rejected(delta):
    with pytest.raises(InvalidArgumentError) as caught:
        validation.validate_delta(delta)

    assert caught.value.field == "delta"
    assert str(delta) in str(caught.value)


@pytest.mark.parametrize("request_id", ["", "r", "r" * 64, "A-z_09"])
def test_valid_request_ids_pass(request_id):
    assert validation.validate_request_id(request_id) == request_id


@pytest.mark.parametrize("request_id", ["r" * 65, "has.dot", "sp ace", "ünï"])
def test_invalid_request_ids_are_rejected(request_id):
    with pytest.raises(InvalidArgumentError) as caught:
        validation.validate_request_id(request_id)

    assert caught.value.field == "request_id"


@pytest.mark.parametrize(("page_size", "effective"), [(0, 100), (1, 1), (1000, 1000)])
def test_page_size_defaults_and_passes(page_size, effective):
    assert validation.validate_page_size(page_size) == effective


@pytest.mark.parametrize("page_size", [-1, 1001, -(2**31)])
def test_invalid_page_sizes_are_rejected(page_size):
    with pytest.raises(InvalidArgumentError) as caught:
        validation.validate_page_size(page_size)

    assert caught.value.field == "page_size"


@pytest.mark.parametrize("name", ["a", "ab", "abc", "n" * 64, "Z.-_9"])
def test_page_token_round_trips(name):
    token = validation.encode_page_token(name)

    assert validation.decode_page_token(token) == name
    assert "=" not in token


def test_empty_page_token_starts_at_first_page():
    assert validation.decode_page_token("") is None


@pytest.mark.parametrize(
    "token",
    [
        "!!",  # not base64
        "YQ==",  # padding, which encode_page_token never writes
        "YR",  # decodes to "a" but is not how "a" is encoded
        "L2E",  # decodes to "/a", an invalid name
        "_w",  # decodes to bytes that are not UTF-8
        "x",  # one character cannot be base64
        "x" * 200,  # longer than any encoded name
    ],
)
def test_invalid_page_tokens_are_rejected(token):
    with pytest.raises(InvalidArgumentError) as caught:
        validation.decode_page_token(token)

    assert caught.value.field == "page_token"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArgumentError("name", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (RequestIdReusedError("request_id", "used"), grpc.StatusCode.INVALID_ARGUMENT),
        (CounterOverflowError("delta", "too big"), grpc.StatusCode.OUT_OF_RANGE),
        (ContentionError("name", "busy"), grpc.StatusCode.ABORTED),
    ],
)
def test_errors_map_to_status_codes(error, code):
    assert status_code_for(error) == code
