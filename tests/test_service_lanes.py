"""One large note must not hold up small ones (service hardening item 10).

Real packaged model, in-process service: a 60 KB note is submitted, then a
one-line note; with the size lanes the small one is answered first, with
one lane (``large_job_bytes: 0``, the old behaviour) it waits behind.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kiwi_fhir.service import intake, store
from kiwi_fhir.service.app import Service
from kiwi_fhir.service.settings import load_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "note.txt"


def _finish_order(tmp_path: Path, large_job_bytes: int) -> list[str]:
    base = EXAMPLE.read_text(encoding="utf-8").strip()
    big = "\n\n".join([base] * (60 * 1024 // len(base)))

    async def scenario() -> list[str]:
        settings = load_settings(None, grpc_port=None, mllp_port=None, http_port=None,
                                 db=f"sqlite:///{tmp_path / f'l{large_job_bytes}.db'}",
                                 large_job_bytes=large_job_bytes)  # fmt: skip
        svc = Service(settings)
        await svc.start()
        order: list[str] = []
        try:
            large = await svc.submit(intake.text_job(big, "p", "", "big", "grpc"))
            await asyncio.sleep(0.2)  # the large job is being extracted
            small = await svc.submit(intake.text_job("Fever and cough.", "p", "", "s", "grpc"))
            t0 = time.monotonic()

            async def wait(name: str, sub: object) -> None:
                job = await svc.result(sub, 120)  # type: ignore[arg-type]
                assert job.status == store.DONE
                order.append(name)

            await asyncio.gather(wait("large", large), wait("small", small))
            assert time.monotonic() - t0 < 120
        finally:
            await svc.stop()
        return order

    return asyncio.run(scenario())


@pytest.mark.slow
def test_small_note_is_answered_before_a_large_one_in_progress(tmp_path: Path) -> None:
    assert _finish_order(tmp_path, 16 * 1024) == ["small", "large"]
    # The same scenario on one lane shows what the lanes fix.
    assert _finish_order(tmp_path, 0) == ["large", "small"]
