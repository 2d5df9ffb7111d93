"""Errors raised by the registry library.

MeshError
├── ConfigError            invalid configuration value; names the setting
│   └── AdvertiseAddressError   address that other hosts cannot dial
├── EtcdUnavailableError   no etcd endpoint responded
├── EtcdRequestError       etcd answered with an error
│   ├── RevisionCompactedError  a watch asked for a compacted revision
│   └── EtcdPermissionError     etcd auth denied the request or the login
├── NoEndpointError        a service has no live endpoint
└── UnsupportedRuleError   a contract declares a field rule that
                           registry.validation cannot check
"""

from __future__ import annotations


class MeshError(Exception):
    """Base class of every error that the registry raises on purpose."""


class ConfigError(MeshError):
    """A configuration value is invalid."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class AdvertiseAddressError(ConfigError):
    """The address to register cannot be dialled by other processes."""


class EtcdUnavailableError(MeshError):
    """No etcd endpoint could be reached."""

    def __init__(self, endpoints: tuple[str, ...], detail: str) -> None:
        shown = ", ".join(endpoints)
        super().__init__(f"etcd is unreachable at {shown}: {detail}")
        self.endpoints = endpoints


class EtcdRequestError(MeshError):
    """etcd rejected a request."""


class EtcdPermissionError(EtcdRequestError):
    """etcd's auth rejected the request: no right on the key, or a bad login."""


class RevisionCompactedError(EtcdRequestError):
    """A watch started at a revision that etcd has already compacted."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(
            f"revision compacted up to {compact_revision}; list the prefix again"
        )
        self.compact_revision = compact_revision


class NoEndpointError(MeshError):
    """A service has no live endpoint in discovery."""

    def __init__(self, service: str, namespace: str) -> None:
        super().__init__(
            f"no live endpoint for {service} in namespace {namespace!r}; "
            f"check that a replica is running and registered (meshctl ls)"
        )
        self.service = service
        self.namespace = namespace


class UnsupportedRuleError(MeshError):
    """A contract declares a protovalidate rule that registry.validation lacks."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
