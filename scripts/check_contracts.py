"""Lint the contracts and compare them with the released baseline, using buf.

Usage: python scripts/check_contracts.py [--write-baseline]

Without options the script runs `buf lint` and `buf breaking` against
protos/baseline.binpb, the contract of the last release, with the rules that
buf.yaml selects, and exits non-zero when either fails. With --write-baseline it
replaces protos/baseline.binpb with the current contracts instead: run it
only when a release makes the current contracts the new baseline.

Both checks run offline: buf reads a descriptor set that gen_protos.py builds
with protoc, so buf needs no module from a registry.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from gen_protos import PROTO_ROOT, ROOT, build_image, proto_files

BASELINE = PROTO_ROOT / "baseline.binpb"
BUF_CONFIG = ROOT / "buf.yaml"


def buf_command() -> Path:
    """Return the buf binary that the buf-bin package installs in the venv."""
    buf = Path(sys.executable).parent / "buf"
    if not buf.exists():
        msg = f"buf is missing at {buf}; install the development dependencies"
        raise SystemExit(msg)
    return buf


def path_arguments() -> list[str]:
    """Return --path options that limit buf to the contracts, not their imports."""
    roots = sorted({path.relative_to(PROTO_ROOT).parts[0] for path in proto_files()})
    return [argument for root in roots for argument in ("--path", root)]


def run_buf(*arguments: str | Path) -> int:
    command = [str(buf_command()), *map(str, arguments)]
    print("+ buf " + " ".join(map(str, arguments)), flush=True)
    return subprocess.run(command, check=False).returncode


def check(image: Path) -> int:
    """Run buf lint and buf breaking on image; return the first failure status."""
    config = ("--config", BUF_CONFIG)
    lint = run_buf("lint", image, *config, *path_arguments())
    if not BASELINE.exists():
        print(f"no baseline at {BASELINE}; create it with make contracts-baseline")
        return lint or 1
    breaking = run_buf(
        "breaking", image, "--against", BASELINE, *config, *path_arguments()
    )
    return lint or breaking


def write_baseline(image: Path) -> int:
    # The baseline keeps no source info: buf breaking reports positions in the
    # current files, so comments and line numbers of the old ones are not needed.
    return run_buf(
        "build",
        image,
        "--config",
        BUF_CONFIG,
        *path_arguments(),
        "--exclude-source-info",
        "-o",
        BASELINE,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--write-baseline",
        action="store_true",
        help="replace protos/baseline.binpb with the current contracts",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        image = Path(scratch) / "contracts.binpb"
        build_image(image)
        if args.write_baseline:
            status = write_baseline(image)
            if status == 0:
                print(f"wrote the baseline {BASELINE.relative_to(ROOT)}")
            return status
        status = check(image)
    if status == 0:
        print("contracts: buf lint and buf breaking passed")
    return status


if __name__ == "__main__":
    sys.exit(main())
