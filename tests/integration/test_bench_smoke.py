"""Every benchmark at a tiny size, so that the benchmark code keeps working."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench import report
from bench.__main__ import FIGURES
from bench.profiling import profile_mesh_calls
from bench.results import Figure
from bench.settings import TINY

pytestmark = pytest.mark.integration


def values(figure: Figure, measure: str) -> list[float]:
    return figure.row(measure).runs


def check_front(figure: Figure) -> None:
    assert values(figure, "non-200 responses") == [0]
    assert values(figure, "counter - 200 responses") == [0]
    assert values(figure, "increments/s")[0] > 0


def check_increments(figure: Figure) -> None:
    for mode in ("per-request", "coalesced"):
        label = f"{mode}, {TINY.counter_callers} callers"
        assert values(figure, f"{label}: counter - successful calls") == [0]
        assert values(figure, f"{label}: values exactly 1..n") == [1.0]


def check_balancing(figure: Figure) -> None:
    assert values(figure, "round_robin slow share")[0] > 0


CHECKS: dict[str, Callable[[Figure], None]] = {
    "front": check_front,
    "increments": check_increments,
    "balancing": check_balancing,
}


@pytest.mark.parametrize("key", sorted(FIGURES))
async def test_benchmark_fills_every_row(key):
    figure = await FIGURES[key](TINY)

    assert figure.rows
    for row in figure.rows:
        assert len(row.runs) >= TINY.runs, row.measure
    for target in figure.targets:
        assert figure.row(target.measure).runs, target.measure
    check = CHECKS.get(key)
    if check is not None:
        check(figure)


async def test_profile_and_page_render():
    profile = await profile_mesh_calls(TINY)
    figure = Figure("demo", "Demo figure", "one row")
    figure.add("calls/s", "calls/s", 10.0)
    suite = report.Suite(
        started="now", machine={"CPUs (nproc)": "2"}, commands=["make bench"]
    )
    suite.figures.append(figure)
    suite.profile = profile

    page = report.render(suite, before=suite)

    assert profile.libraries
    assert "## 1. Demo figure" in page
    assert "## Profile of the mesh channel's client" in page
    assert "## Before and after the changes" in page
