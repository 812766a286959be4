"""Extraction -> FHIR Bundle: every mapping rule on one hand-annotated note."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kiwi_fhir.core import Document, Entity, Extraction, Modifier, Relation
from kiwi_fhir.errors import FhirOutputError
from kiwi_fhir.fhir import to_bundle, validate_bundle
from kiwi_fhir.inputs import load_documents, load_documents_lenient

DATA = Path(__file__).parent / "data"
SNOMED = "http://snomed.info/sct"
DERIV = "http://hl7.org/fhir/StructureDefinition/derivation-reference"
NOTE = (
    "Mother had breast cancer. No chest pain. Possible pneumonia, mild, left lower lobe, "
    "since 01/27/09.\nHemoglobin 10.6 gm/dL (12-16). BP 100/60 mmHg. Metoprolol 25 mg tablet "
    "p.o. b.i.d. prn for 5 days. No appendectomy. Denies chest x-ray. Father: asthma."
)
WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def extraction(doc: Document | None = None) -> Extraction:
    """Entities E*, modifiers M*; each spec is (label, surface, [(mod label, surface)])."""
    doc = doc or Document("n1", NOTE)
    specs: list[tuple[str, str, list[tuple[str, str]]]] = [
        ("problem", "breast cancer", [("subject", "Mother")]),
        ("problem", "chest pain", [("negation", "No")]),
        (
            "problem",
            "pneumonia",
            [
                ("uncertain", "Possible"),
                ("severity", "mild"),
                ("bodyloc", "left lower lobe"),
                ("temporal", "01/27/09"),
            ],
        ),
        ("test", "Hemoglobin", [("labvalue", "10.6 gm/dL"), ("reference_range", "12-16")]),
        ("test", "BP", [("labvalue", "100/60 mmHg")]),
        (
            "drug",
            "Metoprolol",
            [
                ("strength", "25 mg"),
                ("form", "tablet"),
                ("route", "p.o."),
                ("frequency", "b.i.d."),
                ("frequency", "prn"),
                ("duration", "for 5 days"),
            ],
        ),
        ("treatment", "appendectomy", [("negation", "No")]),
        ("test", "chest x-ray", [("negation", "Denies")]),
        ("problem", "asthma", [("subject", "Father")]),
    ]
    ents, mods, rels = [], [], []
    cursor = 0
    for i, (label, surface, modspecs) in enumerate(specs, start=1):
        start = doc.text.index(surface, cursor)
        ents.append(Entity(f"E{i}", label, start, start + len(surface), surface, confidence=0.9))
        for j, (mlabel, msurface) in enumerate(modspecs, start=1):
            at = max(0, start - 40)
            mstart = doc.text.index(msurface, at)
            mid = f"M{i}.{j}"
            mods.append(Modifier(mid, mlabel, mstart, mstart + len(msurface), msurface))
            rels.append(Relation(f"E{i}", mid))
        cursor = start
    return Extraction(doc, tuple(ents), tuple(mods), tuple(rels), model="m-1", backend="onnx")


def resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def by_code(bundle: dict[str, Any], rtype: str, text: str) -> dict[str, Any]:
    for r in resources(bundle, rtype):
        code = r.get("code") or r.get("medicationCodeableConcept") or {}
        if rtype == "FamilyMemberHistory":
            code = r["condition"][0]["code"]
        if rtype == "MedicationStatement" and "contained" in r:
            code = r["contained"][0]["code"]
        if code.get("text") == text:
            return r
    raise AssertionError(f"no {rtype} for {text!r}")


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return to_bundle(extraction(), recorded=WHEN)


def test_resource_per_entity_type_family_history_never_a_condition(bundle: dict[str, Any]) -> None:
    counts: dict[str, int] = {}
    for e in bundle["entry"]:
        counts[e["resource"]["resourceType"]] = counts.get(e["resource"]["resourceType"], 0) + 1
    assert counts == {
        "DocumentReference": 1,
        "Condition": 2,
        "FamilyMemberHistory": 2,
        "Observation": 3,
        "MedicationStatement": 1,
        "Procedure": 1,
        "Provenance": 1,
    }
    fmh = by_code(bundle, "FamilyMemberHistory", "breast cancer")
    assert fmh["relationship"]["coding"][0]["code"] == "MTH"
    assert fmh["status"] == "partial"
    assert by_code(bundle, "FamilyMemberHistory", "asthma")["relationship"]["text"] == "Father"


def test_condition_modifiers(bundle: dict[str, Any]) -> None:
    refuted = by_code(bundle, "Condition", "chest pain")
    assert refuted["verificationStatus"]["coding"][0]["code"] == "refuted"
    pna = by_code(bundle, "Condition", "pneumonia")
    assert pna["verificationStatus"]["coding"][0]["code"] == "provisional"
    assert pna["severity"]["coding"][0] == {
        "system": SNOMED,
        "code": "255604002",
        "display": "Mild",
    }
    assert pna["bodySite"] == [{"text": "left lower lobe"}]
    assert pna["onsetDateTime"] == "2009-01-27"
    assert pna["subject"] == {"display": "patient not identified in the source document"}


def test_observation_values(bundle: dict[str, Any]) -> None:
    hgb = by_code(bundle, "Observation", "Hemoglobin")
    assert hgb["valueQuantity"] == {
        "value": 10.6,
        "unit": "gm/dL",
        "system": "http://unitsofmeasure.org",
        "code": "g/dL",
    }
    assert hgb["referenceRange"] == [{"text": "12-16", "low": {"value": 12}, "high": {"value": 16}}]
    bp = by_code(bundle, "Observation", "BP")
    assert [c["valueQuantity"]["value"] for c in bp["component"]] == [100, 60]
    assert "valueQuantity" not in bp
    absent = by_code(bundle, "Observation", "chest x-ray")
    assert absent["valueCodeableConcept"]["coding"][0]["code"] == "2667000"


def test_medication_statement(bundle: dict[str, Any]) -> None:
    ms = by_code(bundle, "MedicationStatement", "Metoprolol")
    med = ms["contained"][0]
    assert ms["medicationReference"] == {"reference": "#med"}
    assert "medicationCodeableConcept" not in ms
    assert med["form"]["coding"][0]["code"] == "385055001"
    ing = med["ingredient"][0]
    assert ing["itemCodeableConcept"] == {"text": "Metoprolol"}
    assert ing["strength"]["numerator"] == {
        "value": 25,
        "unit": "mg",
        "system": "http://unitsofmeasure.org",
        "code": "mg",
    }
    dosage = ms["dosage"][0]
    assert dosage["route"]["coding"][0]["code"] == "26643006"
    assert dosage["asNeededBoolean"] is True
    assert dosage["timing"]["repeat"] == {
        "frequency": 2,
        "period": 1,
        "periodUnit": "d",
        "boundsDuration": {
            "value": 5,
            "unit": "days",
            "system": "http://unitsofmeasure.org",
            "code": "d",
        },
    }
    assert ms["status"] == "unknown"
    assert by_code(bundle, "Procedure", "appendectomy")["status"] == "not-done"


def test_every_resource_points_at_its_text(bundle: dict[str, Any]) -> None:
    (dr,) = resources(bundle, "DocumentReference")
    dr_url = next(e["fullUrl"] for e in bundle["entry"] if e["resource"] is dr)
    stored = base64.b64decode(dr["content"][0]["attachment"]["data"]).decode("utf-8")
    assert stored == NOTE
    n = 0
    for e in bundle["entry"]:
        r = e["resource"]
        if r["resourceType"] in ("DocumentReference", "Provenance"):
            continue
        (ext,) = [x for x in r["extension"] if x["url"] == DERIV]
        parts = {x["url"]: x for x in ext["extension"]}
        assert parts["reference"]["valueReference"] == {"reference": dr_url}
        assert parts["path"]["valueString"] == "DocumentReference.content[0].attachment"
        off, length = parts["offset"]["valueInteger"], parts["length"]["valueInteger"]
        code = r.get("code") or (
            r["condition"][0]["code"] if "condition" in r else r["contained"][0]["code"]
        )
        assert stored[off : off + length] == code["text"]
        conf = [x for x in r["extension"] if x["url"].endswith("extraction-confidence")]
        assert conf == [{"url": conf[0]["url"], "valueDecimal": 0.9}]
        n += 1
    assert n == 9


def test_provenance(bundle: dict[str, Any]) -> None:
    (prov,) = resources(bundle, "Provenance")
    assert prov["recorded"] == "2024-05-01T12:00:00Z"
    assert len(prov["target"]) == len(bundle["entry"]) - 1
    device = prov["contained"][0]
    assert [v["value"] for v in device["version"]][1:] == ["m-1", "onnx"]
    assert prov["agent"][0]["who"] == {"reference": "#kiwi"}
    assert prov["entity"][0]["role"] == "source"


def test_transaction_is_idempotent_and_keyed_on_document_and_span() -> None:
    a = to_bundle(extraction(), recorded=WHEN)
    b = to_bundle(extraction(), recorded=WHEN)
    assert a == b
    cond = next(e for e in a["entry"] if e["resource"]["resourceType"] == "Condition")
    ident = cond["resource"]["identifier"][0]
    assert ident["system"] == "urn:kiwi-fhir:mention"
    assert ident["value"].endswith(".29-39.problem")  # "chest pain" at 29..39
    assert cond["request"] == {
        "method": "POST",
        "url": "Condition",
        "ifNoneExist": "identifier=urn%3Akiwi-fhir%3Amention%7C" + ident["value"],
    }
    amended = extraction(Document("n1", NOTE + " Seen today."))
    c = to_bundle(amended, recorded=WHEN)
    assert {e["fullUrl"] for e in a["entry"]}.isdisjoint(e["fullUrl"] for e in c["entry"])
    prov = next(e for e in a["entry"] if e["resource"]["resourceType"] == "Provenance")
    assert prov["request"]["method"] == "PUT"


def test_collection_bundle_has_ids_not_requests() -> None:
    col = to_bundle(extraction(), bundle_type="collection", recorded=WHEN)
    assert col["type"] == "collection" and "id" in col
    for e in col["entry"]:
        assert "request" not in e and e["fullUrl"].endswith(e["resource"]["id"])
    with pytest.raises(ValueError, match="bundle_type"):
        to_bundle(extraction(), bundle_type="batch")


def test_fhir_text_plain_source_is_referenced_not_copied() -> None:
    (doc,) = load_documents(DATA / "docref_plain.json")
    ent = Entity("E1", "problem", doc.text.index("fever"), doc.text.index("fever") + 5, "fever")
    b = to_bundle(Extraction(doc, (ent,)), recorded=WHEN)
    assert not resources(b, "DocumentReference")
    (cond,) = resources(b, "Condition")
    assert cond["subject"] == {"reference": "Patient/pat-1"}
    assert cond["encounter"] == {"reference": "Encounter/enc-9"}
    parts = {x["url"]: x for x in cond["extension"][0]["extension"]}
    assert parts["reference"]["valueReference"] == {"reference": "DocumentReference/note-1"}
    assert parts["offset"]["valueInteger"] == 36  # after "...spots.\r\n": CR counts


def test_transaction_input_entry_gets_a_text_copy_keeping_its_identifier() -> None:
    docs, _ = load_documents_lenient(DATA / "bundle_transaction_one_bad.json")
    b = to_bundle(Extraction(docs[0]), recorded=WHEN)
    (dr,) = resources(b, "DocumentReference")
    assert dr["identifier"][1] == {"system": "urn:oid:2.16.840.1.113883.3.72.5", "value": "DOC-t1"}
    assert "relatesTo" not in dr  # its urn:uuid fullUrl resolves to nothing


def test_html_source_gets_a_plain_text_copy_that_transforms_it() -> None:
    (doc,) = load_documents(DATA / "docref_html.json")
    b = to_bundle(Extraction(doc), recorded=WHEN)
    (dr,) = resources(b, "DocumentReference")
    assert dr["relatesTo"] == [
        {"code": "transforms", "target": {"reference": "DocumentReference/note-3"}}
    ]
    assert base64.b64decode(dr["content"][0]["attachment"]["data"]).decode() == doc.text
    assert dr["date"] == "2024-03-15T09:30:00+01:00"


def test_hl7_source_patient_identifier_and_structured_labs() -> None:
    docs = load_documents(DATA / "oru_multi_obr.hl7")
    b = to_bundle(Extraction(docs[0]), recorded=WHEN)
    (dr,) = resources(b, "DocumentReference")
    assert dr["subject"] == {
        "identifier": {"value": "MRN31337", "assigner": {"display": "GENHOSP"}}
    }
    assert dr["type"]["coding"] == [{"system": "http://loinc.org", "code": "34552-0"}]
    assert dr["context"]["period"] == {"start": "2024-06-10"}
    labs = resources(b, "Observation")
    assert [(o["code"]["text"], o.get("valueQuantity", {}).get("value")) for o in labs] == [
        ("Hemoglobin", 10.6),
        ("Platelets", 50),
        ("WBC", 7.2),
    ]
    assert labs[1]["valueQuantity"]["comparator"] == "<"
    assert labs[2]["status"] == "preliminary"
    assert labs[0]["interpretation"][0]["coding"][0]["code"] == "L"


def test_unplaceable_modifier_is_kept_in_an_extension() -> None:
    doc = Document("n2", "Aspirin 81 mg and 325 mg.")
    ent = Entity("E1", "drug", 0, 7, "Aspirin")
    m1, m2 = (
        Modifier("M1", "strength", 8, 13, "81 mg"),
        Modifier("M2", "strength", 18, 24, "325 mg"),
    )
    ex = Extraction(doc, (ent,), (m1, m2), (Relation("E1", "M1"), Relation("E1", "M2")))
    (ms,) = resources(to_bundle(ex, recorded=WHEN), "MedicationStatement")
    kept = [x for x in ms["extension"] if x["url"].endswith("extracted-modifier")]
    assert kept[0]["extension"] == [
        {"url": "type", "valueCode": "strength"},
        {"url": "text", "valueString": "325 mg"},
    ]


def test_validation_failure_names_path_not_text() -> None:
    b = to_bundle(extraction(), recorded=WHEN)
    broken = copy.deepcopy(b)
    cond = next(
        e["resource"] for e in broken["entry"] if e["resource"]["resourceType"] == "Condition"
    )
    cond["onsetDateTime"] = "SECRET-not-a-date"
    with pytest.raises(FhirOutputError) as info:
        validate_bundle(broken, "n1")
    assert "onsetDateTime" in str(info.value) and "SECRET" not in str(info.value)
