"""Prometheus metrics, one registry per application (no process globals).

Request metrics are updated by the HTTP middleware; everything about state (agents by
status, log and snapshot indexes, events applied, MeshJobs and what their events did) is read
from the state machine at scrape time by a collector, so the write path does no metrics work at
all.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from registry.commit import StateMachine
from registry.jobs import STATUSES
from registry.view import HEALTHY, UNHEALTHY

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StateCollector(Collector):
    def __init__(self, machine: StateMachine) -> None:
        self.machine = machine

    def collect(self) -> Iterator[Metric]:
        view = self.machine.view
        agents = GaugeMetricFamily(
            "mcp_registry_agents_total", "Registered agents by status", labels=["status"]
        )
        counts = Tally(agent.status for agent in view.agents.values())
        for status in (HEALTHY, UNHEALTHY):
            agents.add_metric([status], counts.get(status, 0))
        yield agents
        jobs_by_status = GaugeMetricFamily(
            "mcp_registry_jobs_total", "MeshJobs held, by status", labels=["status"]
        )
        job_counts = Tally(job.status for job in view.jobs.jobs.values())
        for status in STATUSES:
            jobs_by_status.add_metric([status], job_counts.get(status, 0))
        yield jobs_by_status
        # Counted by apply, so every replica reports the same figures, and a restart keeps them.
        done = view.jobs.counts
        yield CounterMetricFamily(
            "mcp_registry_job_claims", "MeshJob claims given (committed)", value=done.claims
        )
        yield CounterMetricFamily(
            "mcp_registry_job_lease_expiries",
            "MeshJob leases the sweep ended (job requeued, or failed with no retry left)",
            value=done.lease_expiries,
        )
        reclaims = CounterMetricFamily(
            "mcp_registry_job_reclaims",
            "MeshJobs taken from their owner and queued again, by cause",
            labels=["cause"],
        )
        for cause, n in sorted(done.reclaims.items()):
            reclaims.add_metric([cause], n)
        yield reclaims
        yield GaugeMetricFamily(
            "mcp_registry_jobs_draining",
            "1 while the registry is draining (no new job claims, cluster-wide)",
            value=int(view.jobs.draining),
        )
        yield GaugeMetricFamily(
            "mcp_registry_log_index",
            "Newest log index applied to this node's view",
            value=view.applied_index,
        )
        yield GaugeMetricFamily(
            "mcp_registry_snapshot_index",
            "Log index covered by the newest view snapshot",
            value=self.machine.snapshot_index,
        )
        yield CounterMetricFamily(
            "mcp_registry_events_appended",
            "Events committed and applied since start",
            value=self.machine.events_applied,
        )


class Metrics:
    """The application's metrics and their Prometheus text rendering."""

    def __init__(self, machine: StateMachine) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created only adds noise
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mcp_registry_requests",
            "HTTP requests handled",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "mcp_registry_errors",
            "Requests answered with an error (4xx or 5xx)",
            registry=self.registry,
        )
        self.duration = Histogram(
            "mcp_registry_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self._per_request: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.refused = Counter(
            "mcp_registry_refused",
            "Requests refused by a limit (registry/limits.py), by the limit",
            ["reason"],
            registry=self.registry,
        )
        self.commit_latency = Histogram(
            "mcp_registry_commit_latency_seconds",
            "Time from proposing an event to having it committed and applied here",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.gc_pause = Histogram(
            "mcp_registry_gc_pause_seconds",
            "Garbage-collector pauses by generation (every thread waits them out)",
            ["generation"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
        )
        self.insecure_key = Gauge(
            "mcp_registry_insecure_key",
            "1 when the cluster runs with the deployment guide's published ENCRYPTION_KEY",
            registry=self.registry,
        )
        self.decider = Gauge(
            "mcp_registry_decider",
            "1 on the replica that decides health, expiry and job sweeps (the Raft leader, "
            "the holder of the PostgreSQL mode's advisory lock, a single node)",
            registry=self.registry,
        )
        self.registry.register(_StateCollector(machine))
        # The standard process_* (CPU, RSS, open files), python_gc_* and python_info series.
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request. The labelled children are kept per (method, route, status):
        ``labels()`` takes a lock and checks its arguments on every call, which was 2% of a
        HEAD heartbeat; the set is bounded because routes are templates."""
        key = (method, route, status)
        children = self._per_request.get(key)
        if children is None:
            children = self.requests.labels(method, route, str(status)), self.duration.labels(route)
            self._per_request[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if status >= 400:
            self.errors.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
