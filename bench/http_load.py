"""A small HTTP/1.1 load generator on raw asyncio streams, run as its own process.

    python -m bench.http_load --port 8080 --path /api/counters/x/increment \
        --connections 32 --seconds 3

Each connection sends one POST at a time over keep-alive and reads the
response by its Content-Length. Requests carry a CSRF token of their own in
the csrf cookie and the X-CSRF-Token header, as the front requires. Once the time is up, the requests in flight
finish, so the count of 200 responses is exact. The result is one JSON line:
{"ok", "failed", "elapsed", "latencies_ms": {"p50", "p99"}}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from collections.abc import Sequence

from bench.results import percentile

BODY = b'{"delta":1}'


def _request(path: str, port: int) -> bytes:
    # The front checks CSRF by double submit: the X-CSRF-Token header must
    # repeat the csrf cookie, so a client may bring a token of its own.
    token = secrets.token_urlsafe(32)
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Cookie: csrf={token}\r\n"
        f"X-CSRF-Token: {token}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n"
        "\r\n"
    )
    return head.encode() + BODY


async def _read_status(reader: asyncio.StreamReader) -> int:
    """Read one response and return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _send_until(
    stream: Stream,
    request: bytes,
    stop_at: float,
    latencies: list[float],
    failed: list[int],
) -> None:
    """Send requests one at a time until stop_at, and at least one."""
    reader, writer = stream
    try:
        while True:
            begin = time.perf_counter()
            writer.write(request)
            status = await _read_status(reader)
            if status == 200:
                latencies.append(time.perf_counter() - begin)
            else:
                failed.append(status)
            if time.perf_counter() >= stop_at:
                return
    finally:
        writer.close()


async def run_load(
    port: int, path: str, connections: int, seconds: float
) -> dict[str, object]:
    request = _request(path, port)
    latencies: list[float] = []
    failed: list[int] = []
    # The clock starts once every connection is open, so that a slow
    # connect on a busy machine does not eat the measured time.
    streams = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", port) for _ in range(connections))
    )
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _send_until(stream, request, started + seconds, latencies, failed)
            for stream in streams
        )
    )
    elapsed = time.perf_counter() - started
    return {
        "ok": len(latencies),
        "failed": len(failed),
        "elapsed": elapsed,
        "latencies_ms": {
            "p50": percentile(latencies, 0.50) * 1000.0,
            "p99": percentile(latencies, 0.99) * 1000.0,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_load")
    parser.add_argument(
        "--port", type=int, required=True, help="front port on 127.0.0.1"
    )
    parser.add_argument("--path", required=True, help='path to POST {"delta":1} to')
    parser.add_argument(
        "--connections", type=int, default=32, help="keep-alive connections"
    )
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="how long to send, in seconds"
    )
    args = parser.parse_args(argv)
    result = asyncio.run(run_load(args.port, args.path, args.connections, args.seconds))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
