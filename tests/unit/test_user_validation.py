"""Request checks of user_svc against the limits in user.proto."""

from __future__ import annotations

import grpc
import pytest

from user_svc import validation
from user_svc.errors import (
    AlreadyExistsError,
    AuthenticationError,
    InvalidArgumentError,
    NotFoundError,
    status_code_for,
)
from user_svc.sessions import token_hash


@pytest.mark.parametrize("username", ["abc", "a" * 32, "a0_.-", "zed.smith", "x-1"])
def test_valid_usernames_pass(username):
    assert validation.validate_username(username) == username


@pytest.mark.parametrize(
    ("username", "shown"),
    [
        ("", "got an empty string"),
        ("ab", "got 2 characters"),
        ("a" * 33, "got 33 characters"),
        ("1abc", "got '1' at index 0"),
        ("_abc", "got '_' at index 0"),
        ("Alice", "got 'A' at index 0"),
        ("alIce", "got 'I' at index 2"),
        ("ab c", "got ' ' at index 2"),
        ("abc\n", "got '\\n' at index 3"),
    ],
)
def test_invalid_usernames_name_field_and_value(username, shown):
    with pytest.raises(InvalidArgumentError) as caught:
        validation.validate_username(username)

    assert caught.value.field == "username"
    assert str(caught.value) == f"username: must be {validation.USERNAME_RULE}; {shown}"


@pytest.mark.parametrize("password", ["p" * 8, "p" * 128, "pässwörd", "with space"])
def test_valid_passwords_pass(password):
    assert validation.validate_password(password) == password


@pytest.mark.parametrize(
    ("password", "shown"),
    [
        ("", "got an empty string"),
        ("seven77", "got 7 characters"),
        ("p" * 129, "got 129 characters"),
    ],
)
def test_invalid_password_message_shows_length_only(password, shown):
    with pytest.raises(InvalidArgumentError) as caught:
        validation.validate_password(password)

    assert caught.value.field == "password"
    assert str(caught.value).endswith(shown)
    if password:
        assert password not in str(caught.value)


@pytest.mark.parametrize("display_name", ["", "Zoë Ångström", "d" * 64, "tab-free"])
def test_valid_display_names_pass(display_name):
    assert validation.validate_display_name(display_name) == display_name


@pytest.mark.parametrize("display_name", ["d" * 65, "a\nb", "a\tb", "nul\x00", "\x7f"])
def test_invalid_display_names_are_rejected(display_name):
    with pytest.raises(InvalidArgumentError) as caught:
        validation.validate_display_name(display_name)

    assert caught.value.field == "display_name"


@pytest.mark.parametrize("token", ["t", "t" * 43, "t" * 128])
def test_valid_session_tokens_pass(token):
    assert validation.validate_session_token(token) == token


@pytest.mark.parametrize(
    ("token", "shown"), [("", "got an empty string"), ("t" * 129, "got 129 characters")]
)
def test_invalid_session_token_message_shows_length_only(token, shown):
    with pytest.raises(InvalidArgumentError) as caught:
        validation.validate_session_token(token)

    assert caught.value.field == "session_token"
    assert str(caught.value).endswith(shown)


@pytest.mark.parametrize(("page_size", "effective"), [(0, 100), (7, 7), (1000, 1000)])
def test_page_size_defaults_and_passes(page_size, effective):
    assert validation.validate_page_size(page_size) == effective


@pytest.mark.parametrize("page_size", [-1, 1001])
def test_invalid_page_sizes_are_rejected(page_size):
    with pytest.raises(InvalidArgumentError) as caught:
        validation.validate_page_size(page_size)

    assert caught.value.field == "page_size"


@pytest.mark.parametrize("username", ["abc", "a" * 32, "z.y-x_0"])
def test_page_token_round_trips(username):
    token = validation.encode_page_token(username)

    assert validation.decode_page_token(token) == username


@pytest.mark.parametrize(
    "token",
    [
        "%%%",  # not base64
        "QUJD",  # decodes to "ABC", an invalid username
        "YWJj==",  # padding, which encode_page_token never writes
        "YWJk" + "x" * 60,  # longer than any encoded username
    ],
)
def test_invalid_page_tokens_are_rejected(token):
    with pytest.raises(InvalidArgumentError) as caught:
        validation.decode_page_token(token)

    assert caught.value.field == "page_token"


def test_token_hash_is_sha256_hex():
    assert token_hash("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArgumentError("username", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (AlreadyExistsError("username", "taken"), grpc.StatusCode.ALREADY_EXISTS),
        (NotFoundError("username", "missing"), grpc.StatusCode.NOT_FOUND),
        (AuthenticationError(None, "no"), grpc.StatusCode.UNAUTHENTICATED),
    ],
)
def test_errors_map_to_status_codes(error, code):
    assert status_code_for(error) == code
