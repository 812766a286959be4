"""Request payloads to ``NewJob``s, and stored jobs back to ``Document``s.

Validation happens here, before anything is stored or acknowledged: a
payload we cannot turn into at least one note is refused with a typed
error. The same parsers run again in the worker on the stored bytes, so a
job replayed after a crash is processed exactly like the original.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Final

from kiwi_fhir.core import Document
from kiwi_fhir.errors import DocumentError, FhirInputError, HL7Error, InvalidFieldError
from kiwi_fhir.inputs import formats
from kiwi_fhir.service.store import Job, NewJob
from kiwi_fhir.source import DocumentEvent, Source, parse_ref
from kiwi_fhir.source import to_json as source_json

TEXT: Final = "text"
HL7: Final = "hl7"
DOCREF: Final = "docref"


def owner_of(source: str, principal: str = "") -> str:
    """The de-duplication scope of a job: its channel and the authenticated caller.

    ``principal`` is what authentication established (a client-certificate
    fingerprint, ``token`` for the shared bearer token); empty means anonymous.
    """
    return f"{source}:{principal or 'anonymous'}"


def _sha(owner: str, *parts: bytes) -> str:
    """Content hash *within* one owner: the same bytes from another caller are
    another job, so a duplicate can only ever return the caller's own result."""
    h = hashlib.sha256()
    for p in (owner.encode("utf-8"), *parts):
        h.update(p)
        h.update(b"\0")
    return h.hexdigest()


def content_digest(owner: str, docs: list[Document]) -> str:
    """What "the same content" means under one identity: the notes we would
    extract, whom they are about and their structured results -- not the
    bytes, which a resend may change (a new MSH-7 timestamp, a FHIR server's
    JSON formatting or inlined attachment)."""
    parts: list[bytes] = []
    for d in docs:
        facts = Source(patient=d.source.patient, encounter=d.source.encounter,
                       results=d.source.results)  # fmt: skip
        parts += [d.id.encode(), d.text.encode("utf-8")]
        parts.append(json.dumps(source_json(facts), sort_keys=True).encode("utf-8"))
    return _sha(owner, b"content", *parts)


def _longest(docs: list[Document]) -> int:
    return max((len(d.text.encode("utf-8")) for d in docs), default=0)


def _scoped(owner: str, key: str | None) -> str | None:
    return None if key is None else f"{owner}|{key}"[:512]


def text_job(text: str, patient: str, encounter: str, document_id: str, source: str,
             principal: str = "") -> NewJob:  # fmt: skip
    if not text.strip():
        raise InvalidFieldError("text", "empty note")
    params = json.dumps({"patient": patient, "encounter": encounter, "document_id": document_id},
                        sort_keys=True)  # fmt: skip
    payload = text.encode("utf-8")
    owner = owner_of(source, principal)
    digest = _sha(owner, TEXT.encode(), payload, params.encode())
    return NewJob(source, TEXT, payload, digest, None, params, owner=owner,
                  content_sha256=digest, longest_note=len(payload))  # fmt: skip


def format_job(kind: str, raw: bytes, source: str, principal: str = "") -> NewJob:
    """A job for a payload of input format ``kind`` (:mod:`kiwi_fhir.inputs.formats`).

    Refuses, before anything is stored, what cannot become a note: the
    format's first error (naming segment and field, or JSON path), or no
    document at all."""
    fmt = formats.get(kind)
    if not raw.strip():
        raise InvalidFieldError(*_EMPTY.get(kind, ("content", "empty")))
    docs = formats.parse_strict(fmt, raw, source=_SOURCE.get(kind, ""))
    if not docs:
        raise _nothing(kind)
    ident = fmt.identity(raw)
    owner = owner_of(source, principal)
    return NewJob(source, fmt.name, raw, _sha(owner, fmt.name.encode(), raw),
                  _scoped(owner, ident.key if ident else None), owner=owner,
                  versioned=ident.versioned if ident else True,
                  identity_field=ident.field if ident else "",
                  content_sha256=content_digest(owner, docs), longest_note=_longest(docs),
                  warnings=warnings(docs),
                  doc_key=document_key(owner, docs[0].source) if len(docs) == 1 else None)


def document_key(owner: str, source: Source) -> str | None:
    """The sender's name for the *document* across its versions (not for one
    message or resource version): ``DocumentReference/<id>``, or HL7's TXA-12
    / OBR-3. None when the sender gave none: such a note has no earlier
    version we could find."""
    if source.channel == "fhir" and source.source_ref:
        return _scoped(owner, f"doc:fhir:{source.source_ref}")
    if source.channel == "hl7" and source.identifier is not None:
        return _scoped(owner, f"doc:hl7:{source.identifier.token}")
    return None


def previous_key(owner: str, source: Source) -> str | None:
    """The ``document_key`` of the version this note supersedes: the parent an
    edit, replacement or cancellation names (TXA-13, ``relatesTo``), else the
    note's own (a new version under the same id). An addendum supersedes
    nothing: its parent stays."""
    if source.event is DocumentEvent.ADDENDUM:
        return None
    if source.parent_ref or source.parent is not None:
        parent = replace(source, source_ref=source.parent_ref, identifier=source.parent)
        return document_key(owner, parent)
    return document_key(owner, source)


def warnings(docs: list[Document]) -> tuple[str, ...]:
    """The parsers' warnings (what was not turned into a document), in order, once each."""
    seen: dict[str, None] = {}
    for d in docs:
        for w in d.source.warnings:
            seen[w] = None
    return tuple(seen)


#: What errors name: the request field an empty payload came in, the name a
#: JSON path is relative to, the error for a payload without a note.
_EMPTY: Final = {HL7: ("message", "empty HL7 message"), DOCREF: ("resource_json", "empty")}
_SOURCE: Final = {DOCREF: "resource_json"}


def _nothing(kind: str) -> DocumentError:
    if kind == HL7:
        return HL7Error("message carries no narrative text", segment="OBX", field="5")
    if kind == DOCREF:
        return FhirInputError("$", "no note text found", source="resource_json")
    return DocumentError(f"{kind} payload carries no note")


def hl7_job(raw: bytes, source: str, principal: str = "") -> NewJob:
    return format_job(HL7, raw, source, principal)


def docref_job(resource_json: str, source: str, principal: str = "") -> NewJob:
    return format_job(DOCREF, resource_json.encode("utf-8"), source, principal)


def documents(job: Job) -> list[Document]:
    """The notes of a stored job (same parsers as at intake)."""
    if job.kind != TEXT:
        fmt = formats.get(job.kind)
        return formats.parse_strict(fmt, job.payload, source=_SOURCE.get(job.kind, ""))
    params = json.loads(job.params)
    doc_id = params.get("document_id") or f"text-{job.sha256[:16]}"
    source = Source(channel="grpc", source_id=doc_id, patient=parse_ref(params.get("patient", "")),
                    encounter=parse_ref(params.get("encounter", "")))  # fmt: skip
    return [Document(id=doc_id, text=job.payload.decode("utf-8"), source=source)]
