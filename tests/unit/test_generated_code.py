"""The generated code in protos/gen matches what the .proto files produce."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def differing_files(left: Path, right: Path) -> list[str]:
    comparison = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found = [*comparison.left_only, *comparison.right_only, *comparison.diff_files]
    for name, sub in comparison.subdirs.items():
        found += [
            f"{name}/{item}"
            for item in differing_files(Path(sub.left), Path(sub.right))
        ]
    return found


def test_generated_code_is_up_to_date(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )

    stale = differing_files(ROOT / "protos" / "gen", tmp_path)

    assert stale == [], f"protos/gen is stale; run `make protos`: {stale}"
