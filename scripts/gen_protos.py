"""Generate Python code and type stubs from the contracts under protos/.

Usage: python scripts/gen_protos.py [OUTPUT_DIR]

The default output is protos/gen, the one place where generated code lives.
Nothing in it is edited by hand: change a .proto file and run `make protos`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
DEFAULT_OUTPUT = PROTO_ROOT / "gen"


def proto_files() -> list[Path]:
    """Return every contract file, skipping the generated tree."""
    return sorted(
        path
        for path in PROTO_ROOT.rglob("*.proto")
        if DEFAULT_OUTPUT not in path.parents
    )


def generate(output: Path) -> None:
    """Run protoc with the Python, gRPC and mypy plugins into output."""
    output.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(path.relative_to(PROTO_ROOT)) for path in proto_files()]
    # The mypy plugins are console scripts beside this interpreter, which need
    # not be on PATH when the script runs as .venv/bin/python.
    bin_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={output}",
        f"--grpc_python_out={output}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={output}",
        f"--mypy_grpc_out={output}",
        *files,
    ]
    status = protoc.main(args)
    if status != 0:
        msg = f"protoc failed with exit status {status}"
        raise SystemExit(msg)

    # protoc writes no package markers; add them so the tree imports as `mesh`.
    for directory in output.rglob("*"):
        if directory.is_dir():
            (directory / "__init__.py").touch()
            (directory / "py.typed").touch()


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    generate(output)
    print(f"generated {len(proto_files())} contracts into {output}")


if __name__ == "__main__":
    main()
