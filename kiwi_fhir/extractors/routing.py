"""Hybrid routing: the BERT extractor for every note, an LLM for some.

The LLM is slow and costly, so it reads only the notes where it is expected
to pay off: notes from sources configured as hard for BERT
(``Document.source.channel``, e.g. a department whose notes look unlike the
training data), and notes where BERT itself is unsure -- the mean confidence
of its entities is below ``min_confidence``. For a routed note the LLM's
spans win; BERT spans that overlap none of them are kept too (the LLM adds
precision where it tags, BERT keeps recall where it stays silent), with the
relations whose ends both survive. ``Mention.source`` tells which backend
produced each span. If the LLM backend fails, the note keeps its BERT result
(``fallbacks`` counts it) unless ``strict`` asks for the error.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import TypeVar

from kiwi_fhir.core import Document, Entity, Extraction, Mention, Relation
from kiwi_fhir.errors import BackendError, ModelError
from kiwi_fhir.extractors.base import Extractor

log = logging.getLogger(__name__)

__all__ = ["HybridExtractor", "note_confidence"]

_M = TypeVar("_M", bound=Mention)


def note_confidence(extraction: Extraction) -> float | None:
    """Mean entity confidence; None when no entity carries one."""
    conf = [e.confidence for e in extraction.entities if e.confidence is not None]
    return sum(conf) / len(conf) if conf else None


class HybridExtractor(Extractor):
    name = "hybrid"

    def __init__(
        self,
        primary: Extractor,
        llm: Extractor,
        *,
        llm_sources: Collection[str] = (),
        min_confidence: float | None = None,
        keep_primary: bool = True,
        strict: bool = False,
    ) -> None:
        self.primary = primary
        self.llm = llm
        self.llm_sources = frozenset(llm_sources)
        self.min_confidence = min_confidence
        self.keep_primary = keep_primary
        self.strict = strict
        self._lock = threading.Lock()
        self._routed = 0
        self._fallbacks = 0

    def load(self) -> None:
        self.primary.load()
        try:
            self.llm.load()
        except (ModelError, BackendError):
            if self.strict:
                raise
            # BERT alone still serves every note; the LLM is retried per batch.
            log.warning("LLM backend not loaded; routed notes fall back to %s", self.primary.name)

    def close(self) -> None:
        self.primary.close()
        self.llm.close()

    def health(self) -> bool:
        return self.primary.health()

    @property
    def model_id(self) -> str:
        return f"{self.primary.model_id}+{self.llm.model_id}"

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"routed": self._routed, "fallbacks": self._fallbacks}

    def wants_llm(self, doc: Document, first: Extraction) -> bool:
        """Whether this note goes to the LLM too (source rule, then confidence rule)."""
        if doc.source.channel in self.llm_sources:
            return True
        if self.min_confidence is None:
            return False
        conf = note_confidence(first)
        return conf is not None and conf < self.min_confidence

    def extract(
        self,
        documents: Sequence[Document],
        given_entities: Sequence[Sequence[Entity] | None] | None = None,
    ) -> list[Extraction]:
        base = self.primary.extract(documents, given_entities)
        picked = [i for i, (d, x) in enumerate(zip(documents, base, strict=True))
                  if self.wants_llm(d, x)]  # fmt: skip
        if not picked:
            return base
        given = None
        if given_entities is not None:
            given = [given_entities[i] for i in picked]
        try:
            second = self.llm.extract([documents[i] for i in picked], given)
        except (ModelError, BackendError) as exc:
            if self.strict:
                raise
            log.warning("LLM backend failed for %d notes, kept %s results: %s",
                        len(picked), self.primary.name, exc)  # fmt: skip
            with self._lock:
                self._fallbacks += len(picked)
            return base
        with self._lock:
            self._routed += len(picked)
        out = list(base)
        for i, x in zip(picked, second, strict=True):
            out[i] = self._merge(base[i], x) if self.keep_primary else self._tag(x)
        return out

    def _tag(self, x: Extraction) -> Extraction:
        """Ensure every LLM span names its backend, even if the LLM left it unset."""
        src = self.llm.name
        return Extraction(
            document=x.document,
            entities=tuple(_with_source(e, src) for e in x.entities),
            modifiers=tuple(_with_source(m, src) for m in x.modifiers),
            relations=x.relations,
            model=x.model,
            backend=f"{self.name}({x.backend})",
        )

    def _merge(self, bert: Extraction, raw: Extraction) -> Extraction:
        llm = self._tag(raw)
        psrc = self.primary.name
        ids: dict[str, str] = {}  # kept BERT id -> its id in the merged result
        used = {m.id for m in (*llm.entities, *llm.modifiers)}
        ents = [*llm.entities, *_disjoint(bert.entities, llm.entities, used, ids, psrc)]
        # A BERT modifier whose every entity gave way to an LLM span would be
        # an orphan (a modifier means something only through its relation).
        linked = {r.modifier_id for r in bert.relations if r.entity_id in ids}
        related = {r.modifier_id for r in bert.relations}
        candidates = [m for m in bert.modifiers if m.id in linked or m.id not in related]
        mods = [*llm.modifiers, *_disjoint(candidates, llm.modifiers, used, ids, psrc)]
        pairs = [(r.entity_id, r.modifier_id, r.confidence) for r in llm.relations]
        seen = {(e, m) for e, m, _ in pairs}
        for r in bert.relations:
            if r.entity_id in ids and r.modifier_id in ids:
                pair = (ids[r.entity_id], ids[r.modifier_id])
                if pair not in seen:
                    seen.add(pair)
                    pairs.append((*pair, r.confidence))
        return Extraction(
            document=llm.document,
            entities=tuple(sorted(ents, key=lambda m: (m.start, m.end))),
            modifiers=tuple(sorted(mods, key=lambda m: (m.start, m.end))),
            relations=tuple(Relation(e, m, c, f"R{n + 1}") for n, (e, m, c) in enumerate(pairs)),
            model=self.model_id,
            backend=f"{self.name}({bert.backend}+{raw.backend})",
        )


def _disjoint(
    group: Sequence[_M], theirs: Sequence[Mention], used: set[str], ids: dict[str, str], src: str
) -> list[_M]:
    """Mentions of ``group`` that overlap none of ``theirs``, renamed off ``used`` ids.

    ``ids`` records where each BERT id went: its new id, or the id of the
    overlapping LLM mention of the same label that replaces it.
    """
    kept: list[_M] = []
    for m in group:
        hit = [o for o in theirs if _overlaps(m, o)]
        if hit:
            # The same mention by the other backend: BERT's relations follow it.
            same = next((o for o in hit if o.label == m.label), None)
            if same is not None:
                ids[m.id] = same.id
            continue
        mid = m.id
        if mid in used:
            n = len(used) + 1
            while f"T{n}" in used:
                n += 1
            mid = f"T{n}"
        used.add(mid)
        ids[m.id] = mid
        kept.append(_with_source(m, src, mid))
    return kept


def _overlaps(a: Mention, b: Mention) -> bool:
    return a.start < b.end and b.start < a.end


def _with_source(m: _M, source: str, mid: str | None = None) -> _M:
    if m.source and mid in (None, m.id):
        return m
    return replace(m, source=m.source or source, id=mid or m.id)
