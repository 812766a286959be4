"""Note → encoder windows, shared by training and every BERT-style backend.

Labels live on *words* (the BERT pre-tokenizer's units: whitespace and
punctuation split) — every gold span of the Kiwi corpus starts and ends on
a word boundary (measured: 10,838 of 10,838), so word-level decoding loses
nothing and halves the decisions. A word is represented by its first
subtoken. Each subtoken also carries its word's feature id (wordfeats.py).

Notes longer than the encoder window are cut into overlapping windows that
start on word boundaries; each subtoken is *owned* by the window in which it
sits furthest from an edge, so every prediction sees at least ``overlap``/2
subtokens of context on both sides, across sentence and section breaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer

from kiwi_fhir.extractors.wordfeats import WordFeaturizer

IntArray = NDArray[np.int64]


def load_tokenizer(path: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return tok


@dataclass(frozen=True)
class EncodedNote:
    ids: IntArray  # (n_sub,) subtoken ids, no special tokens
    word_first: IntArray  # (n_words,) index of each word's first subtoken
    word_spans: IntArray  # (n_words, 2) character [start, end) of each word
    windows: tuple[tuple[int, int], ...]  # subtoken ranges [a, b)
    owner: IntArray  # (n_sub,) window index that owns each subtoken
    feats: IntArray  # (n_sub,) word feature id of each subtoken's word

    @property
    def n_words(self) -> int:
        return int(self.word_first.shape[0])


def encode_note(
    tok: Tokenizer,
    text: str,
    *,
    max_len: int = 256,
    stride: int = 128,
    shift: int = 0,
    featurizer: WordFeaturizer | None = None,
) -> EncodedNote:
    """Encode a note; ``shift`` > 0 makes the first window that short, so
    training can see every boundary at a different place each epoch."""
    enc = tok.encode(text, add_special_tokens=False)
    ids = np.asarray(enc.ids, dtype=np.int64)
    offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
    word_ids = enc.word_ids
    first: list[int] = []
    spans: list[list[int]] = []
    prev: int | None = None
    for i, w in enumerate(word_ids):
        if w is None:
            continue
        if w != prev:
            first.append(i)
            spans.append([int(offsets[i, 0]), int(offsets[i, 1])])
            prev = w
        else:
            spans[-1][1] = max(spans[-1][1], int(offsets[i, 1]))
    word_first = np.asarray(first, dtype=np.int64)
    word_spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    windows = _windows(word_first, len(ids), max_len - 2, stride, shift)
    feats = np.zeros(len(ids), dtype=np.int64)
    if featurizer is not None and len(first):
        word_of_sub = np.searchsorted(word_first, np.arange(len(ids)), side="right") - 1
        feats = featurizer.word_ids(text, word_spans)[word_of_sub]
    return EncodedNote(
        ids=ids,
        word_first=word_first,
        word_spans=word_spans,
        windows=windows,
        owner=_owners(windows, len(ids)),
        feats=feats,
    )


def _windows(
    word_first: IntArray, n_sub: int, width: int, stride: int, shift: int = 0
) -> tuple[tuple[int, int], ...]:
    if n_sub <= width:
        return ((0, n_sub),)
    starts = set(word_first.tolist())
    out: list[tuple[int, int]] = []
    a = 0
    if 0 < shift < n_sub:
        b = max((w for w in starts if 0 < w <= shift), default=shift)
        out.append((0, b))
        a = b
    while True:
        b = min(a + width, n_sub)
        out.append((a, b))
        if b >= n_sub:
            return tuple(out)
        nxt = a + stride
        while nxt > a + 1 and nxt not in starts:  # start windows on a word
            nxt -= 1
        a = nxt


def _owners(windows: tuple[tuple[int, int], ...], n_sub: int) -> IntArray:
    best = np.full(n_sub, -1, dtype=np.int64)
    margin = np.full(n_sub, -1, dtype=np.int64)
    for k, (a, b) in enumerate(windows):
        idx = np.arange(a, b)
        m = np.minimum(idx - a, b - 1 - idx)
        better = m > margin[a:b]
        best[a:b][better] = k
        margin[a:b][better] = m[better]
    return best


def window_inputs(note: EncodedNote, k: int, cls_id: int, sep_id: int) -> tuple[IntArray, IntArray]:
    """``[CLS] window [SEP]`` ids and their word features (0 on the specials)."""
    a, b = note.windows[k]
    ids = np.concatenate(([cls_id], note.ids[a:b], [sep_id])).astype(np.int64)
    feats = np.concatenate(([0], note.feats[a:b], [0])).astype(np.int64)
    return ids, feats


def batch_windows(
    items: list[tuple[EncodedNote, int]], cls_id: int, sep_id: int, pad_id: int
) -> tuple[IntArray, IntArray, IntArray]:
    """Pad a list of (note, window index) into ``input_ids``,
    ``attention_mask`` and ``word_feats``."""
    lens = [b - a + 2 for note, k in items for a, b in [note.windows[k]]]
    width = max(lens) if lens else 2
    ids = np.full((len(items), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(items), width), dtype=np.int64)
    feats = np.zeros((len(items), width), dtype=np.int64)
    for row, (note, k) in enumerate(items):
        seq, f = window_inputs(note, k, cls_id, sep_id)
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
        feats[row, : len(seq)] = f
    return ids, mask, feats


def word_positions(note: EncodedNote, k: int) -> tuple[IntArray, IntArray]:
    """Words owned by window ``k`` and their row positions in its batch row."""
    a, _ = note.windows[k]
    subs = note.word_first
    owned = np.nonzero(note.owner[subs] == k)[0]
    return owned, subs[owned] - a + 1  # +1 for [CLS]


def word_index_in_window(note: EncodedNote, k: int) -> tuple[IntArray, IntArray]:
    """All words *inside* window ``k`` (owned or not) and their positions."""
    a, b = note.windows[k]
    subs = note.word_first
    inside = np.nonzero((subs >= a) & (subs < b))[0]
    return inside, subs[inside] - a + 1
