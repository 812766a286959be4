"""One large note must not hold up small ones (service hardening item 10).

In-process service on the packaged model. The large job's extraction is
made to last 3 s longer than it does (a stand-in for a long note on a slow
CPU, so timings do not depend on the machine); a one-line note submitted
while it runs is answered within a second with the size lanes, and only
after the large job's extraction with one lane (``large_job_bytes: 0``,
the old behaviour).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from kiwi_fhir.core import Document, Entity, Extraction
from kiwi_fhir.extractors.onnx import OnnxExtractor
from kiwi_fhir.service import intake, store
from kiwi_fhir.service.app import Service
from kiwi_fhir.service.settings import load_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "note.txt"
SLOW_S = 3.0


class SlowOnLongNotes(OnnxExtractor):
    def extract(
        self,
        documents: Sequence[Document],
        given_entities: Sequence[Sequence[Entity] | None] | None = None,
    ) -> list[Extraction]:
        out = super().extract(documents, given_entities)
        if any(len(d.text) > 16 * 1024 for d in documents):
            time.sleep(SLOW_S)
        return out


def _small_latency(tmp_path: Path, large_job_bytes: int) -> float:
    base = EXAMPLE.read_text(encoding="utf-8").strip()
    big = "\n\n".join([base] * (20 * 1024 // len(base)))
    assert len(big.encode()) > 16 * 1024

    async def scenario() -> float:
        settings = load_settings(None, grpc_port=None, mllp_port=None, http_port=None,
                                 db=f"sqlite:///{tmp_path / f'l{large_job_bytes}.db'}",
                                 large_job_bytes=large_job_bytes)  # fmt: skip
        svc = Service(settings, extractor=SlowOnLongNotes(threads=2))
        await svc.start()
        try:
            large = await svc.submit(intake.text_job(big, "p", "", "big", "grpc"))
            await asyncio.sleep(0.3)  # the large job is being extracted
            t0 = time.monotonic()
            small = await svc.submit(intake.text_job("Fever and cough.", "p", "", "s", "grpc"))
            assert small.future is not None and large.future is not None
            assert (await svc.result(small, 60)).status == store.DONE
            latency = time.monotonic() - t0
            assert (await svc.result(large, 60)).status == store.DONE
        finally:
            await svc.stop()
        return latency

    return asyncio.run(scenario())


@pytest.mark.slow
def test_small_note_is_not_held_up_by_a_large_one_in_progress(tmp_path: Path) -> None:
    assert _small_latency(tmp_path, 16 * 1024) < 1.5
    # The same scenario on one lane shows what the lanes fix.
    assert _small_latency(tmp_path, 0) > SLOW_S - 0.5
