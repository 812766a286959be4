"""FHIR R4 ``DocumentReference`` (or a Bundle of them) to core ``Document``s.

We read the JSON as plain dicts rather than through fhir.resources models:
senders' DocumentReferences are often slightly off-spec (a missing
``status``, an extension we do not know) and that must not cost a note,
while the things we *need* are checked here with an exact JSON path in the
error. ``Document.text`` is the decoded attachment; for ``text/html`` and
``text/rtf`` it is the converted plain text (see :mod:`.textconv`) and all
offsets index that, never the markup.

``Source`` fields set here: ``channel`` (``fhir``), ``source_id``,
``source_ref`` (``DocumentReference/<id>`` or the entry's ``fullUrl``),
``identifier``, ``patient`` and ``encounter`` (a literal reference or an
identifier), ``date``, ``doc_type``, ``document_status`` (``docStatus``),
``reference_status``, ``event`` / ``parent`` / ``parent_ref`` (a
``relatesTo`` that appends or replaces), ``content_index``,
``content_type``, ``charset``.
"""

from __future__ import annotations

import base64
import binascii
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.error import URLError

from kiwi_fhir.core import Document
from kiwi_fhir.errors import DocumentError, FhirInputError, UnsupportedContentTypeError, shown
from kiwi_fhir.inputs import jsonin
from kiwi_fhir.inputs.formats import Fetcher, Identity
from kiwi_fhir.inputs.textconv import XML_TYPES, split_content_type, to_plain_text
from kiwi_fhir.source import Coding, DocumentEvent, Identifier, Ref, Source

_BUNDLE_TYPES: Final = frozenset({"collection", "transaction", "searchset", "batch"})
_PREFERENCE: Final[tuple[str, ...]] = (
    "text/plain", "text/html", "text/rtf", "application/rtf", *XML_TYPES,
)  # fmt: skip


@dataclass(frozen=True)
class HttpFetcher:
    """Fetches ``attachment.url`` over HTTP(S), bounded in time and size."""

    timeout_s: float = 10.0
    max_bytes: int = 5_000_000

    def __call__(self, url: str) -> tuple[bytes, str | None]:
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError("only http(s) URLs are fetched")
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                data: bytes = resp.read(self.max_bytes + 1)
                ctype = resp.headers.get("Content-Type")
        except (URLError, TimeoutError, OSError) as exc:
            raise ValueError(f"fetch failed ({type(exc).__name__})") from exc
        if len(data) > self.max_bytes:
            raise ValueError(f"content larger than {self.max_bytes} bytes")
        return data, ctype


def parse_document_reference(
    obj: Mapping[str, Any] | str, *, fetcher: Fetcher | None = None, source: str = ""
) -> list[Document]:
    """Every note in a DocumentReference or Bundle; the first bad one raises."""
    docs, errors = parse_document_reference_lenient(obj, fetcher=fetcher, source=source)
    if errors:
        raise errors[0]
    return docs


def parse_document_reference_lenient(
    obj: Mapping[str, Any] | str, *, fetcher: Fetcher | None = None, source: str = ""
) -> tuple[list[Document], list[FhirInputError]]:
    """Like :func:`parse_document_reference` but one bad entry costs only itself."""
    items = parse_document_reference_items(obj, fetcher=fetcher, source=source)
    return (
        [d for d in items if isinstance(d, Document)],
        [e for e in items if isinstance(e, FhirInputError)],
    )


def parse_document_reference_items(
    obj: Mapping[str, Any] | str, *, fetcher: Fetcher | None = None, source: str = ""
) -> list[Document | FhirInputError]:
    """Documents and errors in entry order (each DocumentReference is one item)."""
    if isinstance(obj, str):
        try:
            obj = jsonin.loads(obj, source=source)
        except FhirInputError as exc:
            return [exc]
    elif jsonin.depth(obj) > jsonin.MAX_DEPTH:
        return [FhirInputError("$", f"JSON nested deeper than {jsonin.MAX_DEPTH} levels",
                               source=source)]  # fmt: skip
    if not isinstance(obj, Mapping):
        return [FhirInputError("$", "expected a JSON object", source=source)]
    rtype = obj.get("resourceType")
    if rtype == "DocumentReference":
        try:
            return [_one(obj, "", fetcher, source, full_url=None)]
        except FhirInputError as exc:
            return [exc]
    if rtype != "Bundle":
        reason = f"expected DocumentReference or Bundle, got {shown(rtype)}"
        return [FhirInputError("resourceType", reason, source=source)]
    if _s(obj.get("type")) not in _BUNDLE_TYPES:
        reason = f"unsupported Bundle type {shown(obj.get('type'))}"
        return [FhirInputError("type", reason, source=source)]
    entries = obj.get("entry", [])
    if not isinstance(entries, list):
        return [FhirInputError("entry", "expected an array", source=source)]
    items: list[Document | FhirInputError] = []
    for i, entry in enumerate(entries):
        res = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(res, Mapping) or res.get("resourceType") != "DocumentReference":
            continue  # patients, outcomes and includes ride along in searchsets
        try:
            full_url = _s(entry.get("fullUrl")) or None
            items.append(_one(res, f"entry[{i}].resource.", fetcher, source, full_url))
        except FhirInputError as exc:
            items.append(exc)
    if not items:
        items.append(FhirInputError("entry", "Bundle holds no DocumentReference", source=source))
    return items


def _one(
    res: Mapping[str, Any],
    prefix: str,
    fetcher: Fetcher | None,
    source: str,
    full_url: str | None,
) -> Document:
    def fail(path: str, reason: str) -> FhirInputError:
        return FhirInputError(prefix + path, reason, source=source)

    content = res.get("content")
    if not isinstance(content, list) or not content:
        raise fail("content", "missing or empty (no attachment to read)")
    index, att = _pick(content, prefix, source)
    at = f"content[{index}].attachment"
    ctype = _s(att.get("contentType")) or "text/plain"
    if "data" in att:
        if not _s(att["data"]):
            raise fail(f"{at}.data", "expected a non-empty base64 string")
        try:
            data = base64.b64decode(att["data"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise fail(f"{at}.data", "not valid base64") from exc
    elif "url" in att:
        if fetcher is None:
            raise fail(f"{at}.url", "attachment by URL but no HTTP fetcher is configured")
        try:
            data, served = fetcher(_s(att["url"]))
        except ValueError as exc:
            raise fail(f"{at}.url", str(exc)) from exc
        if "contentType" not in att and served:
            ctype = served
    else:
        raise fail(at, "attachment has neither data nor url")
    try:
        conv = to_plain_text(data, ctype)
    except LookupError as exc:
        raise UnsupportedContentTypeError(
            prefix + f"{at}.contentType", split_content_type(ctype)[0], source=source
        ) from exc
    except ValueError as exc:
        raise fail(f"{at}.data" if "data" in att else f"{at}.url", str(exc)) from exc
    rid = _s(res.get("id"))
    src = _context(res, Source(
        channel="fhir", source_id=rid, source_ref=_source_ref(rid, full_url),
        content_index=index, content_type=conv.content_type, charset=conv.charset,
    ))  # fmt: skip
    ident = src.identifier.value if src.identifier else ""
    return Document(id=rid or ident or "document", text=conv.text, source=src)


def _source_ref(rid: str, full_url: str | None) -> str:
    """Where the sender's copy lives on a server, or "" when nothing resolvable.

    ``urn:uuid:`` fullUrls and the ids of entries a transaction *creates* mean
    nothing on the server afterwards; with "" the FHIR layer stores a text copy.
    """
    if full_url and full_url.lower().startswith(("http://", "https://")):
        return full_url
    if full_url is None or not full_url.startswith("urn:"):
        return f"DocumentReference/{rid}" if rid else ""
    return ""


def _pick(content: list[Any], prefix: str, source: str) -> tuple[int, Mapping[str, Any]]:
    """The most readable attachment: plain text before HTML before RTF."""
    found: list[tuple[int, int, Mapping[str, Any]]] = []
    first_bad: tuple[int, str] | None = None
    for i, item in enumerate(content):
        att = item.get("attachment") if isinstance(item, Mapping) else None
        if not isinstance(att, Mapping):
            raise FhirInputError(prefix + f"content[{i}].attachment", "missing", source=source)
        base = split_content_type(_s(att.get("contentType")) or "text/plain")[0]
        if base in _PREFERENCE or base == "application/xhtml+xml":
            rank = _PREFERENCE.index(base) if base in _PREFERENCE else 1
            found.append((rank, i, att))
        elif first_bad is None:
            first_bad = (i, base)
    if not found:
        assert first_bad is not None
        raise UnsupportedContentTypeError(
            prefix + f"content[{first_bad[0]}].attachment.contentType", first_bad[1], source=source
        )
    _, i, att = min(found, key=lambda t: (t[0], t[1]))
    return i, att


def _context(res: Mapping[str, Any], base: Source) -> Source:
    """Patient, encounter, date, status, type and identifier of the resource."""
    ident: Identifier | None = None
    for item in [res.get("masterIdentifier"), *_list(res.get("identifier"))]:
        if isinstance(item, Mapping) and _s(item.get("value")):
            ident = Identifier(item["value"], _s(item.get("system")))
            break
    encounter = None
    ctx = res.get("context")
    if isinstance(ctx, Mapping):
        enc = ctx.get("encounter")
        enc = enc[0] if isinstance(enc, list) and enc else enc  # R4: list; STU3: single
        encounter = _reference(enc)
    status = _s(res.get("status"))
    doc_type = None
    rtype = res.get("type")
    if isinstance(rtype, Mapping):
        codings = [c for c in _list(rtype.get("coding")) if isinstance(c, Mapping)]
        first = codings[0] if codings and _s(codings[0].get("code")) else {}
        label = _s(rtype.get("text")) or (_s(codings[0].get("display")) if codings else "")
        if first or label:
            doc_type = Coding(_s(first.get("code")), _s(first.get("system")), label)
    event, parent, parent_ref = _relates_to(res)
    authors = [a for a in _list(res.get("author")) if isinstance(a, Mapping)]
    return replace(
        base,
        event=event,
        parent=parent,
        parent_ref=parent_ref,
        identifier=ident,
        patient=_reference(res.get("subject")),
        encounter=encounter,
        date=_s(res.get("date")),
        # preliminary | final | amended | entered-in-error
        document_status=_s(res.get("docStatus")),
        reference_status=status if status in ("superseded", "entered-in-error") else "",
        doc_type=doc_type,
        author=_s(authors[0].get("display")) if authors else "",
    )


#: ``relatesTo.code`` values that make this note a new part or version of another.
_RELATES: Final = {"appends": DocumentEvent.ADDENDUM, "replaces": DocumentEvent.REPLACE}


def _relates_to(res: Mapping[str, Any]) -> tuple[DocumentEvent | None, Identifier | None, str]:
    """(event, parent identifier, parent reference) of the first ``relatesTo``
    that appends to or replaces another document (``transforms`` and ``signs``
    leave the note's own facts as they are)."""
    for item in _list(res.get("relatesTo")):
        if not isinstance(item, Mapping) or _s(item.get("code")) not in _RELATES:
            continue
        target = _reference(item.get("target"))
        if target is None:
            continue
        # urn:uuid targets of the sender's transaction mean nothing on a server
        ref = "" if target.reference.startswith("urn:") else target.reference
        if ref or target.identifier is not None:
            return _RELATES[item["code"]], target.identifier, ref
    return None, None, ""


def _reference(ref: Any) -> Ref | None:
    """A Reference: literal (``Patient/1``) or by identifier."""
    if not isinstance(ref, Mapping):
        return None
    if _s(ref.get("reference")):
        return Ref(reference=str(ref["reference"]))
    ident = ref.get("identifier")
    if isinstance(ident, Mapping) and _s(ident.get("value")):
        return Ref(identifier=Identifier(ident["value"], _s(ident.get("system"))))
    return None


def _s(value: Any) -> str:
    """A JSON string, or "" for anything else: senders put odd types anywhere."""
    return value if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class FhirDocumentFormat:
    """FHIR JSON: a DocumentReference, or a Bundle of them."""

    name: Final = "docref"
    suffixes: Final = (".json",)
    media_types: Final = ("application/fhir+json", "application/json")

    def sniff(self, raw: bytes) -> bool:
        return raw.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")

    def identity(self, raw: bytes) -> Identity | None:
        """``ResourceType/id|version``, the FHIR identity of a stored resource
        version; without ``meta.versionId`` an edit is a new version."""
        try:
            obj = jsonin.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, FhirInputError):
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            return None
        meta = obj.get("meta")
        version = meta.get("versionId", "") if isinstance(meta, dict) else ""
        version = version if isinstance(version, str) else ""
        key = f"fhir:{obj.get('resourceType')}/{obj['id']}|{version}"
        return Identity(key, "meta.versionId" if version else "id", versioned=bool(version))

    def parse(
        self, raw: bytes, *, fetcher: Fetcher | None = None, source: str = ""
    ) -> list[Document | DocumentError]:
        try:
            text = raw.decode("utf-8-sig")  # RFC 8259: JSON exchanged between systems is UTF-8
        except UnicodeDecodeError as exc:
            where = f"{source}: " if source else ""
            return [DocumentError(f"{where}JSON is not valid UTF-8 at byte {exc.start}")]
        return list(parse_document_reference_items(text, fetcher=fetcher, source=source))
