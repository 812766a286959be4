"""Addenda and replacements: relatesTo to the parent, and an edited note
retiring what its previous version made (store on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_service_helpers import HL7_DIR

from kiwi_fhir.core import Document, Entity, Extraction
from kiwi_fhir.fhir import to_bundle
from kiwi_fhir.inputs import load_documents, parse_document_reference
from kiwi_fhir.service import intake, store
from kiwi_fhir.service.worker import _outcomes
from kiwi_fhir.source import DocumentEvent, Identifier

DATA = Path(__file__).parent / "data"


def _problem(doc: Document, word: str) -> Extraction:
    start = doc.text.index(word)
    ent = Entity("T1", "problem", start, start + len(word), word)
    return Extraction(doc, (ent,), model="m", backend="b")


def _text_docref(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DocumentReference"
        and e["resource"]["status"] != "superseded"
    )


def test_addendum_appends_to_the_parent_named_in_txa13() -> None:
    (doc,) = load_documents(HL7_DIR / "mdm_link_t06_addendum.hl7")
    assert doc.source.event is DocumentEvent.ADDENDUM
    assert doc.source.parent == Identifier("DOC-LNK-1")
    dr = _text_docref(to_bundle(_problem(doc, "chest X-ray")))
    assert dr["relatesTo"] == [
        {"code": "appends", "target": {"identifier": {"value": "DOC-LNK-1"}}}
    ]


def test_fhir_relates_to_replaces_is_read_and_carried_to_the_text_copy() -> None:
    res = json.loads((DATA / "docref_html.json").read_text(encoding="utf-8"))
    res["relatesTo"] = [
        {"code": "transforms", "target": {"reference": "DocumentReference/other"}},
        {"code": "replaces", "target": {"reference": "DocumentReference/old-1"}},
    ]
    (doc,) = parse_document_reference(res)
    assert (doc.source.event, doc.source.parent_ref) == (
        DocumentEvent.REPLACE,
        "DocumentReference/old-1",
    )
    dr = _text_docref(to_bundle(_problem(doc, "Chest pain")))
    assert {"code": "replaces", "target": {"reference": "DocumentReference/old-1"}} in dr[
        "relatesTo"
    ]


def test_a_urn_parent_of_the_senders_transaction_is_not_linked() -> None:
    res = json.loads((DATA / "docref_html.json").read_text(encoding="utf-8"))
    res["relatesTo"] = [{"code": "appends", "target": {"reference": "urn:uuid:1234"}}]
    (doc,) = parse_document_reference(res)
    assert doc.source.event is None
    relates = _text_docref(to_bundle(_problem(doc, "Chest pain")))["relatesTo"]
    assert [r["code"] for r in relates] == ["transforms"]  # only to the HTML original


def _run(st: store.IntakeStore, name: str, word: str) -> dict[str, Any]:
    job, created = st.submit(intake.hl7_job((HL7_DIR / name).read_bytes(), "mllp"))
    assert created
    (doc,) = intake.documents(job)
    (outcome,) = _outcomes([(job, [_problem(doc, word)])], st)
    assert (outcome.status, outcome.error) == (store.DONE, None)
    st.finish([outcome])
    return dict(json.loads(outcome.result)["bundle"])


def test_an_edit_retires_what_the_previous_version_made(st: store.IntakeStore) -> None:
    first = _run(st, "mdm_link_t02.hl7", "community acquired pneumonia")
    old = {e["resource"]["resourceType"]: e for e in first["entry"]}
    edit = _run(st, "mdm_link_t08_edit.hl7", "viral bronchitis")
    puts = {
        e["resource"]["resourceType"]: e
        for e in edit["entry"]
        if e["fullUrl"] in {o["fullUrl"] for o in first["entry"]}
    }
    # the old Condition withdrawn, the old text superseded, both by identifier
    cond = puts["Condition"]["resource"]
    assert cond["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
    assert cond["identifier"] == old["Condition"]["resource"]["identifier"]
    assert puts["Condition"]["request"]["method"] == "PUT"
    assert puts["Condition"]["request"]["url"].startswith("Condition?identifier=")
    assert puts["DocumentReference"]["resource"]["status"] == "superseded"
    assert "Provenance" not in puts  # the old Provenance records what happened
    # the new text replaces the old one, resolvable inside this transaction
    new_dr = _text_docref(edit)
    target = {"reference": old["DocumentReference"]["fullUrl"]}
    assert {"code": "replaces", "target": target} in new_dr["relatesTo"]
    new_cond = [e for e in edit["entry"] if e["resource"]["resourceType"] == "Condition"]
    assert len(new_cond) == 2  # the new one and the retired one


def test_an_addendum_retires_nothing(st: store.IntakeStore) -> None:
    first = _run(st, "mdm_link_t02.hl7", "community acquired pneumonia")
    add = _run(st, "mdm_link_t06_addendum.hl7", "chest X-ray")
    assert not {e["fullUrl"] for e in first["entry"]} & {e["fullUrl"] for e in add["entry"]}


def test_a_resend_of_the_same_text_changes_nothing(st: store.IntakeStore) -> None:
    raw = (HL7_DIR / "mdm_link_t02.hl7").read_bytes()
    first = _run(st, "mdm_link_t02.hl7", "community acquired pneumonia")
    again = raw.replace(b"LNK001", b"LNK009")  # a new MSH-10, the same note
    job, _ = st.submit(intake.hl7_job(again, "mllp"))
    (doc,) = intake.documents(job)
    word = "community acquired pneumonia"
    (outcome,) = _outcomes([(job, [_problem(doc, word)])], st)
    result = outcome.result
    entries = json.loads(result)["bundle"]["entry"]
    assert {e["fullUrl"] for e in entries} == {e["fullUrl"] for e in first["entry"]}
    assert all(e["resource"].get("status") != "superseded" for e in entries)


def test_a_second_edit_replaces_the_first_edit_not_the_original(st: store.IntakeStore) -> None:
    _run(st, "mdm_link_t02.hl7", "community acquired pneumonia")
    first_edit = _run(st, "mdm_link_t08_edit.hl7", "viral bronchitis")
    second = _run(st, "mdm_link_t08_second_edit.hl7", "acute asthma")
    current = _text_docref(first_edit)
    url = next(e["fullUrl"] for e in first_edit["entry"] if e["resource"] is current)
    replaced = [r for r in _text_docref(second)["relatesTo"] if r["code"] == "replaces"]
    assert replaced == [{"code": "replaces", "target": {"reference": url}}]
    conds = [e["resource"] for e in second["entry"] if e["resource"]["resourceType"] == "Condition"]
    codes = [c["verificationStatus"]["coding"][0]["code"] for c in conds]
    assert codes.count("entered-in-error") == 2  # both earlier versions' Conditions stay withdrawn
