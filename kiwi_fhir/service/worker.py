"""Micro-batcher: many callers' jobs become few extractor calls.

Jobs wait in a bounded queue; the loop takes the first, then whatever else
arrives within ``max_wait`` (up to ``max_batch``) and runs parse ->
extract -> Bundle for the whole batch in one worker thread, so the event
loop never blocks on inference. While a batch runs the next one fills,
and Bundles of one batch are built (second thread) while the next is
inferred: that is where the throughput under load comes from.

A batch that fails as a whole is retried one job at a time, so one poison
document fails only itself. A backend that is down (``BackendError``,
``ModelError``) fails no job: waiters get UNAVAILABLE and the batch is
re-queued with exponential backoff. Results are written in one transaction per
batch; only then are waiters woken, so an answer always matches the store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kiwi_fhir.core import Document, Extraction
from kiwi_fhir.errors import BackendError, KiwiError, ModelError
from kiwi_fhir.extractors.base import Extractor
from kiwi_fhir.fhir import to_bundle
from kiwi_fhir.fhir.bundle import validate_bundle
from kiwi_fhir.fhir.mapping import load_mapping
from kiwi_fhir.fhir.retire import retire
from kiwi_fhir.serialize import to_dict
from kiwi_fhir.service import intake, store
from kiwi_fhir.service.status import public_message

log = logging.getLogger(__name__)
_Inferred = tuple[store.Job, "list[Extraction] | Exception"]
#: The extractor itself is down (remote backend, model gone), not the document.
_BACKEND_DOWN = (BackendError, ModelError)
_MAX_BACKOFF_S = 30.0


def _suspect(job: store.Job) -> bool:
    return job.status == store.PROCESSING and job.attempts > 0


def consume_result(fut: asyncio.Future[store.Job]) -> None:
    """Done-callback for futures nobody may await (MLLP, replays): no asyncio warning."""
    if not fut.cancelled():
        fut.exception()


class Batcher:
    def __init__(
        self,
        st: store.IntakeStore,
        extractor: Extractor,
        *,
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int, int], None] = lambda size, depth: None,
        lease_s: float = 300.0,
    ) -> None:
        self.store = st
        self.extractor = extractor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue: asyncio.Queue[store.Job] = asyncio.Queue()
        self.waiters: dict[str, asyncio.Future[store.Job]] = {}
        self._on_batch = on_batch
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="kiwi-infer")
        self._post_pool = ThreadPoolExecutor(1, thread_name_prefix="kiwi-bundle")
        self._post_slots = asyncio.Semaphore(2)
        self._posts: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._backoff = 0
        self.lease_s = lease_s
        #: Jobs an earlier attempt did not finish (the process died in it): each
        #: runs in a batch of its own, so a poison document takes down only itself.
        self._alone: collections.deque[store.Job] = collections.deque()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="kiwi-batcher")

    def depth(self) -> int:
        return self.queue.qsize() + len(self._alone)

    def enqueue(self, job: store.Job) -> asyncio.Future[store.Job]:
        """A future for ``job``'s final state; one per job however many callers ask.

        Never refuses: the job is already stored, so admission control happens
        before storing (``Service.submit`` checks ``depth()``).
        """
        if (fut := self.waiters.get(job.id)) is not None:
            return fut
        fut = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(job)
        self.waiters[job.id] = fut
        return fut

    async def drain(self, timeout: float) -> None:
        """Finish what is queued (graceful shutdown), then stop the loop."""
        deadline = time.monotonic() + timeout
        while self.waiters and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*list(self._posts), return_exceptions=True)
        self._infer_pool.shutdown(wait=True)
        self._post_pool.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = self._alone.popleft() if self._alone else await self.queue.get()
            batch = [first]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch and not _suspect(first):
                if not self.queue.empty():
                    job = self.queue.get_nowait()
                elif (left := deadline - loop.time()) <= 0:
                    break
                else:
                    try:
                        job = await asyncio.wait_for(self.queue.get(), left)
                    except TimeoutError:
                        break
                if _suspect(job):
                    self._alone.append(job)
                else:
                    batch.append(job)
            self._on_batch(len(batch), self.depth())
            ids = [j.id for j in batch]
            try:
                await asyncio.to_thread(self.store.mark_processing, ids, self.lease_s)
                inferred = await loop.run_in_executor(self._infer_pool, self._infer, batch)
            except _BACKEND_DOWN as exc:  # not the jobs' fault: callers hear UNAVAILABLE
                self._fail(batch, exc)
                with contextlib.suppress(KiwiError):  # the claim does not count as an attempt
                    await asyncio.to_thread(self.store.release, ids)
                self._retry_later(batch)
                continue
            except Exception as exc:  # the loop must outlive any one batch
                self._fail(batch, exc)
                continue
            self._backoff = 0
            # Bundles and the store write overlap the next batch's inference.
            await self._post_slots.acquire()
            task = asyncio.create_task(self._post(inferred))
            self._posts.add(task)
            task.add_done_callback(self._posts.discard)

    def _retry_later(self, batch: list[store.Job]) -> None:
        """Re-queue after an exponential backoff; callers that retry meanwhile join in."""
        delay = min(_MAX_BACKOFF_S, 0.5 * 2**self._backoff)
        self._backoff += 1
        log.warning("backend unavailable; retrying %d job(s) in %.1f s", len(batch), delay)

        def requeue() -> None:
            for job in batch:
                if job.id not in self.waiters:
                    self.enqueue(job).add_done_callback(consume_result)

        asyncio.get_running_loop().call_later(delay, requeue)

    def _fail(self, jobs: list[store.Job], exc: Exception) -> None:
        """Store down: the jobs stay received/processing and are replayed on restart."""
        log.error("batch of %d not recorded: %s", len(jobs), public_message(exc))
        for job in jobs:
            fut = self.waiters.pop(job.id, None)
            if fut is not None and not fut.done():
                fut.set_exception(exc)

    async def _post(self, inferred: list[_Inferred]) -> None:
        loop = asyncio.get_running_loop()
        try:
            outcomes = await loop.run_in_executor(
                self._post_pool, _outcomes, inferred, self.store
            )
            finished = await asyncio.to_thread(self.store.finish, outcomes)
        except Exception as exc:
            self._fail([job for job, _ in inferred], exc)
            return
        finally:
            self._post_slots.release()
        for job in finished:
            fut = self.waiters.pop(job.id, None)
            if fut is not None and not fut.done():
                fut.set_result(job)

    def _infer(self, batch: list[store.Job]) -> list[_Inferred]:
        """Runs in the inference thread: parse and extract the whole batch in one call."""
        parsed: list[tuple[store.Job, list[Document]]] = []
        failed: list[_Inferred] = []
        for job in batch:
            try:
                parsed.append((job, intake.documents(job)))
            except KiwiError as exc:
                failed.append((job, exc))
        docs = [d for _, ds in parsed for d in ds]
        try:
            extractions = self.extractor.extract(docs) if docs else []
        except _BACKEND_DOWN:
            raise
        except Exception:  # isolate the poison document: one job at a time
            return failed + [(job, self._one(job, ds)) for job, ds in parsed]
        out: list[_Inferred] = []
        i = 0
        for job, ds in parsed:
            out.append((job, extractions[i : i + len(ds)]))
            i += len(ds)
        return failed + out

    def _one(self, job: store.Job, docs: list[Document]) -> list[Extraction] | Exception:
        try:
            return self.extractor.extract(docs)
        except _BACKEND_DOWN:
            raise
        except Exception as exc:
            log.warning("job %s failed in extraction (%s)", job.id, type(exc).__name__)
            return exc


def _outcomes(
    inferred: list[_Inferred], jobs: store.IntakeStore | None = None
) -> list[store.JobOutcome]:
    """Runs in the post-processing thread: Bundles and result JSON."""
    out: list[store.JobOutcome] = []
    for job, got in inferred:
        if isinstance(got, Exception):
            out.append(store.JobOutcome(job.id, store.FAILED, public_message(got)))
            continue
        previous = previous_bundle(jobs, job, got) if jobs is not None else None
        try:
            result = result_json(got, previous)
        except Exception as exc:
            log.warning("job %s failed building its Bundle (%s)", job.id, type(exc).__name__)
            out.append(store.JobOutcome(job.id, store.FAILED, public_message(exc)))
            continue
        model, backend = (got[0].model, got[0].backend) if got else ("", "")
        out.append(store.JobOutcome(job.id, store.DONE, None, result, model, backend))
    return out


def previous_bundle(
    jobs: store.IntakeStore, job: store.Job, extractions: list[Extraction]
) -> dict[str, Any] | None:
    """The Bundle the store kept for the version of this job's note that it
    supersedes (an edit, a replacement, a new FHIR version), or None.

    Only a job holding one note is linked: which note of a batch replaces
    which earlier one is not something the store records."""
    if len(extractions) != 1:
        return None
    key = intake.previous_key(job.owner or "", extractions[0].document.source)
    prev = jobs.previous_version(key, job) if key is not None else None
    if prev is None or not prev.result:
        return None
    bundle = json.loads(prev.result).get("bundle")
    return bundle if isinstance(bundle, dict) and bundle else None


def result_json(extractions: list[Extraction], previous: dict[str, Any] | None = None) -> str:
    """One Bundle for the whole job (entries of every note) plus the structured results.

    With ``previous`` (the Bundle of the version this note supersedes), the
    resources it made and this one does not are retired (:mod:`kiwi_fhir.fhir.retire`).
    """
    bundle: dict[str, Any] | None = None
    for ex in extractions:
        b = to_bundle(ex)
        if bundle is None:
            bundle = b
        else:  # notes about one patient share its Patient entry (one fullUrl each)
            seen = {e["fullUrl"] for e in bundle["entry"]}
            bundle["entry"].extend(e for e in b["entry"] if e["fullUrl"] not in seen)
    system = load_mapping().document_identifier_system
    if bundle is not None and previous is not None and retire(bundle, previous, system):
        validate_bundle(bundle, extractions[0].document.id)
    return json.dumps({"bundle": bundle or {}, "documents": [to_dict(ex) for ex in extractions]},
                      ensure_ascii=False)  # fmt: skip
