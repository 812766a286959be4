"""HL7 v2 input: sample messages in tests/data, expectations checked by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiwi_fhir.core import Document
from kiwi_fhir.errors import DocumentError, HL7Error, KiwiError
from kiwi_fhir.inputs import load_documents, load_documents_lenient, parse_hl7
from kiwi_fhir.inputs.hl7 import parse_hl7_items
from kiwi_fhir.inputs.hl7_syntax import Encoding, ts_to_fhir, unescape
from kiwi_fhir.source import Coding, Identifier, Ref

DATA = Path(__file__).parent / "data"


def test_radiology_crlf_escapes_repetitions_and_set_id_order() -> None:
    (doc,) = load_documents(DATA / "oru_radiology.hl7")
    assert doc.id == "oru_radiology"
    assert doc.text == (
        "EXAMINATION: Chest PA & lateral\n"
        "FINDINGS: Heart size normal. No pleural effusion | pneumothorax.\n"
        "Ratio 3^4 \\ stable.\n"
        "IMPRESSION: No acute cardiopulmonary process.\n"
        "Mild degenerative change of the spine."
    )
    m = doc.source
    assert m.patient == Ref(
        identifier=Identifier("MRN445566", "urn:oid:2.16.840.1.113883.3.72", "GENHOSP")
    )
    assert m.encounter == Ref(identifier=Identifier("ENC7788", "", "GENHOSP"))
    assert m.control_id == "RAD20240315001"
    assert m.source_id == "RAD20240315001"
    assert m.doc_type == Coding("36643-5", "http://loinc.org", "XR Chest 2 Views")
    assert m.date == "2024-03-15T08:30:00-05:00"
    assert m.message_type == "ORU^R01" and m.hl7_version == "2.5.1"


def test_pathology_ft_newlines_sub_id_order_and_split_utf8_hex_escape() -> None:
    (doc,) = load_documents(DATA / "oru_pathology_ft.hl7")
    # OBX-4 sub-ID 1 comes first although its OBX is second in the message;
    # \.sp 2\ is two line breaks, \H\ \N\ vanish, \XC3\\XA9\ is one "é".
    assert doc.text == (
        "SPECIMEN: Colon biopsy, sigmoid.\nCLINICAL: Rule out colitis.\n"
        "DIAGNOSIS: Benign colonic mucosa.\n\nPt. seen by Dr. André Lévesque."
    )
    cpt = "http://www.ama-assn.org/go/cpt"
    assert doc.source.doc_type == Coding("88305", cpt, "Surgical pathology")
    assert doc.source.date == "2024-04-01"


def test_ed_base64_text_and_rtf_pdf_skipped() -> None:
    (doc,) = load_documents(DATA / "oru_ed_base64.hl7")
    assert doc.text == (
        "Discharge note: patient stable.\nContinue metoprolol 25 mg twice a day.\n"
        "Follow-up in two weeks.\nCafé diet allowed."
    )


def test_multi_obr_one_document_per_narrative_group_labs_kept() -> None:
    docs = load_documents(DATA / "oru_multi_obr.hl7")
    assert [d.id for d in docs] == ["oru_multi_obr.1", "oru_multi_obr.2"]
    assert docs[0].text == "Left ventricular ejection fraction 55%.\nNo pericardial effusion."
    assert docs[1].text == "Cardiology consult: continue aspirin 81 mg daily."
    assert docs[0].source.doc_type is not None
    assert docs[0].source.doc_type.text == "Echocardiogram report"
    assert docs[1].source.identifier == Identifier("CONS3")
    labs = docs[0].source.lab_results
    assert [(lab.code, lab.value, lab.comparator) for lab in labs] == [
        ("718-7", "10.6", ""),
        ("777-3", "50", "<"),
        ("6690-2", "7.2", ""),
    ]
    assert labs[0].unit == "g/dL" and labs[0].flag == "L"
    assert docs[1].source.results == ()


def test_mdm_t02_txa_document_type() -> None:
    (doc,) = load_documents(DATA / "mdm_t02.hl7")
    assert doc.text == (
        "HOSPITAL COURSE: Admitted with community acquired pneumonia.\n"
        "Treated with ceftriaxone 1 g IV daily for five days."
    )
    assert doc.source.doc_type == Coding(
        "DS", "http://terminology.hl7.org/CodeSystem/v2-0270", "Discharge summary"
    )
    assert doc.source.identifier == Identifier("DOC-2024-0702")
    assert doc.source.date == "2024-07-02"
    assert doc.source.message_type == "MDM^T02"


def test_batch_file_with_mllp_framing_and_batch_segments() -> None:
    docs = load_documents(DATA / "batch_two_messages.hl7")
    assert [(d.id, d.source.control_id) for d in docs] == [
        ("batch_two_messages.1", "B001"),
        ("batch_two_messages.2", "B002"),
    ]
    assert docs[1].text == "Addendum: mild headache resolved."
    assert docs[1].source.message_type == "MDM^T06"


def test_msh18_latin1_bytes_and_hex_escape_in_that_charset() -> None:
    (doc,) = load_documents(DATA / "oru_latin1.hl7")
    assert doc.text == "Fièvre; pas dépanchement."


def test_same_message_as_str_bytes_and_any_separator() -> None:
    raw = (DATA / "mdm_t02.hl7").read_bytes()
    want = parse_hl7(raw)[0].text
    text = raw.decode()
    for sep in ("\n", "\r\n"):
        assert parse_hl7(text.replace("\r", sep))[0].text == want


@pytest.mark.parametrize(
    ("name", "where", "words"),
    [
        ("bad_no_msh.hl7", "MSH", "does not start with an MSH"),
        ("bad_no_narrative.hl7", "OBX-5", "no narrative OBX"),
        ("bad_wrong_type.hl7", "MSH-9", "ADT^A01"),
        ("bad_truncated.hl7", "line 3", "malformed segment"),
        ("bad_truncated_msh.hl7", "MSH-9", "unsupported message type"),
    ],
)
def test_bad_messages_give_typed_errors_naming_where(name: str, where: str, words: str) -> None:
    with pytest.raises(HL7Error) as info:
        load_documents(DATA / name)
    msg = str(info.value)
    assert msg.startswith(str(DATA / name)) and where in msg and words in msg
    assert isinstance(info.value, DocumentError) and isinstance(info.value, KiwiError)


def test_truncated_narrative_obx_is_an_error() -> None:
    raw = "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|X1|P|2.5\rOBR|1||F|X\rOBX|1|TX\rOBX|2|TX|X|\r"
    with pytest.raises(HL7Error, match=r"OBX-5: narrative OBX-5 is empty .* OBR\[1\] group"):
        parse_hl7(raw)


def test_error_never_quotes_note_text() -> None:
    raw = "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|X1|P|2.5\rOBX|1|ED|X||^TEXT^PLAIN^Base64^SECRET@@\r"
    with pytest.raises(HL7Error) as info:
        parse_hl7(raw)
    assert info.value.segment == "OBX[1]" and info.value.field == "5.5"
    assert "SECRET" not in str(info.value)


def test_unsupported_version_and_charset() -> None:
    base = "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|X1|P|{v}||||||{cs}\rOBX|1|TX|X||ok||||||F\r"
    with pytest.raises(HL7Error, match="MSH-12"):
        parse_hl7(base.format(v="2.1", cs=""))
    with pytest.raises(HL7Error, match="MSH-18"):
        parse_hl7(base.format(v="2.5", cs="KLINGON"))
    assert parse_hl7(base.format(v="2.8.2", cs=""))[0].text == "ok"


def test_batch_keeps_good_messages_and_numbers_by_position() -> None:
    docs, errors = load_documents_lenient(DATA / "mixed_batch.hl7")
    assert [(d.id, d.text) for d in docs] == [
        ("mixed_batch.1", "First report."),
        ("mixed_batch.3", "Third report."),
    ]
    (err,) = errors
    assert isinstance(err, HL7Error) and err.message == 2 and "message 2: MSH-9" in str(err)


def test_unescape_rules() -> None:
    enc = Encoding()
    assert unescape(r"a\F\b\S\c\T\d\R\e\E\f", enc) == "a|b^c&d~e\\f"
    assert unescape(r"x\.br\y\.sp\z\H\bold\N\ \.in+4\q", enc) == "x\ny\nzbold q"
    assert unescape(r"\XE282AC\ 5", enc) == "€ 5"  # multi-byte UTF-8 in one escape
    assert unescape("caf\\XE9\\", enc, "latin-1") == "café"
    assert unescape(r"no\escape", enc) == r"no\escape"  # unterminated: literal
    custom = Encoding.from_msh("MSH|^~#&|A")
    assert unescape("a#F#b", custom) == "a|b"


def test_ts_to_fhir() -> None:
    assert ts_to_fhir("20240315083000-0500") == "2024-03-15T08:30:00-05:00"
    assert ts_to_fhir("20240315083000") == "2024-03-15"  # FHIR needs a zone with a time
    assert ts_to_fhir("202403") == "2024-03"
    assert ts_to_fhir("garbage") is None


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.hl7")))
def test_any_truncation_or_corruption_gives_only_typed_errors(name: str) -> None:
    raw = (DATA / name).read_bytes()
    for cut in range(0, len(raw), 17):
        for variant in (raw[:cut], raw[:cut] + raw[cut + 3 :], raw[:cut] + b"\xff" + raw[cut:]):
            items = parse_hl7_items(variant)  # never raises: errors are items
            assert all(isinstance(i, (Document, HL7Error)) for i in items)
