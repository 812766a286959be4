"""Real-world intake (issue 18): what interface engines send, accepted and kept structured.

Every sample in ``tests/data/hl7`` named here was written for this suite from
the HL7 v2.5.1 / v2.3 and FHIR R4 specifications (not taken from any public
test set). Each Bundle is validated against R4B by ``to_bundle``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kiwi_fhir.core import Extraction
from kiwi_fhir.errors import HL7Error
from kiwi_fhir.fhir import to_bundle
from kiwi_fhir.inputs import load_documents, parse_hl7
from kiwi_fhir.inputs.cda import cda_to_text
from kiwi_fhir.inputs.hl7_syntax import codec_for
from kiwi_fhir.source import DocumentEvent

DATA = Path(__file__).parent / "data"
HL7 = DATA / "hl7"


def _bundle(path: Path) -> list[dict[str, Any]]:
    (doc,) = load_documents(path)
    return [e["resource"] for e in to_bundle(Extraction(doc))["entry"]]


def _of(resources: list[dict[str, Any]], rtype: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] == rtype]


def test_numeric_lab_message_gives_quantity_observations_ranges_and_a_report() -> None:
    """BOM, PRT and Z segments, MSH-18 '8859/1', no narrative: all accepted."""
    res = _bundle(HL7 / "oru_lab_numeric.hl7")
    assert not _of(res, "DocumentReference")  # nothing narrative to index
    obs = {o["code"]["coding"][0]["code"]: o for o in _of(res, "Observation")}
    glucose = obs["2345-7"]
    assert glucose["code"]["coding"][0]["system"] == "http://loinc.org"
    assert glucose["valueQuantity"]["value"] == 182
    assert glucose["valueQuantity"]["code"] == "mg/dL"
    rr = glucose["referenceRange"][0]
    assert (rr["low"]["value"], rr["high"]["value"], rr["low"]["unit"]) == (70, 99, "mg/dL")
    assert glucose["interpretation"][0]["coding"][0]["code"] == "H"
    assert glucose["effectiveDateTime"].startswith("2026-03-15")
    assert obs["5671-3"]["valueQuantity"]["comparator"] == "<"
    assert obs["5671-3"]["referenceRange"][0]["high"]["value"] == 5
    assert obs["2951-2"]["status"] == "preliminary"
    sodium_rr = obs["2951-2"]["referenceRange"][0]
    assert (sodium_rr["low"]["value"], sodium_rr["high"]["value"]) == (136, 145)
    k_rr = obs["2823-3"]["referenceRange"][0]
    assert (k_rr["low"]["value"], k_rr["high"]["value"]) == (3.5, 5.1)
    abo = obs["882-1"]["valueCodeableConcept"]
    assert abo["coding"][0] == {"code": "A+", "system": "http://loinc.org"}
    (report,) = _of(res, "DiagnosticReport")
    assert report["code"]["coding"][0]["code"] == "24323-8"
    assert report["status"] == "final" and len(report["result"]) == 5
    # PID-3 with an ISO OID authority: an identifier with a urn:oid system, never
    # the literal (unresolvable) reference "urn:oid:...|7723190"; the subject
    # points at the bundle's Patient entry (created if no Patient has it)
    subject = glucose["subject"]
    (patient,) = _of(res, "Patient")
    assert subject["reference"].startswith("urn:uuid:")
    assert patient["identifier"] == [subject["identifier"]]
    assert subject["identifier"] == {
        "system": "urn:oid:2.16.840.1.113883.3.7723",
        "value": "7723190",
        "assigner": {"display": "NORTHHOSP"},
    }
    assert glucose["encounter"]["identifier"]["system"] == "urn:oid:2.16.840.1.113883.3.7723.2"


def test_oul_r22_is_a_lab_message() -> None:
    res = _bundle(HL7 / "oul_r22_cbc.hl7")
    obs = _of(res, "Observation")
    assert len(obs) == 2 and all("valueQuantity" in o for o in obs)
    assert _of(res, "DiagnosticReport")[0]["code"]["text"] == "CBC panel"


def test_cda_inside_an_obx_ed_is_extracted_as_section_narrative() -> None:
    (doc,) = load_documents(HL7 / "oru_cda_ed.hl7")
    assert doc.text.startswith("Findings\nSmall left pleural effusion.\nNo pneumothorax.")
    assert "Impression\nPleural effusion, likely due to congestive heart failure." in doc.text
    assert "Do Not Extract" not in doc.text  # header names are not note text
    assert "<" not in doc.text


def test_cda_document_reference_reads_like_the_hl7_one() -> None:
    (dr,) = load_documents(DATA / "docref_cda.json")
    (ed,) = load_documents(HL7 / "oru_cda_ed.hl7")
    assert dr.text == ed.text and dr.source.content_type == "application/hl7-v3+xml"


def test_cda_xml_is_parsed_safely() -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><ClinicalDocument>&b;</ClinicalDocument>'
    )
    with pytest.raises(ValueError, match="does not parse"):
        cda_to_text(bomb)
    with pytest.raises(ValueError, match="does not parse"):
        cda_to_text("<ClinicalDocument><section>")


def test_mdm_without_txa_and_replace_event_are_accepted() -> None:
    (doc,) = load_documents(HL7 / "mdm_t10_no_txa.hl7")
    assert doc.text.startswith("Patient denies chest pain.")
    assert doc.source.message_type == "MDM^T10" and doc.source.event is DocumentEvent.REPLACE


def test_adt_with_obx_narrative_is_read_and_adt_without_is_refused() -> None:
    (doc,) = load_documents(HL7 / "adt_a08_obx.hl7")
    assert doc.text == "Shortness of breath and fever for two days."
    with pytest.raises(HL7Error, match=r"MSH-9: ADT\^A01 message carries no clinical content"):
        load_documents(DATA / "bad_wrong_type.hl7")


@pytest.mark.parametrize(
    ("msh18", "codec"),
    [
        ("8859", "latin-1"),
        ("8859/1", "latin-1"),
        ("ISO IR100", "latin-1"),
        ("ISO_IR 100", "latin-1"),
        ("UNICODE UTF-8", "utf-8"),
        ("UTF8", "utf-8"),
        ("ISO-8859-1", "latin-1"),
    ],
)
def test_msh18_aliases(msh18: str, codec: str) -> None:
    assert codec_for(msh18) == codec


def test_unknown_charset_and_bytes_codecs_are_still_refused() -> None:
    for name in ("BOGUS-42", "base64", "rot13"):
        with pytest.raises(ValueError, match="unknown character set"):
            codec_for(name)


def test_bom_crlf_and_trailing_whitespace_are_tolerated() -> None:
    raw = (HL7 / "adt_a08_obx.hl7").read_bytes()
    variants = [b"\xef\xbb\xbf" + raw, raw.replace(b"\r", b"\r\n") + b"\r\n  \n", b"\n" + raw]
    for v in variants:
        assert parse_hl7(v)[0].text == "Shortness of breath and fever for two days."
    assert parse_hl7("\ufeff" + raw.decode())[0].text.startswith("Shortness")


def test_message_with_nothing_readable_names_what_was_skipped() -> None:
    with pytest.raises(HL7Error, match=r"OBX-5: .*OBX\[1\]: unsupported ED payload"):
        load_documents(DATA / "bad_no_narrative.hl7")


def test_unreadable_ed_beside_narrative_is_named_in_a_warning() -> None:
    raw = (
        "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|W1|P|2.5\rOBR|1||F|X\r"
        "OBX|1|TX|X||Patient has fever.\rOBX|2|ED|X||^image^jpeg^Base64^/9j/\r"
    )
    (doc,) = parse_hl7(raw)
    assert doc.source.warnings == ("OBX[2]: ED payload is not text; not extracted",)


def test_cli_names_the_skipped_part_and_exits_1(tmp_path: Path, capsys: Any) -> None:
    from kiwi_fhir.cli import main

    f = tmp_path / "mixed.hl7"
    f.write_text(
        "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|W1|P|2.5\rOBR|1||F|X\r"
        "OBX|1|TX|X||Patient has fever.\rOBX|2|ED|X||^image^jpeg^Base64^/9j/\r"
    )
    code = main(["extract", str(f), "--format", "fhir", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert "mixed: warning: OBX[2]: ED payload is not text; not extracted" in err
    assert "fever" not in err
    assert (tmp_path / "out" / "mixed.bundle.json").is_file()  # the narrative still went out


def test_demo_never_runs_ner_over_hl7_segments() -> None:
    """Regression: a pasted MDM with a BOM (or prose above it) was treated as a note."""
    from kiwi_fhir.service.demo_api import detect, new_job

    mdm = (HL7 / "mdm_t10_no_txa.hl7").read_text(encoding="utf-8").replace("\r", "\n")
    assert detect("\ufeff" + mdm) == "hl7"
    assert detect("Pasted from the interface log:\n" + mdm) == "hl7"
    assert detect("Patient has a fever. No PID | pipes here.") == "text"
    job = new_job("\ufeff" + mdm, "auto")
    assert job.kind == "hl7" and job.longest_note == len(
        b"Patient denies chest pain. Continue metoprolol 25 mg twice daily."
    )
    with pytest.raises(HL7Error, match="does not start with an MSH"):
        new_job("Pasted from the interface log:\n" + mdm, "auto")
