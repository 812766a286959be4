"""Core ``Extraction`` ⇄ plain JSON (the ``--format json`` output).

Offsets index the decoded note text (see ``kiwi_fhir.core``); the note
itself is not repeated in the output -- callers have it, and copying
clinical text into more files than needed is a liability.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from kiwi_fhir import source
from kiwi_fhir.core import Code, Document, Entity, Extraction, Mention, Modifier, Relation

#: 2: ``document.source`` (typed, :mod:`kiwi_fhir.source`) replaced the flat
#: ``document.meta`` string map of 1.
SCHEMA = "kiwi-fhir/extraction/2"


def _mention(m: Mention) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": m.id,
        "type": m.label,
        "start": m.start,
        "end": m.end,
        "text": m.text,
        "confidence": m.confidence,
    }
    if m.fragments:
        out["fragments"] = [list(f) for f in m.fragments]
    if m.source:
        out["source"] = m.source
    if isinstance(m, Entity) and m.codes:
        out["codes"] = [asdict(c) for c in m.codes]
    return out


def to_dict(ex: Extraction) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "document": {
            "id": ex.document.id,
            "length": len(ex.document.text),
            "source": source.to_json(ex.document.source),
        },
        "model": ex.model,
        "backend": ex.backend,
        "entities": [_mention(e) for e in ex.entities],
        "modifiers": [_mention(m) for m in ex.modifiers],
        "relations": [
            {"entity": r.entity_id, "modifier": r.modifier_id, "confidence": r.confidence}
            for r in ex.relations
        ],
    }


def from_dict(data: dict[str, Any], text: str) -> Extraction:
    """Rebuild an extraction against its note text (offsets are re-checked)."""
    doc = data["document"]

    def mk(kind: type[Mention], d: dict[str, Any]) -> Any:
        frags = tuple(tuple(f) for f in d.get("fragments", ()))
        extra = {"codes": tuple(Code(**c) for c in d["codes"])} if d.get("codes") else {}
        return kind(
            d["id"],
            d["type"],
            d["start"],
            d["end"],
            d["text"],
            d.get("confidence"),
            frags,
            d.get("source"),
            **extra,
        )

    return Extraction(
        document=Document(doc["id"], text, document_source(doc)),
        entities=tuple(mk(Entity, d) for d in data["entities"]),
        modifiers=tuple(mk(Modifier, d) for d in data["modifiers"]),
        relations=tuple(
            Relation(r["entity"], r["modifier"], r.get("confidence")) for r in data["relations"]
        ),
        model=data.get("model", ""),
        backend=data.get("backend", ""),
    )


def document_source(doc: dict[str, Any]) -> source.Source:
    """The Source of a serialized document; a result stored before schema 2
    (``meta``, with warnings as a JSON string) keeps its warnings."""
    if "meta" in doc and "source" not in doc:
        return source.Source(warnings=tuple(json.loads(doc["meta"].get("warnings") or "[]")))
    return source.from_json(doc.get("source"))
