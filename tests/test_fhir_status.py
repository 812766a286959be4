"""Document status into the FHIR output: preliminary, amended, retracted."""

from __future__ import annotations

from typing import Any

import pytest

from kiwi_fhir.core import Document, Entity, Extraction, Modifier, Relation
from kiwi_fhir.fhir import to_bundle
from kiwi_fhir.fhir.status import Standing, standing
from kiwi_fhir.inputs import parse_hl7
from kiwi_fhir.source import DocumentEvent, Source

VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def mdm(event: str, txa17: str) -> bytes:
    """An MDM whose TXA-17 and event say where the document stands."""
    ctl = f"C{event}{txa17}"
    return (f"MSH|^~\\&|DICT|HOSP|EHR|HOSP|20260318090000||MDM^{event}^MDM_T02|{ctl}|P|2.5\r"
            f"EVN|{event}|20260318090000\rPID|1||77^^^HOSP^MR||Doe^Ann\r"
            f"TXA|1|PN|TX|20260318||||||||DOC1|||||{txa17}\r"
            "OBX|1|TX|11506-3^Progress note^LN||Pneumonia. Chest x-ray shows no effusion.||||||F\r"
            ).encode()  # fmt: skip


def extract(doc: Document) -> Extraction:
    """Gold-style spans on the MDM's note (no model: the test is about status)."""
    text = doc.text

    def span(cls: type[Any], id_: str, label: str, surface: str) -> Any:
        start = text.index(surface)
        return cls(id_, label, start, start + len(surface), surface)

    return Extraction(
        doc,
        entities=(
            span(Entity, "T1", "problem", "Pneumonia"),
            span(Entity, "T2", "test", "Chest x-ray"),
            span(Entity, "T3", "problem", "effusion"),
        ),
        modifiers=(span(Modifier, "T4", "negation", "no"),),
        relations=(Relation("T3", "T4"),),
    )


def resources(raw: bytes) -> list[dict[str, Any]]:
    (doc,) = parse_hl7(raw)
    return to_bundle(extract(doc))["entry"]  # type: ignore[no-any-return]


def by_type(entries: list[dict[str, Any]], rtype: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["resource"]["resourceType"] == rtype]


def ver(entry: dict[str, Any]) -> str:
    return str(entry["resource"]["verificationStatus"]["coding"][0]["code"])


@pytest.mark.parametrize(
    ("source", "want"),
    [
        (Source(), Standing.FINAL),
        (Source(document_status="AU"), Standing.FINAL),
        (Source(document_status="DO"), Standing.PRELIMINARY),
        (Source(document_status="preliminary"), Standing.PRELIMINARY),
        (Source(result_status="P"), Standing.PRELIMINARY),
        (Source(result_status="C"), Standing.AMENDED),
        (Source(document_status="amended"), Standing.AMENDED),
        (Source(event=DocumentEvent.REPLACE, document_status="DI"), Standing.AMENDED),
        (Source(result_status="X"), Standing.ENTERED_IN_ERROR),
        (Source(reference_status="entered-in-error"), Standing.ENTERED_IN_ERROR),
        (Source(event=DocumentEvent.CANCEL, document_status="LA"), Standing.ENTERED_IN_ERROR),
        (Source(event=DocumentEvent.ADDENDUM), Standing.FINAL),
    ],
)
def test_standing_folds_every_status_the_senders_use(source: Source, want: Standing) -> None:
    assert standing(source) is want


def test_preliminary_note_gives_provisional_facts_that_a_signed_version_updates() -> None:
    dictated = resources(mdm("T02", "DO"))
    problems = by_type(dictated, "Condition")
    # asserted problems become provisional; the negated one stays refuted
    assert sorted(ver(e) for e in problems) == ["provisional", "refuted"]
    (obs,) = by_type(dictated, "Observation")
    assert obs["resource"]["status"] == "preliminary"
    (docref,) = by_type(dictated, "DocumentReference")
    assert docref["resource"]["docStatus"] == "preliminary"
    # a stated status: each resource is updated by identifier, not created-if-absent
    assert all(e["request"]["method"] == "PUT" for e in [*problems, obs])
    assert obs["request"]["url"].startswith("Observation?identifier=")

    signed = resources(mdm("T04", "LA"))
    assert sorted(ver(e) for e in by_type(signed, "Condition")) == ["confirmed", "refuted"]
    assert by_type(signed, "Observation")[0]["resource"]["status"] == "final"
    # the same text gives the same identifiers, so the PUTs land on the dictated version's
    assert [e["request"]["url"] for e in by_type(signed, "Condition")] == [
        e["request"]["url"] for e in problems
    ]


def test_cancelled_note_retracts_every_resource_it_made() -> None:
    first = resources(mdm("T02", "AU"))
    cancelled = resources(mdm("T11", "AU"))
    for rtype in ("Condition", "Observation"):
        assert [e["request"]["url"] for e in by_type(cancelled, rtype)] == [
            e["request"]["url"] for e in by_type(first, rtype)
        ]
    assert {ver(e) for e in by_type(cancelled, "Condition")} == {"entered-in-error"}
    assert by_type(cancelled, "Observation")[0]["resource"]["status"] == "entered-in-error"
    (docref,) = by_type(cancelled, "DocumentReference")
    assert docref["resource"]["status"] == docref["resource"]["docStatus"] == "entered-in-error"


def test_no_stated_status_keeps_create_if_absent() -> None:
    raw = mdm("T02", "").replace(b"MDM^T02", b"ORU^R01").replace(b"TXA|", b"NTE|")
    entries = resources(raw)
    assert {ver(e) for e in by_type(entries, "Condition")} == {"confirmed", "refuted"}
    assert {e["request"]["method"] for e in entries if "ifNoneExist" in e["request"]} == {"POST"}
    assert all(
        e["request"]["method"] == "POST"
        for e in entries
        if e["resource"]["resourceType"] != "Provenance"
    )
