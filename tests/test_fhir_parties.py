"""PID-3 / PV1-19 assigning authorities to identifier systems, and the Patient
and Encounter entries a server can resolve (created only if absent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kiwi_fhir.core import Extraction
from kiwi_fhir.errors import ConfigError
from kiwi_fhir.fhir import to_bundle
from kiwi_fhir.inputs import load_documents, parse_hl7
from kiwi_fhir.inputs.identifier_systems import ENV, system_for
from kiwi_fhir.service.worker import result_json

DATA = Path(__file__).parent / "data"
SITE = "version: 1\nsystems:\n  GENHOSP: https://genhosp.example.org/sid/mrn\n"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "systems.yaml"
    path.write_text(SITE, encoding="utf-8")
    monkeypatch.setenv(ENV, str(path))
    return path


def _entries(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def test_universal_ids_win_and_a_bare_namespace_needs_the_table(site: Path) -> None:
    assert system_for("X", "2.16.840.1.113883.19.5", "ISO") == "urn:oid:2.16.840.1.113883.19.5"
    assert system_for("X", "not-an-oid", "ISO") == ""  # never a malformed urn:oid
    uid = "5D1E3F0A-1B2C-4D5E-8F90-0123456789AB"
    assert system_for("", uid, "UUID") == f"urn:uuid:{uid.lower()}"
    assert system_for("", "https://h.example/sid", "URI") == "https://h.example/sid"
    assert system_for("GENHOSP", "", "") == "https://genhosp.example.org/sid/mrn"
    assert system_for("ELSEWHERE", "", "") == ""


def test_the_shipped_table_maps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert system_for("GENHOSP", "", "") == ""


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("systems: {}\n", "version: 1"),
        ("version: 1\nsystems:\n  GENHOSP: not a uri\n", "systems: GENHOSP"),
        ("version: 1\nsystems: [a]\n", "systems"),
    ],
)
def test_a_bad_table_is_a_config_error_naming_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, where: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv(ENV, str(path))
    with pytest.raises(ConfigError, match=where) as err:
        system_for("GENHOSP", "", "")
    assert str(path) in str(err.value)


def test_an_explicit_table_that_is_missing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, str(tmp_path / "nowhere.yaml"))
    with pytest.raises(ConfigError, match="cannot read"):
        system_for("GENHOSP", "", "")


def test_mapped_patient_becomes_a_conditional_create_every_subject_points_at(site: Path) -> None:
    (doc,) = load_documents(DATA / "oru_radiology.hl7")  # PID-3 ...^GENHOSP&<OID>&ISO
    docs = load_documents(DATA / "oru_multi_obr.hl7")  # PID-3 MRN31337^^^GENHOSP
    b = to_bundle(Extraction(docs[0]))
    (patient,) = _entries(b, "Patient")
    token = "https%3A%2F%2Fgenhosp.example.org%2Fsid%2Fmrn%7CMRN31337"
    assert patient["request"] == {
        "method": "POST",
        "url": "Patient",
        "ifNoneExist": f"identifier={token}",
    }
    assert patient["resource"]["identifier"] == [
        {
            "value": "MRN31337",
            "system": "https://genhosp.example.org/sid/mrn",
            "assigner": {"display": "GENHOSP"},
        }
    ]
    subjects = [e["resource"].get("subject") for e in b["entry"] if "subject" in e["resource"]]
    assert subjects and all(s["reference"] == patient["fullUrl"] for s in subjects)
    assert doc.source.patient is not None and doc.source.patient.identifier is not None
    assert doc.source.patient.identifier.system == "urn:oid:2.16.840.1.113883.3.72"


def test_encounter_entry_with_class_and_subject(site: Path) -> None:
    (doc,) = load_documents(DATA / "oru_radiology.hl7")  # PV1-2 O, PV1-19 ENC7788^^^GENHOSP
    b = to_bundle(Extraction(doc))
    (enc,) = _entries(b, "Encounter")
    (patient,) = _entries(b, "Patient")
    res = enc["resource"]
    assert res["status"] == "unknown" and res["subject"]["reference"] == patient["fullUrl"]
    assert res["class"]["code"] == ("AMB" if doc.source.encounter_class == "O" else "UNK")
    (dr,) = [e["resource"] for e in _entries(b, "DocumentReference")]
    assert dr["context"]["encounter"][0]["reference"] == enc["fullUrl"]


def test_no_system_no_entry_and_no_made_up_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    docs = load_documents(DATA / "oru_multi_obr.hl7")
    b = to_bundle(Extraction(docs[0]))
    assert not _entries(b, "Patient")
    (dr,) = [e["resource"] for e in _entries(b, "DocumentReference")]
    assert dr["subject"] == {
        "identifier": {"value": "MRN31337", "assigner": {"display": "GENHOSP"}}
    }


def test_a_stated_status_never_overwrites_the_patient(site: Path) -> None:
    raw = (
        "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|P1|P|2.5\rPID|1||77^^^GENHOSP\r"
        "OBR|1||F|X" + "|" * 21 + "C\rOBX|1|TX|X||Fever.\r"  # OBR-25 C: corrected
    )
    (doc,) = parse_hl7(raw)
    b = to_bundle(Extraction(doc))
    (patient,) = _entries(b, "Patient")
    assert patient["request"]["method"] == "POST"  # the note's own resources are PUT
    assert {e["request"]["method"] for e in b["entry"] if e is not patient} == {"PUT"}


def test_collection_bundle_patient_has_an_id(site: Path) -> None:
    docs = load_documents(DATA / "oru_multi_obr.hl7")
    b = to_bundle(Extraction(docs[0]), bundle_type="collection")
    (patient,) = _entries(b, "Patient")
    assert "request" not in patient and patient["fullUrl"].endswith(patient["resource"]["id"])


def test_two_notes_of_one_patient_share_one_patient_entry(site: Path) -> None:
    docs = load_documents(DATA / "oru_multi_obr.hl7")
    import json

    bundle = json.loads(result_json([Extraction(d) for d in docs]))["bundle"]
    assert len(_entries(bundle, "Patient")) == 1
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(urls) == len(set(urls))


def test_an_edit_never_retires_the_patient(site: Path) -> None:
    from kiwi_fhir.fhir.retire import retire

    docs = load_documents(DATA / "oru_multi_obr.hl7")
    old = to_bundle(Extraction(docs[0]))
    new = to_bundle(Extraction(docs[1]))
    retire(new, old, "urn:kiwi-fhir:document")
    (patient,) = _entries(new, "Patient")
    assert patient["request"]["method"] == "POST"
