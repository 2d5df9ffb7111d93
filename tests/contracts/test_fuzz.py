"""Requests that Hypothesis builds from each method's descriptor, sent to
real processes through the mesh. No reply may be UNIMPLEMENTED, UNKNOWN or
INTERNAL, no process may die, and every valid reply must survive the wire
and the JSON mapping."""

from __future__ import annotations

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings

from tests.contracts.descriptors import method_id, methods
from tests.contracts.live import FORBIDDEN_CODES
from tests.contracts.strategies import messages

pytestmark = pytest.mark.integration

# Examples per method. Each one is a real call, and valid CreateUser and
# Login requests hash passwords with argon2, so the count stays modest.
EXAMPLES = 20


def assert_round_trips(reply) -> None:
    cls = type(reply)
    wire = cls.FromString(reply.SerializeToString())
    from_json = json_format.Parse(json_format.MessageToJson(reply), cls())

    assert wire == reply
    assert from_json == reply


@pytest.mark.parametrize("method", methods(), ids=method_id)
def test_generated_requests_get_contract_replies(live, method):
    @given(request=messages(method.input_type))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    def send(request):
        outcome = live.call(method, request)

        assert outcome.code not in FORBIDDEN_CODES, outcome.describe()
        for reply in outcome.replies:
            assert_round_trips(reply)

    send()

    assert live.dead_processes() == []
