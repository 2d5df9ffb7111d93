"""Prometheus metrics of registration, discovery and balancing.

Every counter is labelled by the full proto service name. Processes expose
them with prometheus_client (the front serves /metrics).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

REGISTRATIONS = Counter(
    "mesh_registrations_total",
    "Registrations written to etcd, first ones and re-registrations.",
    ["service"],
)
LEASE_LOSSES = Counter(
    "mesh_lease_losses_total",
    "Leases that etcd reported gone, each followed by a re-registration.",
    ["service"],
)
WATCH_RESTARTS = Counter(
    "mesh_watch_restarts_total",
    "Discovery watches that broke, went silent or hit compaction.",
    ["service"],
)
RELISTS = Counter(
    "mesh_relists_total",
    "Full lists of a service prefix, the first one included.",
    ["service"],
)
SKIPPED_VALUES = Counter(
    "mesh_skipped_values_total",
    "Registration values that did not decode and were skipped.",
    ["service"],
)
RETRIES = Counter(
    "mesh_retries_total",
    "Calls sent again to another endpoint after a failure.",
    ["service"],
)
BUDGET_REFUSALS = Counter(
    "mesh_retry_budget_refusals_total",
    "Retries not sent because the retry budget was spent.",
    ["service"],
)
EJECTIONS = Counter(
    "mesh_ejections_total",
    "Endpoints ejected after a connection-level failure.",
    ["service"],
)
ENDPOINTS = Gauge(
    "mesh_endpoints",
    "Endpoints that discovery currently reports.",
    ["service"],
)
