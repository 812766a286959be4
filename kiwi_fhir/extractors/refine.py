"""Span-boundary refinement: re-choose each entity's first and last word.

The BIO layers decide word by word, so a span's extent is never judged as
a whole: "pneumonia in the face" against "pneumonia", "the amount of
bleeding" against "bleeding". Half of the exact-match NER errors are such
boundaries (docs/model.md). A model trained with ``--refine-boundaries``
carries a third network that scores a candidate span from the encoder
states of its first and last word and of the words just outside it, plus
its type and width. After decoding, every predicted entity is replaced by
the best-scoring span among those whose ends lie within ``REACH`` words of
its own and that hold no word of another entity. Training scores the same
candidate sets around (perturbed) gold entities, with the gold span as the
answer of a softmax over its set, so the network learns to compare
extents, not to spot entities.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from kiwi_fhir.schema import ENTITY_TYPES

REACH = 3  # how far each end may move, in words
MAX_WIDTH = 40  # words; the longest gold entity of the training notes has 17
N_WIDTH = 16  # width buckets: 1..15 words, then one for longer
# Categorical inputs of the scorer: entity type, width bucket.
REFINE_FEAT_SIZES = (len(ENTITY_TYPES), N_WIDTH)


def candidates(
    first: int, last: int, lo: int, hi: int, blocked: Iterable[int] = ()
) -> list[tuple[int, int]]:
    """Spans ``(f, l)`` with each end within REACH of ``(first, last)``,
    inside words ``[lo, hi]`` and holding no blocked word. The span itself
    is always one of them (first), even when it breaks those limits."""
    taken = set(blocked)
    out = [(first, last)]
    for f in range(max(lo, first - REACH), min(hi, first + REACH) + 1):
        for la in range(max(f, last - REACH), min(hi, last + REACH) + 1):
            if (f, la) == (first, last) or la - f >= MAX_WIDTH:
                continue
            if any(w in taken for w in range(f, la + 1)):
                continue
            out.append((f, la))
    return out


def features(label: str, spans: list[tuple[int, int]]) -> NDArray[np.int64]:
    t = ENTITY_TYPES.index(label)
    rows = [(t, min(la - f, N_WIDTH - 1)) for f, la in spans]
    return np.asarray(rows, dtype=np.int64).reshape(-1, len(REFINE_FEAT_SIZES))


def positions(
    spans: list[tuple[int, int]], word_first: NDArray[np.int64], a: int, b: int, n_words: int
) -> NDArray[np.int64]:
    """Window positions (after [CLS]) of each span's first and last word
    and of the words before and after it; a neighbour outside the window
    (or the note) is represented by [CLS] or [SEP]."""
    sep = b - a + 1
    rows = []
    for f, la in spans:
        before = int(word_first[f - 1]) - a + 1 if f > 0 and word_first[f - 1] >= a else 0
        after = (
            int(word_first[la + 1]) - a + 1 if la + 1 < n_words and word_first[la + 1] < b else sep
        )
        rows.append((int(word_first[f]) - a + 1, int(word_first[la]) - a + 1, before, after))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def window_words(word_first: NDArray[np.int64], a: int, b: int) -> tuple[int, int]:
    """First and last word whose first subtoken lies in ``[a, b)``."""
    inside = np.nonzero((word_first >= a) & (word_first < b))[0]
    return int(inside[0]), int(inside[-1])
