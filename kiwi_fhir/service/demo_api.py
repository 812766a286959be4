"""The web demo: static page from ``kiwi_fhir/web`` and the one JSON call behind it.

The demo goes through the same durable intake and batcher as gRPC (source
``demo``), so what a person sees is exactly what the service does. The
answer carries the decoded note text: highlights index *that* (after
base64 / HL7 unescaping / HTML conversion), not what was pasted. That
text goes only back to the browser that sent it -- never to a log.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kiwi_fhir.errors import FhirInputError, InvalidFieldError
from kiwi_fhir.inputs import formats, jsonin
from kiwi_fhir.service import intake, store

if TYPE_CHECKING:
    from kiwi_fhir.service.app import Service

WEB: Final = Path(__file__).resolve().parent.parent / "web"
KINDS: Final = ("auto", "text", "docref", "hl7")
_TIMEOUT_S: Final = 120.0


def routes(extract: Callable[[Request], Awaitable[Response]]) -> list[Route | Mount]:
    async def page(_: Request) -> Response:
        return FileResponse(WEB / "index.html", headers={"Cache-Control": "no-store"})

    async def to_page(_: Request) -> Response:
        return RedirectResponse("/demo")

    return [
        Route("/", to_page),
        Route("/demo", page),
        Mount("/demo/assets", StaticFiles(directory=WEB), name="demo-assets"),
        Route("/api/extract", extract, methods=["POST"]),
    ]


def detect(content: str) -> str:
    """What was pasted: FHIR JSON, an HL7 v2 message, or a plain note.

    The registry sniffs the formats in order; HL7 segment lines anywhere (a
    message pasted after a line of prose, or with the MSH missing) count as
    HL7, so a message is refused as HL7 rather than run through NER as a note:
    that made a patient's surname in PID-5 a "problem"."""
    return formats.sniff(content.encode("utf-8")).name


def new_job(content: str, kind: str, principal: str = "") -> store.NewJob:
    if kind not in KINDS:
        raise InvalidFieldError("kind", f"expected one of {', '.join(KINDS)}")
    kind = detect(content) if kind == "auto" else kind
    if kind == intake.DOCREF:
        return intake.docref_job(content, "demo", principal)
    if kind == intake.HL7:
        raw = content.replace("\r\n", "\r").replace("\n", "\r").strip("\x0b\x1c")
        return intake.hl7_job(raw.encode("utf-8"), "demo", principal)
    return intake.text_job(content, "", "", "", "demo", principal)


async def extract(service: Service, body: bytes, principal: str = "") -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        req = jsonin.loads(body or b"{}", source="body")
    except FhirInputError as exc:
        raise InvalidFieldError("body", f"expected JSON {{content, kind}} ({exc.reason})") from exc
    content = req.get("content") if isinstance(req, dict) else None
    if not isinstance(content, str) or not content.strip():
        raise InvalidFieldError("content", "paste or upload a note first")
    new = new_job(content, str(req.get("kind") or "auto"), principal)
    service.metrics.requests.labels("http", "DemoExtract").inc()
    sub = await service.submit(new)
    job = await service.result(sub, _TIMEOUT_S)
    if job.status == store.FAILED:
        raise InvalidFieldError("content", job.error or "extraction failed")
    docs = await asyncio.to_thread(intake.documents, job)
    result = json.loads(job.result or "{}")
    out_docs = []
    for doc, ex in zip(docs, result.get("documents", []), strict=False):
        out_docs.append({"id": doc.id, "text": doc.text, "entities": ex["entities"],
                         "modifiers": ex["modifiers"], "relations": ex["relations"]})  # fmt: skip
    latency = time.perf_counter() - t0
    service.metrics.latency.labels("http", "DemoExtract").observe(latency)
    return {"job": job.id, "kind": new.kind, "duplicate": sub.duplicate,
            "model": job.model_id, "backend": job.backend,
            "latency_ms": round(latency * 1000, 1), "documents": out_docs,
            "bundle": result.get("bundle") or {}}  # fmt: skip
