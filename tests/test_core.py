import pytest

from kiwi_fhir.core import Document, Entity, Extraction, Modifier, Relation

TEXT = "No fever. Aspirin 81 mg daily."


def ent(i: str, label: str, s: int, e: int) -> Entity:
    return Entity(i, label, s, e, TEXT[s:e])


def mod(i: str, label: str, s: int, e: int) -> Modifier:
    return Modifier(i, label, s, e, TEXT[s:e])


def test_valid_extraction_links_modifiers() -> None:
    ex = Extraction(
        Document("d", TEXT),
        entities=(ent("T1", "problem", 3, 8), ent("T2", "drug", 10, 17)),
        modifiers=(mod("T3", "negation", 0, 2), mod("T4", "strength", 18, 23)),
        relations=(Relation("T1", "T3"), Relation("T2", "T4")),
    )
    assert [m.text for m in ex.modifiers_of("T2")] == ["81 mg"]
    assert len(ex.allowed_relations()) == 2


def test_text_must_equal_note_slice() -> None:
    with pytest.raises(ValueError, match="does not match"):
        Extraction(Document("d", TEXT), entities=(Entity("T1", "problem", 3, 8, "FEVER"),))


def test_labels_are_checked_per_kind() -> None:
    with pytest.raises(ValueError, match="not a main entity"):
        Entity("T1", "negation", 0, 2, "No")
    with pytest.raises(ValueError, match="not a modifier"):
        Modifier("T1", "drug", 0, 2, "No")


def test_offsets_and_length_are_checked() -> None:
    with pytest.raises(ValueError, match="bad offsets"):
        Entity("T1", "problem", 5, 3, "")
    with pytest.raises(ValueError, match="length"):
        Entity("T1", "problem", 0, 3, "ab")


def test_relation_must_name_entity_and_modifier() -> None:
    with pytest.raises(ValueError, match="unknown"):
        Extraction(
            Document("d", TEXT),
            entities=(ent("T1", "problem", 3, 8),),
            relations=(Relation("T1", "T9"),),
        )


def test_disallowed_pairs_are_filtered_by_allowed_relations() -> None:
    ex = Extraction(
        Document("d", TEXT),
        entities=(ent("T1", "problem", 3, 8),),
        modifiers=(mod("T2", "strength", 18, 23),),
        relations=(Relation("T1", "T2"),),
    )
    assert ex.allowed_relations() == ()
