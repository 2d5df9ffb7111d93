"""The JSON API takes JSON types as they are and rejects unknown fields."""

from __future__ import annotations

import pydantic
import pytest

from front.models import IncrementBody, LoginBody, SignUpBody


@pytest.mark.parametrize(
    "raw", ['{"delta":"1"}', '{"delta":true}', '{"delta":1e3}', '{"delta":1.5}']
)
def test_increment_delta_must_be_a_json_integer(raw):
    with pytest.raises(pydantic.ValidationError) as caught:
        IncrementBody.model_validate_json(raw)

    assert caught.value.errors()[0]["loc"] == ("delta",)


def test_unknown_field_is_rejected():
    with pytest.raises(pydantic.ValidationError) as caught:
        IncrementBody.model_validate_json('{"delta":1,"extra":2}')

    assert caught.value.errors()[0]["loc"] == ("extra",)


def test_valid_bodies_still_parse():
    assert (
        IncrementBody.model_validate_json('{"delta":-5,"request_id":"r-1"}').delta == -5
    )
    assert (
        SignUpBody.model_validate_json(
            '{"username":"ada","password":"12345678"}'
        ).username
        == "ada"
    )
    assert (
        LoginBody.model_validate_json('{"username":"ada","password":"x"}').password
        == "x"
    )
