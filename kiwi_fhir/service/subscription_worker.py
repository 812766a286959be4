"""The two halves of a subscription job that talk to the FHIR server: fetch and write-back.

Both are driven from the store, not from memory: every round asks for the
``fhirref`` jobs and the finished subscription jobs that are due, so a
restart (or a crash between any two steps) just resumes. Failures of the
FHIR server park the job with ``next_attempt_at`` (exponential backoff,
capped) and the error in the job row -- visible in ``GET /jobs/{id}`` and in
the ``kiwi_fhir_jobs`` metric -- and nothing is ever dropped. Only an answer
that retrying cannot change (4xx, an unreadable document) ends a job as
failed.

Write-back posts the job's transaction Bundle as built by the worker: every
resource is a conditional create (``ifNoneExist: identifier=...``) and the
Provenance a PUT to a stable id, so re-sending it -- after a timeout whose
answer we never saw, or for a repeated notification -- creates nothing twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from kiwi_fhir.errors import (
    FhirInputError,
    FhirServerRejectedError,
    KiwiError,
    PayloadTooLargeError,
    ServiceError,
)
from kiwi_fhir.inputs import parse_document_reference
from kiwi_fhir.service import intake, store
from kiwi_fhir.service.fhir_client import FhirClient
from kiwi_fhir.service.fhir_fetch import binary_content
from kiwi_fhir.service.settings import ServiceSettings
from kiwi_fhir.service.status import public_message
from kiwi_fhir.service.subscriptions import fetch_job

log = logging.getLogger(__name__)
_POLL_S: Final = 1.0


class SubscriptionWorker:
    def __init__(self, settings: ServiceSettings, st: store.IntakeStore, client: FhirClient,
                 enqueue: Callable[[store.Job], None]) -> None:  # fmt: skip
        self.settings = settings
        self.store = st
        self.client = client
        self._enqueue = enqueue  # hands a resolved job to the batcher
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="kiwi-subscriptions")

    def wake(self) -> None:
        """Something became due (a notification was stored, a batch finished)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.client.close()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.round()
            except Exception as exc:  # store down: try again next round
                log.error("subscription round failed: %s", public_message(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _POLL_S)

    async def round(self) -> None:
        for job in await asyncio.to_thread(self.store.due_fetches):
            await self._fetch(job)
        for job in await asyncio.to_thread(self.store.due_writebacks):
            await self._write_back(job)

    def _next(self, attempts: int) -> datetime:
        s = self.settings
        delay = min(s.fhir_retry_max_s, s.fhir_retry_base_s * 2 ** max(attempts, 0))
        return datetime.now(UTC) + timedelta(seconds=delay)

    async def _fetch(self, job: store.Job) -> None:
        task = json.loads(job.payload)
        try:
            if "search" in task:
                await self._search(job, str(task["search"]))
                return
            res = task.get("resource") or await self.client.read(str(task["reference"]))
            if not isinstance(res, dict) or res.get("resourceType") != "DocumentReference":
                raise FhirInputError("resourceType", "focus is not a DocumentReference",
                                     source="fetched resource")  # fmt: skip
            await self._inline(res)
            new = intake.docref_job(json.dumps(res), store.SUBSCRIPTION)
            limit = self.settings.max_note_bytes
            if new.longest_note > limit:  # the same note limit as every other channel
                raise PayloadTooLargeError(new.longest_note, limit, "note")
            await asyncio.to_thread(parse_document_reference, res)  # refuse unreadable now
        except (FhirServerRejectedError, FhirInputError, PayloadTooLargeError) as exc:
            # retrying cannot help
            await self._give_up(job, exc)
            return
        except ServiceError as exc:
            at = self._next(job.attempts)
            log.warning("fetch for job %s failed (%s); retry at %s", job.id, exc, at.isoformat())
            await asyncio.to_thread(self.store.retry_at, job.id, public_message(exc), at,
                                    writeback=False)  # fmt: skip
            return
        resolved = await asyncio.to_thread(self.store.resolve, job.id, new)
        if resolved is None:
            log.info("job %s: that document version is already processed", job.id)
        else:
            self._enqueue(resolved)

    async def _search(self, job: store.Job, query: str) -> None:
        """An ``empty`` notification: every DocumentReference the search finds becomes a job."""
        found = await self.client.search(query)
        for res in found:
            if res.get("resourceType") != "DocumentReference":
                continue
            ref = f"DocumentReference/{res.get('id')}"
            version = (res.get("meta") or {}).get("versionId", "")
            new = fetch_job({"reference": ref, "resource": res}, key=f"{ref}|{version}")
            await asyncio.to_thread(self.store.submit, new)  # a known version: a duplicate
        self._wake.set()
        await asyncio.to_thread(self.store.finish, [store.JobOutcome(job.id, store.DONE)])
        await asyncio.to_thread(self.store.writeback_finished, job.id, store.DONE)

    async def _inline(self, res: dict[str, Any]) -> None:
        """Attachments given by URL on our server are fetched (with our auth) into ``data``."""
        for item in res.get("content") or []:
            att = item.get("attachment") if isinstance(item, dict) else None
            if not isinstance(att, dict) or "data" in att or not isinstance(att.get("url"), str):
                continue
            if not self.client.owns(att["url"]):
                continue  # never send our credentials elsewhere; the parser reports it
            data, ctype = binary_content(
                *await self.client.binary(att["url"], att.get("contentType") or "*/*")
            )
            att["data"] = base64.b64encode(data).decode("ascii")
            att.setdefault("contentType", ctype or "text/plain")

    async def _give_up(self, job: store.Job, exc: KiwiError) -> None:
        log.warning("job %s failed: %s", job.id, public_message(exc))
        failed = store.JobOutcome(job.id, store.FAILED, public_message(exc))
        await asyncio.to_thread(self.store.finish, [failed])
        await asyncio.to_thread(self.store.writeback_finished, job.id, store.SKIPPED)

    async def _write_back(self, job: store.Job) -> None:
        if job.status == store.FAILED:  # nothing to write; the job's error says why
            await asyncio.to_thread(self.store.writeback_finished, job.id, store.SKIPPED)
            return
        bundle = json.loads(job.result or "{}").get("bundle") or {}
        if not bundle.get("entry"):
            await asyncio.to_thread(self.store.writeback_finished, job.id, store.DONE)
            return
        try:
            limit = self.settings.fhir_transaction_max_entries
            created = await write_transaction(self.client, bundle["entry"], limit)
        except FhirServerRejectedError as exc:
            log.error("write-back of job %s refused: %s", job.id, exc)
            await asyncio.to_thread(self.store.writeback_finished, job.id, store.FAILED,
                                    public_message(exc))  # fmt: skip
            return
        except ServiceError as exc:
            at = self._next(job.writeback_attempts)
            log.warning("write-back of job %s failed (%s); retry at %s", job.id, exc,
                        at.isoformat())  # fmt: skip
            await asyncio.to_thread(self.store.retry_at, job.id, public_message(exc), at,
                                    writeback=True)  # fmt: skip
            return
        log.info("job %s written back: %d created, %d already there", job.id, created,
                 len(bundle["entry"]) - created)  # fmt: skip
        await asyncio.to_thread(self.store.writeback_finished, job.id, store.DONE)


async def write_transaction(client: FhirClient, entries: list[dict[str, Any]],
                            max_entries: int) -> int:  # fmt: skip
    """POST ``entries`` as one transaction, or as consecutive ones of ``max_entries``.

    Split, later parts may point at resources of earlier ones by ``urn:uuid``:
    those references are rewritten to where the server put (or found) them.
    The Provenance comes last in our bundles, so it sees every target resolved.
    Returns how many resources the server created (201).
    """
    size = max_entries or len(entries)
    resolved: dict[str, str] = {}
    created = 0
    for i in range(0, len(entries), size):
        text = json.dumps(entries[i : i + size])
        for urn, ref in resolved.items():
            text = text.replace(f'"{urn}"', json.dumps(ref))
        part = json.loads(text)
        reply = await client.transaction({"resourceType": "Bundle", "type": "transaction",
                                          "entry": part})  # fmt: skip
        for sent, got in zip(part, reply.get("entry") or [], strict=False):
            resp = got.get("response") or {}
            created += str(resp.get("status", "")).startswith("201")
            loc = str(resp.get("location") or "").split("/_history")[0].split("/")
            if len(loc) >= 2 and str(sent.get("fullUrl", "")).startswith("urn:"):
                resolved[sent["fullUrl"]] = "/".join(loc[-2:])
    return created
