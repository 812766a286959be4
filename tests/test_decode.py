import numpy as np

from kiwi_fhir.extractors.decode import (
    MAIN_TAGS,
    MOD_TAGS,
    WordSpan,
    one_type_per_string,
    pair_candidates,
    spans_from_tags,
    tags_for_spans,
    viterbi,
)


def test_viterbi_never_starts_or_switches_with_i() -> None:
    # Greedy argmax would give I-problem after O, and I-test after B-problem.
    n = len(MAIN_TAGS)
    lp = np.full((3, n), -5.0)
    lp[0, MAIN_TAGS.index("I-problem")] = -0.1
    lp[0, MAIN_TAGS.index("B-problem")] = -0.5
    lp[1, MAIN_TAGS.index("I-test")] = -0.1
    lp[1, MAIN_TAGS.index("I-problem")] = -0.3
    lp[2, MAIN_TAGS.index("O")] = -0.1
    path = [MAIN_TAGS[i] for i in viterbi(lp, MAIN_TAGS)]
    assert path == ["B-problem", "I-problem", "O"]


def test_spans_from_tags_and_confidence() -> None:
    tags = ["B-negation", "O", "B-bodyloc", "I-bodyloc", "B-course"]
    path = np.asarray([MOD_TAGS.index(t) for t in tags])
    probs = np.full((5, len(MOD_TAGS)), 0.5)
    probs[2, path[2]] = 0.9
    probs[3, path[3]] = 0.7
    spans = spans_from_tags(path, probs, MOD_TAGS)
    assert [(s.label, s.first, s.last) for s in spans] == [
        ("negation", 0, 0),
        ("bodyloc", 2, 3),
        ("course", 4, 4),
    ]
    assert abs(spans[1].confidence - 0.8) < 1e-9


def test_gold_tags_from_char_spans() -> None:
    words = np.asarray([[0, 4], [5, 7], [8, 12], [13, 17]])
    tags = tags_for_spans(words, [("problem", 5, 12)], MAIN_TAGS)
    assert [MAIN_TAGS[t] for t in tags] == ["O", "B-problem", "I-problem", "O"]


def test_pair_candidates_respect_allowed_types_and_rank() -> None:
    ents = [
        WordSpan("problem", 0, 1, 1.0),
        WordSpan("drug", 3, 3, 1.0),
        WordSpan("problem", 6, 6, 1.0),
    ]
    mods = [WordSpan("negation", 5, 5, 1.0), WordSpan("strength", 4, 4, 1.0)]
    sent = np.zeros(8, dtype=np.int64)
    nl = np.zeros(8, dtype=np.int64)
    pairs, feats = pair_candidates(ents, mods, sent, nl)
    assert (1, 1) in pairs and (0, 1) not in pairs and (2, 1) not in pairs  # strength: drug only
    by_pair = dict(zip(pairs, feats.tolist(), strict=True))
    assert by_pair[(2, 0)][4] == 0  # nearest candidate for the negation
    assert by_pair[(0, 0)][4] == 2  # third nearest
    assert by_pair[(0, 0)][3] == 1  # the drug lies between problem 0 and the negation


def test_one_type_per_string_takes_the_most_confident_type_per_note() -> None:
    # Regression: "fibrinogen" came out a test once and a problem twice in
    # one dev note, though annotators type a string one way per note.
    words = ["Fibrinogen", "low", ";", "fibrinogen", "and", "fibrinogen", "level", "PE"]
    spans = [
        WordSpan("problem", 0, 0, 0.7),
        WordSpan("test", 3, 3, 0.95),
        WordSpan("problem", 5, 5, 0.2),  # problem 0.9 in all < test 0.95
        WordSpan("test", 5, 6, 0.9),  # other words: untouched
        WordSpan("problem", 7, 7, 0.8),
    ]
    got = one_type_per_string(spans, words)
    assert [s.label for s in got] == ["test", "test", "test", "test", "problem"]
    assert [(s.first, s.last, s.confidence) for s in got] == [
        (s.first, s.last, s.confidence) for s in spans
    ]
    tie = [WordSpan("drug", 0, 0, 0.5), WordSpan("test", 3, 3, 0.5)]
    assert [s.label for s in one_type_per_string(tie, words)] == ["test", "test"]
