"""Tag sets, constrained decoding and relation candidates (numpy only).

Two BIO layers -- one for the 4 main entity types, one for the 16 modifiers
-- because modifiers nest inside entities ("Acute" in "Acute alcoholic
hepatitis") while neither layer overlaps itself in the corpus (measured:
0 overlaps). Decoding is Viterbi restricted to valid BIO paths, so a
stray ``I-`` can no longer start or split a span.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from kiwi_fhir.schema import ENTITY_TYPES, MODIFIER_TYPES, is_allowed

MAIN_TAGS: tuple[str, ...] = ("O", *(f"{p}-{t}" for t in ENTITY_TYPES for p in "BI"))
MOD_TAGS: tuple[str, ...] = ("O", *(f"{p}-{t}" for t in MODIFIER_TYPES for p in "BI"))

MAX_PAIR_WORDS = 64  # 99.9% of gold relations are within ~40 words
N_DIST_BUCKETS = 19
N_FEATS = 7
FEAT_SIZES = (len(ENTITY_TYPES), len(MODIFIER_TYPES), N_DIST_BUCKETS, 5, 4, 2, 2)


@dataclass(frozen=True)
class WordSpan:
    """A decoded span in word units (inclusive ``last``)."""

    label: str
    first: int
    last: int
    confidence: float


def tags_for_spans(
    word_spans: NDArray[np.int64], spans: Sequence[tuple[str, int, int]], tags: Sequence[str]
) -> NDArray[np.int64]:
    """Gold word tags from character spans ``(label, start, end)``."""
    index = {t: i for i, t in enumerate(tags)}
    out = np.zeros(word_spans.shape[0], dtype=np.int64)
    starts = word_spans[:, 0]
    for label, s, e in spans:
        inside = np.nonzero((starts >= s) & (starts < e))[0]
        if inside.size == 0:
            continue
        out[inside[0]] = index[f"B-{label}"]
        out[inside[1:]] = index[f"I-{label}"]
    return out


def _transitions(tags: Sequence[str]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    n = len(tags)
    trans = np.zeros((n, n))
    start = np.zeros(n)
    for j, t in enumerate(tags):
        if t.startswith("I-"):
            start[j] = -np.inf
            for i, u in enumerate(tags):
                if u[2:] != t[2:] or u == "O":
                    trans[i, j] = -np.inf
    return trans, start


def _must_continue(tags: Sequence[str]) -> NDArray[np.float64]:
    """Extra transition costs after a word no span may end on: from inside
    a span, only ``I-`` of the same type may follow."""
    n = len(tags)
    out = np.zeros((n, n))
    for i, u in enumerate(tags):
        if u != "O":
            for j, t in enumerate(tags):
                if t != f"I-{u[2:]}":
                    out[i, j] = -np.inf
    return out


def _no_adjacent(tags: Sequence[str]) -> NDArray[np.float64]:
    """Extra costs when spans may not touch: no ``B-`` right after a span."""
    n = len(tags)
    out = np.zeros((n, n))
    for i, u in enumerate(tags):
        for j, t in enumerate(tags):
            if u != "O" and t.startswith("B-"):
                out[i, j] = -np.inf
    return out


_TRANS = {tags: _transitions(tags) for tags in (MAIN_TAGS, MOD_TAGS)}
_CONTINUE = {tags: _must_continue(tags) for tags in (MAIN_TAGS, MOD_TAGS)}
_NO_ADJ = {tags: _no_adjacent(tags) for tags in (MAIN_TAGS, MOD_TAGS)}
_IS_B = {tags: np.asarray([t.startswith("B-") for t in tags]) for tags in (MAIN_TAGS, MOD_TAGS)}
_IS_O = {tags: np.asarray([t == "O" for t in tags]) for tags in (MAIN_TAGS, MOD_TAGS)}


def viterbi(
    logprobs: NDArray[np.floating],
    tags: tuple[str, ...],
    can_start: NDArray[np.bool_] | None = None,
    can_end: NDArray[np.bool_] | None = None,
    adjacent: bool = True,
    learned: NDArray[np.floating] | None = None,
) -> NDArray[np.int64]:
    """Best tag path under BIO constraints; ``logprobs`` is (n_words, n_tags).

    ``learned`` (n_tags, n_tags) adds a CRF's transition scores (from tag,
    to tag) to every step; the per-word log-softmax differs from the CRF's
    raw emissions by a constant per word, so the path is the CRF's own.

    Optional span-boundary rules (:mod:`kiwi_fhir.extractors.boundary`):
    no span starts on a word where ``can_start`` is false or ends on one
    where ``can_end`` is false, and with ``adjacent`` false no span starts
    on the word right after another ends. The all-``O`` path always obeys
    them, so a best path always exists.
    """
    n = logprobs.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    trans, start = _TRANS[tags]
    if not adjacent:
        trans = trans + _NO_ADJ[tags]
    if learned is not None:
        trans = trans + np.asarray(learned, dtype=np.float64)
    stuck = trans + _CONTINUE[tags]
    lp = np.asarray(logprobs, dtype=np.float64)
    if can_start is not None:
        lp = lp.copy()
        lp[np.ix_(~can_start, _IS_B[tags])] = -np.inf
    score = start + lp[0]
    back = np.zeros((n, len(tags)), dtype=np.int64)
    for i in range(1, n):
        cand = score[:, None] + (trans if can_end is None or can_end[i - 1] else stuck)
        back[i] = cand.argmax(axis=0)
        score = cand.max(axis=0) + lp[i]
    if can_end is not None and not can_end[n - 1]:
        score = np.where(_IS_O[tags], score, -np.inf)
    path = np.zeros(n, dtype=np.int64)
    path[-1] = int(score.argmax())
    for i in range(n - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path


def spans_from_tags(
    path: NDArray[np.int64], probs: NDArray[np.floating], tags: tuple[str, ...]
) -> list[WordSpan]:
    """Group a BIO path into spans; confidence = mean probability of its tags."""
    out: list[WordSpan] = []
    cur: list[int] = []
    label = ""

    def close() -> None:
        if cur:
            conf = float(np.mean([probs[w, path[w]] for w in cur]))
            out.append(WordSpan(label, cur[0], cur[-1], conf))

    for w, t in enumerate(path):
        tag = tags[int(t)]
        if tag.startswith("B-") or tag == "O" or tag[2:] != label:
            close()
            cur = []
            label = ""
        if tag != "O":
            if not cur:
                label = tag[2:]
            cur.append(w)
    close()
    return out


def one_type_per_string(spans: Sequence[WordSpan], words: Sequence[str]) -> list[WordSpan]:
    """Give every span of one note with the same words (case aside) the
    type with the most summed confidence among them.

    Annotators type a string the same way throughout a note (in the 80
    training notes, 4,472 entity strings have one type and 7 have two);
    the tagger, deciding each mention from its window alone, sometimes
    does not ("fibrinogen" a test in one sentence, a problem in the next).
    """
    votes: dict[tuple[str, ...], dict[str, float]] = {}
    keys = [tuple(w.lower() for w in words[s.first : s.last + 1]) for s in spans]
    for key, s in zip(keys, spans, strict=True):
        box = votes.setdefault(key, {})
        box[s.label] = box.get(s.label, 0.0) + s.confidence
    out = []
    for key, s in zip(keys, spans, strict=True):
        best = max(votes[key].items(), key=lambda kv: (kv[1], kv[0]))[0]
        out.append(s if best == s.label else WordSpan(best, s.first, s.last, s.confidence))
    return out


def _dist_bucket(d: int) -> int:
    """Signed word distance → bucket (0 = overlapping/nested)."""
    mag = abs(d)
    b = 0 if mag == 0 else min(int(np.ceil(np.log2(mag + 1))), 9)
    return b if d >= 0 else b + 9


def pair_candidates(
    entities: Sequence[WordSpan],
    modifiers: Sequence[WordSpan],
    sentence_of_word: NDArray[np.int64],
    newline_before_word: NDArray[np.int64],
) -> tuple[list[tuple[int, int]], NDArray[np.int64]]:
    """Allowed (entity, modifier) index pairs near each other, with features.

    Features are what a nearest-entity rule looks at, made learnable:
    types, signed distance, entities in between, the entity's rank among
    allowed candidates for this modifier, sentence and line breaks. Pairs
    come per modifier, nearest entity first (ties in entity order).
    """
    if not entities or not modifiers:
        return [], np.zeros((0, N_FEATS), dtype=np.int64)
    first = np.asarray([e.first for e in entities], dtype=np.int64)
    last = np.asarray([e.last for e in entities], dtype=np.int64)
    etype = np.asarray([ENTITY_TYPES.index(e.label) for e in entities], dtype=np.int64)
    nl_cum = np.concatenate(([0], np.cumsum(newline_before_word)))
    pairs: list[tuple[int, int]] = []
    blocks: list[NDArray[np.int64]] = []
    for mi, m in enumerate(modifiers):
        mtype = MODIFIER_TYPES.index(m.label)
        d = np.where(m.first > last, m.first - last, np.where(first > m.last, m.last - first, 0))
        sel = np.nonzero(_ALLOWED[etype, mtype] & (np.abs(d) <= MAX_PAIR_WORDS))[0]
        if sel.size == 0:
            continue
        order = sel[np.argsort(np.abs(d[sel]), kind="stable")]
        dd = d[order]
        lo = np.minimum(last[order], m.last)
        hi = np.maximum(first[order], m.first)
        between = ((first[None, :] > lo[:, None]) & (last[None, :] < hi[:, None])).sum(axis=1)
        between = np.where(dd == 0, 0, between)
        newline = ((nl_cum[hi + 1] - nl_cum[lo + 1]) > 0) & (hi > lo)
        same = sentence_of_word[first[order]] == sentence_of_word[m.first]
        feats = np.stack(
            [
                etype[order],
                np.full(order.size, mtype),
                np.asarray([_dist_bucket(int(x)) for x in dd]),
                np.minimum(between, 4),
                np.minimum(np.arange(order.size), 3),
                same.astype(np.int64),
                newline.astype(np.int64),
            ],
            axis=1,
        ).astype(np.int64)
        pairs.extend((int(ei), mi) for ei in order)
        blocks.append(feats)
    arr = np.concatenate(blocks) if blocks else np.zeros((0, N_FEATS), dtype=np.int64)
    return pairs, arr


_ALLOWED = np.asarray(
    [[is_allowed(e, m) for m in MODIFIER_TYPES] for e in ENTITY_TYPES], dtype=bool
)
