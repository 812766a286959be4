"""Turning what arrives (files, FHIR JSON, HL7 v2) into core ``Document``s.

One loader per input kind; :func:`load_documents` dispatches on the file
name. Offsets of everything we extract index ``Document.text``, i.e. the
note after decoding (base64, charset, HL7 escapes) and, for HTML/RTF, after
conversion to plain text -- never the raw bytes of the container.

Documents loaded from a file are named ``<stem>`` or, when the file holds
several, ``<stem>.<n>`` (1-based, in file order), so output names are stable;
the sender's own id is kept in ``meta["source_id"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from kiwi_fhir.brat import read_text
from kiwi_fhir.core import Document
from kiwi_fhir.errors import DocumentError
from kiwi_fhir.inputs.docref import (
    Fetcher,
    HttpFetcher,
    parse_document_reference,
    parse_document_reference_items,
)
from kiwi_fhir.inputs.hl7 import parse_hl7, parse_hl7_items

__all__ = [
    "Fetcher",
    "HttpFetcher",
    "load_documents",
    "load_documents_lenient",
    "parse_document_reference",
    "parse_hl7",
]

SUFFIXES = (".txt", ".json", ".hl7")


def load_documents(path: Path, *, fetcher: Fetcher | None = None) -> list[Document]:
    """All notes in one input file (a file may carry several documents).

    Raises the first problem; use :func:`load_documents_lenient` to keep the
    good documents of a file in which one message or entry is bad.
    """
    docs, errors = load_documents_lenient(path, fetcher=fetcher)
    if errors:
        raise errors[0]
    return docs


def load_documents_lenient(
    path: Path, *, fetcher: Fetcher | None = None
) -> tuple[list[Document], list[DocumentError]]:
    """(documents, errors) of one file; every error names the file and where in it."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        try:
            return [Document(id=path.stem, text=read_text(path), meta={"source": "file"})], []
        except DocumentError as exc:
            return [], [exc]
    if suffix not in SUFFIXES:
        err = DocumentError(f"{path}: unsupported input kind {path.suffix or '(no suffix)'!r}")
        return [], [err]
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [], [DocumentError(f"{path}: cannot read ({exc.strerror})")]
    items: list[Document | DocumentError] = []
    if suffix == ".json":
        try:
            text = raw.decode("utf-8-sig")  # RFC 8259: JSON exchanged between systems is UTF-8
        except UnicodeDecodeError:
            return [], [DocumentError(f"{path}: JSON is not valid UTF-8")]
        items.extend(parse_document_reference_items(text, fetcher=fetcher, source=str(path)))
    else:
        for item in parse_hl7_items(raw):
            if isinstance(item, DocumentError):
                item.args = (f"{path}: {item.args[0]}",)
            items.append(item)
    return _renamed(items, path.stem)


def _renamed(
    items: Sequence[Document | DocumentError], stem: str
) -> tuple[list[Document], list[DocumentError]]:
    """Name documents by file position; a failed item keeps its number unused."""
    docs: list[Document] = []
    errors: list[DocumentError] = []
    for n, item in enumerate(items, start=1):
        if isinstance(item, DocumentError):
            errors.append(item)
            continue
        new_id = stem if len(items) == 1 else f"{stem}.{n}"
        meta = {**item.meta, "source_id": item.meta.get("source_id") or item.id}
        docs.append(replace(item, id=new_id, meta=meta))
    return docs, errors
