"""Whole pipeline on every shared training note, wrapped as FHIR and as HL7.

Gold brat annotations stand in for model output: each note is wrapped as a
DocumentReference (base64) and as an ORU^R01 (escaped, one OBX per line, in
reverse order so set-ID sorting is exercised), loaded back through
``load_documents``, the gold extraction is re-anchored onto the loaded text
(``Extraction`` re-checks every span), turned into a validated Bundle, and
every derivation reference is resolved and compared with the note text.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from kiwi_fhir.core import Extraction
from kiwi_fhir.corpus import load_corpus
from kiwi_fhir.fhir import to_bundle
from kiwi_fhir.inputs import load_documents

DERIV = "http://hl7.org/fhir/StructureDefinition/derivation-reference"
_ESC = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\", "\r": "\\X0D\\"}


def hl7_escape(text: str) -> str:
    return "".join(_ESC.get(ch, ch) for ch in text)


def as_oru(control_id: str, text: str) -> str:
    obx = [
        f"OBX|{i}|TX|11506-3^Progress note^LN||{hl7_escape(line)}||||||F"
        for i, line in enumerate(text.split("\n"), start=1)
    ]
    head = [
        f"MSH|^~\\&|KIWI|TEST|EHR|TEST|20240101120000||ORU^R01|{control_id}|P|2.5.1",
        "PID|1||MRN-1^^^TEST^MR",
        "OBR|1||F-1|11506-3^Progress note^LN|||20240101",
    ]
    return "\r".join(head + obx[::-1]) + "\r"


def as_docref(doc_id: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "id": doc_id.replace("_", "-")[:64],
        "status": "current",
        "subject": {"reference": "Patient/p-1"},
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(text.encode()).decode(),
                }
            }
        ],
    }


def check_derivations(bundle: dict[str, Any], source_text: str, external: dict[str, str]) -> int:
    """Resolve every derivation reference; returns how many were checked."""
    texts = dict(external)  # DocumentReferences outside the bundle (the sender's)
    for e in bundle["entry"]:
        r = e["resource"]
        if r["resourceType"] == "DocumentReference":
            data = r["content"][0]["attachment"]["data"]
            texts[e["fullUrl"]] = base64.b64decode(data).decode("utf-8")
    checked = 0
    for e in bundle["entry"]:
        r = e["resource"]
        for ext in r.get("extension", []):
            if ext["url"] != DERIV:
                continue
            parts = {x["url"]: x for x in ext["extension"]}
            ref = parts["reference"]["valueReference"]["reference"]
            text = texts[ref]
            assert text == source_text
            off, n = parts["offset"]["valueInteger"], parts["length"]["valueInteger"]
            if r["resourceType"] == "FamilyMemberHistory":
                code = r["condition"][0]["code"]
            elif "contained" in r:
                code = r["contained"][0]["code"]
            else:
                code = r.get("code") or r["medicationCodeableConcept"]
            assert text[off : off + n] == code["text"]
            checked += 1
    return checked


def test_every_training_note_as_docref_and_oru(shared_corpus: Path, tmp_path: Path) -> None:
    gold = load_corpus(shared_corpus)
    assert len(gold) >= 90
    resources = 0
    for ex in gold:
        doc = ex.document
        json_path = tmp_path / f"{doc.id}.json"
        docref = as_docref(doc.id, doc.text)
        json_path.write_text(json.dumps(docref), encoding="utf-8")
        sent = base64.b64decode(docref["content"][0]["attachment"]["data"]).decode()
        external = {f"DocumentReference/{docref['id']}": sent}
        hl7_path = tmp_path / f"{doc.id}.hl7"
        hl7_path.write_text(as_oru(doc.id[:20], doc.text), encoding="utf-8", newline="")
        for path in (json_path, hl7_path):
            (loaded,) = load_documents(path)
            assert loaded.text == doc.text, path.name
            anchored = Extraction(
                loaded, ex.entities, ex.modifiers, ex.relations, model="gold", backend="brat"
            )
            bundle = to_bundle(anchored)  # validated against R4B inside
            n = check_derivations(bundle, loaded.text, external)
            assert n == sum(len(e.pieces()) for e in ex.entities), path.name
            resources += len(bundle["entry"])
    assert resources > 2 * 6000
