"""Measured figures: one value per run, summarised as median and spread."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile, where fraction 0.99 is p99."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Row:
    """One measure with its value from each repeated run."""

    measure: str
    unit: str
    runs: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else math.nan

    @property
    def low(self) -> float:
        return min(self.runs) if self.runs else math.nan

    @property
    def high(self) -> float:
        return max(self.runs) if self.runs else math.nan


@dataclass
class Target:
    """A goal for one row's median: at most (or at least) `limit`."""

    measure: str
    limit: float
    at_most: bool
    reason_if_missed: str = ""

    def met(self, row: Row) -> bool:
        if math.isnan(row.median):
            return False
        return row.median <= self.limit if self.at_most else row.median >= self.limit


@dataclass
class Figure:
    """The rows of one benchmark, its targets and notes for the page."""

    key: str
    title: str
    setup: str
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, measure: str, unit: str = "") -> Row:
        """Return the row named measure, adding it on first use."""
        for row in self.rows:
            if row.measure == measure:
                return row
        added = Row(measure, unit)
        self.rows.append(added)
        return added

    def add(self, measure: str, unit: str, value: float) -> None:
        self.row(measure, unit).runs.append(value)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan
