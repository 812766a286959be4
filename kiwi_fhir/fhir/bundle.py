"""An ``Extraction`` to one FHIR R4 Bundle (transaction or collection), validated.

Idempotence: every resource carries an identifier built from the document
key (source identity + SHA-256 of the text) and the span, and a transaction
creates it with ``ifNoneExist: identifier=...``, so posting the same note
twice creates nothing new; an *amended* note has another hash and gets new
resources. ``fullUrl``s are UUIDv5 of the same key, stable across runs.

The derivation references point at the DocumentReference whose attachment
*is* ``Document.text``: the sender's own when it was text/plain, otherwise a
text/plain DocumentReference we add to the bundle (``relatesTo: transforms``
the original for HTML/RTF input; for HL7 and .txt input it is the only one).
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from kiwi_fhir import __version__
from kiwi_fhir.core import Extraction
from kiwi_fhir.errors import FhirOutputError
from kiwi_fhir.fhir import parties, status
from kiwi_fhir.fhir.build import Targets, build_resource
from kiwi_fhir.fhir.context import ContextFinder
from kiwi_fhir.fhir.labs import diagnostic_reports, lab_observations
from kiwi_fhir.fhir.mapping import load_mapping
from kiwi_fhir.fhir.tables import FhirMapping
from kiwi_fhir.source import DocumentEvent, Ref, Source

_NS: Final = uuid.UUID("6f1c2d7e-3b7a-5c55-9a4e-2f0d8f7a9c11")
_REF_RE = re.compile(r"^(?:[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}|urn:\S+|https?://\S+)$")
_INSTANT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$")
BUNDLE_TYPES: Final = ("transaction", "collection")


def resolvable(ref: str) -> bool:
    """Whether a literal reference string is one a server can resolve."""
    return bool(_REF_RE.match(ref))


def reference(ref: Ref) -> dict[str, Any]:
    """A FHIR Reference for ``ref`` (literal when resolvable, else by identifier)."""
    return parties.reference(ref, resolvable)


def document_key(extraction: Extraction) -> str:
    doc = extraction.document
    src = doc.source
    # The sender's identity when there is one (so a re-sent note maps to the same
    # resources whatever our file naming), else message control id / our id.
    fallback = f"{src.control_id}/{src.source_id or doc.id}"
    identity = src.source_ref or (src.identifier.token if src.identifier else "") or fallback
    digest = hashlib.sha256(f"{identity}\0{doc.text}".encode()).hexdigest()
    return digest[:24]


def to_bundle(
    extraction: Extraction,
    *,
    bundle_type: str = "transaction",
    model_id: str = "",
    backend: str = "",
    recorded: datetime | None = None,
    mapping: FhirMapping | None = None,
    validate: bool = True,
) -> dict[str, Any]:
    """The Bundle as plain JSON-able dicts, already validated against R4B."""
    if bundle_type not in BUNDLE_TYPES:
        raise ValueError(f"bundle_type must be one of {BUNDLE_TYPES}")
    mapping = mapping or load_mapping()
    doc, src = extraction.document, extraction.document.source
    key = document_key(extraction)
    who = parties.parties(src, bundle_type, _full_url)
    patient, encounter = who.patient, who.encounter
    entries: list[tuple[dict[str, Any], str]] = []  # (resource, identifier value)
    own = src.channel == "fhir" and src.content_type == "text/plain"
    docref: dict[str, Any] | None
    if src.structured_only:  # results only, no narrative: nothing to index
        docref, path = None, ""
    elif own and src.source_ref:
        docref = {"reference": src.source_ref}
        path = f"DocumentReference.content[{src.content_index}].attachment"
    else:
        dr = _text_docref(extraction, mapping, key, patient, encounter)
        entries.append((dr, f"doc.{key}"))
        docref = {"reference": _full_url(f"doc.{key}")}
        path = "DocumentReference.content[0].attachment"
    targets = Targets(patient, encounter, docref or {}, path, key)
    standing = status.standing(src)
    for res, _ in entries:  # our DocumentReference of the text
        status.apply(res, standing)
    entities = sorted(extraction.entities, key=lambda e: (e.start, e.end, e.id))
    context = ContextFinder(extraction)
    for ent in entities:
        res = build_resource(extraction, ent, mapping, targets, context.of(ent))
        status.apply(res, standing)  # lab results keep their own OBX-11 / OBR-25 status
        entries.append((res, res["identifier"][0]["value"]))
    labs = lab_observations(src.results, mapping, targets)
    entries += labs
    entries += diagnostic_reports(src.results, labs, targets, mapping, _full_url)
    made = [{"reference": _full_url(v)} for r, v in entries if r is not None]
    if not made and docref is None:
        raise FhirOutputError(f"{doc.id}: document has neither narrative nor structured results")
    update = status.stated(src)  # a stated status overwrites what an earlier version made
    prov = _provenance(
        made or [docref or {}],
        docref,
        model_id or extraction.model,
        backend or extraction.backend,
        recorded,
    )
    entries.append((prov, f"prov.{key}.{model_id or extraction.model}"))
    bundle = {
        "resourceType": "Bundle",
        "type": bundle_type,
        "identifier": {"system": mapping.document_identifier_system, "value": f"bundle.{key}"},
        "entry": [
            *who.entries,
            *(_entry(res, ident, bundle_type, update) for res, ident in entries),
        ],
    }
    if bundle_type == "collection":
        bundle["id"] = str(uuid.uuid5(_NS, f"bundle.{key}"))
    if validate:
        validate_bundle(bundle, doc.id)
    return bundle


def _full_url(ident: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, ident)}"


def _entry(res: dict[str, Any], ident: str, bundle_type: str, update: bool) -> dict[str, Any]:
    full = _full_url(ident)
    entry: dict[str, Any] = {"fullUrl": full, "resource": res}
    rtype = res["resourceType"]
    if bundle_type == "collection" or rtype == "Provenance":
        res["id"] = full.rpartition(":")[2]
    if bundle_type == "transaction":
        if rtype == "Provenance":  # no identifier element: a stable id and PUT instead
            entry["request"] = {"method": "PUT", "url": f"Provenance/{res['id']}"}
        else:
            token = f"{res['identifier'][0]['system']}|{res['identifier'][0]['value']}"
            query = f"identifier={quote(token, safe='')}"
            if update:  # conditional update: the resource an earlier version made changes
                entry["request"] = {"method": "PUT", "url": f"{rtype}?{query}"}
            else:
                entry["request"] = {"method": "POST", "url": rtype, "ifNoneExist": query}
    return entry


def _text_docref(
    extraction: Extraction,
    mapping: FhirMapping,
    key: str,
    patient: dict[str, Any],
    encounter: dict[str, Any] | None,
) -> dict[str, Any]:
    doc, src = extraction.document, extraction.document.source
    idents = [{"system": mapping.document_identifier_system, "value": f"doc.{key}"}]
    if (found := src.identifier) is not None:
        idents.append({"system": found.system, "value": found.value} if found.system
                      else {"value": found.value})  # fmt: skip
    data = base64.b64encode(doc.text.encode("utf-8")).decode("ascii")
    dr: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "identifier": idents,
        "status": "current",
        "subject": patient,
        "description": f"plain text of {src.content_type} note "
        f"{doc.id} (offsets of extracted resources index this)",
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8", "data": data}}],
    }
    if src.author:  # a name only: TXA-9's ID is the sender's own; no Practitioner is made
        dr["author"] = [{"display": src.author}]
    if (dt := src.doc_type) is not None:
        cc: dict[str, Any] = {"text": dt.text or dt.code}
        if dt.code:
            cc["coding"] = [{"system": dt.system, "code": dt.code} if dt.system
                            else {"code": dt.code}]  # fmt: skip
        dr["type"] = cc
    context: dict[str, Any] = {}
    if encounter is not None:
        context["encounter"] = [encounter]
    date = src.date
    if _INSTANT_RE.match(date):
        dr["date"] = date
    elif date:
        context["period"] = {"start": date}
    if context:
        dr["context"] = context
    relates = [{"code": "transforms", "target": {"reference": src.source_ref}}] if (
        src.source_ref) else []  # fmt: skip
    if (link := parent_link(src)) is not None:
        relates.append(link)
    if relates:
        dr["relatesTo"] = relates
    return dr


#: How an event relates the note to its parent (DocumentReference.relatesTo.code).
_RELATION: Final = {DocumentEvent.ADDENDUM: "appends", DocumentEvent.EDIT: "replaces",
                    DocumentEvent.REPLACE: "replaces"}  # fmt: skip


def parent_link(src: Source) -> dict[str, Any] | None:
    """``relatesTo`` from an addendum or replacement to the note it names
    (TXA-13, or the sender's own ``relatesTo``): by the sender's reference
    when a server can resolve it, else by the parent's identifier. An edit
    naming no parent is linked later, when the store knows the previous
    version (:mod:`kiwi_fhir.fhir.retire`)."""
    code = _RELATION.get(src.event) if src.event is not None else None
    if code is None:
        return None
    if src.parent_ref:
        return {"code": code, "target": reference(Ref(src.parent_ref, src.parent))}
    if src.parent is not None:
        return {"code": code, "target": reference(Ref(identifier=src.parent))}
    return None


def _provenance(
    targets: list[dict[str, Any]],
    docref: dict[str, Any] | None,
    model: str,
    backend: str,
    recorded: datetime | None,
) -> dict[str, Any]:
    when = (recorded or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    versions: list[dict[str, Any]] = [{"value": __version__}]
    versions += [
        {"type": {"text": t}, "value": v} for t, v in (("model", model), ("backend", backend)) if v
    ]
    return {
        "resourceType": "Provenance",
        "contained": [
            {
                "resourceType": "Device",
                "id": "kiwi",
                "deviceName": [{"name": "kiwi-fhir", "type": "manufacturer-name"}],
                "version": versions,
            }
        ],
        "target": targets,
        "recorded": when.replace("+00:00", "Z"),
        "activity": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                    "code": "CREATE",
                }
            ]
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "assembler",
                        }
                    ]
                },
                "who": {"reference": "#kiwi"},
            }
        ],
        **({"entity": [{"role": "source", "what": docref}]} if docref is not None else {}),
    }


def validate_bundle(bundle: dict[str, Any], doc_id: str = "") -> None:
    """R4B validation of the bundle and every entry resource; errors name paths only."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    where = f"{doc_id}: " if doc_id else ""
    items = [("Bundle", "Bundle", bundle)] + [
        (f"entry[{i}]", e["resource"]["resourceType"], e["resource"])
        for i, e in enumerate(bundle.get("entry", []))
    ]
    for label, rtype, obj in items:
        try:
            get_fhir_model_class(rtype).model_validate(obj)
        except ValidationError as exc:
            # Locations and error kinds only: pydantic's messages echo input (note text).
            locs = "; ".join(
                f"{'.'.join(map(str, e['loc']))} ({e['type']})" for e in exc.errors()[:5]
            )
            raise FhirOutputError(f"{where}{label} ({rtype}) fails R4B validation: {locs}") from exc
