"""Bytes and markup to the plain text every offset indexes.

Hospitals send notes as ``text/plain`` in some charset, as HTML, RTF or CDA XML.
The model and every offset we emit work on *one* string, so HTML, RTF and CDA are
converted here and the converted plain text becomes ``Document.text``; the
original content type is recorded in ``Source.content_type`` and
the FHIR layer points its derivation references at a plain-text copy (see
docs/fhir-mapping.md). We never try to map offsets back into the markup: a
span inside an HTML tag or an RTF control word has no clinical meaning.

Library errors (codec lookups, striprtf) are translated to ``ValueError``
here; the callers add *where* (JSON path, HL7 field) and raise our types.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Final

from kiwi_fhir.errors import shown

#: Elements whose end starts a new line of text.
_BLOCK_TAGS: Final[frozenset[str]] = frozenset(
    {
        "p",
        "div",
        "br",
        "li",
        "tr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "table",
        "ul",
        "ol",
        "pre",
        "blockquote",
        "section",
        "article",
        "header",
        "footer",
        "hr",
        "dt",
        "dd",
        "title",
    }
)
#: CDA / C-CDA and other XML documents (inputs/cda.py).
XML_TYPES: Final = ("text/xml", "application/xml", "application/hl7-v3+xml", "application/cda+xml")
_SKIP_TAGS: Final[frozenset[str]] = frozenset({"script", "style", "head"})
_CHARSET_RE = re.compile(r";\s*charset\s*=\s*\"?([^\";\s]+)\"?", re.IGNORECASE)


def split_content_type(value: str) -> tuple[str, str | None]:
    """``'text/plain; charset=ISO-8859-1'`` -> ``('text/plain', 'ISO-8859-1')``."""
    base = value.split(";", 1)[0].strip().lower()
    m = _CHARSET_RE.search(value)
    return base, (m.group(1) if m else None)


def decode_bytes(data: bytes, charset: str | None) -> tuple[str, str]:
    """Decode with the declared charset, else detect it; returns (text, charset).

    A declared charset is honoured strictly: bytes that do not decode mean the
    sender lied, and guessing silently would shift every offset downstream.
    """
    if charset:
        try:
            codec = codecs.lookup(charset).name
        except LookupError as exc:
            raise ValueError(f"unknown charset {shown(charset)}") from exc
        try:
            return _strip_bom(data.decode(codec)), codec
        except UnicodeDecodeError as exc:
            raise ValueError(f"bytes are not valid {codec} (byte {exc.start})") from exc
    try:
        return _strip_bom(data.decode("utf-8")), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise ValueError("cannot detect the character set of the content")
    return _strip_bom(str(best)), best.encoding


def _strip_bom(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text


class _TextExtractor(HTMLParser):
    """Visible text of an HTML document, with block elements as line breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag == "pre":
            self._pre += 1
        if tag in ("br", "hr"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag in _BLOCK_TAGS and tag not in ("br", "hr"):
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append("\t")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.parts.append(data if self._pre else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """Visible text, one line per block element, runs of blanks collapsed."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = [ln.strip(" ") for ln in "".join(parser.parts).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def rtf_to_text(rtf: str) -> str:
    """Plain text of an RTF document (striprtf), line endings normalised to ``\\n``."""
    from striprtf.striprtf import rtf_to_text as _striprtf

    if not rtf.lstrip().startswith("{\\rtf"):
        raise ValueError("content is not RTF (no '{\\rtf' header)")
    try:
        text: str = _striprtf(rtf, errors="strict")  # type: ignore[no-untyped-call]
    except (UnicodeError, ValueError, IndexError) as exc:
        raise ValueError(f"cannot convert RTF ({type(exc).__name__})") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")


@dataclass(frozen=True)
class Converted:
    """An attachment as plain text, with what it was before."""

    text: str
    content_type: str  # the base media type it arrived as
    charset: str  # the charset it was decoded with


def to_plain_text(data: bytes, content_type: str) -> Converted:
    """Decode and convert one attachment.

    Raises ``LookupError`` for a content type we do not read (PDF, images) and
    ``ValueError`` for content that does not decode or convert.
    """
    base, charset = split_content_type(content_type)
    if base not in (
        "text/plain",
        "text/html",
        "application/xhtml+xml",
        "text/rtf",
        "application/rtf",
        *XML_TYPES,
    ):
        raise LookupError(base)
    raw, used = decode_bytes(data, charset)
    if base == "text/plain":
        text = raw
    elif base in ("text/html", "application/xhtml+xml"):
        text = html_to_text(raw)
    elif base in XML_TYPES:
        from kiwi_fhir.inputs.cda import cda_to_text

        text = cda_to_text(raw)
    else:
        text = rtf_to_text(raw)
    return Converted(text, base, used)
