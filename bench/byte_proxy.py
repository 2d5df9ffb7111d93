"""A loopback TCP proxy that counts the bytes it forwards in each direction."""

from __future__ import annotations

import asyncio
import contextlib

from tests.integration.tcp_proxy import TcpProxy


class CountingProxy(TcpProxy):
    """TcpProxy with byte counters: `sent` goes to the target, `received` back."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self.sent = 0
        self.received = 0
        self._handlers: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        """Close every connection and wait for the handlers to see the close.

        A handler still running when the event loop ends is cancelled, and
        asyncio then logs its CancelledError.
        """
        await super().stop()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=1.0)

    def reset(self) -> None:
        self.sent = 0
        self.received = 0

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update({writer, up_writer})
        await asyncio.gather(
            self._count(reader, up_writer, upstream=True),
            self._count(up_reader, writer, upstream=False),
            return_exceptions=True,
        )

    async def _count(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if upstream:
                    self.sent += len(data)
                else:
                    self.received += len(data)
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
