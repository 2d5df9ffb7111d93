"""Error responses as the OpenAPI docs show them."""

from __future__ import annotations

from typing import Any

from front.models import ErrorBody

_DESCRIPTIONS = {
    400: "Invalid input; the message names the field.",
    401: "Not logged in, or the session ended.",
    403: "The logged-in user may not do this.",
    404: "Not found.",
    409: "Already exists.",
    429: "Too many failed logins; the Retry-After header gives the seconds to wait.",
    502: "A backend failed in an unexpected way.",
    503: "No live backend instance, or etcd is unreachable.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Describe the given error statuses, plus 400, 502 and 503, for OpenAPI."""
    documented = sorted({400, 502, 503, *statuses})
    return {
        status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]}
        for status in documented
    }
