"""Span-boundary rules: learned from gold spans, obeyed by Viterbi."""

import numpy as np

from kiwi_fhir.core import Document, Entity, Extraction
from kiwi_fhir.extractors.boundary import (
    BoundaryRules,
    absorb_left,
    learn_from_corpus,
    learn_rules,
    space_joins,
)
from kiwi_fhir.extractors.decode import MAIN_TAGS, WordSpan, spans_from_tags, viterbi
from kiwi_fhir.extractors.encoding import load_tokenizer
from kiwi_fhir.extractors.onnx import default_model_dir


def _lp(rows: list[dict[str, float]]) -> np.ndarray:
    lp = np.full((len(rows), len(MAIN_TAGS)), -8.0)
    for i, row in enumerate(rows):
        for tag, v in row.items():
            lp[i, MAIN_TAGS.index(tag)] = v
    return lp


def _spans(path: np.ndarray, words: list[str]) -> list[tuple[str, str]]:
    probs = np.ones((len(path), len(MAIN_TAGS)))
    return [
        (s.label, " ".join(words[s.first : s.last + 1]))
        for s in spans_from_tags(path, probs, MAIN_TAGS)
    ]


def test_learn_rules_counts_first_last_and_adjacency() -> None:
    words = ["pain", "in", "the", "knee", "and", "fever", "cough"]
    joins = [True] * 6 + [False]
    notes = [(words, [(0, 3), (5, 5), (6, 6)], joins)] * 3
    r = learn_rules(notes, min_count=3)
    assert "the" in r.no_end and "in" in r.no_end and "in" in r.no_start
    assert "knee" not in r.no_end and "pain" not in r.no_start
    assert r.adjacent  # fever|cough touch in 1 of 3 spans: too often to forbid
    r2 = learn_rules([(words, [(0, 3), (5, 5)], joins)], min_count=1)
    assert not r2.adjacent


def test_viterbi_extends_or_trims_a_span_that_would_end_on_a_function_word() -> None:
    # Regression: "pain in his ankles and" came out as a problem span.
    words = ["pain", "in", "his", "ankles", "and", "knees", "today"]
    lp = _lp(
        [
            {"B-problem": -0.1},
            {"I-problem": -0.1},
            {"I-problem": -0.1},
            {"I-problem": -0.1},
            {"I-problem": -0.4, "O": -1.0},
            {"O": -0.3, "I-problem": -0.5},
            {"O": -0.1},
        ]
    )
    assert _spans(viterbi(lp, MAIN_TAGS), words) == [("problem", "pain in his ankles and")]
    rules = BoundaryRules(no_end=frozenset({"and", "in", "his"}))
    can_start, can_end = rules.word_masks(words)
    got = _spans(viterbi(lp, MAIN_TAGS, can_start, can_end), words)
    assert got == [("problem", "pain in his ankles and knees")]
    lp[5, MAIN_TAGS.index("I-problem")] = -3.0  # now trimming is the better way out
    got = _spans(viterbi(lp, MAIN_TAGS, can_start, can_end), words)
    assert got == [("problem", "pain in his ankles")]


def test_viterbi_no_start_and_no_adjacent_spans() -> None:
    words = ["disseminated", "intravascular", "coagulation", ",", "and", "sepsis"]
    lp = _lp(
        [
            {"B-problem": -0.1},
            {"B-treatment": -0.3, "I-problem": -0.6},
            {"I-treatment": -0.1, "I-problem": -0.2},
            {"O": -0.1},
            {"B-problem": -0.2, "O": -0.4},
            {"I-problem": -0.1, "B-problem": -0.3},
        ]
    )
    free = _spans(viterbi(lp, MAIN_TAGS), words)
    assert free == [
        ("problem", "disseminated"),
        ("treatment", "intravascular coagulation"),
        ("problem", "and sepsis"),
    ]
    rules = BoundaryRules(no_start=frozenset({"and"}), adjacent=False)
    can_start, can_end = rules.word_masks(words)
    got = _spans(viterbi(lp, MAIN_TAGS, can_start, can_end, rules.adjacent), words)
    assert got == [("problem", "disseminated intravascular coagulation"), ("problem", "sepsis")]


def test_viterbi_last_word_that_cannot_end_a_span_is_outside() -> None:
    lp = _lp([{"B-test": -0.1}, {"I-test": -0.1}])
    can_end = np.asarray([True, False])
    path = viterbi(lp, MAIN_TAGS, np.ones(2, dtype=bool), can_end)
    assert [MAIN_TAGS[i] for i in path] == ["B-test", "O"]


def test_rules_round_trip_json_and_empty_rules_change_nothing() -> None:
    r = BoundaryRules(frozenset({"of"}), frozenset({"the"}), False, frozenset({"a"}))
    assert BoundaryRules.from_json(r.to_json()) == r
    old = {"no_start": ["of"], "no_end": ["the"], "adjacent": False}  # models before absorb
    assert BoundaryRules.from_json(old).absorb == frozenset()
    assert BoundaryRules.from_json(None) == BoundaryRules()
    rng = np.random.default_rng(3)
    lp = np.log(rng.dirichlet(np.ones(len(MAIN_TAGS)), size=12))
    words = ["w"] * 12
    s, e = BoundaryRules().word_masks(words)
    assert (viterbi(lp, MAIN_TAGS, s, e, True) == viterbi(lp, MAIN_TAGS)).all()


def test_learn_from_corpus_uses_tokenizer_words() -> None:
    text = "Pain in the knee. Pain in the knee."
    doc = Document("d", text)
    ents = tuple(
        Entity(f"T{i}", "problem", s, s + 16, text[s : s + 16]) for i, s in enumerate((0, 18))
    )
    tok = load_tokenizer(default_model_dir() / "tokenizer.json")
    rules = learn_from_corpus(tok, [Extraction(doc, entities=ents)], min_count=2)
    assert {"in", "the"} <= rules["main"].no_end
    assert "knee" not in rules["main"].no_end
    assert rules["mod"] == BoundaryRules(adjacent=True)


def test_learn_rules_absorbs_words_that_usually_open_the_span_before_them() -> None:
    # "a" opens 3 of 4 spans it stands before (75%): absorbed. "for" stands
    # before 4 spans and opens none; "pain" (inside the span before) and a
    # word on another line (joins False) are not counted as left out.
    words = ["a", "fever", "for", "a", "cough", "a", "rash", "x", "a", "wheeze"]
    joins = [True] * 7 + [False, True, False]
    notes = [(words, [(0, 1), (3, 4), (6, 6), (8, 9)], joins)]
    r = learn_rules(notes, min_count=4)
    assert r.absorb == frozenset({"a"})
    assert learn_rules(notes, min_count=5).absorb == frozenset()  # too rare
    notes2 = [(words, [(1, 1), (3, 4), (6, 6), (8, 9)], joins)]  # now 2 of 4: 50%
    assert learn_rules(notes2, min_count=4).absorb == frozenset()


def test_absorb_left_extends_only_by_a_free_blank_joined_rule_word() -> None:
    # Regression: "an extensive workup" came out as "extensive workup".
    words = ["an", "extensive", "workup", "the", "the", "knee", "an", "mri"]
    joins = [True] * 5 + [False, False, False]
    rules = BoundaryRules(absorb=frozenset({"an", "the"}))
    spans = [
        WordSpan("test", 1, 2, 0.9),  # absorbs "an"
        WordSpan("problem", 3, 3, 0.9),  # "the" at 2 is inside the span before
        WordSpan("problem", 5, 5, 0.9),  # "the" at 4: free, joined
        WordSpan("test", 7, 7, 0.9),  # "an" at 6 is on another line
    ]
    got = [(s.first, s.last) for s in absorb_left(spans, words, joins, rules)]
    assert got == [(0, 2), (3, 3), (4, 5), (7, 7)]


def test_space_joins_is_blank_only_and_same_line() -> None:
    text = "a  fever\nthe\tknee(x)"
    spans = np.asarray([[0, 1], [3, 8], [9, 12], [13, 17], [17, 18], [18, 19], [19, 20]])
    assert space_joins(text, spans) == [True, False, True, False, False, False, False]


def test_shipped_model_absorbs_articles_into_entities() -> None:
    from kiwi_fhir.extractors.onnx import OnnxExtractor, read_model_config

    rules = BoundaryRules.from_json(
        read_model_config(default_model_dir())["boundary_rules"]["main"]
    )
    assert {"a", "an", "his", "her", "the"} <= rules.absorb
    assert "no" not in rules.absorb  # "no" is a negation modifier, never inside the entity
    text = "He had an exploratory laparotomy and his pain resolved."
    ex = OnnxExtractor().extract([Document("n", text)])[0]
    for e in ex.entities:
        assert text[e.start : e.end] == e.text
        before = text[: e.start].split()
        assert not before or before[-1].lower() not in rules.absorb


def test_learned_transitions_change_the_viterbi_path() -> None:
    lp = _lp([{"B-test": -0.1}, {"B-test": -0.6, "I-test": -0.9}])
    alone = [MAIN_TAGS[t] for t in viterbi(lp, MAIN_TAGS)]
    assert alone == ["B-test", "B-test"]
    learned = np.zeros((len(MAIN_TAGS), len(MAIN_TAGS)))
    b, i = MAIN_TAGS.index("B-test"), MAIN_TAGS.index("I-test")
    learned[b, b], learned[b, i] = -1.0, 0.5
    assert [MAIN_TAGS[t] for t in viterbi(lp, MAIN_TAGS, learned=learned)] == ["B-test", "I-test"]
    # hard BIO constraints still win over any learned score
    learned[MAIN_TAGS.index("O"), MAIN_TAGS.index("I-drug")] = 50.0
    lp2 = _lp([{"O": -0.1}, {"I-drug": -0.2, "O": -0.3}])
    path = [MAIN_TAGS[t] for t in viterbi(lp2, MAIN_TAGS, learned=learned)]
    assert path == ["O", "O"]
