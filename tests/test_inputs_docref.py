"""FHIR DocumentReference / Bundle input and text conversion (tests/data samples)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kiwi_fhir.core import Document
from kiwi_fhir.errors import DocumentError, FhirInputError, UnsupportedContentTypeError
from kiwi_fhir.inputs import (
    HttpFetcher,
    load_documents,
    load_documents_lenient,
    parse_document_reference,
)
from kiwi_fhir.inputs.docref import parse_document_reference_items
from kiwi_fhir.inputs.textconv import decode_bytes, html_to_text, split_content_type
from kiwi_fhir.source import Coding, Identifier, Ref, Source

DATA = Path(__file__).parent / "data"


def test_plain_utf8_keeps_crlf_and_carries_context() -> None:
    (doc,) = load_documents(DATA / "docref_plain.json")
    assert doc.id == "docref_plain"
    assert doc.text == "Assessment: café-au-lait spots.\r\nNo fever."
    assert doc.source == Source(
        channel="fhir",
        source_id="note-1",
        source_ref="DocumentReference/note-1",
        identifier=Identifier("DOC-note-1", "urn:oid:2.16.840.1.113883.3.72.5"),
        patient=Ref("Patient/pat-1"),
        encounter=Ref("Encounter/enc-9"),
        date="2024-03-15T09:30:00+01:00",
        doc_type=Coding("11506-3", "http://loinc.org", "Progress note"),
        content_index=0,
        content_type="text/plain",
        charset="utf-8",
    )


def test_declared_latin1_charset_is_honoured() -> None:
    (doc,) = load_documents(DATA / "docref_latin1.json")
    assert doc.text == "Naïve patient, no rash."
    assert doc.source.charset == "iso8859-1"


def test_html_becomes_visible_text_one_line_per_block() -> None:
    (doc,) = load_documents(DATA / "docref_html.json")
    assert doc.text == "Clinic note\nChest pain & dyspnea,\nno fever.\nAspirin 81 mg"
    assert doc.source.content_type == "text/html"


def test_rtf_becomes_plain_text() -> None:
    (doc,) = load_documents(DATA / "docref_rtf.json")
    assert doc.text == "Follow-up in two weeks.\nCafé diet allowed."
    assert doc.source.content_type == "text/rtf"


def test_text_attachment_preferred_over_pdf() -> None:
    (doc,) = load_documents(DATA / "docref_pdf_and_text.json")
    assert doc.text == "Plain copy: no acute distress."
    assert doc.source.content_index == 1


def test_searchset_bundle_skips_included_resources() -> None:
    docs = load_documents(DATA / "bundle_searchset.json")
    assert [(d.id, d.text, d.source.source_id) for d in docs] == [
        ("bundle_searchset.1", "First note: cough.", "s1"),
        ("bundle_searchset.2", "Second note: wheeze.", "s2"),
    ]
    assert docs[0].source.source_ref == "https://fhir.example.org/DocumentReference/s1"


def test_transaction_bundle_one_bad_entry_costs_only_itself() -> None:
    docs, errors = load_documents_lenient(DATA / "bundle_transaction_one_bad.json")
    assert [(d.id, d.text) for d in docs] == [
        ("bundle_transaction_one_bad.1", "Good note one."),
        ("bundle_transaction_one_bad.3", "Good note three."),
    ]
    (err,) = errors
    assert isinstance(err, FhirInputError)
    assert err.path == "entry[1].resource.content[0].attachment.data"
    # urn:uuid fullUrls of a transaction mean nothing on the server afterwards
    assert docs[0].source.source_ref == ""


@pytest.mark.parametrize(
    ("name", "kind", "path", "words"),
    [
        ("bad_malformed.json", FhirInputError, "$", "malformed JSON (line 2"),
        ("bad_patient.json", FhirInputError, "resourceType", "got 'Patient'"),
        (
            "bad_pdf.json",
            UnsupportedContentTypeError,
            "content[0].attachment.contentType",
            "'application/pdf'",
        ),
        ("bad_no_content.json", FhirInputError, "content", "missing or empty"),
        ("bad_base64.json", FhirInputError, "content[0].attachment.data", "not valid base64"),
        ("bad_wrong_charset.json", FhirInputError, "content[0].attachment.data", "not valid utf-8"),
        ("docref_url.json", FhirInputError, "content[0].attachment.url", "no HTTP fetcher"),
    ],
)
def test_bad_input_typed_error_with_json_path(
    name: str, kind: type[Exception], path: str, words: str
) -> None:
    with pytest.raises(kind) as info:
        load_documents(DATA / name)
    err = info.value
    assert isinstance(err, FhirInputError) and isinstance(err, DocumentError)
    assert err.path == path and words in str(err) and str(DATA / name) in str(err)


def test_url_attachment_with_fetcher() -> None:
    calls: list[str] = []

    def fetch(url: str) -> tuple[bytes, str | None]:
        calls.append(url)
        return b"Fetched note: stable.", "text/plain; charset=utf-8"

    (doc,) = load_documents(DATA / "docref_url.json", fetcher=fetch)
    assert doc.text == "Fetched note: stable."
    assert calls == ["https://docs.example.org/binary/5"]

    def failing(url: str) -> tuple[bytes, str | None]:
        raise ValueError("content larger than 10 bytes")

    with pytest.raises(FhirInputError, match="larger than 10 bytes") as info:
        load_documents(DATA / "docref_url.json", fetcher=failing)
    assert info.value.path == "content[0].attachment.url"


def test_parse_document_reference_accepts_dict_and_str() -> None:
    obj = json.loads((DATA / "docref_plain.json").read_text(encoding="utf-8"))
    assert parse_document_reference(obj)[0].id == "note-1"
    assert parse_document_reference(json.dumps(obj))[0].text.startswith("Assessment")


def test_error_message_never_quotes_the_payload() -> None:
    obj = {
        "resourceType": "DocumentReference",
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode("SECRET Naïve".encode("latin-1")).decode(),
                }
            }
        ],
    }
    with pytest.raises(FhirInputError) as info:
        parse_document_reference(obj)
    assert "SECRET" not in str(info.value) and "Na" not in str(info.value)


def test_undeclared_charset_is_detected() -> None:
    # Only "é", which every Western single-byte code page agrees on: detection is a
    # heuristic and may name cp1250 or cp1252, but the text must come out right.
    text = "Le patient présente une toux fébrile, état général altéré depuis lundi. " * 3
    decoded, used = decode_bytes(text.encode("cp1252"), None)
    assert decoded == text and used != "utf-8"
    assert decode_bytes("é".encode(), None) == ("é", "utf-8")


def test_content_type_helpers() -> None:
    assert split_content_type('Text/HTML; charset="ISO-8859-1"') == ("text/html", "ISO-8859-1")
    # inner runs of blanks survive in <pre>; line edges are trimmed everywhere
    assert html_to_text("<pre>a  b\n c</pre><p>x&lt;y</p>") == "a  b\nc\nx<y"


def test_unknown_suffix_is_a_document_error(tmp_path: Path) -> None:
    p = tmp_path / "note.pdf"
    p.write_bytes(b"%PDF")
    with pytest.raises(DocumentError, match="unsupported input kind"):
        load_documents(p)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(1.0)
        body = b"x" * 2000 if self.path == "/big" else "Fetched: café.".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the /slow client hangs up on purpose


@pytest.fixture
def http_base() -> Iterator[str]:
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_fetcher_limits(http_base: str) -> None:
    fetch = HttpFetcher(timeout_s=0.3, max_bytes=1000)
    assert fetch(f"{http_base}/note") == ("Fetched: café.".encode(), "text/plain; charset=utf-8")
    with pytest.raises(ValueError, match="larger than 1000 bytes"):
        fetch(f"{http_base}/big")
    with pytest.raises(ValueError, match="fetch failed"):
        fetch(f"{http_base}/slow")
    with pytest.raises(ValueError, match="only http"):
        fetch("file:///etc/passwd")
    obj = json.loads((DATA / "docref_url.json").read_text(encoding="utf-8"))
    obj["content"][0]["attachment"]["url"] = f"{http_base}/note"
    assert parse_document_reference(obj, fetcher=fetch)[0].text == "Fetched: café."


def test_odd_json_types_anywhere_give_only_typed_errors() -> None:
    obj = json.loads((DATA / "bundle_searchset.json").read_text(encoding="utf-8"))
    odd: list[object] = [None, 5, "x", [], {}, [5], {"a": 1}, True]

    def paths(o: object, at: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
        yield at
        items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else []
        for k, v in items:
            yield from paths(v, (*at, k))

    for path in list(paths(obj))[1:]:
        for value in odd:
            mutated = json.loads(json.dumps(obj))
            node = mutated
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            for item in parse_document_reference_items(mutated):
                assert isinstance(item, (Document, FhirInputError))


def test_txt_and_unreadable_files(tmp_path: Path) -> None:
    note = tmp_path / "n.txt"
    note.write_bytes(b"Line one.\r\nLine two.")
    (doc,) = load_documents(note)
    assert (doc.id, doc.text, doc.source) == ("n", "Line one.\r\nLine two.", Source(channel="file"))
    note.write_bytes(b"caf\xe9")
    docs, errors = load_documents_lenient(note)
    assert docs == [] and "not valid UTF-8" in str(errors[0])
    docs, errors = load_documents_lenient(tmp_path / "missing.hl7")
    assert docs == [] and "missing.hl7: no such file or directory" in str(errors[0])
    # a missing path is named as missing, whatever its suffix (it said "unsupported kind")
    docs, errors = load_documents_lenient(tmp_path / "notes")
    assert docs == [] and str(errors[0]).endswith("notes: no such file or directory")
    (tmp_path / "n.pdf").write_bytes(b"%PDF")
    _, errors = load_documents_lenient(tmp_path / "n.pdf")
    assert "unsupported input kind '.pdf'; known: .json, .hl7, .txt" in str(errors[0])
    (tmp_path / "unreadable.txt").mkdir()
    _, errors = load_documents_lenient(tmp_path / "unreadable.txt")
    assert "cannot read" in str(errors[0])
