"""Turning what arrives (files, FHIR JSON, HL7 v2) into core ``Document``s.

One loader per input kind; :func:`load_documents` dispatches on the file
name. Offsets of everything we extract index ``Document.text``, i.e. the
note after decoding, never the raw bytes of the container.
"""

from __future__ import annotations

from pathlib import Path

from kiwi_fhir.brat import read_text
from kiwi_fhir.core import Document
from kiwi_fhir.errors import DocumentError


def load_documents(path: Path) -> list[Document]:
    """All notes in one input file (a file may carry several documents)."""
    if path.suffix.lower() == ".txt":
        return [Document(id=path.stem, text=read_text(path), meta={"source": "file"})]
    raise DocumentError(f"{path}: unsupported input kind {path.suffix or '(no suffix)'!r}")
