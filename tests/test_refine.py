"""Span-boundary refinement (``--refine-boundaries``): candidates, the
decode-time choice and the training sets and loss."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from kiwi_fhir.core import Document, Entity, Extraction
from kiwi_fhir.extractors.decode import WordSpan
from kiwi_fhir.extractors.encoding import encode_note, load_tokenizer
from kiwi_fhir.extractors.onnx import default_model_dir
from kiwi_fhir.extractors.pipeline import char_to_word_span, refine_spans
from kiwi_fhir.extractors.refine import MAX_WIDTH, REACH, candidates, features, positions


def test_candidates_keep_the_span_first_and_stay_in_reach_and_range() -> None:
    cs = candidates(5, 6, 0, 20)
    assert cs[0] == (5, 6) and len(set(cs)) == len(cs)
    assert all(abs(f - 5) <= REACH and abs(la - 6) <= REACH and f <= la for f, la in cs)
    # every pair of ends within reach is there: starts 2..8, ends 3..9, f <= l
    assert len(cs) == sum(1 for f in range(2, 9) for la in range(3, 10) if f <= la)
    assert all(f >= 0 and la <= 7 for f, la in candidates(1, 6, 0, 7))


def test_candidates_never_hold_a_blocked_word_but_the_span_itself_stays() -> None:
    cs = candidates(5, 6, 0, 20, blocked=[8, 3])
    assert all(not {3, 8} & set(range(f, la + 1)) for f, la in cs[1:])
    assert cs[0] == (5, 6) and (4, 7) in cs and (5, 8) not in cs
    # a span already wider than MAX_WIDTH is only ever kept, not widened
    wide = candidates(0, MAX_WIDTH + 2, 0, 100)
    assert wide[0] == (0, MAX_WIDTH + 2) and all(la - f < MAX_WIDTH for f, la in wide[1:])


def test_features_are_type_and_capped_width() -> None:
    got = features("drug", [(3, 3), (0, 30)]).tolist()
    assert got == [[2, 0], [2, 15]]


def test_positions_use_cls_and_sep_for_neighbours_outside_the_window() -> None:
    word_first = np.asarray([0, 2, 3, 5, 6], dtype=np.int64)  # 5 words, 7 subtokens
    # window holds subtokens [2, 6): words 1..3
    got = positions([(1, 2), (2, 3)], word_first, 2, 6, 5).tolist()
    # (first, last, before, after), counted after [CLS]; [SEP] sits at 6 - 2 + 1
    assert got == [[1, 2, 0, 4], [2, 4, 1, 5]]
    assert positions([(0, 4)], word_first, 0, 7, 5).tolist() == [[1, 7, 0, 8]]


class _Scorer:
    """A runner whose boundary scores prefer one extent per span."""

    def __init__(self, want: dict[int, tuple[int, int]], reprs: list[NDArray[np.float32]]):
        self.want, self.reprs = want, reprs

    def refine(
        self, span_repr: NDArray[np.float32], feats: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        self.reprs.append(span_repr)
        # positions are recoverable from the fake hidden states (value = position)
        first, last = span_repr[:, 0].astype(int), span_repr[:, 4].astype(int)
        return np.asarray(
            [
                10.0 if (f, la) in self.want.values() else 0.0
                for f, la in zip(first, last, strict=True)
            ],
            dtype=np.float32,
        )


def _note(text: str):  # type: ignore[no-untyped-def]
    tok = load_tokenizer(default_model_dir() / "tokenizer.json")
    return encode_note(tok, text, max_len=64, stride=48)


def test_refine_spans_moves_boundaries_without_overlap() -> None:
    note = _note("She has the amount of bleeding and a cut on the left foot today .")
    assert note.n_words == len(note.ids) == 15  # one subtoken per word
    hidden = np.repeat(np.arange(80, dtype=np.float32)[:, None], 4, axis=1)  # state = position
    spans = [WordSpan("problem", 5, 5, 0.9), WordSpan("problem", 8, 10, 0.8)]
    # in positions after [CLS]: "the amount of bleeding" = words 2..5, "a cut ... foot" = 7..12
    want = {0: (3, 6), 1: (8, 13)}
    seen: list[NDArray[np.float32]] = []
    got = refine_spans(_Scorer(want, seen), note, spans, lambda k: hidden)  # type: ignore[arg-type]
    assert [(s.first, s.last) for s in got] == [(2, 5), (7, 12)]
    assert [s.confidence for s in got] == [0.9, 0.8]
    assert len(seen) == 1 and seen[0].shape[1] == 4 * hidden.shape[1]  # one call per note


def test_refine_spans_keeps_spans_when_nothing_scores_better() -> None:
    note = _note("no chest pain or fever")
    hidden = np.zeros((32, 4), dtype=np.float32)
    spans = [WordSpan("problem", 1, 2, 0.7), WordSpan("problem", 4, 4, 0.7)]
    got = refine_spans(_Scorer({}, []), note, spans, lambda k: hidden)  # type: ignore[arg-type]
    assert got == spans
    assert refine_spans(_Scorer({}, []), note, [], lambda k: hidden) == []  # type: ignore[arg-type]


def test_settled_spans_are_never_overlapped_by_later_ones() -> None:
    note = _note("a b c d e f g h i j")
    hidden = np.repeat(np.arange(40, dtype=np.float32)[:, None], 4, axis=1)
    spans = [WordSpan("test", 2, 2, 0.9), WordSpan("test", 5, 5, 0.9)]
    # both would grow into words 3..4 (positions 4..5): the first wins them
    want = {0: (3, 5), 1: (4, 6)}
    got = refine_spans(_Scorer(want, []), note, spans, lambda k: hidden)  # type: ignore[arg-type]
    firsts = [set(range(s.first, s.last + 1)) for s in got]
    assert not firsts[0] & firsts[1]
    assert (got[0].first, got[0].last) == (2, 4) and (got[1].first, got[1].last) == (5, 5)


torch = pytest.importorskip("torch", reason="needs the train extra")


def test_set_softmax_nll_matches_a_loop_over_sets() -> None:
    from kiwi_fhir.training.loop import set_softmax_nll

    scores = torch.tensor([1.0, 2.0, 0.5, -1.0, 3.0], requires_grad=True)
    group = torch.tensor([0, 0, 0, 1, 1])
    gold = torch.tensor([False, True, False, True, False])
    got = set_softmax_nll(scores, group, gold)
    want = (-torch.log_softmax(scores[:3], 0)[1] - torch.log_softmax(scores[3:], 0)[0]) / 2
    assert torch.allclose(got, want)
    got.backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()


def test_training_sets_hold_each_gold_entity_once_as_the_answer() -> None:
    from kiwi_fhir.extractors.onnx import pipeline_for, read_model_config
    from kiwi_fhir.training.dataset import note_samples

    model = default_model_dir()
    pipe = pipeline_for(model, read_model_config(model), 8)
    text = "PAST HISTORY: Hypertension and a 4-mm laceration of the right foot. Aspirin daily."
    ents = []
    for n, phrase in enumerate(["Hypertension", "a 4-mm laceration of the right foot", "Aspirin"]):
        a = text.index(phrase)
        label = "drug" if phrase == "Aspirin" else "problem"
        ents.append(Entity(f"T{n + 1}", label, a, a + len(phrase), phrase))
    gold = Extraction(Document("n1", text), entities=tuple(ents))
    (plain,) = note_samples(pipe, gold)
    assert len(plain.cand_group) == 0
    runs = [note_samples(pipe, gold, refine=True, shift=0) for _ in range(2)]
    (s,) = runs[0]
    assert np.array_equal(s.cand_pos, runs[1][0].cand_pos)  # deterministic
    assert sorted(set(s.cand_group.tolist())) == [0, 1, 2]
    for g in range(3):
        assert s.cand_gold[s.cand_group == g].sum() == 1
    # each answer sits at its gold span's words, with its type and width
    note = pipe.encode(text)
    for g, e in enumerate(ents):
        ws = char_to_word_span(note, e.start, e.end)
        assert ws is not None
        want = positions([ws], note.word_first, 0, len(note.ids), note.n_words)
        answer = (s.cand_group == g) & s.cand_gold
        assert s.cand_pos[answer].tolist() == want.tolist()
        assert s.cand_feats[answer].tolist() == features(e.label, [ws]).tolist()
