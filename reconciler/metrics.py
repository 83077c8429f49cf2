"""Prometheus metrics of one daemon, in a registry of its own (tests run several daemons)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.pass_duration = Histogram(
            "reconciler_pass_duration_seconds",
            "Duration of reconcile passes",
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.passes = Counter(
            "reconciler_passes", "Reconcile passes by result", ["result"], registry=self.registry
        )
        self.drift = Counter(
            "reconciler_drift_corrections",
            "Drift corrected, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.live_generation = Gauge(
            "reconciler_live_generation", "Live settings generation", registry=self.registry
        )
        self.applied_generation = Gauge(
            "reconciler_applied_generation",
            "Generation the last successful pass applied",
            registry=self.registry,
        )
        self.commits = Counter("reconciler_commits", "Settings commits", registry=self.registry)
        self.requests = Counter(
            "reconciler_api_requests", "API requests", ["method", "status"], registry=self.registry
        )

        self.git_sync_duration = Histogram(
            "reconciler_git_sync_duration_seconds", "Duration of git syncs",
            registry=self.registry, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
        )
        self.git_sync_failures = Counter("reconciler_git_sync_failures", "Failed git syncs",
                                         ["condition"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
