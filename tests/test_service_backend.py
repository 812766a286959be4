"""A backend outage: callers get UNAVAILABLE, no job is failed, work resumes by itself.

In-process service on loopback with an extractor whose backend can be
switched off -- the one fault a real model cannot be made to show on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import grpc

from kiwi_fhir.core import Document, Entity, Extraction
from kiwi_fhir.errors import BackendError
from kiwi_fhir.extractors.base import Extractor
from kiwi_fhir.service import store
from kiwi_fhir.service._generated import extraction_pb2 as pb
from kiwi_fhir.service._generated import extraction_pb2_grpc as pb_grpc
from kiwi_fhir.service.app import Service
from kiwi_fhir.service.settings import load_settings


class SwitchableBackend(Extractor):
    name = "switchable"

    def __init__(self) -> None:
        self.up = False
        self.calls = 0

    def load(self) -> None:
        pass

    def extract(
        self,
        documents: Sequence[Document],
        given_entities: Sequence[Sequence[Entity] | None] | None = None,
    ) -> list[Extraction]:
        self.calls += 1
        if not self.up:
            raise BackendError("inference server unreachable")
        return [Extraction(d, model="m-test", backend="switchable") for d in documents]


def test_backend_down_is_unavailable_then_recovers(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = SwitchableBackend()
        settings = load_settings(None, grpc_port=0, mllp_port=None, http_port=None,
                                 db=f"sqlite:///{tmp_path / 'b.db'}")  # fmt: skip
        svc = Service(settings, extractor=backend)
        ports = await svc.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc']}") as ch:
                stub = pb_grpc.ExtractionServiceStub(ch)  # type: ignore[no-untyped-call]
                req = pb.ExtractTextRequest(text="Outage probe: fever.")
                try:
                    await stub.ExtractText(req, timeout=30)
                    raise AssertionError("expected UNAVAILABLE")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE
                    job_id = dict(exc.initial_metadata() or ())["kiwi-job-id"]
                assert (await svc.get(job_id)).status != store.FAILED
                backend.up = True
                for _ in range(100):  # the backoff re-queue finishes it without a retry
                    if (await svc.get(job_id)).status == store.DONE:
                        break
                    await asyncio.sleep(0.1)
                assert (await svc.get(job_id)).status == store.DONE
                again = await stub.ExtractText(req, timeout=30)
                assert again.job_id == job_id and again.status == pb.JOB_STATUS_DONE
        finally:
            await svc.stop()

    asyncio.run(scenario())
