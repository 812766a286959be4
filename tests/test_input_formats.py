"""The input-format registry: one seam that the CLI, the service and the demo share."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from kiwi_fhir.core import Document
from kiwi_fhir.errors import ConfigError, DocumentError, HL7Error
from kiwi_fhir.inputs import formats, load_documents_lenient
from kiwi_fhir.inputs.formats import Fetcher, Identity
from kiwi_fhir.inputs.hl7_syntax import AckError, ack_text, read_msh
from kiwi_fhir.service import demo_api, intake
from kiwi_fhir.service.store import Job, NewJob
from kiwi_fhir.source import Source

HL7_DIR = Path(__file__).parent / "data" / "hl7"
ORU = (HL7_DIR / "oru_lab_numeric.hl7").read_bytes()


def test_builtin_formats_by_name_suffix_media_type_and_sniff() -> None:
    assert formats.names() == ("docref", "hl7", "text")
    assert set(formats.suffixes()) == {".json", ".hl7", ".txt"}
    assert formats.by_suffix(".HL7") is formats.get("hl7")
    assert formats.by_suffix(".pdf") is None
    assert formats.by_media_type("application/fhir+json; charset=utf-8") is formats.get("docref")
    assert formats.sniff(b'\xef\xbb\xbf  {"resourceType": 1}').name == "docref"
    assert formats.sniff(b"\x0bMSH|^~\\&|A").name == "hl7"
    # segment lines after prose are HL7, never a note for NER (the DUCK/PID bug)
    assert formats.sniff(b"see below\nPID|1||123^^^H^MR||DUCK^D\n").name == "hl7"
    assert formats.sniff(b"Chest pain. No fever.").name == "text"
    with pytest.raises(ConfigError, match="unknown input format 'pdf'"):
        formats.get("pdf")


def test_identity_per_format() -> None:
    # the BOM before MSH does not hide the identity
    assert formats.get("hl7").identity(ORU) == Identity("hl7:LABSYS|NORTHLAB|LABNUM1", "MSH-10")
    doc = b'{"resourceType":"DocumentReference","id":"d1","meta":{"versionId":"3"}}'
    assert formats.get("docref").identity(doc) == Identity(
        "fhir:DocumentReference/d1|3", "meta.versionId", versioned=True
    )
    unversioned = formats.get("docref").identity(b'{"resourceType":"DocumentReference","id":"d1"}')
    assert unversioned == Identity("fhir:DocumentReference/d1|", "id", versioned=False)
    assert formats.get("docref").identity(b"not json") is None
    assert formats.get("text").identity(b"a note") is None


def test_parse_names_the_source_and_keeps_good_items() -> None:
    two = ORU + b"\r" + b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X1|P|2.5.1\rPID|1||9^^^H^MR\r"
    items = formats.get("hl7").parse(two, source="feed.hl7")
    assert isinstance(items[0], Document)
    assert isinstance(items[-1], HL7Error) and str(items[-1]).startswith("feed.hl7: message 2:")
    (bad,) = formats.get("text").parse(b"caf\xe9", source="n.txt")
    assert isinstance(bad, DocumentError) and "n.txt: not valid UTF-8 at byte 3" in str(bad)


class _Upper:
    """A format a site could add: one class plus its registry entry."""

    name = "upper"
    suffixes = (".up",)
    media_types = ("text/x-upper",)

    def sniff(self, raw: bytes) -> bool:
        return raw.startswith(b"UP:")

    def identity(self, raw: bytes) -> Identity | None:
        return None

    def parse(
        self, raw: bytes, *, fetcher: Fetcher | None = None, source: str = ""
    ) -> list[Document | DocumentError]:
        return [Document("u", raw.decode()[3:].lower(), Source(channel="upper"))]


def test_a_new_format_is_one_class_and_one_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(formats.FORMATS, "upper", formats._Spec(__name__, "_Upper"))
    monkeypatch.setattr(formats, "_LOADED", {})
    # the CLI's loader, the service's intake and the demo's sniffing all see it
    f = tmp_path / "n.up"
    f.write_bytes(b"UP:NO FEVER.")
    (doc,), errors = load_documents_lenient(f)
    assert errors == [] and (doc.id, doc.text) == ("n", "no fever.")
    job = intake.format_job("upper", b"UP:CHEST PAIN.", "grpc")
    assert job.kind == "upper" and job.dedup_key is None
    assert demo_api.detect("UP:X") == "upper"
    assert [d.text for d in intake.documents(_stored(job))] == ["chest pain."]


def _stored(new: NewJob) -> Job:
    return Job("id1", new.source, new.kind, new.payload, new.sha256, new.dedup_key, new.params,
               datetime.now(UTC), "received", None, None, None, None, 0, 0)  # fmt: skip


def test_ack_text_is_built_in_one_place_with_warnings() -> None:
    h = read_msh(ORU)
    assert h is not None
    text = ack_text(h, "AA", [AckError("OBX-5", "0", "OBX[2]: ED|not text", "W")],
                    now="20260101000000", message_id="KF1")  # fmt: skip
    msh, msa, err = text.rstrip("\r").split("\r")
    assert msh.split("|")[2:6] == [h.receiving_app, h.receiving_facility, h.sending_app,
                                   h.sending_facility]  # fmt: skip
    assert msa == f"MSA|AA|{h.control_id}"
    assert err.split("|")[2] == "OBX^1^5" and err.split("|")[4] == "W"
    assert "ED not text" in err  # our delimiters in the text are blanked
