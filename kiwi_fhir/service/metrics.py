"""Prometheus metrics on a private registry, served on ``--http-port``.

Labels are closed sets (transport, method, status code) -- never ids,
control numbers or anything derived from a payload, so no clinical text
can reach a metrics backend. Jobs by status are read from the store at
scrape time, which makes them correct across restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kiwi_fhir.errors import KiwiError

log = logging.getLogger(__name__)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _JobsCollector(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fam = GaugeMetricFamily("kiwi_fhir_jobs", "Stored intake jobs by status", labels=["status"])
        try:
            for status, n in self._counts().items():
                fam.add_metric([status], n)
        except KiwiError as exc:
            log.warning("jobs metric unavailable: %s", exc)
        yield fam


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("kiwi_fhir_requests", "Requests received",
                                ["transport", "method"], registry=r)  # fmt: skip
        self.errors = Counter("kiwi_fhir_errors", "Requests answered with an error",
                              ["transport", "method", "code"], registry=r)  # fmt: skip
        self.latency = Histogram("kiwi_fhir_request_seconds", "Request latency",
                                 ["transport", "method"], buckets=_LATENCY_BUCKETS,
                                 registry=r)  # fmt: skip
        self.batch_size = Histogram("kiwi_fhir_batch_size", "Jobs per extractor batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)  # fmt: skip
        self.mllp_truncated = Counter("kiwi_fhir_mllp_truncated_frames",
                                      "MLLP frames abandoned by a new start block",
                                      registry=r)  # fmt: skip
        self.refused = Counter("kiwi_fhir_connections_refused",
                               "Connections closed by a limit (max_connections, frame deadline)",
                               ["listener"], registry=r)  # fmt: skip
        self.given_up = Counter("kiwi_fhir_jobs_given_up",
                                "Jobs failed as poison after max_attempts", registry=r)
        self.reclaimed = Counter("kiwi_fhir_jobs_reclaimed",
                                 "Stale jobs claimed again after their lease", registry=r)
        self.queue_depth = Gauge("kiwi_fhir_queue_depth", "Jobs waiting for a batch", registry=r)
        self._server: Any = None

    def watch_jobs(self, counts: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_JobsCollector(counts))

    def on_batch(self, size: int, depth: int) -> None:
        self.batch_size.observe(size)
        self.queue_depth.set(depth)

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP endpoint in a daemon thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
