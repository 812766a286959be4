"""The typed Source: what parsers fill, and its one serialized form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiwi_fhir.core import Document, Extraction
from kiwi_fhir.fhir import to_bundle
from kiwi_fhir.inputs import load_documents, parse_document_reference, parse_hl7
from kiwi_fhir.serialize import document_source, from_dict, to_dict
from kiwi_fhir.source import (
    DocumentEvent,
    Identifier,
    LabResult,
    Ref,
    ResultGroup,
    Source,
    from_json,
    parse_ref,
    to_json,
)

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    "name", ["oru_multi_obr.hl7", "docref_plain.json", "hl7/oul_r22_cbc.hl7", "mdm_t02.hl7"]
)
def test_every_parsed_source_survives_json_unchanged(name: str) -> None:
    for doc in load_documents(DATA / name):
        data = json.loads(json.dumps(to_json(doc.source)))  # as stored: plain JSON
        assert from_json(data) == doc.source


def test_structured_results_are_typed_and_grouped_by_obr() -> None:
    doc = load_documents(DATA / "oru_multi_obr.hl7")[0]
    (group, *_) = doc.source.results
    assert isinstance(group, ResultGroup) and group.set_id
    assert all(isinstance(r, LabResult) for r in group.results)
    assert doc.source.lab_results[0].code == "718-7"


def test_source_is_not_part_of_a_documents_identity() -> None:
    a = Document("n", "No fever.", Source(channel="hl7", control_id="1"))
    assert a == Document("n", "No fever.") and hash(a) == hash(Document("n", "No fever."))


def test_extraction_json_carries_the_source_and_reads_it_back() -> None:
    src = Source(
        channel="hl7",
        patient=Ref(identifier=Identifier("123", "urn:oid:1.2.3", "HOSP")),
        event=DocumentEvent.ADDENDUM,
        warnings=("OBX[2]: ED payload is not text; not extracted",),
        results=(ResultGroup((LabResult(set_id="1", code="718-7", value="10.6"),), "1"),),
    )
    ex = Extraction(Document("n", "No fever.", src))
    out = json.loads(json.dumps(to_dict(ex)))
    assert out["schema"] == "kiwi-fhir/extraction/2"
    assert out["document"]["source"]["event"] == "addendum"
    assert from_dict(out, "No fever.").document.source == src


def test_a_result_stored_before_schema_2_keeps_its_warnings() -> None:
    legacy = {"id": "n", "meta": {"source": "hl7", "warnings": '["OBX[2]: not text"]'}}
    assert document_source(legacy).warnings == ("OBX[2]: not text",)


def test_unknown_keys_are_refused_not_dropped() -> None:
    with pytest.raises(ValueError, match="not a serialized Source"):
        from_json({"channel": "hl7", "patient_assigner": "X"})


def test_caller_reference_strings() -> None:
    assert parse_ref("Patient/1") == Ref(reference="Patient/1")
    assert parse_ref("urn:oid:1.2|77") == Ref(identifier=Identifier("77", "urn:oid:1.2"))
    assert parse_ref("") is None


def test_the_author_is_read_and_named_on_the_text_document_reference() -> None:
    raw = (
        "MSH|^~\\&|A|B|C|D|20240101||MDM^T02|AU1|P|2.5\rEVN|T02|20240101\r"
        "TXA|1|PN|TX|20240101|||||D123^Lévesque^André^^^Dr.||||||||AU\r"
        "OBX|1|TX|PN^Progress note||No fever.\r"
    )
    (doc,) = parse_hl7(raw)
    assert doc.source.author == "Dr. André Lévesque" and doc.source.document_status == "AU"
    bundle = to_bundle(Extraction(doc))
    (dr,) = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DocumentReference"
    ]
    assert dr["author"] == [{"display": "Dr. André Lévesque"}]
    res = json.loads((DATA / "docref_html.json").read_text(encoding="utf-8"))
    res["author"] = [{"reference": "Practitioner/9", "display": "Dr. Ola Brandt"}]
    (fhir_doc,) = parse_document_reference(res)
    assert fhir_doc.source.author == "Dr. Ola Brandt"
