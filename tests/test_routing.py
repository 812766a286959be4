"""Hybrid routing: which notes reach the LLM, and how the two results merge."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from kiwi_fhir.core import Document, Entity, Extraction, Modifier, Relation
from kiwi_fhir.errors import BackendUnavailableError
from kiwi_fhir.extractors.base import Extractor
from kiwi_fhir.extractors.routing import HybridExtractor, note_confidence
from kiwi_fhir.source import Source

TEXT = "No chest pain. Aspirin 81 mg daily."


def ent(mid: str, label: str, s: int, e: int, conf: float | None = None) -> Entity:
    return Entity(mid, label, s, e, TEXT[s:e], conf)


def mod(mid: str, label: str, s: int, e: int) -> Modifier:
    return Modifier(mid, label, s, e, TEXT[s:e], 0.9)


class Stub(Extractor):
    """Answers every note with the same spans; records what it was asked."""

    def __init__(self, name: str, ents: Sequence[Entity], mods: Sequence[Modifier] = (),
                 rels: Sequence[tuple[str, str]] = (), fail: bool = False) -> None:  # fmt: skip
        self.name = name
        self.ents, self.mods, self.rels, self.fail = ents, mods, rels, fail
        self.seen: list[str] = []

    def load(self) -> None:
        if self.fail:
            raise BackendUnavailableError(self.name, "http://x", "down")

    def extract(
        self,
        documents: Sequence[Document],
        given_entities: Sequence[Sequence[Entity] | None] | None = None,
    ) -> list[Extraction]:
        self.load()
        self.seen += [d.id for d in documents]
        rels = tuple(Relation(e, m, None, f"R{i}") for i, (e, m) in enumerate(self.rels))
        return [Extraction(d, tuple(self.ents), tuple(self.mods), rels, self.name, self.name)
                for d in documents]  # fmt: skip


def bert(conf: float = 0.9) -> Stub:
    return Stub(
        "onnx",
        [ent("T1", "problem", 3, 13, conf), ent("T2", "drug", 15, 22, conf)],
        [mod("T3", "negation", 0, 2), mod("T4", "strength", 23, 28)],
        [("T1", "T3"), ("T2", "T4")],
    )


def llm() -> Stub:
    # the LLM finds "chest pain" as "pain" only, and Aspirin's frequency
    return Stub("vllm", [ent("T1", "problem", 9, 13), ent("T2", "drug", 15, 22)],
                [mod("T3", "frequency", 29, 34)], [("T2", "T3")])  # fmt: skip


def docs() -> list[Document]:
    return [Document("a", TEXT, Source(channel="cardiology")),
            Document("b", TEXT, Source(channel="er"))]  # fmt: skip


def test_only_configured_sources_reach_the_llm() -> None:
    b, lm = bert(), llm()
    out = HybridExtractor(b, lm, llm_sources=("er",)).extract(docs())
    assert b.seen == ["a", "b"] and lm.seen == ["b"]
    assert out[0].backend == "onnx" and {m.source for m in out[0].entities} == {None}
    assert out[1].backend == "hybrid(onnx+vllm)"


def test_low_confidence_notes_reach_the_llm() -> None:
    lm = llm()
    HybridExtractor(bert(0.9), lm, min_confidence=0.5).extract(docs())
    assert lm.seen == []
    HybridExtractor(bert(0.3), lm, min_confidence=0.5).extract(docs())
    assert lm.seen == ["a", "b"]
    assert note_confidence(Extraction(Document("x", ""))) is None


def test_merge_prefers_llm_spans_and_keeps_the_rest_with_sources() -> None:
    (x,) = HybridExtractor(bert(), llm(), llm_sources=("er",)).extract(docs()[1:])
    spans = {(m.text, m.label, m.source) for m in (*x.entities, *x.modifiers)}
    assert spans == {
        ("pain", "problem", "vllm"),  # the LLM's span wins over BERT's "chest pain"
        ("Aspirin", "drug", "vllm"),
        ("daily", "frequency", "vllm"),
        ("No", "negation", "onnx"),  # BERT-only modifiers fill in, and follow
        ("81 mg", "strength", "onnx"),  # their entity to the LLM's span for it
    }
    rel = {(x.entity(r.entity_id).text, x.modifier(r.modifier_id).text) for r in x.relations}
    assert rel == {("Aspirin", "daily"), ("pain", "No"), ("Aspirin", "81 mg")}
    assert len({m.id for m in (*x.entities, *x.modifiers)}) == 5


def test_bert_modifier_of_a_replaced_entity_without_match_is_dropped() -> None:
    lm = Stub("vllm", [ent("T1", "treatment", 3, 13)])
    (x,) = HybridExtractor(bert(), lm, llm_sources=("er",)).extract(docs()[1:])
    assert {m.text for m in x.modifiers} == {"81 mg"}  # "No" would have no entity left


def test_replace_mode_returns_the_llm_result() -> None:
    h = HybridExtractor(bert(), llm(), llm_sources=("er",), keep_primary=False)
    (x,) = h.extract(docs()[1:])
    assert {m.source for m in (*x.entities, *x.modifiers)} == {"vllm"}
    assert h.stats() == {"routed": 1, "fallbacks": 0}


def test_llm_failure_falls_back_to_bert_unless_strict() -> None:
    down = Stub("vllm", [], fail=True)
    h = HybridExtractor(bert(), down, llm_sources=("er",))
    h.load()  # BERT alone is enough to start
    out = h.extract(docs())
    assert out[1].backend == "onnx" and h.stats()["fallbacks"] == 1
    strict = HybridExtractor(bert(), down, llm_sources=("er",), strict=True)
    with pytest.raises(BackendUnavailableError):
        strict.extract(docs())
