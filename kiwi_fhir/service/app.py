"""Wiring of the service: store, extractor, batcher, listeners; start-up and drain.

Start-up order matters for "nothing acknowledged is ever lost": migrate,
load the model, start the batcher, re-queue every job a crash left
``received``/``processing``, and only then open the ports. Shutdown runs it
backwards: health NOT_SERVING, stop accepting, finish in-flight RPCs and
queued jobs (up to ``drain_timeout_s``); whatever is still queued stays
``received`` in the store and is replayed on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kiwi_fhir.errors import (
    JobNotFoundError,
    JobTimeoutError,
    KiwiError,
    OverloadedError,
    PayloadTooLargeError,
)
from kiwi_fhir.extractors.base import Extractor
from kiwi_fhir.service import store
from kiwi_fhir.service.lanes import Lanes
from kiwi_fhir.service.metrics import Metrics
from kiwi_fhir.service.settings import ServiceSettings
from kiwi_fhir.service.status import public_message
from kiwi_fhir.service.worker import consume_result

if TYPE_CHECKING:
    from kiwi_fhir.service.subscription_worker import SubscriptionWorker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    job: store.Job
    duplicate: bool
    future: asyncio.Future[store.Job] | None  # None when the stored job is already final


class Service:
    def __init__(self, settings: ServiceSettings, extractor: Extractor | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.store = store.IntakeStore(settings.db)
        if extractor is None:  # chosen by settings.backend; a missing extra fails here
            from kiwi_fhir.extractors.registry import extractor_from_settings

            extractor = extractor_from_settings(settings)
        if settings.terminology:  # codes on every backend's results, before they are stored
            from kiwi_fhir.terminology import CodingOptions
            from kiwi_fhir.terminology.extractor import CodingExtractor

            options = CodingOptions(settings.terminology_embedding, settings.terminology_candidates)
            extractor = CodingExtractor(extractor, options)
        self.extractor = extractor
        self.batcher: Lanes | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._reclaim_task: asyncio.Task[None] | None = None
        self.subscription_worker: SubscriptionWorker | None = None
        self._listeners: list[Any] = []
        self.ports: dict[str, int] = {}

    async def start(self) -> dict[str, int]:
        s = self.settings
        await asyncio.to_thread(self.store.migrate)
        await asyncio.to_thread(self.extractor.load)
        self.batcher = Lanes(self.store, self.extractor, max_batch=s.batch_max_size,
                             max_wait_s=s.batch_max_wait_ms / 1000, lease_s=s.job_lease_s,
                             large_job_bytes=s.large_job_bytes,
                             on_batch=self.metrics.on_batch)  # fmt: skip
        self.batcher.start()
        pending = await asyncio.to_thread(self.store.pending)
        requeued = 0
        for job in pending:
            if job.kind != store.FHIRREF:  # those wait for their fetch (subscription worker)
                requeued += await self._recover(job)
        if pending:
            log.info("re-queued %d job(s) left unfinished by the previous run", requeued)
        self._reclaim_task = asyncio.create_task(self._reclaim_loop(), name="kiwi-reclaim")
        self.metrics.watch_jobs(self.store.counts)
        if s.fhir_base_url is not None:
            from kiwi_fhir.service.fhir_client import FhirClient
            from kiwi_fhir.service.subscription_worker import SubscriptionWorker

            self.subscription_worker = SubscriptionWorker(s, self.store, FhirClient(s),
                                                          self._enqueue)  # fmt: skip
            self.subscription_worker.start()
        if s.grpc_port is not None:
            from kiwi_fhir.service.grpc_server import GrpcServer

            g = GrpcServer(self)
            await g.start()
            self._listeners.append(g)
            self.ports["grpc"] = g.port
            self._health_task = asyncio.create_task(self._watch_backend(g), name="kiwi-health")
        if s.mllp_port is not None:
            from kiwi_fhir.service.mllp import MllpServer

            m = MllpServer(self)
            await m.start()
            self._listeners.append(m)
            self.ports["mllp"] = m.port
        if s.http_port is not None:
            from kiwi_fhir.service.http_app import HttpServer

            h = HttpServer(self)
            await h.start()
            self._listeners.append(h)
            self.ports["http"] = h.port
        if s.ready_file is not None:
            tmp = s.ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.ports), encoding="utf-8")
            tmp.replace(s.ready_file)
        log.info("kiwi-fhir serving on %s %s", s.host, self.ports)
        return self.ports

    async def submit(self, new: store.NewJob) -> Submission:
        """Store ``new`` durably (or find its twin) and queue it; returns once stored."""
        assert self.batcher is not None, "service not started"
        if self.batcher.depth() >= self.settings.queue_max:
            raise OverloadedError("intake queue is full; retry later")
        if new.longest_note > self.settings.max_note_bytes:
            raise PayloadTooLargeError(new.longest_note, self.settings.max_note_bytes, "note")
        job, created = await asyncio.to_thread(self.store.submit, new)
        if job.status in (store.DONE, store.FAILED):
            return Submission(job, not created, None)
        fut = self.batcher.enqueue(job)
        fut.add_done_callback(consume_result)
        return Submission(job, not created, fut)

    def _enqueue(self, job: store.Job) -> None:
        """Queue a stored job; a subscription job wakes the write-back when it ends."""
        assert self.batcher is not None, "service not started"
        fut = self.batcher.enqueue(job)
        fut.add_done_callback(consume_result)
        if job.source == store.SUBSCRIPTION and self.subscription_worker is not None:
            worker = self.subscription_worker
            fut.add_done_callback(lambda _f: worker.wake())

    async def _recover(self, job: store.Job) -> int:
        """Queue a job found unfinished, or fail it as poison after ``max_attempts``."""
        if job.attempts >= self.settings.max_attempts:
            reason = (f"gave up after {job.attempts} attempts: the process stopped or the "
                      "extractor failed during each one")  # fmt: skip
            await asyncio.to_thread(self.store.give_up, job.id, reason)
            self.metrics.given_up.inc()
            log.warning("job %s failed as poison after %d attempts", job.id, job.attempts)
            return 0
        self._enqueue(job)
        return 1

    async def _reclaim_loop(self) -> None:
        """Jobs whose worker or waiter was lost (a database outage mid-batch, a
        replica that died) are claimed again once their lease is over; a
        database that is down is retried with backoff, never given up on."""
        s = self.settings
        delay = s.reclaim_interval_s
        while True:
            await asyncio.sleep(delay)
            assert self.batcher is not None
            try:
                found = await asyncio.to_thread(
                    self.store.reclaim, older_than_s=s.job_lease_s,
                    exclude=set(self.batcher.waiters), hold_s=s.job_lease_s)  # fmt: skip
                for job in found:
                    await self._recover(job)
                if found:
                    self.metrics.reclaimed.inc(len(found))
                    log.info("re-claimed %d stale job(s)", len(found))
                delay = s.reclaim_interval_s
            except KiwiError as exc:
                delay = min(60.0, delay * 2)
                log.warning("stale-job check failed (%s); next try in %.0f s",
                            public_message(exc), delay)  # fmt: skip

    async def submit_subscription(self, new: store.NewJob) -> dict[str, Any]:
        """Store a notification's job; references wait for the fetch, resources are queued."""
        if new.kind == store.FHIRREF:
            job, created = await asyncio.to_thread(self.store.submit, new)
        else:
            sub = await self.submit(new)
            job, created = sub.job, not sub.duplicate
        if self.subscription_worker is not None:
            if sub_fut := (self.batcher.waiters.get(job.id) if self.batcher else None):
                worker = self.subscription_worker
                sub_fut.add_done_callback(lambda _f: worker.wake())
            self.subscription_worker.wake()
        return {"id": job.id, "duplicate": not created, "status": job.status}

    async def _watch_backend(self, grpc_server: Any) -> None:
        """Extraction readiness follows the backend: a load balancer can route
        around a replica whose Triton/vLLM is down, while intake (durable) and
        the process itself (health ``""``) stay up."""
        from grpc_health.v1 import health_pb2

        from kiwi_fhir.service.grpc_server import SERVICE

        last: bool | None = None
        while True:
            ok = await asyncio.to_thread(self.extractor.health)
            if ok != last:
                state = health_pb2.HealthCheckResponse.SERVING if ok else (
                    health_pb2.HealthCheckResponse.NOT_SERVING)  # fmt: skip
                await grpc_server.health.set(SERVICE, state)
                if last is not None or not ok:
                    log.warning("extractor backend %s is %s", self.extractor.name,
                                "healthy again" if ok else "unavailable")  # fmt: skip
                last = ok
            await asyncio.sleep(self.settings.backend_health_interval_s)

    async def result(self, sub: Submission, timeout: float | None) -> store.Job:
        if sub.future is None:
            return sub.job
        try:
            return await asyncio.wait_for(asyncio.shield(sub.future), timeout)
        except TimeoutError as exc:
            raise JobTimeoutError(sub.job.id) from exc

    async def get(self, job_id: str, *, owner: str | None = None) -> store.Job:
        """A stored job; with ``owner``, only that caller's (others' look absent)."""
        job = await asyncio.to_thread(self.store.get, job_id)
        if owner is not None and job.owner is not None and job.owner != owner:
            raise JobNotFoundError(job_id)
        return job

    async def stop(self) -> None:
        grace = self.settings.drain_timeout_s
        for task in (self._health_task, self._reclaim_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.subscription_worker is not None:  # its state is in the store: resumes on start
            await self.subscription_worker.stop()
        for listener in reversed(self._listeners):
            await listener.stop(grace)
        if self.batcher is not None:
            await self.batcher.drain(grace)
        self.metrics.close()
        self.extractor.close()
        self.store.close()
        log.info("kiwi-fhir stopped")


async def serve(settings: ServiceSettings) -> None:
    """Run until SIGTERM/SIGINT, then drain."""
    service = Service(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await service.start()
    try:
        await stop.wait()
    finally:
        log.info("shutting down: draining in-flight work")
        await service.stop()
