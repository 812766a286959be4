"""Long notes run segment by segment, so memory follows the segment, not the note.

Everything a note's extraction keeps until its relations are scored (one
hidden-state matrix per window, every candidate pair's representation) grows
with the note; measured before this module, a 256 KB note peaked at 1.8 GB
and all pairs of a 1 MB note took minutes. A note longer than
``max_chars`` is cut into contiguous segments, each extracted as a note of
its own and shifted back, so peak memory is that of one segment whatever
the note's length.

Cuts go where nothing we extract crosses them: a paragraph break, else a
line break, else a sentence end, else a space, searched from ``max_chars``
back to half of it; a cut never falls inside a given (gold) entity. What a
cut can change: relations between a modifier and an entity in different
segments (the pair features already stop at most of them: distance,
sentence and line breaks), and the one-type-per-string vote, which becomes
per segment. Notes up to ``max_chars`` are unaffected.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from kiwi_fhir.core import Document, Entity, Extraction, Modifier, Relation

#: Where to prefer a cut, best first: after a blank line, after a line
#: break, after a sentence end, after a space.
_BREAKS = (re.compile(r"\n[ \t]*\n"), re.compile(r"\n"), re.compile(r"[.!?]\s"), re.compile(r"\s"))

Span = tuple[int, int]


def cuts(text: str, max_chars: int, keep: Sequence[Span] = ()) -> list[Span]:
    """Contiguous ``(start, end)`` segments covering ``text``, each ≤ ``max_chars``
    unless one span of ``keep`` is longer than that."""
    if max_chars < 2:
        raise ValueError("max_chars must be at least 2")
    out: list[Span] = []
    a, n = 0, len(text)
    while n - a > max_chars:
        b = _cut(text, a, a + max_chars, keep)
        out.append((a, b))
        a = b
    out.append((a, n))
    return out


def _cut(text: str, a: int, limit: int, keep: Sequence[Span]) -> int:
    lo = a + max(1, (limit - a) // 2)

    def allowed(c: int) -> bool:
        return not any(s < c < e for s, e in keep)

    for pattern in _BREAKS:
        ends = [m.end() for m in pattern.finditer(text, lo, limit)]
        for c in reversed(ends):
            if allowed(c):
                return c
    c = limit
    while c > a + 1 and not allowed(c):  # hard cut, moved before a kept span
        c -= 1
    return c if allowed(c) else next(e for s, e in keep if s < limit < e)


def by_segments(
    doc: Document,
    max_chars: int,
    given: Sequence[Entity] | None,
    extract_one: Callable[[Document, Sequence[Entity] | None], Extraction],
) -> Extraction:
    """Extract ``doc`` one segment at a time and merge into one Extraction of ``doc``.

    Entity ids of ``given`` are kept; predicted mentions are numbered afresh
    (T1.. entities, then modifiers; R1.. relations), as in a one-piece note.
    """
    keep = [(e.start, e.end) for e in given] if given is not None else []
    entities: list[Entity] = []
    modifiers: list[Modifier] = []
    relations: list[tuple[str, str, float | None]] = []
    ids: dict[str, str] = {}  # segment-tagged id -> final id
    segments = cuts(doc.text, max_chars, keep)
    for k, (a, b) in enumerate(segments):
        seg = Document(f"{doc.id}#{k}", doc.text[a:b], doc.source)
        seg_given = None
        if given is not None:
            seg_given = [_shift(e, -a, e.id) for e in given if a <= e.start and e.end <= b]
        ex = extract_one(seg, seg_given)
        tag = f"s{k}:"
        ids.update({tag + e.id: e.id for e in seg_given or ()})
        if given is None:
            entities += [_shift(e, a, tag + e.id) for e in ex.entities]
        modifiers += [_shift(m, a, tag + m.id) for m in ex.modifiers]
        relations += [(tag + r.entity_id, tag + r.modifier_id, r.confidence) for r in ex.relations]
        model, backend = ex.model, ex.backend
    if given is not None:
        used = {e.id for e in given}
        final_entities = list(given)
    else:
        used = set()
        final_entities = []
        for n, e in enumerate(entities, start=1):
            ids[e.id] = f"T{n}"
            used.add(f"T{n}")
            final_entities.append(dataclasses.replace(e, id=f"T{n}"))
    final_modifiers = []
    n = 0
    for m in modifiers:
        n += 1
        while f"T{n}" in used:
            n += 1
        ids[m.id] = f"T{n}"
        final_modifiers.append(dataclasses.replace(m, id=f"T{n}"))
    return Extraction(
        document=doc,
        entities=tuple(final_entities),
        modifiers=tuple(final_modifiers),
        relations=tuple(
            Relation(ids[e], ids[m], conf, f"R{j}")
            for j, (e, m, conf) in enumerate(relations, start=1)
        ),
        model=model,
        backend=backend,
    )


_M = TypeVar("_M", Entity, Modifier)


def _shift(m: _M, by: int, new_id: str) -> _M:
    return dataclasses.replace(
        m,
        id=new_id,
        start=m.start + by,
        end=m.end + by,
        fragments=tuple((s + by, e + by) for s, e in m.fragments),
    )
