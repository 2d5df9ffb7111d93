"""Shared state of the routes: the mesh, the stubs, the counter hub and the mesh view.

The app's lifespan builds one FrontState and stores it on `app.state.front`.
Routes get it through the `StateDep` dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from front.backends import Backends
from front.counter_hub import CounterHub
from front.mesh_view import MeshView
from registry.mesh import Mesh


@dataclass(frozen=True)
class FrontState:
    mesh: Mesh
    backends: Backends
    hub: CounterHub
    view: MeshView


def front_state(request: Request) -> FrontState:
    # The app's lifespan sets it (see front.app).
    state: FrontState = request.app.state.front
    return state


StateDep = Annotated[FrontState, Depends(front_state)]
