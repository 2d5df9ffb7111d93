"""The field rules of the contracts: each can be checked, and none changed
since the released baseline (protos/baseline.binpb).

buf breaking compares field numbers, names and types, but not protovalidate
annotations, so a removed or loosened `(buf.validate.field)` rule would pass
it. This test
compares the rules and `debug_redact` of every field that the baseline has.
A deliberate change ships with a new baseline: make contracts-baseline.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, text_format

from protos import validate_pb2
from registry.validation import rules_of_service
from tests.contracts.descriptors import REPO_ROOT, services

BASELINE = REPO_ROOT / "protos" / "baseline.binpb"


@pytest.mark.parametrize("service", services(), ids=lambda s: s.full_name)
def test_every_declared_rule_is_supported(service):
    compiled = rules_of_service(service)

    assert {method.input_type.full_name for method in service.methods} <= set(compiled)


def baseline_fields() -> Iterator[tuple[str, descriptor_pb2.FieldDescriptorProto]]:
    """Yield (full message name, field) for every field of the baseline."""
    image = descriptor_pb2.FileDescriptorSet.FromString(BASELINE.read_bytes())
    for file in image.file:
        if file.name.startswith(("google/", "buf/")):
            continue
        pending = [(f"{file.package}.{m.name}", m) for m in file.message_type]
        while pending:
            name, message = pending.pop()
            pending += [(f"{name}.{m.name}", m) for m in message.nested_type]
            for field in message.field:
                yield name, field


def shown_rules(options: descriptor_pb2.FieldOptions) -> str:
    rules = options.Extensions[validate_pb2.field]
    text = text_format.MessageToString(rules, as_one_line=True) or "no rule"
    return f"{text}; debug_redact={options.debug_redact}"


def test_declared_rules_match_baseline():
    pool = descriptor_pool.Default()
    changed = []
    for message_name, baseline_field in baseline_fields():
        try:
            message = pool.FindMessageTypeByName(message_name)
        except KeyError:
            continue  # a removed message is for buf breaking to report
        field = message.fields_by_number.get(baseline_field.number)
        if field is None:
            continue
        current = descriptor_pb2.FieldOptions()
        current.CopyFrom(field.GetOptions())
        before, now = shown_rules(baseline_field.options), shown_rules(current)
        if before != now:
            changed.append(f"{field.full_name}: baseline [{before}], now [{now}]")

    assert changed == [], (
        "declared field rules differ from protos/baseline.binpb; if the change "
        "is deliberate and released, run make contracts-baseline:\n"
        + "\n".join(changed)
    )
