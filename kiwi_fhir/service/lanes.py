"""Two queues by job size, so one large document never holds up small ones.

Before this, every job went through one batcher: a 30 KB note delayed a
one-line request by 35 s, and a 1 MB one held 200 jobs behind it. Jobs
whose stored payload is over ``large_job_bytes`` go to a lane of their own
(one job per batch); everything else keeps the micro-batched lane. Both
lanes share the extractor, whose thread pools take work first come, first
served, window by window: a small note's windows queue behind at most one
batch of a large note's windows, not behind the whole note. With
``large_job_bytes`` 0 there is one lane, as before.
"""

from __future__ import annotations

import asyncio
from collections import ChainMap
from collections.abc import Callable

from kiwi_fhir.extractors.base import Extractor
from kiwi_fhir.service import store
from kiwi_fhir.service.worker import Batcher


class Lanes:
    def __init__(
        self,
        st: store.IntakeStore,
        extractor: Extractor,
        *,
        max_batch: int,
        max_wait_s: float,
        lease_s: float,
        large_job_bytes: int,
        on_batch: Callable[[int, int], None] = lambda size, depth: None,
    ) -> None:
        def report(size: int, _depth: int) -> None:
            on_batch(size, self.depth())

        self.large_job_bytes = large_job_bytes
        self.small = Batcher(st, extractor, max_batch=max_batch, max_wait_s=max_wait_s,
                             on_batch=report, lease_s=lease_s)  # fmt: skip
        self.large = (
            Batcher(st, extractor, max_batch=1, max_wait_s=0, on_batch=report, lease_s=lease_s)
            if large_job_bytes > 0
            else None
        )
        self._lanes = [self.small] + ([self.large] if self.large is not None else [])
        #: Every lane's waiters, by job id (read-only view).
        self.waiters: ChainMap[str, asyncio.Future[store.Job]] = ChainMap(
            *(b.waiters for b in self._lanes)
        )

    def lane_of(self, job: store.Job) -> Batcher:
        if self.large is not None and len(job.payload) > self.large_job_bytes:
            return self.large
        return self.small

    def start(self) -> None:
        for b in self._lanes:
            b.start()

    def depth(self) -> int:
        return sum(b.depth() for b in self._lanes)

    def enqueue(self, job: store.Job) -> asyncio.Future[store.Job]:
        """A future for ``job``'s final state (see ``Batcher.enqueue``)."""
        if (fut := self.waiters.get(job.id)) is not None:
            return fut
        return self.lane_of(job).enqueue(job)

    async def drain(self, timeout: float) -> None:
        await asyncio.gather(*(b.drain(timeout) for b in self._lanes))
