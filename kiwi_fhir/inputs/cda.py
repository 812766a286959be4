"""CDA / C-CDA documents to the plain text every offset indexes.

A CDA document's clinical narrative lives in the ``<text>`` of each
``<section>``, under its ``<title>``; the coded entries beside it repeat
(part of) that narrative in machine form. We extract the sections' titles
and narrative blocks, in document order, one line per paragraph, list item
and table row, and that extracted text becomes ``Document.text``: offsets
index it, not the XML. Headers (patient, author, custodian) are not note text.

XML from outside is parsed with defusedxml: no entity expansion, no DTDs,
no external resources. XML that is not CDA (no ``ClinicalDocument`` root)
yields its visible text the same way HTML does.
"""

from __future__ import annotations

import re
from typing import Final
from xml.etree.ElementTree import Element

_V3: Final = "{urn:hl7-org:v3}"
#: Narrative-block elements whose end starts a new line (CDA R2 narrative schema).
_BLOCKS: Final[frozenset[str]] = frozenset(
    {"paragraph", "item", "tr", "caption", "br", "list", "table", "thead", "tbody", "title"}
)
_CELLS: Final[frozenset[str]] = frozenset({"td", "th"})


def cda_to_text(xml: str) -> str:
    """Section titles and narrative of a CDA document; ``ValueError`` if it is not XML."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        root = fromstring(xml.lstrip("\ufeff"))
    except (DefusedXmlException, SyntaxError) as exc:  # ParseError is a SyntaxError
        raise ValueError(f"XML does not parse ({type(exc).__name__})") from exc
    if _local(root.tag) != "ClinicalDocument":
        return _tidy(_render(root))
    parts: list[str] = []
    for section in root.iter(f"{_V3}section"):
        title = section.find(f"{_V3}title")
        text = section.find(f"{_V3}text")
        block = "\n".join(
            t for t in (_render(title).strip() if title is not None else "",
                        _render(text).strip() if text is not None else "") if t
        )  # fmt: skip
        if block.strip():
            parts.append(_tidy(block))
    if not parts:  # an unstructured body: <nonXMLBody><text>
        body = root.find(f".//{_V3}nonXMLBody/{_V3}text")
        if body is not None and (body.get("mediaType") or "text/plain") == "text/plain":
            parts.append(_tidy("".join(body.itertext())))
    return "\n\n".join(parts)


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _render(el: Element) -> str:
    out: list[str] = []

    def walk(e: Element) -> None:
        name = _local(e.tag)
        if e.text:
            out.append(e.text)
        for child in e:
            walk(child)
            if child.tail:
                out.append(child.tail)
        if name in _CELLS:
            out.append("\t")
        elif name in _BLOCKS:
            out.append("\n")

    walk(el)
    return "".join(out)


def _tidy(text: str) -> str:
    lines = [re.sub(r"[ \t\r\f\v]+", " ", ln).strip() for ln in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
