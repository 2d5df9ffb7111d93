"""Keep calls away from endpoints that present the wrong identity.

A client of a service checks the server's certificate against the service's
DNS name, so an instance registered under the wrong service (by mistake, or
by an attacker who could write that prefix) fails every handshake. gRPC reports that
only as UNAVAILABLE. After such a failure, the guard opens one TLS
connection itself to read the names in the peer's certificate. An endpoint
whose certificate does not name the expected service is rejected for the
life of the channel: the channel never picks it again, and the guard logs
its address and the identity it presented once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from typing import Any

from registry.balancer import EndpointState
from registry.mesh_tls import ChannelFactory

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 2.0


class IdentityGuard:
    """The endpoints of one service that presented another identity."""

    def __init__(self, factory: ChannelFactory) -> None:
        self._factory = factory
        self._rejected: set[tuple[str, str]] = set()
        self._checking: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def rejected(self) -> frozenset[tuple[str, str]]:
        """(instance id, address) of every rejected endpoint."""
        return frozenset(self._rejected)

    def allowed(self, states: Sequence[EndpointState]) -> list[EndpointState]:
        return [state for state in states if _key(state) not in self._rejected]

    def check_later(self, state: EndpointState) -> None:
        """Check state's certificate in the background after a failed call."""
        key = _key(state)
        if key in self._rejected or key in self._checking:
            return
        self._checking.add(key)
        task = asyncio.get_running_loop().create_task(self._check(state, key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _check(self, state: EndpointState, key: tuple[str, str]) -> None:
        try:
            names = await self._presented_names(state.endpoint.address)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            logger.debug("identity check of %s failed: %s", state.endpoint.address, exc)
            return
        finally:
            self._checking.discard(key)
        expected = self._factory.expected_name
        if expected in names:
            return
        self._rejected.add(key)
        logger.warning(
            "%s: endpoint %s at %s presented %s instead of %s; it gets no calls",
            self._factory.service,
            state.instance_id,
            state.endpoint.address,
            ", ".join(names) or "a certificate with no name",
            expected,
        )

    async def _presented_names(self, address: str) -> list[str]:
        """Handshake with address and return the SAN names of its certificate."""
        host, _, port = address.rpartition(":")
        context = ssl.create_default_context(cafile=str(self._factory.tls.ca))
        # The point is to read a name that does not match, so the name check
        # is off here. The chain is still verified against the mesh CA.
        context.check_hostname = False
        context.load_cert_chain(self._factory.tls.cert, self._factory.tls.key)
        context.set_alpn_protocols(["h2"])
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            _, writer = await asyncio.open_connection(
                host.strip("[]"), int(port), ssl=context
            )
        try:
            peer: dict[str, Any] = writer.get_extra_info("peercert") or {}
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        return [str(value) for _, value in peer.get("subjectAltName", ())]


def _key(state: EndpointState) -> tuple[str, str]:
    return (state.instance_id, state.endpoint.address)
