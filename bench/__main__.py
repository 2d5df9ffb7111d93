"""Run the benchmark suite and write docs/benchmarks.md: `python -m bench`."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bench import machine, report
from bench.balancing import measure_balancing
from bench.channel_overhead import measure_channel_overhead
from bench.front_load import measure_front
from bench.increments import measure_increments
from bench.profiling import profile_mesh_calls
from bench.propagation import measure_propagation
from bench.results import Figure
from bench.scale import measure_scale
from bench.settings import FULL, TINY, Size

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"
DEFAULT_BEFORE = REPO_ROOT / "bench" / "before.json"

FIGURES: dict[str, Callable[[Size], Awaitable[Figure]]] = {
    "propagation": measure_propagation,
    "channel": measure_channel_overhead,
    "balancing": measure_balancing,
    "front": measure_front,
    "increments": measure_increments,
    "scale": measure_scale,
}

logger = logging.getLogger("bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmarks on loopback and write the benchmark page.",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(FIGURES),
        help="run only this figure (repeatable); default: all",
    )
    parser.add_argument(
        "--size",
        choices=["full", "tiny"],
        default="full",
        help="full: the recorded sizes; tiny: a seconds-long smoke run",
    )
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the pyinstrument profile"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="Markdown page to write (default docs/benchmarks.md)",
    )
    parser.add_argument(
        "--json", type=Path, help="also write the raw results to this JSON file"
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=DEFAULT_BEFORE,
        help="results of the code before the changes, for the before/after table "
        "(default bench/before.json; skipped when missing)",
    )
    return parser


async def run_suite(args: argparse.Namespace, size: Size) -> report.Suite:
    suite = report.Suite(
        started=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine.describe(),
        commands=[
            "make bench        # .venv/bin/python -m bench",
            "python -m bench --only channel --only scale --output /tmp/page.md",
            "python -m bench.http_load --port PORT --path /api/counters/NAME/increment",
        ],
    )
    for key in args.only or list(FIGURES):
        began = time.perf_counter()
        logger.info("running %s", key)
        try:
            suite.figures.append(await FIGURES[key](size))
        except Exception as exc:
            # One broken benchmark must not cost the others' results.
            logger.exception("benchmark %s failed; going on with the next", key)
            suite.failures.append(f"{key}: {type(exc).__name__}: {exc}")
            continue
        logger.info("%s took %.1f s", key, time.perf_counter() - began)
    if not args.no_profile:
        logger.info("profiling the mesh channel")
        try:
            suite.profile = await profile_mesh_calls(size)
        except Exception as exc:
            logger.exception("profiling failed")
            suite.failures.append(f"profile: {type(exc).__name__}: {exc}")
    suite.load_after = machine.load_average()
    # The load before the run comes from other processes. During the run
    # the suite's own processes (etcd, services, load generators) add to it.
    before = suite.machine_load_before()
    cpus = os.cpu_count() or 1
    if before > report.HIGH_LOAD_PER_CPU * cpus:
        suite.notes.append(
            f"NOTE: the 1-minute load average was {before:.2f} on {cpus} CPUs "
            "when the run started, so other processes competed for the CPU. "
            "Absolute figures are noisy, and the ratios measured side by side "
            "are the reliable part."
        )
    return suite


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # Only the suite's progress: the libraries' INFO lines would bury it.
    for name in ("httpx", "registry"):
        logging.getLogger(name).setLevel(logging.WARNING)
    size = FULL if args.size == "full" else TINY
    suite = asyncio.run(run_suite(args, size))
    before = report.load(args.before) if args.before.exists() else None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report.render(suite, before))
    if args.json is not None:
        report.save(suite, args.json)
    logger.info("wrote %s", args.output)
    if suite.failures:
        logger.error("%d benchmarks failed: %s", len(suite.failures), suite.failures)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
