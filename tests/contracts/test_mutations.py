"""The contract checks fail when a contract is broken, and cover a new method.

Each test copies the parts of the repository that the checks need into a
temporary folder and changes one thing there. Then it runs a check in the
copy with this virtualenv's interpreter and tools. The check is either
scripts/check_contracts.py, which runs buf lint and buf breaking as
`make contracts` does, or pytest on the copy's tests. PYTHONPATH puts the
copy ahead of the editable install of this repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.contracts.descriptors import REPO_ROOT

pytestmark = pytest.mark.integration

COPIED = [
    "protos",
    "scripts",
    "counter_svc",
    "user_svc",
    "registry",
    "Makefile",
    "pyproject.toml",
    "buf.yaml",
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/integration/__init__.py",
    "tests/integration/service_process.py",
    "tests/unit/__init__.py",
    "tests/unit/test_model.py",
    "tests/contracts",
]
COUNTER_PROTO = "protos/mesh/counter/v1/counter.proto"
COUNTER_SERVICER = "counter_svc/servicer.py"
NEW_METHOD = "mesh.counter.v1.CounterService/CountCounters"


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the repository's contracts, services, library and tests."""
    root = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for relative in COPIED:
        source, target = REPO_ROOT / relative, root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        else:
            shutil.copy2(source, target)
    return root


def run(copy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("MESH_")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(copy), str(copy / "protos" / "gen")])
    return subprocess.run(
        [sys.executable, *args],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


def pytest_in(copy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(copy, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args)


def edit(copy: Path, relative: str, old: str, new: str) -> None:
    """Replace old with new once; fail if old is missing, so that a change to
    the original file cannot turn a mutation into a no-op."""
    path = copy / relative
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{relative} no longer contains {old!r}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def regenerate(copy: Path) -> None:
    result = run(copy, "scripts/gen_protos.py")
    assert result.returncode == 0, result.stderr


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def test_unchanged_copy_passes_buf_checks(copy):
    result = run(copy, "scripts/check_contracts.py")

    assert result.returncode == 0, output(result)


@pytest.mark.parametrize(
    ("old", "new", "reported"),
    [
        (
            (
                "  // Current value. Increments that would leave the int64 range are "
                "rejected.\n  int64 value = 2;\n"
            ),
            "",
            'field "2" with name "value" on message "Counter" was deleted',
        ),
        ("  int64 delta = 2 [", "  int64 delta = 4 [", 'name "delta"'),
    ],
    ids=["field-removed", "field-renumbered"],
)
def test_breaking_proto_change_fails_buf_breaking(copy, old, new, reported):
    edit(copy, COUNTER_PROTO, old, new)

    result = run(copy, "scripts/check_contracts.py")

    assert result.returncode != 0
    assert reported in output(result)


def test_removed_method_fails_servicer_check(copy):
    path = copy / COUNTER_SERVICER
    text = path.read_text(encoding="utf-8")
    method = re.compile(
        r"\n    async def GetCounter\(.*?(?=\n    async def |\n\n\ndef )", re.DOTALL
    )
    assert method.search(text), "GetCounter is not in the servicer any more"
    path.write_text(method.sub("", text), encoding="utf-8")

    result = pytest_in(copy, "tests/contracts/test_servicers.py")

    assert result.returncode != 0
    assert "does not implement GetCounter" in output(result)


def test_removed_rule_enforcement_fails_boundary_check(copy):
    edit(
        copy,
        COUNTER_SERVICER,
        "            validation.check_request(request)\n"
        "            counter = await self.store.get(request.name)",
        "            counter = await self.store.get(request.name)",
    )

    result = pytest_in(
        copy, "tests/contracts/test_conformance.py", "-k", "boundary and GetCounter"
    )

    assert result.returncode != 0
    assert "FAILED" in output(result)
    assert "GetCounter:name:length=65" in output(result)


def test_removed_rule_declaration_fails_baseline_check(copy):
    edit(
        copy,
        COUNTER_PROTO,
        "  int64 delta = 2 [(buf.validate.field).int64 = {\n"
        "    gte: -1000000\n"
        "    lte: 1000000\n"
        "    not_in: [0]\n"
        "  }];",
        "  int64 delta = 2;",
    )
    regenerate(copy)

    result = pytest_in(copy, "tests/contracts/test_declared_rules.py")

    assert result.returncode != 0
    assert "mesh.counter.v1.IncrementRequest.delta: baseline" in output(result)


def test_metadata_object_fails_model_check(copy):
    edit(
        copy,
        "registry/model.py",
        '"Metadata": info.to_json()',
        '"Metadata": json.loads(info.to_json())',
    )

    result = pytest_in(copy, "tests/unit/test_model.py")

    assert result.returncode != 0
    assert "test_metadata_is_written_as_json_string" in output(result)


def add_count_counters(copy: Path) -> None:
    """Add CountCounters to the counter contract and implement it."""
    edit(
        copy,
        COUNTER_PROTO,
        "service CounterService {\n",
        "service CounterService {\n"
        "  // CountCounters returns how many counters start with prefix.\n"
        "  rpc CountCounters(CountCountersRequest) returns (CountCountersResponse) {\n"
        "    option idempotency_level = NO_SIDE_EFFECTS;\n"
        "  }\n\n",
    )
    path = copy / COUNTER_PROTO
    path.write_text(
        path.read_text(encoding="utf-8") + "\nmessage CountCountersRequest {\n"
        "  string prefix = 1 [(buf.validate.field).string.max_len = 64];\n"
        "}\n\n"
        "message CountCountersResponse {\n"
        "  int64 count = 1;\n"
        "}\n",
        encoding="utf-8",
    )
    edit(
        copy,
        COUNTER_SERVICER,
        "\n\n\ndef _to_message(",
        "\n\n"
        "    async def CountCounters(self, request, context):\n"
        '        async with grpc_errors(context, "CountCounters"):\n'
        "            validation.check_request(request)\n"
        "            return counter_pb2.CountCountersResponse(count=0)\n"
        "\n\ndef _to_message(",
    )
    regenerate(copy)


def test_added_method_joins_conformance_and_fuzz(copy):
    add_count_counters(copy)

    buf = run(copy, "scripts/check_contracts.py")
    collected = pytest_in(copy, "--collect-only", "tests/contracts")
    ran = pytest_in(copy, "tests/contracts", "-k", "CountCounters")

    assert buf.returncode == 0, output(buf)
    for test in [
        "test_conformance.py::test_grpcurl_describes_method",
        "test_conformance.py::test_default_request_is_answered",
        "test_conformance.py::test_boundary_case",
        "test_fuzz.py::test_generated_requests_get_contract_replies",
        "test_servicers.py::test_servicer_implements_method",
    ]:
        assert f"{test}[{NEW_METHOD}" in collected.stdout, collected.stdout
    assert ran.returncode == 0, output(ran)
    assert re.search(r"\b(\d+) passed", ran.stdout)
