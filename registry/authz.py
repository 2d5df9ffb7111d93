"""Authorization between services: which caller identity may call which method.

A policy is a JSON object from caller identity to the methods it may call
(env MESH_POLICY_FILE):

    {
      "front":       ["*"],
      "counter-svc": ["mesh.user.v1.UserService/ValidateSession"],
      "user-svc":    []
    }

An entry is `*` (every method), a full service name (every method of it) or
`service/method`. A caller that the policy does not list may call nothing.
The caller identity comes from the client certificate that the TLS handshake
verified (registry.certs.peer_identity). Without MESH_POLICY_FILE the
default policy applies: the front, the ingress and meshctl may call
everything, and services may call nothing.

Health checks and server reflection stay open to every client that passed
the TLS handshake, because load balancers, `meshctl health` and grpcurl use
them without a mesh identity of their own. They reveal service names and
message types, not data.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from registry.certs import (
    ADMIN_IDENTITY,
    FRONT_IDENTITY,
    INGRESS_IDENTITY,
    peer_identity,
)
from registry.errors import ConfigError

logger = logging.getLogger(__name__)

OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
DEFAULT_RULES: Mapping[str, Sequence[str]] = {
    FRONT_IDENTITY: ["*"],
    INGRESS_IDENTITY: ["*"],
    ADMIN_IDENTITY: ["*"],
}


@dataclass(frozen=True)
class Policy:
    """Allowed methods by caller identity."""

    rules: Mapping[str, frozenset[str]]

    @classmethod
    def from_mapping(cls, raw: object, source: str) -> Policy:
        if not isinstance(raw, dict):
            raise ConfigError(
                "MESH_POLICY_FILE", f"{source}: expected a JSON object of identities"
            )
        rules: dict[str, frozenset[str]] = {}
        for caller, entries in raw.items():
            if not isinstance(entries, list) or not all(
                isinstance(entry, str) for entry in entries
            ):
                raise ConfigError(
                    "MESH_POLICY_FILE",
                    f"{source}: the rules of {caller!r} must be a list of strings "
                    'such as ["mesh.counter.v1.CounterService/Get"]',
                )
            rules[str(caller)] = frozenset(entry.strip("/") for entry in entries)
        return cls(rules)

    @classmethod
    def load(cls, path: Path) -> Policy:
        try:
            raw = json.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(
                "MESH_POLICY_FILE", f"cannot read {path}: {exc.strerror}"
            ) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(
                "MESH_POLICY_FILE", f"{path} is not valid JSON: {exc}"
            ) from None
        return cls.from_mapping(raw, str(path))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Policy:
        path = env.get("MESH_POLICY_FILE", "").strip()
        if path:
            return cls.load(Path(path))
        return cls.from_mapping(dict(DEFAULT_RULES), "the default policy")

    def allows(self, caller: str | None, method: str) -> bool:
        """True when caller may call method, given as `/service/method`."""
        service = method.strip("/").split("/", 1)[0]
        if service in OPEN_SERVICES:
            return True
        if caller is None:
            return False
        allowed = self.rules.get(caller, frozenset())
        return bool({"*", service, method.strip("/")} & allowed)


Behavior = Callable[..., Any]


class AuthorizationInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Reject calls that the policy does not allow with PERMISSION_DENIED."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        service = method.strip("/").split("/", 1)[0]
        if handler is None or service in OPEN_SERVICES:
            return handler
        check = self._checker(method)
        for shape, factory in _HANDLER_FACTORIES.items():
            behavior = getattr(handler, shape)
            if behavior is not None:
                return factory(
                    _guard(behavior, check, streaming=shape.endswith("stream")),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _checker(
        self, method: str
    ) -> Callable[[grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]:
        async def check(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            identity = peer_identity(context.auth_context())
            caller = identity.name if identity is not None else None
            if self.policy.allows(caller, method):
                return
            shown = caller or (
                str(identity) if identity else "a caller with no certificate"
            )
            logger.warning("denied %s to %s", method, shown)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {shown} may not call {method}; allow it in the mesh "
                "policy file (MESH_POLICY_FILE)",
            )

        return check


_HANDLER_FACTORIES: dict[str, Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}

Check = Callable[[grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]


def _guard(behavior: Behavior, check: Check, *, streaming: bool) -> Behavior:
    if streaming and inspect.isasyncgenfunction(behavior):

        async def generator(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            await check(context)
            async for response in behavior(request, context):
                yield response

        return generator

    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await check(context)
        return await behavior(request, context)

    return wrapped
