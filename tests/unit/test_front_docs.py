"""The API docs page works without internet access."""

from __future__ import annotations

import httpx

from front.app import create_app
from registry.config import MeshConfig


async def test_docs_page_loads_swagger_from_the_front_itself():
    app = create_app(MeshConfig.from_env({}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://front"
    ) as client:
        page = await client.get("/docs")
        script = await client.get("/static-offline-docs/swagger-ui-bundle.js")

    assert page.status_code == 200
    assert "cdn." not in page.text
    assert "/static-offline-docs/swagger-ui-bundle.js" in page.text
    assert script.status_code == 200
