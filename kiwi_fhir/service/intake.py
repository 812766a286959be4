"""Request payloads to ``NewJob``s, and stored jobs back to ``Document``s.

Validation happens here, before anything is stored or acknowledged: a
payload we cannot turn into at least one note is refused with a typed
error. The same parsers run again in the worker on the stored bytes, so a
job replayed after a crash is processed exactly like the original.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from kiwi_fhir.core import Document
from kiwi_fhir.errors import FhirInputError, HL7Error, InvalidFieldError
from kiwi_fhir.inputs import jsonin, parse_document_reference, parse_hl7
from kiwi_fhir.service.store import Job, NewJob

TEXT: Final = "text"
HL7: Final = "hl7"
DOCREF: Final = "docref"
_SEG_SPLIT = re.compile(rb"\r\n|\r|\n")
_MSH_AT_LINE_START = re.compile(rb"(?:^|[\r\n\x0b])(MSH[^\r\n]{5})")


@dataclass(frozen=True)
class MshHeader:
    """The MSH fields an ACK needs; read leniently so even a bad message gets one."""

    field_sep: str
    encoding: str
    sending_app: str
    sending_facility: str
    receiving_app: str
    receiving_facility: str
    control_id: str
    processing_id: str
    version: str
    event: str


def read_msh(raw: bytes) -> MshHeader | None:
    """MSH of the first message in ``raw``; None when there is no usable MSH."""
    m = _MSH_AT_LINE_START.search(raw)
    if m is None:
        return None
    start = m.start(1)
    line = _SEG_SPLIT.split(raw[start:], maxsplit=1)[0].decode("latin-1")
    sep = line[3]
    f = line.split(sep)
    f.insert(1, sep)  # so f[n] is MSH-n

    def get(n: int, limit: int = 180) -> str:
        return f[n][:limit] if n < len(f) else ""

    comp = get(2)[:1] or "^"
    mtype = get(9).split(comp)
    return MshHeader(sep, get(2, 4) or "^~\\&", get(3), get(4), get(5), get(6), get(10, 199),
                     get(11, 3) or "P", get(12, 20) or "2.5",
                     mtype[1][:3] if len(mtype) > 1 else "")  # fmt: skip


def owner_of(source: str, principal: str = "") -> str:
    """The de-duplication scope of a job: its channel and the authenticated caller.

    ``principal`` is what authentication established (a client-certificate
    fingerprint, ``token`` for the shared bearer token); empty means anonymous.
    """
    return f"{source}:{principal or 'anonymous'}"


def message_count(raw: bytes) -> int:
    """MSH segments at line starts: how many messages ``raw`` holds."""
    return len(_MSH_AT_LINE_START.findall(raw))


def _sha(owner: str, *parts: bytes) -> str:
    """Content hash *within* one owner: the same bytes from another caller are
    another job, so a duplicate can only ever return the caller's own result."""
    h = hashlib.sha256()
    for p in (owner.encode("utf-8"), *parts):
        h.update(p)
        h.update(b"\0")
    return h.hexdigest()


#: What "the same content" means under one identity: the notes we would
#: extract and whom they are about -- not the bytes, which a resend may change
#: (a new MSH-7 timestamp, a FHIR server's JSON formatting or inlined attachment).
_CONTENT_META: Final = ("patient", "encounter", "lab_results")


def content_digest(owner: str, docs: list[Document]) -> str:
    parts: list[bytes] = []
    for d in docs:
        parts += [d.id.encode(), d.text.encode("utf-8")]
        parts += [d.meta.get(k, "").encode("utf-8") for k in _CONTENT_META]
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


def hl7_job(raw: bytes, source: str, principal: str = "") -> NewJob:
    """Refuses what cannot become a note: bad header, wrong type, no narrative."""
    if not raw.strip():
        raise InvalidFieldError("message", "empty HL7 message")
    docs = parse_hl7(raw)  # raises HL7Error naming segment and field
    if not docs:
        raise HL7Error("message carries no narrative text", segment="OBX", field="5")
    msh = read_msh(raw)
    key = None
    if msh is not None and msh.control_id:
        key = f"hl7:{msh.sending_app}|{msh.sending_facility}|{msh.control_id}"
    owner = owner_of(source, principal)
    return NewJob(source, HL7, raw, _sha(owner, HL7.encode(), raw), _scoped(owner, key),
                  owner=owner, identity_field="MSH-10",
                  content_sha256=content_digest(owner, docs), longest_note=_longest(docs))


def docref_job(resource_json: str, source: str, principal: str = "") -> NewJob:
    if not resource_json.strip():
        raise InvalidFieldError("resource_json", "empty")
    obj = jsonin.loads(resource_json, source="resource_json")
    docs = parse_document_reference(obj)
    if not docs:
        raise FhirInputError("$", "no note text found", source="resource_json")
    payload = resource_json.encode("utf-8")
    owner = owner_of(source, principal)
    key, versioned = _docref_key(obj)
    return NewJob(source, DOCREF, payload, _sha(owner, DOCREF.encode(), payload),
                  _scoped(owner, key), owner=owner, versioned=versioned,
                  identity_field="meta.versionId" if versioned else "id",
                  content_sha256=content_digest(owner, docs), longest_note=_longest(docs))


def _docref_key(obj: Any) -> tuple[str | None, bool]:
    """``ResourceType/id|version`` -- the FHIR identity of a stored resource version --
    and whether it names a version (without ``meta.versionId`` an edit is a new one)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        return None, True
    meta = obj.get("meta")
    version = meta.get("versionId", "") if isinstance(meta, dict) else ""
    version = version if isinstance(version, str) else ""
    return f"fhir:{obj.get('resourceType')}/{obj['id']}|{version}", bool(version)


def documents(job: Job) -> list[Document]:
    """The notes of a stored job (same parsers as at intake)."""
    if job.kind == HL7:
        return parse_hl7(job.payload)
    if job.kind == DOCREF:
        return parse_document_reference(job.payload.decode("utf-8"), source="resource_json")
    params = json.loads(job.params)
    meta = {"source": "grpc"}
    for key in ("patient", "encounter"):
        if params.get(key):
            meta[key] = params[key]
    doc_id = params.get("document_id") or f"text-{job.sha256[:16]}"
    meta["source_id"] = doc_id
    return [Document(id=doc_id, text=job.payload.decode("utf-8"), meta=meta)]
