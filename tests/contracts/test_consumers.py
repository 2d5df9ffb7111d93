"""The front is a consumer of the contracts: it reaches services only through
generated stubs, imported from the protos facade, on channels that
registry.mesh.Mesh hands out. mypy --strict (make check) then checks every
stub call against the generated type stubs of the contracts."""

from __future__ import annotations

import ast

import pytest

from tests.contracts.descriptors import REPO_ROOT

FRONT = REPO_ROOT / "front"
# Functions and classes that open a channel of their own, around the mesh.
CHANNEL_FACTORIES = {
    "insecure_channel",
    "secure_channel",
    "intercept_channel",
    "MeshChannel",
}
GENERATED_PACKAGES = ("mesh", "buf")


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _import_problems(node: ast.Import | ast.ImportFrom) -> list[str]:
    modules = (
        [alias.name for alias in node.names]
        if isinstance(node, ast.Import)
        else [node.module or ""]
    )
    problems = [
        f"imports {module} directly; import generated code from protos"
        for module in modules
        if module.split(".")[0] in GENERATED_PACKAGES
    ]
    if isinstance(node, ast.ImportFrom):
        problems += [
            f"imports {alias.name} from {node.module}; use Mesh.channel()"
            for alias in node.names
            if alias.name in CHANNEL_FACTORIES and node.module != "registry.channel"
        ]
    return problems


def _call_problems(node: ast.Call) -> list[str]:
    name = _dotted(node.func)
    last = name.rsplit(".", 1)[-1]
    if last in CHANNEL_FACTORIES:
        return [f"calls {name}(); get channels from Mesh.channel()"]
    if last.endswith("Stub") and not name.startswith("protos."):
        return [f"calls {name}(); use the generated stubs from protos"]
    return []


def consumer_problems(source: str) -> list[str]:
    """Return what a module does around the mesh and the generated stubs."""
    problems: list[str] = []
    for node in ast.walk(ast.parse(source)):
        location = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            problems += [f"{location}: {p}" for p in _import_problems(node)]
        elif isinstance(node, ast.Call):
            problems += [f"{location}: {p}" for p in _call_problems(node)]
    return problems


@pytest.mark.parametrize(
    "source",
    [
        "import grpc\nchannel = grpc.aio.insecure_channel('127.0.0.1:1')",
        "from grpc.aio import insecure_channel",
        "from mesh.counter.v1 import counter_pb2",
        "from registry.channel import MeshChannel\nMeshChannel(resolver)",
        "stub = CounterServiceStub(channel)",
    ],
)
def test_checker_finds_bypasses(source):
    assert consumer_problems(source) != []


def test_checker_accepts_mesh_stubs():
    source = (
        "import protos\n"
        "from registry.channel import MeshChannel\n"
        "stub = protos.counter_pb2_grpc.CounterServiceStub(mesh.channel('s'))\n"
    )

    assert consumer_problems(source) == []


def test_front_uses_only_mesh_channels_and_generated_stubs():
    modules = sorted(FRONT.glob("**/*.py"))
    problems = [
        f"{path.relative_to(REPO_ROOT)} {problem}"
        for path in modules
        for problem in consumer_problems(path.read_text(encoding="utf-8"))
    ]

    assert modules, f"no front modules under {FRONT}"
    assert problems == []
