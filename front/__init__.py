"""The HTTP edge of the mesh: pages, a JSON API and live streams.

The front reaches services only through generated stubs on mesh channels.
"""

from front.app import create_app

__all__ = ["create_app"]
