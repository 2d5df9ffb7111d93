"""Run `python -m front` as a real process, and read its server-sent events.

The process gets its etcd endpoints and namespace as flags, listens on
127.0.0.1 on a free port, and counts as started once /healthz returns 200.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from front.csrf import CSRF_COOKIE, CSRF_HEADER
from registry.config import MeshConfig
from registry.etcd_process import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FrontProcess:
    """One front process started with `python -m front`."""

    config: MeshConfig
    log_path: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    # Certificate, key and CA files to serve HTTPS with; None serves HTTP.
    tls: tuple[Path, Path, Path] | None = None

    @property
    def url(self) -> str:
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}"

    def verify(self) -> ssl.SSLContext | bool:
        """Return what httpx needs to trust this front's certificate."""
        if self.tls is None:
            return True
        return ssl.create_default_context(cafile=self.tls[2])

    async def start(self, timeout: float = 30.0) -> None:
        self.port = self.port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        env["PYTHONUNBUFFERED"] = "1"
        argv = [
            sys.executable,
            "-m",
            "front",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--etcd-endpoints",
            ",".join(self.config.endpoint_urls),
            "--namespace",
            self.config.namespace,
            "--call-timeout",
            "3",
        ]
        if self.tls is not None:
            argv += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        async with httpx.AsyncClient(
            base_url=self.url, timeout=2.0, verify=self.verify()
        ) as client:
            await self._wait_healthy(client, timeout)

    async def _wait_healthy(self, client: httpx.AsyncClient, timeout: float) -> None:
        assert self.process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"front exited with status {self.process.returncode}:\n"
                    + self.log_tail()
                )
            try:
                response = await client.get("/healthz")
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                return
            await asyncio.sleep(0.1)
        self.stop()
        raise TimeoutError(f"front did not answer /healthz:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> int:
        """Send SIGTERM, wait for the exit and return the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


async def prime_csrf(client: httpx.AsyncClient) -> str:
    """Get a CSRF token as a browser does, and send it on every request.

    The front sets the `csrf` cookie on a response to any client without
    one, and wants its value back in X-CSRF-Token on POST, PUT and DELETE.
    """
    response = await client.get("/healthz")
    token = response.cookies.get(CSRF_COOKIE) or client.cookies[CSRF_COOKIE]
    client.headers[CSRF_HEADER] = token
    return token


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """Yield (event name, decoded JSON data) for each event of an SSE response."""
    name = "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())


async def next_matching(
    events: AsyncIterator[tuple[str, Any]],
    predicate: Callable[[str, Any], bool],
    limit: int = 50,
) -> Any:
    """Return the data of the first event that matches, within limit events."""
    seen = []
    for _ in range(limit):
        name, data = await anext(events)
        if predicate(name, data):
            return data
        seen.append((name, data))
    raise AssertionError(f"no matching event in {limit} events: {seen}")


async def poll_until(
    read: Callable[[], Any], predicate: Callable[[Any], bool], attempts: int = 150
) -> Any:
    """Call read() every 0.1 s until predicate holds for its result, and return it."""
    result = None
    for _ in range(attempts):
        result = await read()
        if predicate(result):
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met after {attempts} attempts: {result!r}")
