"""The FastAPI app factory.

    app = create_app(MeshConfig.from_env())

The app opens a Mesh in its lifespan, unless the caller passes one, and
closes only a Mesh that it opened.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from front import routes_counters, routes_mesh, routes_pages, routes_users
from front.backends import DEFAULT_CALL_TIMEOUT, Backends
from front.counter_hub import CounterHub
from front.errors import install_error_handlers
from front.login_limits import Clock
from front.mesh_view import MeshView
from front.security import SecuritySettings, install_security
from front.state import FrontState
from registry.config import MeshConfig
from registry.mesh import Mesh

logger = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]


def create_app(
    config: MeshConfig,
    *,
    mesh: Mesh | None = None,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
    security: SecuritySettings | None = None,
    clock: Clock = time.monotonic,
) -> FastAPI:
    """Build the front. `call_timeout` is the deadline of each backend call.

    `clock` is the monotonic clock of the login limits, in seconds.
    """
    # FastAPI's own /docs page loads Swagger UI from a CDN. fastapi-offline
    # serves its scripts from its package under /static-offline-docs, so the
    # docs work without internet access. The pages themselves come from
    # front.routes_pages, without inline scripts (see front.headers).
    app = FastAPIOffline(
        title="etcd-mesh front",
        summary="Counters and users served by gRPC replicas found through etcd.",
        version="0.1.0",
        lifespan=_lifespan(config, mesh, call_timeout),
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    install_security(app, security or SecuritySettings(), clock)
    app.include_router(routes_pages.router)
    app.include_router(routes_counters.router)
    app.include_router(routes_users.router)
    app.include_router(routes_mesh.router)
    app.mount("/static", StaticFiles(directory=routes_pages.STATIC_DIR), name="static")
    _drop_default_422_responses(app)
    return app


def _lifespan(config: MeshConfig, mesh: Mesh | None, call_timeout: float) -> Lifespan:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            opened = mesh
            if opened is None:
                opened = await stack.enter_async_context(Mesh(config))
            backends = Backends(opened, timeout=call_timeout)
            hub = CounterHub(backends.watch_counter)
            stack.push_async_callback(hub.close)
            view = MeshView(opened, backends.channels)
            stack.push_async_callback(view.close)
            app.state.front = FrontState(opened, backends, hub, view)
            logger.info(
                "front started on etcd %s, namespace %s",
                ", ".join(config.endpoint_urls),
                config.namespace,
            )
            yield
            logger.info("front stopping")

    return lifespan


def _drop_default_422_responses(app: FastAPI) -> None:
    """Remove the 422 entries that FastAPI adds to the OpenAPI schema.

    Validation errors are returned as 400 with the common error body (see
    front.errors), so the default 422 entries would document a status that
    never comes.
    """
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build_schema()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = schema.get("components", {}).get("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
