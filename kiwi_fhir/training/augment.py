"""Mention replacement: training notes with some entities swapped for others.

With 80 notes the tagger can learn "this string is a problem" instead of
"a problem goes here". Replacing a main entity by another training mention
of the same type (Dai & Adel 2020, "An Analysis of Simple Data Augmentation
for Named Entity Recognition") keeps the label true while varying the words,
so the type has to come from the context as well. Only entities that no
other span touches are replaced: a nested modifier ("acute" in "acute
hepatitis") would lose its text, and a discontinuous span around one would
lose its pieces. Relations keep their ids, so "no" still negates whatever
now stands where "chest pain" stood.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from kiwi_fhir.core import Document, Extraction, Mention

M = TypeVar("M", bound=Mention)
MAX_WORDS = 8  # longer mentions are mostly clauses, not names


def mention_pool(docs: Sequence[Extraction]) -> dict[str, list[str]]:
    """Replaceable surface strings per entity type, from the training notes."""
    pool: dict[str, set[str]] = {}
    for d in docs:
        free = _free_entities(d)
        for e in d.entities:
            if e.id in free and "\n" not in e.text and len(e.text.split()) <= MAX_WORDS:
                pool.setdefault(e.label, set()).add(e.text)
    return {k: sorted(v) for k, v in sorted(pool.items())}


def replace_mentions(
    doc: Extraction, pool: dict[str, list[str]], prob: float, rng: np.random.Generator
) -> Extraction:
    """A copy of ``doc`` with each free entity replaced with probability
    ``prob``; every span still satisfies ``text[start:end] == span.text``."""
    free = _free_entities(doc)
    swaps: dict[str, str] = {}
    for e in doc.entities:
        choices = pool.get(e.label, [])
        if e.id in free and choices and rng.random() < prob:
            swaps[e.id] = _match_case(e.text, choices[int(rng.integers(len(choices)))])
    if not swaps:
        return doc
    text = doc.document.text
    parts: list[str] = []
    # (old offset, shift of everything at or after it)
    shifts: list[tuple[int, int]] = [(0, 0)]
    pos = 0
    for e in sorted((e for e in doc.entities if e.id in swaps), key=lambda e: e.start):
        parts += [text[pos : e.start], swaps[e.id]]
        pos = e.end
        shifts.append((e.end, shifts[-1][1] + len(swaps[e.id]) - (e.end - e.start)))
    parts.append(text[pos:])
    new_text = "".join(parts)

    def moved(x: int) -> int:
        return x + next(d for at, d in reversed(shifts) if x >= at)

    def remap(m: M) -> M:
        if m.id in swaps:
            new = swaps[m.id]
            return dataclasses.replace(
                m, start=moved(m.start), end=moved(m.start) + len(new), text=new
            )
        frags = tuple((moved(a), moved(b)) for a, b in m.fragments)
        return dataclasses.replace(m, start=moved(m.start), end=moved(m.end), fragments=frags)

    return dataclasses.replace(
        doc,
        document=Document(doc.document.id, new_text, doc.document.source),
        entities=tuple(remap(e) for e in doc.entities),
        modifiers=tuple(remap(m) for m in doc.modifiers),
    )


def _free_entities(doc: Extraction) -> set[str]:
    spans: list[Mention] = [*doc.entities, *doc.modifiers]
    free = set()
    for e in doc.entities:
        if e.fragments:
            continue
        if not any(o is not e and o.start < e.end and e.start < o.end for o in spans):
            free.add(e.id)
    return free


def _match_case(old: str, new: str) -> str:
    """Headers stay upper case, sentence starts capitalised."""
    if old.isupper() and any(c.isalpha() for c in old):
        return new.upper()
    if old[:1].isupper() and new[:1].islower():
        return new[:1].upper() + new[1:]
    return new
