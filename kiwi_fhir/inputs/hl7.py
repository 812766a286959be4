"""HL7 v2.3-v2.8 messages with clinical content to core ``Document``s.

Accepted: ORU^R01/R30-R32, OUL^R21-R24, MDM^T01-T11 (T05-T11 recorded in
``Source.event`` as addendum / edit / replace / cancel) and ADT
of any event when it carries OBX; anything else is refused naming MSH-9.

Liberal on the wire, as interface engines are: a UTF-8 BOM, segments ending
in ``\r``, ``\n`` or ``\r\n``, blank lines, MLLP framing bytes and batch
wrappers (FHS/BHS/BTS/FTS), many messages per file, MSH-18 spelled any
common way, Z segments and standard segments hl7apy does not know for the
declared version (PRT in 2.5.1), MDM without TXA. hl7apy still checks the
rest of the shape (tolerant mode); field *values* are read from the raw
segment text because hl7apy mangles escapes it does not model (see
:mod:`.hl7_syntax`).

One Document per OBR group that carries narrative (or per message when
there is no OBR). Narrative = OBX of value type TX, FT, ST, or ED holding
text (plain, HTML, RTF, CDA XML), joined with newlines in (OBX-4 sub-ID,
OBX-1 set-ID) order; when the OBX carry several OBX-3 labels, each label is
a heading line and the sections keep message order (:mod:`.hl7_groups`).
``Document.text`` is that decoded text and all offsets index it. NTE
comments are never note text: they go to the result they follow
(``LabResult.notes``, ``ResultGroup.notes``) or into a warning.
Structured results (NM, SN, CWE/CE/CNE, DT/TS/DTM) are kept as typed
``LabResult``s in ``Source.results``, one ``ResultGroup`` per OBR; a
message with results and no narrative gives one empty Document
(``structured_only``) that carries them. An ED that is not text is named in
``Source.warnings``. The other facts (:class:`kiwi_fhir.source.Source`):
``control_id`` (MSH-10), ``message_type``, ``hl7_version``, ``patient``
(PID-3; the system from :mod:`.identifier_systems`), ``encounter``
(PV1-19), ``encounter_class`` (PV1-2), ``date``, ``doc_type`` (OBR-4 or TXA-2),
``identifier`` (OBR-3 / TXA-12), ``parent`` (TXA-13, the document an
addendum or replacement relates to), ``document_status`` (TXA-17),
``result_status`` (OBR-25).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Final

from kiwi_fhir.core import Document
from kiwi_fhir.errors import DocumentError, HL7Error, shown
from kiwi_fhir.inputs.formats import Fetcher, Identity
from kiwi_fhir.inputs.hl7_groups import code as _code
from kiwi_fhir.inputs.hl7_groups import documents
from kiwi_fhir.inputs.hl7_syntax import (
    BATCH_SEGMENTS,
    Encoding,
    codec_for,
    looks_like_hl7,
    read_msh,
    segment_lines,
    split_messages,
    ts_to_fhir,
    unescape,
)
from kiwi_fhir.inputs.hl7_values import Segment
from kiwi_fhir.inputs.identifier_systems import system_for
from kiwi_fhir.source import DocumentEvent, Identifier, Ref, Source

#: Message types that carry clinical content; ADT (any event) only when it has OBX.
_ACCEPTED: Final[dict[str, frozenset[str]]] = {
    "ORU": frozenset({"R01", "R30", "R31", "R32"}),
    "OUL": frozenset({"R21", "R22", "R23", "R24"}),
    "MDM": frozenset({f"T{n:02d}" for n in range(1, 12)}),
}
_ANY_EVENT: Final[frozenset[str]] = frozenset({"ADT"})
#: MDM events whose document relates to an earlier one.
_MDM_STATUS: Final[dict[str, DocumentEvent]] = {
    "T05": DocumentEvent.ADDENDUM, "T06": DocumentEvent.ADDENDUM,
    "T07": DocumentEvent.EDIT, "T08": DocumentEvent.EDIT,
    "T09": DocumentEvent.REPLACE, "T10": DocumentEvent.REPLACE, "T11": DocumentEvent.CANCEL,
}  # fmt: skip
_VERSION_RE = re.compile(r"^2\.[3-8](\.\d+)?$")
_SEG_RE = re.compile(r"^[A-Z][A-Z0-9]{2}$")


def parse_hl7(raw: str | bytes) -> list[Document]:
    """All narrative documents in one or more messages; the first bad message raises."""
    docs, errors = parse_hl7_lenient(raw)
    if errors:
        raise errors[0]
    return docs


def parse_hl7_lenient(raw: str | bytes) -> tuple[list[Document], list[HL7Error]]:
    """Like :func:`parse_hl7`, but a bad message costs only itself."""
    items = parse_hl7_items(raw)
    return (
        [d for d in items if isinstance(d, Document)],
        [e for e in items if isinstance(e, HL7Error)],
    )


def parse_hl7_items(raw: str | bytes) -> list[Document | HL7Error]:
    """Documents and errors in file order (an error stands for its whole message)."""
    items: list[Document | HL7Error] = []
    chunks = split_messages(raw)
    if not chunks:
        return [HL7Error("empty input", segment="MSH")]
    for n, chunk in enumerate(chunks, start=1):
        try:
            items.extend(_message(chunk))
        except HL7Error as exc:
            if len(chunks) > 1:
                exc.message = n
                exc.args = (f"message {n}: {exc.args[0]}",)
            items.append(exc)
    return items


def _message(chunk: str | bytes) -> list[Document]:
    if isinstance(chunk, bytes):
        first = chunk.split(b"\r")[0].split(b"\n")[0].decode("latin-1")
        wire = _codec(first) or "utf-8"
        try:
            text = chunk.decode(wire)
        except UnicodeDecodeError as exc:
            raise HL7Error(
                f"bytes are not valid {wire} at {exc.start}", segment="MSH", field="18"
            ) from exc
    else:
        text = chunk
    lines = [ln for ln in segment_lines(text) if ln[:3] not in BATCH_SEGMENTS]
    if not lines or not lines[0].startswith("MSH"):
        raise HL7Error("message does not start with an MSH segment", segment="MSH")
    try:
        enc = Encoding.from_msh(lines[0])
    except ValueError as exc:
        raise HL7Error(str(exc), segment="MSH", field="2") from exc
    segs = _segments(lines, enc)
    msh = segs[0]
    codec = _codec(lines[0])
    mtype = msh.get(9).split(enc.component)
    kind, event = mtype[0], (mtype[1] if len(mtype) > 1 else "")
    if kind not in _ANY_EVENT and event not in _ACCEPTED.get(kind, frozenset()):
        raise HL7Error(
            f"unsupported message type {_code(kind)}^{_code(event)} (want ORU^R01/R30-R32, "
            "OUL^R21-R24, MDM^T01-T11, or ADT with OBX)",
            segment="MSH",
            field="9",
        )
    if kind in _ANY_EVENT and not any(s.name == "OBX" for s in segs):
        raise HL7Error(
            f"{_code(kind)}^{_code(event)} message carries no clinical content (no OBX)",
            segment="MSH",
            field="9",
        )
    version = msh.get(12).split(enc.component)[0]
    if not _VERSION_RE.match(version):
        raise HL7Error(f"unsupported HL7 version {shown(version)}", segment="MSH", field="12")
    _check_with_hl7apy("\r".join(lines))
    base = replace(
        _header(segs, enc, codec),
        message_type=f"{kind}^{event}",
        hl7_version=version,
        event=_MDM_STATUS.get(event) if kind == "MDM" else None,
    )
    return documents(segs, enc, codec, base)


def _codec(msh_line: str) -> str | None:
    sep = msh_line[3:4] or "|"
    fields = ["MSH", sep, *msh_line[4:].split(sep)]  # fields[n] is MSH-n
    try:
        return codec_for(fields[18] if len(fields) > 18 else "")
    except ValueError as exc:
        raise HL7Error(str(exc), segment="MSH", field="18") from exc


def _segments(lines: list[str], enc: Encoding) -> list[Segment]:
    counts: dict[str, int] = {}
    out: list[Segment] = []
    for lineno, line in enumerate(lines, start=1):
        name = line[:3]
        if not _SEG_RE.match(name) or (len(line) > 3 and line[3] != enc.field):
            raise HL7Error(
                "malformed segment: expected a 3-character segment name and the "
                f"field separator {enc.field!r}",
                segment=f"line {lineno}",
            )
        counts[name] = counts.get(name, 0) + 1
        parts = line.split(enc.field)
        fields = ["MSH", enc.field, *parts[1:]] if name == "MSH" else parts
        out.append(Segment(name, fields, f"{name}[{counts[name]}]"))
    return out


def _check_with_hl7apy(er7: str) -> None:
    """Let hl7apy judge the message shape; its exceptions become ours here."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException, InvalidName
    from hl7apy.parser import parse_message

    try:
        parse_message(er7, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
    except InvalidName:
        # A segment hl7apy does not know for the declared version (PRT in
        # 2.5.1, Z segments): our own reader has checked its shape; not fatal.
        return
    except HL7apyException as exc:
        raise HL7Error(f"hl7apy rejects the message ({type(exc).__name__})") from exc


def _header(segs: list[Segment], enc: Encoding, codec: str | None) -> Source:
    msh = segs[0]
    return Source(
        channel="hl7",
        control_id=unescape(msh.get(10), enc, codec),
        date=ts_to_fhir(msh.get(7)) or "",
        patient=_cx_ref(segs, "PID", 3, enc, codec),
        encounter=_cx_ref(segs, "PV1", 19, enc, codec),
        encounter_class=next((s.get(2).split(enc.component)[0].strip().upper()
                              for s in segs if s.name == "PV1"), ""),
    )  # fmt: skip


def _cx_ref(segs: list[Segment], name: str, n: int, enc: Encoding, codec: str | None) -> Ref | None:
    """The first CX repetition of field ``name``-``n`` as an identifier reference."""
    seg = next((s for s in segs if s.name == name), None)
    if seg is None:
        return None
    cx = seg.get(n).split(enc.repetition)[0].split(enc.component)
    if not cx[0]:
        return None
    system, assigner = _authority(cx[3] if len(cx) > 3 else "", enc)
    return Ref(identifier=Identifier(unescape(cx[0], enc, codec), system, assigner))


def _authority(hd: str, enc: Encoding) -> tuple[str, str]:
    """(Identifier.system, assigner name) from an HD: its universal ID, else
    the site's table of namespaces (:mod:`.identifier_systems`)."""
    parts = [*hd.split(enc.subcomponent), "", ""]
    return system_for(parts[0], parts[1], parts[2]), parts[0]


class HL7v2Format:
    """HL7 v2 ER7: one or more messages (a file, an MLLP frame, a gRPC field)."""

    name: Final = "hl7"
    suffixes: Final = (".hl7",)
    media_types: Final = ("x-application/hl7-v2+er7", "application/hl7-v2")

    def sniff(self, raw: bytes) -> bool:
        return looks_like_hl7(raw.decode("latin-1"))

    def identity(self, raw: bytes) -> Identity | None:
        msh = read_msh(raw)
        if msh is None or not msh.control_id:
            return None
        return Identity(f"hl7:{msh.sending_app}|{msh.sending_facility}|{msh.control_id}", "MSH-10")

    def parse(
        self, raw: bytes, *, fetcher: Fetcher | None = None, source: str = ""
    ) -> list[Document | DocumentError]:
        items: list[Document | DocumentError] = []
        for item in parse_hl7_items(raw):
            if isinstance(item, HL7Error) and source:
                item.args = (f"{source}: {item.args[0]}",)
            items.append(item)
        return items
