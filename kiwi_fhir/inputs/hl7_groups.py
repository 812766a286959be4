"""HL7 v2 OBR/TXA groups to Documents: narrative, results and comments.

Split from :mod:`.hl7` (message checks, header facts) so each stays
readable. A group is an OBR or TXA with the OBX and NTE after it; its
narrative OBX (TX, FT, ST, text ED) become one note, its structured OBX
typed results (:mod:`kiwi_fhir.source`). NTE comments are never note text
(the model would read a lab's "specimen hemolyzed" as clinical narrative):
after a structured OBX they go to that result (``Observation.note``), after
an OBR with results to the group (the DiagnosticReport); anywhere else they
are named in ``Source.warnings``, as is every OBX value type we do not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Final

from kiwi_fhir.core import Document
from kiwi_fhir.errors import HL7Error
from kiwi_fhir.inputs.hl7_syntax import Encoding, ts_to_fhir, unescape
from kiwi_fhir.inputs.hl7_values import (
    CODE_SYSTEMS,
    DOC_TYPES,
    Segment,
    ed_text,
    lab_result,
    report_info,
)
from kiwi_fhir.source import Coding, Identifier, ResultGroup, Source

_TEXT_TYPES: Final[frozenset[str]] = frozenset({"TX", "FT", "ST"})
_LAB_TYPES: Final[frozenset[str]] = frozenset(
    {"NM", "SN", "CWE", "CE", "CNE", "DT", "TM", "TS", "DTM"}
)


@dataclass
class _Group:  # mutable on purpose: filled while walking the segments
    obr: Segment | None = None
    obx: list[Segment] = field(default_factory=list)
    notes: list[Segment] = field(default_factory=list)  # NTE after the OBR / TXA
    obx_notes: dict[int, list[Segment]] = field(default_factory=dict)  # NTE after obx[i]


def documents(
    segs: list[Segment], enc: Encoding, codec: str | None, base: Source
) -> list[Document]:
    """The Documents of one message's segments (``base``: its header facts)."""
    groups, stray = groups_of(segs)
    warnings = [f"{n.label}: comment not after an OBR or OBX; not extracted" for n in stray
                if _comment(n, enc, codec)]  # fmt: skip
    return _documents(groups, warnings, enc, codec, base)


def groups_of(segs: list[Segment]) -> tuple[list[_Group], list[Segment]]:
    """OBR/TXA groups with their OBX and NTE, and the NTE that follow neither
    (a comment on the patient or the order: named in a warning)."""
    groups: list[_Group] = []
    stray: list[Segment] = []
    last = ""
    for seg in segs:
        if seg.name in ("OBR", "TXA") or (seg.name == "OBX" and not groups):
            if seg.name == "TXA" or not groups or groups[-1].obr or groups[-1].obx:
                groups.append(_Group())
            if seg.name != "OBX":
                groups[-1].obr = seg
        if seg.name == "OBX":
            groups[-1].obx.append(seg)
        elif seg.name == "NTE":
            if last == "OBX":  # NTE right after an OBX (or after its NTE) is about it
                groups[-1].obx_notes.setdefault(len(groups[-1].obx) - 1, []).append(seg)
            elif last in ("OBR", "TXA"):
                groups[-1].notes.append(seg)
            else:
                stray.append(seg)
            continue
        last = seg.name
    return groups, stray


def _documents(
    groups: list[_Group],
    warnings: list[str],
    enc: Encoding,
    codec: str | None,
    base: Source,
) -> list[Document]:
    """One Document per group with narrative; structured results ride on the
    first one, or, in a message with no narrative at all, on one empty note
    (no NER runs over it; its Bundle holds the results)."""
    found: list[tuple[str, Source, list[ResultGroup]]] = []
    orphan_labs: list[ResultGroup] = []
    skipped: list[str] = []
    for g in groups:
        lines: list[_Line] = []
        labs = []
        for pos, obx in enumerate(g.obx):
            vtype = obx.get(2).split(enc.component)[0].upper()
            after = g.obx_notes.get(pos, [])
            ntes = [(n.label, c) for n in after if (c := _comment(n, enc, codec))]
            notes = [c for _, c in ntes]
            text: str | None = None
            if vtype in _TEXT_TYPES:
                reps = obx.get(5).split(enc.repetition)
                text = "\n".join(unescape(r, enc, codec) for r in reps)
            elif vtype == "ED":
                text = ed_text(obx, enc, codec)
                if text is None:
                    skipped.append(obx.label)
            elif vtype in _LAB_TYPES:
                labs.append(replace(lab_result(obx, vtype, enc, codec), notes=tuple(notes)))
                continue
            else:
                warnings.append(f"{obx.label}: value type {code(vtype)} not extracted")
            if text is not None:
                lines.append(_Line(_subid(obx.get(4)), _int(obx.get(1)), pos,
                                   _label(obx, enc, codec), text))  # fmt: skip
            warnings += [
                f"{label} (after narrative {obx.label}): comment not extracted" for label, _ in ntes
            ]  # never NER input: not part of the note
        report = replace(report_info(g.obr, enc, codec), results=tuple(labs))
        gnotes = [(n.label, c) for n in g.notes if (c := _comment(n, enc, codec))]
        if gnotes and labs and report.set_id:
            report = replace(report, notes=tuple(c for _, c in gnotes))
        elif gnotes:
            where = g.obr.label if g.obr is not None else "OBR"
            warnings += [f"{label} (after {where}, which has no structured result): comment "
                         "not extracted" for label, _ in gnotes]  # fmt: skip
        results = [report] if labs else []
        if not lines:
            orphan_labs.extend(results)
            continue
        if not any(t.text.strip() for t in lines):
            label = g.obr.label if g.obr is not None else "OBX"
            raise HL7Error(
                f"narrative OBX-5 is empty (truncated?) in the {label} group",
                segment="OBX",
                field="5",
            )
        found.append((_narrative(lines), _group_source(g, base, enc, codec), results))
    if not found and orphan_labs:
        first = next((g for g in groups if g.obr is not None), None)
        gsource = _group_source(first, base, enc, codec) if first is not None else base
        found.append(("", replace(gsource, structured_only=True), []))
    if not found:
        why = f" ({', '.join(skipped)}: unsupported ED payload)" if skipped else ""
        raise HL7Error(
            f"no narrative OBX (TX, FT, ST or text ED) and no structured result{why}",
            segment="OBX",
            field="5",
        )
    docs = []
    control = base.control_id or "message"
    named = (*(f"{x}: ED payload is not text; not extracted" for x in skipped), *warnings)
    for k, (text, source, results) in enumerate(found, start=1):
        if k == 1:
            results = results + orphan_labs
        source = replace(source, results=tuple(results), warnings=named)
        doc_id = control if len(found) == 1 else f"{control}.{k}"
        docs.append(Document(id=doc_id, text=text, source=source))
    return docs


@dataclass(frozen=True)
class _Line:
    """One narrative OBX: where it sorts, its OBX-3 label and its text."""

    sub_id: tuple[int, ...]
    set_id: int
    pos: int
    label: str
    text: str


def _narrative(lines: list[_Line]) -> str:
    """The note text of a group's narrative OBX.

    With one OBX-3 label (or none) the lines are joined in (OBX-4 sub-ID,
    OBX-1 set-ID) order, as before. When the OBX carry several labels
    (a pathology report's gross description, microscopy, diagnosis) each
    label becomes a heading line, the sections in the order their first OBX
    comes in the message (never re-sorted by sub-ID, which senders number
    per section), lines within a section in sub-ID / set-ID order.
    """
    labels = list(dict.fromkeys(t.label for t in lines))
    if len(labels) < 2:
        return "\n".join(t.text for t in sorted(lines, key=lambda t: (t.sub_id, t.set_id, t.pos)))
    out: list[str] = []
    for label in labels:
        if label:
            out.append(label)
        section = [t for t in lines if t.label == label]
        out += [t.text for t in sorted(section, key=lambda t: (t.sub_id, t.set_id, t.pos))]
    return "\n".join(out)


def _label(obx: Segment, enc: Encoding, codec: str | None) -> str:
    """OBX-3's text (its code when it has no text): the section an OBX is."""
    ce = [*obx.get(3).split(enc.component), ""]
    return unescape(ce[1], enc, codec).strip() or unescape(ce[0], enc, codec).strip()


def _person(xcn: str, enc: Encoding, codec: str | None) -> str:
    """An XCN's name as one would write it (prefix given middle family), else its ID."""
    c = [unescape(x, enc, codec).strip() for x in xcn.split(enc.repetition)[0].split(enc.component)]
    c += [""] * (6 - len(c))
    return " ".join(p for p in (c[5], c[2], c[3], c[1]) if p) or c[0]


def _comment(nte: Segment, enc: Encoding, codec: str | None) -> str:
    """NTE-3 (repeating FT), one line per repetition."""
    return "\n".join(unescape(r, enc, codec) for r in nte.get(3).split(enc.repetition)).strip()


def code(value: str) -> str:
    """A message code fit to echo: three letters or digits at most (sender-controlled)."""
    return re.sub(r"[^A-Z0-9]", "", value.upper())[:3] or "?"


def _subid(value: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", value)
    return tuple(int(p) for p in parts) if parts else (0,)


def _int(value: str) -> int:
    """Set ID / sub-ID: ASCII digits only ('²'.isdigit() is True, int('²') fails)."""
    v = value.strip()
    return int(v) if v.isascii() and v.isdigit() and len(v) <= 9 else 0


def _group_source(g: _Group, base: Source, enc: Encoding, codec: str | None) -> Source:
    """The message's facts with what the group's OBR or TXA says of its note."""
    seg = g.obr
    if seg is None:
        return base
    doc_type: Coding | None = None
    if seg.name == "TXA":
        if code := unescape(seg.get(2).split(enc.component)[0], enc, codec):
            doc_type = Coding(code, "http://terminology.hl7.org/CodeSystem/v2-0270",
                              DOC_TYPES.get(code.upper(), code))  # fmt: skip
        date_field, ident = seg.get(4) or seg.get(6), seg.get(12)
        status = seg.get(17).split(enc.component)[0].strip().upper()  # table 0271
        source = replace(base, document_status=status)
        if author := _person(seg.get(9), enc, codec):  # TXA-9 originator
            source = replace(source, author=author)
        if parent := unescape(seg.get(13).split(enc.component)[0], enc, codec):
            source = replace(source, parent=Identifier(parent))  # TXA-13 parent document
    else:
        ce = [*seg.get(4).split(enc.component), "", "", ""]
        if ce[0] or ce[1]:
            doc_type = Coding(unescape(ce[0], enc), CODE_SYSTEMS.get(ce[2].upper(), "") if ce[0]
                              else "", unescape(ce[1], enc, codec))  # fmt: skip
        date_field, ident = seg.get(7), seg.get(3)
        status = seg.get(25).split(enc.component)[0].strip().upper()  # table 0123
        source = replace(base, result_status=status)
    if date := ts_to_fhir(date_field):
        source = replace(source, date=date)
    if value := unescape(ident.split(enc.component)[0], enc, codec):
        source = replace(source, identifier=Identifier(value))
    return replace(source, doc_type=doc_type)
