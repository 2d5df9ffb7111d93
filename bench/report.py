"""Write the benchmark page (docs/benchmarks.md) from measured figures."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.profiling import Profile
from bench.results import Figure, Row, Target

# A load average above this many processes per CPU before the run is noted.
HIGH_LOAD_PER_CPU = 0.5

# Differences between the code and the suite of bench/before.json and now.
BEFORE_NOTES = (
    (
        "Before the changes, counter_svc had no coalescing and ignored "
        "MESH_COUNTER_COALESCE, so its coalesced rows measured the per-request path."
    ),
    (
        "Before the changes, a MeshChannel opened a grpc channel for every endpoint "
        "that discovery reported. It now opens it on the endpoint's first call."
    ),
    (
        "Figure 2 then ran 5 pairs of 3 s in a fixed order, with grpc's default "
        "options on the plain channel. It now runs 10 pairs of 1.5 s in alternating "
        "order, with the mesh's channel options on both."
    ),
)

PROFILE_NOTE = (
    "`epoll.poll` is the time the client waits for replies. The changes removed "
    "tenacity from every call and the task that each unary call started."
)

INTRODUCTION = (
    "Measured by `make bench` (`python -m bench`), which starts etcd, the "
    "services and the front on loopback, runs each benchmark a few times, and "
    "rewrites this page. Each value is the median over the runs, with the lowest "
    "and highest run beside it. Ratios compare two measurements taken side by "
    "side in the same run."
)


@dataclass
class Suite:
    """Everything one run of the suite measured, with where and when."""

    started: str
    machine: dict[str, str]
    commands: list[str]
    figures: list[Figure] = field(default_factory=list)
    profile: Profile | None = None
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def machine_load_before(self) -> float:
        """Return the 1-minute load average recorded when the run started."""
        raw = self.machine.get(LOAD_BEFORE, "0")
        return float(raw.split(",", 1)[0])


LOAD_BEFORE = "load average before the run (1, 5, 15 min)"


def save(suite: Suite, path: Path) -> None:
    path.write_text(json.dumps(asdict(suite), indent=1) + "\n")


def load(path: Path) -> Suite:
    """Read a suite that `save` wrote."""
    raw: dict[str, Any] = json.loads(path.read_text())
    figures = [
        Figure(
            key=item["key"],
            title=item["title"],
            setup=item["setup"],
            rows=[Row(**row) for row in item["rows"]],
            targets=[Target(**target) for target in item["targets"]],
            notes=list(item["notes"]),
        )
        for item in raw["figures"]
    ]
    profile = Profile(**raw["profile"]) if raw.get("profile") else None
    return Suite(
        started=raw["started"],
        machine=raw["machine"],
        commands=raw["commands"],
        figures=figures,
        profile=profile,
        load_after=_three(raw.get("load_after", (0.0, 0.0, 0.0))),
        notes=list(raw.get("notes", [])),
        failures=list(raw.get("failures", [])),
    )


def _three(values: list[float]) -> tuple[float, float, float]:
    first, second, third = (float(value) for value in values)
    return first, second, third


def number(value: float) -> str:
    """Format a measured value with about three significant digits."""
    if math.isnan(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render(suite: Suite, before: Suite | None) -> str:
    """Return the whole page as Markdown."""
    lines = [
        "# Benchmarks",
        "",
        INTRODUCTION,
        "",
        f"Run started {suite.started}.",
        "",
    ]
    lines += _machine(suite)
    if suite.failures:
        lines += ["## Failed benchmarks", ""]
        lines += [f"- {failure}" for failure in suite.failures]
        lines.append("")
    lines += _targets(suite)
    for number_, figure in enumerate(suite.figures, start=1):
        lines += _figure(number_, figure)
    if suite.profile is not None:
        lines += _profile(suite.profile, before.profile if before else None)
    if before is not None:
        lines += _before_after(suite, before)
    lines += ["## Commands", ""]
    lines += [f"    {command}" for command in suite.commands]
    lines.append("")
    return "\n".join(lines)


def _machine(suite: Suite) -> list[str]:
    lines = ["## Machine", "", "| fact | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in suite.machine.items()]
    one, five, fifteen = suite.load_after
    lines.append(
        f"| load average after the run (1, 5, 15 min) | {one:.2f}, {five:.2f}, {fifteen:.2f} |"
    )
    lines.append("")
    lines += [*suite.notes, ""] if suite.notes else []
    return lines


def _targets(suite: Suite) -> list[str]:
    lines = [
        "## Targets",
        "",
        "| figure | measure | target | median | met |",
        "|---|---|---|---|---|",
    ]
    missed: list[str] = []
    for figure in suite.figures:
        for target in figure.targets:
            row = figure.row(target.measure)
            bound = "at most" if target.at_most else "at least"
            met = target.met(row)
            lines.append(
                f"| {figure.title} | {target.measure} | {bound} {number(target.limit)} "
                f"{row.unit} | {number(row.median)} | {'yes' if met else '**no**'} |"
            )
            if not met:
                missed.append(_missed_line(figure, target, row))
    lines.append("")
    if missed:
        lines += ["Missed targets:", "", *missed, ""]
    return lines


def _missed_line(figure: Figure, target: Target, row: Row) -> str:
    bound = "at most" if target.at_most else "at least"
    reason = target.reason_if_missed or "See the figure below."
    return (
        f"- {figure.title}, {target.measure}: median {number(row.median)} {row.unit} "
        f"(runs from {number(row.low)} to {number(row.high)}) against "
        f"{bound} {number(target.limit)}. {reason}"
    )


def _figure(index: int, figure: Figure) -> list[str]:
    lines = [
        f"## {index}. {figure.title}",
        "",
        figure.setup,
        "",
        "| measure | unit | median | lowest - highest | runs |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {row.measure} | {row.unit} | {number(row.median)} | "
        f"{number(row.low)} - {number(row.high)} | {len(row.runs)} |"
        for row in figure.rows
    ]
    lines.append("")
    for note in figure.notes:
        lines += [note, ""]
    return lines


def _profile(after: Profile, before: Profile | None) -> list[str]:
    lines = [
        "## Profile of the mesh channel's client",
        "",
        after.setup,
        "",
        PROFILE_NOTE,
        "",
    ]
    sections = [("after the changes", after)]
    if before is not None:
        sections.insert(0, ("before the changes", before))
    for label, profile in sections:
        rate = number(profile.calls_per_second)
        lines += [
            f"Self time by library, {label} ({rate} calls/s while profiled):",
            "",
            "| library | share of samples |",
            "|---|---|",
        ]
        lines += [f"| {name} | {share:.1f} % |" for name, share in profile.libraries]
        lines += [
            "",
            f"Functions with the most self time, {label}:",
            "",
            "| function | share of samples |",
            "|---|---|",
        ]
        lines += [f"| `{name}` | {share:.1f} % |" for name, share in profile.functions]
        lines.append("")
    return lines


def _before_after(suite: Suite, before: Suite) -> list[str]:
    earlier = {figure.key: figure for figure in before.figures}
    load = ", ".join(f"{value:.2f}" for value in before.load_after)
    lines = [
        "## Before and after the changes",
        "",
        (
            f"Before: the same suite on the code before the changes, run "
            f"{before.started} on this machine (load average then: {load}); its "
            "results are kept in bench/before.json. After: this run. Medians."
        ),
        "",
        *(f"- {note}" for note in BEFORE_NOTES),
        "",
        "| figure | measure | unit | before | after |",
        "|---|---|---|---|---|",
    ]
    for figure in suite.figures:
        old = earlier.get(figure.key)
        if old is None:
            continue
        for row in figure.rows:
            match = next((r for r in old.rows if r.measure == row.measure), None)
            if match is not None:
                lines.append(
                    f"| {figure.title} | {row.measure} | {row.unit} | "
                    f"{number(match.median)} | {number(row.median)} |"
                )
    lines.append("")
    return lines
