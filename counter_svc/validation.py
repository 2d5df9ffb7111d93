"""Checks of requests against the limits that counter.proto declares.

The limits live in the contract, as protovalidate annotations, and
registry.validation checks them. Each check raises InvalidArgumentError with a
message that names the field, states the limit and shows what the request
contained. Page tokens need the service's own encoding, so they are checked
here in code.
"""

from __future__ import annotations

from google.protobuf.message import Message

from counter_svc.errors import InvalidArgumentError
from protos import counter_pb2
from registry import page_tokens, validation

# Compiled at import, which is at startup: a declared rule that
# registry.validation cannot check stops the server before it serves.
REQUEST_RULES = validation.rules_of_service(
    counter_pb2.DESCRIPTOR.services_by_name["CounterService"]
)
_COUNTER = validation.MessageRules.of(counter_pb2.Counter.DESCRIPTOR)
_INCREMENT = validation.MessageRules.of(counter_pb2.IncrementRequest.DESCRIPTOR)
_LIST = validation.MessageRules.of(counter_pb2.ListCountersRequest.DESCRIPTOR)

NAME_RULE = _COUNTER.summary("name")
DEFAULT_PAGE_SIZE = 100

# An encoded name of at most 64 bytes is at most 86 base64 characters.
_PAGE_TOKEN_MAX_LENGTH = 88


def check_request(request: Message) -> None:
    """Raise InvalidArgumentError for the first field that breaks its rule."""
    violation = validation.first_violation(request)
    if violation is not None:
        raise InvalidArgumentError(violation.field, violation.description)


def _check_field(rules: validation.MessageRules, field: str, value: object) -> None:
    violation = rules.check_field(field, value)
    if violation is not None:
        raise InvalidArgumentError(violation.field, violation.description)


def validate_name(name: str) -> str:
    """Return name when it is a valid counter name."""
    _check_field(_COUNTER, "name", name)
    return name


def validate_request_id(request_id: str) -> str:
    """Return request_id when it is empty or a valid idempotency key."""
    _check_field(_INCREMENT, "request_id", request_id)
    return request_id


def validate_delta(delta: int) -> int:
    """Return delta when it is within the declared range."""
    _check_field(_INCREMENT, "delta", delta)
    return delta


def validate_page_size(page_size: int) -> int:
    """Return the effective page size: the default for 0, else page_size."""
    _check_field(_LIST, "page_size", page_size)
    return page_size_or_default(page_size)


def page_size_or_default(page_size: int) -> int:
    """Return the page size to use for a valid page_size; 0 means the default."""
    return page_size or DEFAULT_PAGE_SIZE


def encode_page_token(last_name: str) -> str:
    """Return the opaque token that continues a listing after last_name."""
    return page_tokens.encode_page_token(last_name)


def decode_page_token(token: str) -> str | None:
    """Return the last name listed before this page, or None for the first."""
    try:
        return page_tokens.decode_page_token(
            token, max_length=_PAGE_TOKEN_MAX_LENGTH, is_valid_key=_is_valid_name
        )
    except page_tokens.PageTokenError:
        raise InvalidArgumentError(
            "page_token",
            "is not a valid page token; pass next_page_token from the previous "
            "ListCounters response unchanged, or an empty token for the first page",
        ) from None


def _is_valid_name(name: str) -> bool:
    try:
        validate_name(name)
    except InvalidArgumentError:
        return False
    return True
