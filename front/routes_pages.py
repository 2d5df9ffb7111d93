"""The HTML pages, and the health and readiness probes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

from front.backends import BACKEND_SERVICES, COUNTER_SERVICE, USER_SERVICE
from front.models import Readiness
from front.state import FrontState, StateDep
from registry.errors import MeshError

STATIC_DIR = Path(__file__).parent / "static"
# etcd returns a read within milliseconds when it is up. A probe that waits
# longer only delays the report that it is down.
ETCD_CHECK_TIMEOUT = 2.0
# The security headers, the Content-Security-Policy among them, come from
# front.headers on every response.
_PAGE_HEADERS = {"Cache-Control": "no-cache"}

_START_HINTS = {
    COUNTER_SERVICE: "python -m counter_svc",
    USER_SERVICE: "python -m user_svc",
}

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)


@router.get("/mesh", include_in_schema=False)
async def mesh_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "mesh.html", headers=_PAGE_HEADERS)


@router.get("/docs", include_in_schema=False)
async def swagger_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "docs.html", headers=_PAGE_HEADERS)


@router.get("/redoc", include_in_schema=False)
async def redoc_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "redoc.html", headers=_PAGE_HEADERS)


@router.get("/healthz", tags=["probes"])
async def healthz() -> dict[str, str]:
    """Return 200 while the process runs."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["probes"],
    responses={
        200: {"model": Readiness, "description": "Ready."},
        503: {"model": Readiness, "description": "Not ready."},
    },
)
async def readyz(state: StateDep) -> JSONResponse:
    """Return 200 when etcd responds and every backend service has an instance."""
    missing = await find_missing(state)
    body = Readiness(ready=not missing, missing=missing)
    return JSONResponse(body.model_dump(), status_code=503 if missing else 200)


async def find_missing(state: FrontState) -> list[str]:
    """Return what keeps the front from serving requests: empty when ready."""
    missing: list[str] = []
    try:
        async with asyncio.timeout(ETCD_CHECK_TIMEOUT):
            await state.mesh.etcd.revision()
    except MeshError as exc:
        missing.append(f"etcd: {exc}")
    except TimeoutError:
        urls = ", ".join(state.mesh.config.endpoint_urls)
        missing.append(
            f"etcd: no response from {urls} within {ETCD_CHECK_TIMEOUT:.0f} s"
        )
    namespace = state.mesh.config.namespace
    missing.extend(
        f"{service}: no live instance in namespace {namespace!r}; "
        f"start one with `{_START_HINTS[service]}`"
        for service in BACKEND_SERVICES
        if not state.mesh.resolver(service).snapshot()
    )
    return missing
