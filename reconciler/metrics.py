"""Prometheus metrics of one daemon, in a registry of its own (tests run several daemons).

Names follow Prometheus' conventions (``promtool check metrics`` passes): the ``reconciler_``
prefix, base units in the name (``_seconds``), ``_total`` on counters (prometheus_client adds
it), ``code`` for an HTTP status label. ``GET /metrics`` serves them on the API socket, and
``serve --metrics-listen HOST:PORT`` on TCP for a Prometheus server to scrape.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# The classic text format generate_latest writes, under the media type every Prometheus 2.x
# server parses (prometheus_client 0.26's CONTENT_TYPE_LATEST says version=1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.pass_duration = Histogram(
            "reconciler_pass_duration_seconds",
            "Duration of reconcile passes in seconds.",
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.passes = Counter(
            "reconciler_passes", "Reconcile passes, by result (ok, failed).", ["result"],
            registry=self.registry,
        )
        self.drift = Counter(
            "reconciler_drift_corrections",
            "Drift corrected (a file edited by hand, a host container gone), by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.live_generation = Gauge(
            "reconciler_live_generation", "Generation of the live settings.",
            registry=self.registry,
        )
        self.applied_generation = Gauge(
            "reconciler_applied_generation",
            "Generation the last successful pass applied.",
            registry=self.registry,
        )
        self.commits = Counter("reconciler_commits", "Settings commits.", registry=self.registry)
        self.requests = Counter(
            "reconciler_api_requests", "API requests, by method and HTTP status code.",
            ["method", "code"], registry=self.registry,
        )
        self.git_sync_duration = Histogram(
            "reconciler_git_sync_duration_seconds", "Duration of git syncs in seconds.",
            registry=self.registry, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
        )
        self.git_sync_failures = Counter(
            "reconciler_git_sync_failures", "Git syncs that did not apply, by condition.",
            ["condition"], registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
