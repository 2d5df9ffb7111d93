"""Render the fault-test figures as the Markdown table of docs/resilience.md.

    python scripts/resilience_table.py [PATH]

PATH defaults to $MESH_RESILIENCE_JSON, then .mesh/resilience.json. The fault
tests (pytest -m faults) write that file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(".mesh") / "resilience.json"
HEADER = (
    (
        "| # | scenario | calls made | calls failed | writes lost / doubled "
        "| time to recover | recovery measured as |"
    ),
    "|---|---|---|---|---|---|---|",
)


def cell(value: object, unit: str = "") -> str:
    """Format one value. None (not measured in this scenario) becomes a dash."""
    if value is None:
        return "-"
    return f"{value}{unit}"


def row(result: dict[str, Any]) -> str:
    lost, doubled = result["lost"], result["doubled"]
    writes = "-" if lost is None else f"{lost} / {doubled}"
    cells = [
        str(result["scenario"]),
        result["title"],
        cell(result["calls"]),
        cell(result["failed"]),
        writes,
        cell(result["recovery_seconds"], " s"),
        result["recovery"] or "-",
    ]
    return "| " + " | ".join(cells) + " |"


def details(result: dict[str, Any]) -> str:
    text = ", ".join(f"{key}={value}" for key, value in result["details"].items())
    return f"- {result['scenario']}: {text}"


def render(document: dict[str, Any]) -> str:
    scenarios = list(document["scenarios"].values())
    machine = document["machine"]
    recorded = (
        f"Recorded {document['recorded_at']} on {machine['cpus']} CPUs "
        f"({machine['cpu_model'] or 'unknown model'}), {machine['platform']}, "
        f"Python {machine['python']}."
    )
    lines = [
        *HEADER,
        *(row(result) for result in scenarios),
        "",
        recorded,
        "",
        "Details per scenario:",
        "",
        *(details(result) for result in scenarios),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "path",
        nargs="?",
        type=Path,
        default=Path(os.environ.get("MESH_RESILIENCE_JSON", DEFAULT_PATH)),
        help="JSON file written by the fault tests (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        document = json.loads(args.path.read_text())
    except FileNotFoundError:
        print(
            f"resilience_table: {args.path} not found; run "
            "`.venv/bin/python -m pytest -m faults` first",
            file=sys.stderr,
        )
        return 2
    except json.JSONDecodeError as exc:
        print(
            f"resilience_table: {args.path} is not valid JSON: {exc}", file=sys.stderr
        )
        return 2
    print(render(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
