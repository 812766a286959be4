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


_TRANS = {tags: _transitions(tags) for tags in (MAIN_TAGS, MOD_TAGS)}


def viterbi(logprobs: NDArray[np.floating], tags: tuple[str, ...]) -> NDArray[np.int64]:
    """Best tag path under BIO constraints; ``logprobs`` is (n_words, n_tags)."""
    n = logprobs.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    trans, start = _TRANS[tags]
    score = start + logprobs[0]
    back = np.zeros((n, len(tags)), dtype=np.int64)
    for i in range(1, n):
        cand = score[:, None] + trans
        back[i] = cand.argmax(axis=0)
        score = cand.max(axis=0) + logprobs[i]
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
    same-typed candidates for this modifier, sentence and line breaks.
    """
    pairs: list[tuple[int, int]] = []
    feats: list[list[int]] = []
    starts = np.asarray([e.first for e in entities], dtype=np.int64)
    ends = np.asarray([e.last for e in entities], dtype=np.int64)
    etypes = [ENTITY_TYPES.index(e.label) for e in entities]
    nl_cum = np.concatenate(([0], np.cumsum(newline_before_word)))
    for mi, m in enumerate(modifiers):
        near: list[tuple[int, int]] = []
        for ei, e in enumerate(entities):
            if not is_allowed(e.label, m.label):
                continue
            if m.first > e.last:
                d = m.first - e.last
            elif e.first > m.last:
                d = -(e.first - m.last)
            else:
                d = 0
            if abs(d) <= MAX_PAIR_WORDS:
                near.append((ei, d))
        ranked = sorted(near, key=lambda x: abs(x[1]))
        for rank, (ei, d) in enumerate(ranked):
            e = entities[ei]
            lo, hi = min(e.last, m.last), max(e.first, m.first)
            between = int(np.sum((starts > lo) & (ends < hi))) if d else 0
            same_sent = int(sentence_of_word[e.first] == sentence_of_word[m.first])
            newline = int(nl_cum[hi + 1] - nl_cum[lo + 1] > 0) if hi > lo else 0
            pairs.append((ei, mi))
            feats.append(
                [
                    etypes[ei],
                    MODIFIER_TYPES.index(m.label),
                    _dist_bucket(d),
                    min(between, 4),
                    min(rank, 3),
                    same_sent,
                    newline,
                ]
            )
    arr = np.asarray(feats, dtype=np.int64).reshape(-1, N_FEATS)
    return pairs, arr
