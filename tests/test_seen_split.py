"""``scripts/seen_split.py``: NER scored apart for strings seen and unseen in training."""

from collections.abc import Callable
from types import ModuleType

import pytest

from kiwi_fhir.core import Document, Entity, Extraction


@pytest.fixture
def ss(load_script: Callable[[str], ModuleType]) -> ModuleType:
    return load_script("seen_split")


def _ex(doc_id: str, text: str, spans: list[tuple[str, str]]) -> Extraction:
    ents, at = [], 0
    for i, (label, s) in enumerate(spans):
        start = text.index(s, at)
        ents.append(Entity(f"T{i}", label, start, start + len(s), s))
        at = start + len(s)
    return Extraction(Document(doc_id, text), tuple(ents))


def test_each_half_is_scored_on_its_own(ss: ModuleType) -> None:
    note = "Chest  Pain and CT scan."
    train = [_ex("t", note, [("problem", "Chest  Pain"), ("test", "CT scan")])]
    seen = ss.seen_keys(train)
    assert seen == {("problem", "chest pain"), ("test", "ct scan")}  # case and spaces folded
    text = "chest pain, CT scan and rash; ct scan again"
    gold = [_ex("d", text, [("problem", "chest pain"), ("test", "CT scan"), ("problem", "rash")])]
    # one seen hit, one seen spurious (a seen string where gold has none),
    # the unseen "rash" missed, an unseen spurious "again" -- and a seen
    # string with another type counts as unseen.
    pred = [_ex("d", text, [("problem", "chest pain"), ("problem", "CT scan"),
                            ("test", "ct scan"), ("problem", "again")])]  # fmt: skip
    s = ss.split_scores(gold, pred, seen)
    assert (s["seen"]["tp"], s["seen"]["pred"], s["seen"]["gold"]) == (1, 2, 2)
    assert (s["unseen"]["tp"], s["unseen"]["pred"], s["unseen"]["gold"]) == (0, 2, 1)
    assert s["seen"]["f1"] == pytest.approx(0.5)
    assert s["all"]["f1"] == pytest.approx(2 * 1 / (4 + 3))
