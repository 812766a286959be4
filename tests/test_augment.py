"""Mention replacement keeps every span, relation and offset true."""

import numpy as np

from kiwi_fhir.core import Document, Entity, Extraction, Modifier, Relation
from kiwi_fhir.training.augment import mention_pool, replace_mentions


def _mention(cls: type, id_: str, label: str, text: str, needle: str, after: int = 0) -> object:
    start = text.index(needle, after)
    return cls(id_, label, start, start + len(needle), needle)


def _note() -> Extraction:
    text = "No chest pain or fever.\nACUTE HEPATITIS noted; Aspirin given."
    ents = (
        _mention(Entity, "T1", "problem", text, "chest pain"),
        _mention(Entity, "T2", "problem", text, "fever"),
        _mention(Entity, "T3", "problem", text, "ACUTE HEPATITIS"),
        _mention(Entity, "T4", "drug", text, "Aspirin"),
    )
    mods = (
        _mention(Modifier, "T5", "negation", text, "No"),
        _mention(Modifier, "T6", "severity", text, "ACUTE"),  # nested: T3 is not free
    )
    rels = (Relation("T1", "T5"), Relation("T2", "T5"), Relation("T3", "T6"))
    return Extraction(Document("n1", text), ents, mods, rels)  # type: ignore[arg-type]


def _check_offsets(doc: Extraction) -> None:
    for m in (*doc.entities, *doc.modifiers):
        assert doc.document.text[m.start : m.end] == m.text


def test_pool_holds_only_entities_no_other_span_touches() -> None:
    assert mention_pool([_note()]) == {"drug": ["Aspirin"], "problem": ["chest pain", "fever"]}


def test_replacement_moves_every_later_span_and_keeps_relations() -> None:
    note = _note()
    pool = {"problem": ["shortness of breath"], "drug": ["metformin"]}
    got = replace_mentions(note, pool, 1.0, np.random.default_rng(0))
    _check_offsets(got)
    texts = {e.id: e.text for e in got.entities}
    # free entities swapped (case of the original kept), the nested one untouched
    assert texts == {
        "T1": "shortness of breath",
        "T2": "shortness of breath",
        "T3": "ACUTE HEPATITIS",
        "T4": "Metformin",
    }
    assert got.document.text == (
        "No shortness of breath or shortness of breath.\nACUTE HEPATITIS noted; Metformin given."
    )
    assert got.relations == note.relations
    assert [m.text for m in got.modifiers] == ["No", "ACUTE"]


def test_replacement_is_seeded_and_respects_the_probability() -> None:
    note, pool = _note(), {"problem": ["cough", "RASH", "back pain"], "drug": ["insulin"]}
    a = replace_mentions(note, pool, 0.5, np.random.default_rng(3))
    b = replace_mentions(note, pool, 0.5, np.random.default_rng(3))
    assert a == b
    _check_offsets(a)
    assert replace_mentions(note, pool, 0.0, np.random.default_rng(3)) is note
    swapped = [
        sum(
            x.text != y.text
            for x, y in zip(
                note.entities,
                replace_mentions(note, pool, 0.5, np.random.default_rng(s)).entities,
                strict=True,
            )
        )
        for s in range(200)
    ]
    # 3 free entities at p = 0.5 (a swap can draw the same text, rarely here)
    assert 1.2 < np.mean(swapped) < 1.8


def test_replacement_leaves_discontinuous_spans_and_what_they_enclose_alone() -> None:
    text = "Pain in the knee and the hip."
    frag = Entity("T1", "problem", 0, 16, text[0:16], fragments=((0, 4), (12, 16)))
    inner = Entity("T2", "problem", 5, 7, "in")
    after = Entity("T3", "problem", 25, 28, "hip")
    note = Extraction(Document("n2", text), (frag, inner, after))
    got = replace_mentions(note, {"problem": ["elbow pain"]}, 1.0, np.random.default_rng(0))
    _check_offsets(got)
    assert [e.text for e in got.entities] == [text[0:16], "in", "elbow pain"]
    assert got.entities[0].fragments == ((0, 4), (12, 16))


def test_replacement_shifts_the_pieces_of_a_later_discontinuous_span() -> None:
    text = "Fever. Pain in the knee."
    first = Entity("T1", "problem", 0, 5, "Fever")
    frag = Entity("T2", "problem", 7, 23, text[7:23], fragments=((7, 11), (19, 23)))
    note = Extraction(Document("n3", text), (first, frag))
    got = replace_mentions(note, {"problem": ["chest pain"]}, 1.0, np.random.default_rng(0))
    _check_offsets(got)
    moved = got.entities[1]
    assert [got.document.text[a:b] for a, b in moved.fragments] == ["Pain", "knee"]
