"""Facts about the machine a benchmark ran on, for the page."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """Return the first "model name" in /proc/cpuinfo, or the platform's guess."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name":
            return value.strip()
    return platform.processor() or "unknown"


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def describe() -> dict[str, str]:
    """Return the machine facts that the page records."""
    one, five, fifteen = load_average()
    return {
        "CPUs (nproc)": str(os.cpu_count() or 0),
        "CPU model": cpu_model(),
        "Python": platform.python_version(),
        "kernel": platform.release(),
        "load average before the run (1, 5, 15 min)": f"{one:.2f}, {five:.2f}, {fifteen:.2f}",
    }
