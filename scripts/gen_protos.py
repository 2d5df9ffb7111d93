"""Generate Python code and type stubs from the contracts under protos/.

Usage: python scripts/gen_protos.py [OUTPUT_DIR] [--image FILE]

The default output is protos/gen, the one place where generated code lives.
Nothing in it is edited by hand: change a .proto file and run `make protos`.
With --image, the script writes a descriptor set of the contracts instead
(imports and source info included), which buf reads for lint and breaking
checks.

The contracts declare field limits with protovalidate annotations, so they
import buf/validate/validate.proto. No .proto source of that file is needed:
the protovalidate package ships its compiled FileDescriptorProto, which this
script hands to protoc with --descriptor_set_in. The Python module of that
file is generated into protos/gen/buf/validate beside the contracts.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
import tempfile
from pathlib import Path

import grpc_tools
from google.protobuf import (
    descriptor_pb2,
    duration_pb2,
    field_mask_pb2,
    timestamp_pb2,
)
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
DEFAULT_OUTPUT = PROTO_ROOT / "gen"
VALIDATE_PROTO = "buf/validate/validate.proto"
# The protovalidate module that embeds validate.proto as serialized bytes. It
# is a private module of the package, so pyproject.toml pins the version.
VALIDATE_MODULE = "protovalidate._gen.buf.validate.validate_pb"


def proto_files() -> list[Path]:
    """Return every contract file, skipping the generated tree."""
    return sorted(
        path
        for path in PROTO_ROOT.rglob("*.proto")
        if DEFAULT_OUTPUT not in path.parents
    )


def validate_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """Read the FileDescriptorProto of validate.proto from protovalidate.

    The module passes the serialized file to `file_desc(...)`; reading that
    literal from the source avoids importing protovalidate's own runtime.
    """
    spec = importlib.util.find_spec(VALIDATE_MODULE)
    if spec is None or spec.origin is None:
        msg = (
            f"{VALIDATE_MODULE} is not installed; install the development "
            "dependencies with: pip install -e '.[dev]'"
        )
        raise SystemExit(msg)
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "file_desc"
        ):
            serialized = ast.literal_eval(node.args[0])
            return descriptor_pb2.FileDescriptorProto.FromString(serialized)
    msg = f"no file_desc(...) call in {spec.origin}; check the protovalidate version"
    raise SystemExit(msg)


def validate_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """Return validate.proto and the well-known files that it imports."""
    descriptor_set = descriptor_pb2.FileDescriptorSet()
    for module in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
        module.DESCRIPTOR.CopyToProto(descriptor_set.file.add())
    descriptor_set.file.append(validate_descriptor())
    return descriptor_set


def run_protoc(outputs: list[str], files: list[str]) -> None:
    """Run protoc on files, with validate.proto available as a descriptor set."""
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        dependencies = Path(scratch) / "validate.binpb"
        dependencies.write_bytes(validate_descriptor_set().SerializeToString())
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"-I{well_known}",
                f"--descriptor_set_in={dependencies}",
                *outputs,
                *files,
            ]
        )
    if status != 0:
        msg = f"protoc failed with exit status {status}"
        raise SystemExit(msg)


def contract_names() -> list[str]:
    return [str(path.relative_to(PROTO_ROOT)) for path in proto_files()]


def generate(output: Path) -> None:
    """Run protoc with the Python, gRPC and mypy plugins into output."""
    output.mkdir(parents=True, exist_ok=True)
    # The mypy plugins are console scripts beside this interpreter, which need
    # not be on PATH when the script runs as .venv/bin/python.
    bin_dir = Path(sys.executable).parent
    outputs = [
        f"--python_out={output}",
        f"--grpc_python_out={output}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={output}",
        f"--mypy_grpc_out={output}",
    ]
    run_protoc(outputs, [*contract_names(), VALIDATE_PROTO])

    # protoc writes no package markers; add them so the tree imports as `mesh`
    # and `buf`.
    for directory in output.rglob("*"):
        if directory.is_dir():
            (directory / "__init__.py").touch()
            (directory / "py.typed").touch()


def build_image(image: Path) -> None:
    """Write the contracts as a descriptor set that buf accepts as an image."""
    image.parent.mkdir(parents=True, exist_ok=True)
    outputs = [
        f"--descriptor_set_out={image}",
        "--include_imports",
        "--include_source_info",
    ]
    run_protoc(outputs, contract_names())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", nargs="?", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--image", type=Path, help="write a descriptor set here instead of code"
    )
    args = parser.parse_args()
    if args.image is not None:
        build_image(args.image)
        print(f"wrote {len(proto_files())} contracts to {args.image}")
        return
    generate(args.output)
    print(f"generated {len(proto_files())} contracts into {args.output}")


if __name__ == "__main__":
    main()
