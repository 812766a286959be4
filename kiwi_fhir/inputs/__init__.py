"""Turning what arrives (files, FHIR JSON, HL7 v2) into core ``Document``s.

One format per input kind (:mod:`.formats`, the registry every caller
uses); :func:`load_documents` picks it by the file's suffix. Offsets of
everything we extract index ``Document.text``, i.e. the note after
decoding (base64, charset, HL7 escapes) and, for HTML/RTF, after conversion
to plain text -- never the raw bytes of the container.

Documents loaded from a file are named ``<stem>`` or, when the file holds
several, ``<stem>.<n>`` (1-based, in file order), so output names are stable;
the sender's own id is kept in ``Source.source_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from kiwi_fhir.core import Document
from kiwi_fhir.errors import DocumentError
from kiwi_fhir.inputs import formats
from kiwi_fhir.inputs.docref import (
    HttpFetcher,
    parse_document_reference,
)
from kiwi_fhir.inputs.formats import Fetcher
from kiwi_fhir.inputs.hl7 import parse_hl7

__all__ = [
    "Fetcher",
    "HttpFetcher",
    "formats",
    "load_documents",
    "load_documents_lenient",
    "parse_document_reference",
    "parse_hl7",
    "parse_lenient",
]

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
    """(documents, errors) of one file; every error names the file and where in it.

    The format is chosen by suffix (:mod:`.formats`)."""
    if not path.exists():
        return [], [DocumentError(f"{path}: no such file or directory")]
    fmt = formats.by_suffix(path.suffix)
    if fmt is None:
        known = ", ".join(formats.suffixes())
        kind = repr(path.suffix) if path.suffix else "(no suffix)"
        return [], [DocumentError(f"{path}: unsupported input kind {kind}; known: {known}")]
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [], [DocumentError(f"{path}: cannot read ({exc.strerror})")]
    return parse_lenient(raw, source=str(path), stem=path.stem, fmt=fmt, fetcher=fetcher)


def parse_lenient(
    raw: bytes,
    *,
    source: str,
    stem: str,
    fmt: formats.InputFormat | None = None,
    fetcher: Fetcher | None = None,
) -> tuple[list[Document], list[DocumentError]]:
    """(documents, errors) of bytes with no file name to go by (stdin, a body).

    The format is ``fmt`` or sniffed; documents are named ``stem`` or
    ``stem.N`` as for files."""
    chosen = fmt if fmt is not None else formats.sniff(raw)
    return _renamed(chosen.parse(raw, fetcher=fetcher, source=source), stem)


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
        if new_id == item.id:  # a plain-text file is already named by its stem
            docs.append(item)
            continue
        source = replace(item.source, source_id=item.source.source_id or item.id)
        docs.append(replace(item, id=new_id, source=source))
    return docs, errors
