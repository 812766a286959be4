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
from typing import Any

from kiwi_fhir.errors import JobTimeoutError, OverloadedError
from kiwi_fhir.extractors.base import Extractor
from kiwi_fhir.service import store
from kiwi_fhir.service.metrics import Metrics
from kiwi_fhir.service.settings import ServiceSettings
from kiwi_fhir.service.worker import Batcher, consume_result

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
        if extractor is None:
            from kiwi_fhir.extractors.onnx import OnnxExtractor

            extractor = OnnxExtractor(settings.model_dir, threads=settings.threads)
        self.extractor = extractor
        self.batcher: Batcher | None = None
        self._listeners: list[Any] = []
        self.ports: dict[str, int] = {}

    async def start(self) -> dict[str, int]:
        s = self.settings
        await asyncio.to_thread(self.store.migrate)
        await asyncio.to_thread(self.extractor.load)
        self.batcher = Batcher(self.store, self.extractor, max_batch=s.batch_max_size,
                               max_wait_s=s.batch_max_wait_ms / 1000,
                               on_batch=self.metrics.on_batch)  # fmt: skip
        self.batcher.start()
        pending = await asyncio.to_thread(self.store.pending)
        for job in pending:
            self.batcher.enqueue(job).add_done_callback(consume_result)
        if pending:
            log.info("re-queued %d job(s) left unfinished by the previous run", len(pending))
        self.metrics.watch_jobs(self.store.counts)
        if s.grpc_port is not None:
            from kiwi_fhir.service.grpc_server import GrpcServer

            g = GrpcServer(self)
            await g.start()
            self._listeners.append(g)
            self.ports["grpc"] = g.port
        if s.mllp_port is not None:
            from kiwi_fhir.service.mllp import MllpServer

            m = MllpServer(self)
            await m.start()
            self._listeners.append(m)
            self.ports["mllp"] = m.port
        if s.http_port is not None:
            self.ports["http"] = self.metrics.serve(s.host, s.http_port)
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
        job, created = await asyncio.to_thread(self.store.submit, new)
        if job.status in (store.DONE, store.FAILED):
            return Submission(job, not created, None)
        fut = self.batcher.enqueue(job)
        fut.add_done_callback(consume_result)
        return Submission(job, not created, fut)

    async def result(self, sub: Submission, timeout: float | None) -> store.Job:
        if sub.future is None:
            return sub.job
        try:
            return await asyncio.wait_for(asyncio.shield(sub.future), timeout)
        except TimeoutError as exc:
            raise JobTimeoutError(sub.job.id) from exc

    async def get(self, job_id: str) -> store.Job:
        return await asyncio.to_thread(self.store.get, job_id)

    async def stop(self) -> None:
        grace = self.settings.drain_timeout_s
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
