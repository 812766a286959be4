"""OBX-3 labels as section headings, and NTE comments: to Observation.note
and the DiagnosticReport, never to the note text the model reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiwi_fhir.core import Entity, Extraction
from kiwi_fhir.fhir import to_bundle
from kiwi_fhir.inputs import load_documents, parse_hl7

HL7 = Path(__file__).parent / "data" / "hl7"


def _resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def test_obx3_labels_become_headings_in_message_order() -> None:
    (doc,) = load_documents(HL7 / "oru_sections_nte.hl7")
    # sections in the order their first OBX comes (diagnosis before microscopy,
    # although both have sub-ID 1); lines inside a section by sub-ID
    assert doc.text == (
        "Gross description\n"
        "Labelled with the patient name.\n"
        "Received in formalin: one core, 1.2 cm.\n"
        "Final diagnosis\n"
        "Invasive ductal carcinoma, grade 2.\n"
        "Microscopic\n"
        "Nests of atypical cells."
    )


def test_offsets_index_the_text_with_headings() -> None:
    (doc,) = load_documents(HL7 / "oru_sections_nte.hl7")
    start = doc.text.index("ductal carcinoma")
    ent = Entity("T1", "problem", start, start + 16, "ductal carcinoma")
    bundle = to_bundle(Extraction(doc, (ent,)))
    (cond,) = _resources(bundle, "Condition")
    ext = next(e for e in cond["extension"] if "derivation" in e["url"])
    offset = next(x["valueInteger"] for x in ext["extension"] if x["url"] == "offset")
    assert doc.text[offset : offset + 16] == "ductal carcinoma"


def test_one_label_keeps_the_plain_join() -> None:
    (doc,) = load_documents(HL7 / "svc_oru_progress.hl7")
    assert not doc.text.startswith("Progress note")


def test_nte_comments_go_to_their_result_and_never_to_the_note() -> None:
    (doc,) = load_documents(HL7 / "oru_sections_nte.hl7")
    for comment in ("hemolyzed", "left arm", "tumour board", "Dr. Ilic", "interpreter"):
        assert comment not in doc.text
    bundle = to_bundle(Extraction(doc))
    (obs,) = _resources(bundle, "Observation")
    assert obs["note"] == [{"text": "Specimen slightly hemolyzed\nRepeat advised"}]
    (report,) = _resources(bundle, "DiagnosticReport")
    (ext,) = report["extension"]
    assert ext["url"].endswith("extension-DiagnosticReport.note")
    assert ext["valueAnnotation"] == {"text": "Drawn from the left arm"}


def test_what_is_not_turned_into_output_is_named() -> None:
    (doc,) = load_documents(HL7 / "oru_sections_nte.hl7")
    assert doc.source.warnings == (
        "NTE[1]: comment not after an OBR or OBX; not extracted",
        "NTE[3] (after narrative OBX[3]): comment not extracted",
        "OBX[5]: value type RP not extracted",
        "NTE[2] (after OBR[1], which has no structured result): comment not extracted",
    )
    assert not any("Ilic" in w or "interpreter" in w for w in doc.source.warnings)


def test_an_empty_nte_is_not_a_warning() -> None:
    raw = "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|N1|P|2.5\rOBR|1||F|X\rOBX|1|TX|X||Fever.\rNTE|1||\r"
    (doc,) = parse_hl7(raw)
    assert doc.source.warnings == ()
