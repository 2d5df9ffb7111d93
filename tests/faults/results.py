"""Measured figures of the fault scenarios, written to one JSON file.

The file is $MESH_RESILIENCE_JSON, or .mesh/resilience.json under the
repository root. A run replaces the rows of the scenarios it ran and keeps
the others, so one scenario can be run again on its own.
scripts/resilience_table.py renders the file as the table in
docs/resilience.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_ENV = "MESH_RESILIENCE_JSON"


@dataclass
class ScenarioResult:
    """One scenario's counts, and a recovery time that is reported, not asserted.

    `lost` and `doubled` are None where the backends keep no shared count
    that survives the fault (in-memory replicas that were killed). `calls`
    and `failed` are None where the scenario sends no client calls.
    """

    scenario: int
    title: str
    calls: int | None
    failed: int | None
    lost: int | None = None
    doubled: int | None = None
    recovery_seconds: float | None = None
    recovery: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def results_path() -> Path:
    configured = os.environ.get(RESULTS_ENV)
    if configured:
        return Path(configured)
    return REPO_ROOT / ".mesh" / "resilience.json"


def machine() -> dict[str, Any]:
    """Describe the host, so that the figures can be read against it."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


class ResultsFile:
    """Collects scenario rows during a session and merges them into the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._rows: dict[str, dict[str, Any]] = {}

    def record(self, result: ScenarioResult) -> None:
        self._rows[str(result.scenario)] = asdict(result)

    def write(self) -> None:
        if not self._rows:
            return
        existing: dict[str, Any] = {}
        if self.path.exists():
            with contextlib.suppress(json.JSONDecodeError):
                existing = json.loads(self.path.read_text())
        scenarios = {**existing.get("scenarios", {}), **self._rows}
        document = {
            "machine": machine(),
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "scenarios": dict(sorted(scenarios.items(), key=lambda row: int(row[0]))),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed, so that parallel test workers never read
        # a half-written file.
        partial = self.path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(document, indent=2) + "\n")
        partial.replace(self.path)
