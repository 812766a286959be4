"""A note as plain UTF-8 text: the format every other one falls back to.

The text is kept exactly as sent (line endings, a leading BOM character):
offsets index the decoded string, and rewriting it would move them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from kiwi_fhir.core import Document
from kiwi_fhir.errors import DocumentError
from kiwi_fhir.inputs.formats import Fetcher, Identity
from kiwi_fhir.source import Source


class PlainTextFormat:
    name: Final = "text"
    suffixes: Final = (".txt",)
    media_types: Final = ("text/plain",)

    def sniff(self, raw: bytes) -> bool:
        return True

    def identity(self, raw: bytes) -> Identity | None:
        return None  # a bare note carries no sender identity

    def parse(
        self, raw: bytes, *, fetcher: Fetcher | None = None, source: str = ""
    ) -> list[Document | DocumentError]:
        where = f"{source}: " if source else ""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return [DocumentError(f"{where}not valid UTF-8 at byte {exc.start}")]
        return [Document(id=Path(source).stem if source else "note", text=text,
                         source=Source(channel="file"))]  # fmt: skip
