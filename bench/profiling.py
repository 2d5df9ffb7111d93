"""A pyinstrument profile of this process while it drives a MeshChannel.

The setup is figure 2's mesh half: callers send GetCounter through a
MeshChannel to one fake_service process. Self time is added up per function
and per library, so the page shows where the client's CPU time goes.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyinstrument import Profiler

from bench.channel_overhead import drive
from bench.cluster import COUNTER_SERVICE, FAKE_SERVICE_MODULE, open_cluster
from bench.settings import Size
from protos import counter_pb2_grpc
from registry.mesh import Mesh

SAMPLE_INTERVAL = 0.0005
TOP_FUNCTIONS = 15
LIBRARIES = (
    ("registry/", "registry (this project)"),
    ("tenacity/", "tenacity"),
    ("grpc/", "grpc"),
    ("asyncio/", "asyncio"),
    ("protobuf/", "protobuf"),
    ("inspect.py", "inspect"),
    ("threading.py", "threading"),
    ("<built-in>", "built-in functions"),
)


@dataclass
class Profile:
    """Self time per function and per library, in percent of all samples."""

    setup: str
    calls_per_second: float = 0.0
    functions: list[tuple[str, float]] = field(default_factory=list)
    libraries: list[tuple[str, float]] = field(default_factory=list)


async def profile_mesh_calls(size: Size) -> Profile:
    profile = Profile(
        f"pyinstrument (interval {SAMPLE_INTERVAL * 1000:g} ms) over "
        f"{size.seconds:g} s of {size.callers} callers sending GetCounter through "
        "a MeshChannel to one fake_service process."
    )
    async with open_cluster() as cluster:
        await cluster.start_service(FAKE_SERVICE_MODULE)
        async with Mesh(cluster.config, etcd=cluster.etcd) as mesh:
            channel = mesh.channel(COUNTER_SERVICE)
            await channel.channel_ready()
            stub = counter_pb2_grpc.CounterServiceStub(channel)
            await drive(stub, callers=size.callers, seconds=min(0.5, size.seconds))
            profiler = Profiler(interval=SAMPLE_INTERVAL, async_mode="disabled")
            profiler.start()
            result = await drive(stub, callers=size.callers, seconds=size.seconds)
            profiler.stop()
    profile.calls_per_second = result.per_second
    _summarise(profile, profiler)
    return profile


def _summarise(profile: Profile, profiler: Profiler) -> None:
    root = profiler.last_session.root_frame() if profiler.last_session else None
    if root is None:
        return
    by_function: dict[str, float] = collections.defaultdict(float)
    by_library: dict[str, float] = collections.defaultdict(float)
    for frame in _frames(root):
        # pyinstrument puts a function's own time in a synthetic "[self]" leaf.
        owner = frame.parent if frame.is_synthetic_leaf and frame.parent else frame
        own = float(frame.time) if not frame.children else 0.0
        if own <= 0:
            continue
        path = owner.file_path or ""
        location = f"{owner.file_path_short}:{owner.line_no}"
        by_function[f"{owner.function} ({location})"] += own
        by_library[_library(path)] += own
    total = sum(by_library.values()) or 1.0
    profile.functions = [
        (name, 100.0 * seconds / total)
        for name, seconds in _largest(by_function)[:TOP_FUNCTIONS]
    ]
    profile.libraries = [
        (name, 100.0 * seconds / total) for name, seconds in _largest(by_library)
    ]


def _largest(seconds: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(seconds.items(), key=lambda item: item[1], reverse=True)


def _frames(root: Any) -> Iterator[Any]:
    stack = [root]
    while stack:
        frame = stack.pop()
        yield frame
        stack.extend(frame.children)


def _library(path: str) -> str:
    for marker, name in LIBRARIES:
        if marker in path:
            return name
    return "other"
