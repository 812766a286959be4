"""Brat standoff I/O (``NAME.txt`` + ``NAME.ann``), as the Kiwi corpus ships.

Offsets in ``.ann`` index the ``.txt`` exactly as stored: we read it with
``newline=""`` so a CRLF note keeps its ``\\r`` and every offset still lands.
Only ``T`` (text-bound) and ``R`` (``hasAttr``) lines carry meaning here;
attribute/note/normalisation lines (``A``, ``#``, ``N``, ``*``, ``E``) are
skipped. Anything else is an :class:`AnnotationFormatError` naming file and
line -- or, with ``strict=False`` (real corpora have the odd stray line), a
warning collected for the caller while the rest of the file is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kiwi_fhir.core import Document, Entity, Extraction, Mention, Modifier, Relation
from kiwi_fhir.errors import AnnotationFormatError, DocumentError
from kiwi_fhir.schema import ENTITY_TYPES, MODIFIER_TYPES, RELATION_TYPE
from kiwi_fhir.source import Source

_SPAN_RE = re.compile(r"^(\d+) (\d+)$")
_ARG_RE = re.compile(r"^Arg([12]):(\S+)$")
_IGNORED_PREFIXES = ("A", "#", "N", "*", "E", "M")


@dataclass
class ParseReport:
    """Lines skipped in lenient mode, for the caller to log or count."""

    problems: list[AnnotationFormatError] = field(default_factory=list)


def read_text(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read()
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{path}: not valid UTF-8 at byte {exc.start}") from exc
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read ({exc.strerror})") from exc


def parse_ann(
    ann: str,
    document: Document,
    *,
    path: str = "<ann>",
    strict: bool = True,
    report: ParseReport | None = None,
) -> Extraction:
    """Parse standoff text against the note it annotates."""
    text = document.text
    mentions: dict[str, Mention] = {}
    relations: list[Relation] = []

    def fail(lineno: int, reason: str) -> None:
        err = AnnotationFormatError(path, lineno, reason)
        if strict:
            raise err
        if report is not None:
            report.problems.append(err)

    pending: list[tuple[int, str, str, str]] = []
    lines = [raw.rstrip("\r") for raw in ann.splitlines()]
    skip_until = 0
    for lineno, line in enumerate(lines, start=1):
        if lineno <= skip_until or not line.strip():
            continue
        if line[0] == "T":
            problem = _parse_t(line, text, mentions)
            # A span that crosses a line break carries a raw newline in its
            # text field; retry with the continuation lines joined back.
            extra = 0
            while problem and "does not match" in problem and lineno + extra < len(lines):
                extra += 1
                joined = "\n".join(lines[lineno - 1 : lineno + extra])
                if _parse_t(joined, text, mentions) is None:
                    problem, skip_until = None, lineno + extra
                elif extra >= 3:
                    break
            if problem:
                fail(lineno, problem)
        elif line[0] == "R":
            parts = line.split("\t")
            fields = parts[1].split() if len(parts) >= 2 else []
            if len(fields) != 3 or fields[0] != RELATION_TYPE:
                fail(lineno, f"expected 'R<n>\\t{RELATION_TYPE} Arg1:<id> Arg2:<id>'")
                continue
            args: dict[str, str] = {}
            for m in map(_ARG_RE.match, fields[1:]):
                if m:
                    args[m.group(1)] = m.group(2)
            if set(args) != {"1", "2"}:
                fail(lineno, "relation needs Arg1 and Arg2")
                continue
            pending.append((lineno, parts[0], args["1"], args["2"]))
        elif line[0] in _IGNORED_PREFIXES:
            continue
        else:
            fail(lineno, "unrecognised annotation line")

    for lineno, rid, a1, a2 in pending:
        ent, mod = mentions.get(a1), mentions.get(a2)
        if isinstance(ent, Modifier) and isinstance(mod, Entity):
            ent, mod = mod, ent  # annotators sometimes drew the arrow backwards
        if not isinstance(ent, Entity) or not isinstance(mod, Modifier):
            fail(lineno, f"relation {rid} must link a main entity to a modifier")
            continue
        relations.append(Relation(entity_id=ent.id, modifier_id=mod.id, id=rid))

    return Extraction(
        document=document,
        entities=tuple(m for m in mentions.values() if isinstance(m, Entity)),
        modifiers=tuple(m for m in mentions.values() if isinstance(m, Modifier)),
        relations=tuple(relations),
    )


def _parse_t(line: str, text: str, mentions: dict[str, Mention]) -> str | None:
    """Parse one T line into ``mentions``; return a reason if it is malformed."""
    parts = line.split("\t")
    if len(parts) < 3:
        return "expected 'T<n>\\t<type> <start> <end>\\t<text>'"
    tid, body, surface = parts[0], parts[1], "\t".join(parts[2:])
    label, _, spans = body.partition(" ")
    pieces: list[tuple[int, int]] = []
    for frag in spans.split(";"):
        m = _SPAN_RE.match(frag.strip())
        if not m:
            return f"bad offsets {spans!r} for {tid}"
        pieces.append((int(m.group(1)), int(m.group(2))))
    if any(s > e or e > len(text) for s, e in pieces):
        return f"offsets of {tid} fall outside the note ({len(text)} characters)"
    if " ".join(text[s:e] for s, e in pieces) != surface:
        return f"text of {tid} does not match the note at its offsets"
    if tid in mentions:
        return f"duplicate id {tid}"
    start, end = min(s for s, _ in pieces), max(e for _, e in pieces)
    frags = tuple(pieces) if len(pieces) > 1 else ()
    kind: type[Mention]
    if label in ENTITY_TYPES:
        kind = Entity
    elif label in MODIFIER_TYPES:
        kind = Modifier
    else:
        return f"unknown label {label!r} for {tid}"
    mentions[tid] = kind(tid, label, start, end, text[start:end], fragments=frags)
    return None


def read_pair(
    txt_path: Path, *, strict: bool = True, report: ParseReport | None = None
) -> Extraction:
    """Read ``NAME.txt`` and its ``NAME.ann`` (missing ``.ann`` = no annotations)."""
    source = Source(path=str(txt_path))
    doc = Document(id=txt_path.stem, text=read_text(txt_path), source=source)
    ann_path = txt_path.with_suffix(".ann")
    ann = read_text(ann_path) if ann_path.exists() else ""
    return parse_ann(ann, doc, path=str(ann_path), strict=strict, report=report)


def format_ann(extraction: Extraction) -> str:
    """Standoff text for an extraction; ids are renumbered ``T1..``/``R1..``."""
    text = extraction.document.text
    lines: list[str] = []
    new_id: dict[str, str] = {}
    for m in (*extraction.entities, *extraction.modifiers):
        tid = f"T{len(new_id) + 1}"
        new_id[m.id] = tid
        pieces = m.pieces()
        offsets = ";".join(f"{s} {e}" for s, e in pieces)
        surface = " ".join(text[s:e] for s, e in pieces)
        lines.append(f"{tid}\t{m.label} {offsets}\t{surface}")
    for n, r in enumerate(extraction.relations, start=1):
        lines.append(
            f"R{n}\t{RELATION_TYPE} Arg1:{new_id[r.entity_id]} Arg2:{new_id[r.modifier_id]}"
        )
    return "".join(line + "\n" for line in lines)


def write_pair(extraction: Extraction, out_dir: Path, *, write_text: bool = True) -> Path:
    """Write ``ID.ann`` (and ``ID.txt`` unless told not to) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = extraction.document
    if write_text:
        with open(out_dir / f"{doc.id}.txt", "w", encoding="utf-8", newline="") as fh:
            fh.write(doc.text)
    ann_path = out_dir / f"{doc.id}.ann"
    with open(ann_path, "w", encoding="utf-8", newline="") as fh:
        fh.write(format_ann(extraction))
    return ann_path


def iter_txt(paths: Iterable[Path]) -> list[Path]:
    """Expand directories to their ``*.txt`` files, sorted for determinism."""
    out: list[Path] = []
    for p in paths:
        out.extend(sorted(p.glob("*.txt")) if p.is_dir() else [p])
    return out
