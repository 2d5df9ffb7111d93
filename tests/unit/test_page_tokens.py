"""Page tokens shared by the services' List methods."""

from __future__ import annotations

import pytest

from registry.page_tokens import PageTokenError, decode_page_token, encode_page_token


def valid(key: str) -> bool:
    return key.isalnum()


def test_token_round_trips():
    token = encode_page_token("abc")

    assert decode_page_token(token, max_length=44, is_valid_key=valid) == "abc"


def test_empty_token_starts_first_page():
    assert decode_page_token("", max_length=44, is_valid_key=valid) is None


@pytest.mark.parametrize("token", ["YWJj==", "YW+j", "!!", "YQ" * 30, "Yi8"])
def test_tokens_not_written_by_encoder_are_rejected(token):
    with pytest.raises(PageTokenError):
        decode_page_token(token, max_length=44, is_valid_key=valid)
