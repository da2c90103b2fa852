"""Prometheus metrics for `GET /metrics`: jobs by status, job timings and HTTP latency.

Each `Metrics` has its own `CollectorRegistry` rather than prometheus_client's global one: a
process may build many apps (the tests build one per test) and the global registry refuses a
second metric of the same name ("Duplicated timeseries").

Label values are kept to small fixed sets so a client cannot blow up the series count: HTTP
requests are labelled with the route template (`/jobs/{job_id}`), never the raw path, and
everything that matched no route is `other`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler import statuses
from scheduler.admission.throughput import CLASSES as DEVICE_CLASSES

log = logging.getLogger(__name__)

UNMATCHED_ROUTE = "other"

# a tiny render takes ~0.05 s, the job timeout is 10 min, a queue can back up for an hour
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
# most requests take ms; ?wait= long-polls hold a request for up to a minute
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _JobCountsCollector(Collector):
    """Reads the job counts at scrape time, so the gauge is never stale and needs no updates."""

    def __init__(self, job_counts: Callable[[], dict[str, int]]) -> None:
        self._job_counts = job_counts

    def describe(self) -> Iterator[Metric]:
        """Names only, so registering never calls job_counts (the DB may not exist yet)."""
        yield GaugeMetricFamily("fractal_jobs", "Jobs by status", labels=["status"])

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self._job_counts()
        except Exception:  # a DB hiccup must not fail the whole scrape; the gauge is just absent
            log.exception("could not count jobs for the metrics scrape")
            return
        family = GaugeMetricFamily("fractal_jobs", "Jobs by status", labels=["status"])
        for status in statuses.ALL:
            family.add_metric([status], counts.get(status, 0))
        yield family


class _QueueCollector(Collector):
    """Queued jobs per device class, as the dispatcher's latest plan placed them."""

    def __init__(self, queue_lengths: Callable[[], dict[str, int]]) -> None:
        self._queue_lengths = queue_lengths

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("fractal_queue_length", "Queued jobs by device class", labels=["class"])

    def collect(self) -> Iterator[Metric]:
        lengths = self._queue_lengths()
        family = GaugeMetricFamily("fractal_queue_length", "Queued jobs by device class", labels=["class"])
        for device_class in DEVICE_CLASSES:
            family.add_metric([device_class], lengths.get(device_class, 0))
        yield family


class Metrics:
    """The service's metrics on a registry of their own; `render()` is the scrape's body."""

    def __init__(self, job_counts: Callable[[], dict[str, int]],
                 queue_lengths: Callable[[], dict[str, int]] = dict) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_JobCountsCollector(job_counts))
        self.registry.register(_QueueCollector(queue_lengths))
        self.jobs_admitted = Counter(
            "fractal_jobs_admitted", "Jobs admitted to a device class", ["class"], registry=self.registry
        )
        self.job_wait = Histogram(
            "fractal_job_wait_seconds",
            "Time jobs waited for admission (created to admitted), by device class",
            ["class"],
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )
        self.jobs_submitted = Counter(
            "fractal_jobs_submitted", "Jobs accepted by POST /jobs", registry=self.registry
        )
        self.results_reused = Counter(
            "fractal_results_reused",
            "Jobs served from another job's render of the same frame: `hit` (one that had succeeded) or "
            "`merged` (one still running, followed to its end)",
            ["outcome"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "fractal_job_duration_seconds",
            "Run time of finished jobs (started to finished), by final status",
            ["status"],
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )
        self.job_queue = Histogram(
            "fractal_job_queue_seconds",
            "Time jobs waited before starting (created to started)",
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by method, route template and status code",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )

    def job_submitted(self) -> None:
        self.jobs_submitted.inc()

    def result_reused(self, outcome: str) -> None:
        self.results_reused.labels(outcome).inc()

    def job_admitted(self, device_class: str, waited_seconds: float | None) -> None:
        label = device_class if device_class in DEVICE_CLASSES else "other"
        self.jobs_admitted.labels(label).inc()
        if waited_seconds is not None:
            self.job_wait.labels(label).observe(max(0.0, waited_seconds))

    def job_started(self, queued_seconds: float) -> None:
        self.job_queue.observe(max(0.0, queued_seconds))  # clock skew between hosts must not go negative

    def job_finished(self, status: str, run_seconds: float | None) -> None:
        """Observe a finished job's run time; a job that never started (None) has none to observe."""
        if run_seconds is None:
            return
        label = status if status in statuses.ALL else "other"
        self.job_duration.labels(status=label).observe(max(0.0, run_seconds))

    def observe_request(self, method: str, route: str, status_code: int, seconds: float) -> None:
        self.http_duration.labels(method=method, route=route, status=str(status_code)).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# methods outside this set (any token is valid HTTP) are folded into one label value
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    """Times every HTTP request and labels it with the matched route's template.

    Pure ASGI (not BaseHTTPMiddleware) so responses pass through untouched: nothing is
    buffered and streamed results stay streamed. The router records the matched route in the
    shared scope (`scope["route"]`), which is read after the inner app has run.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status_code = 500  # what a client sees when the app fails before answering
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            status_code = 500
            raise
        finally:
            method = scope.get("method", "GET")
            self.metrics.observe_request(
                method if method in _METHODS else "other",
                route_template(scope),
                status_code,
                time.perf_counter() - started,
            )


def route_template(scope: Scope) -> str:
    """The matched route's path template, or `other` when no route matched."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE
