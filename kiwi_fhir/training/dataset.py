"""Gold brat notes → per-window training samples for both networks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kiwi_fhir.core import Extraction, Mention
from kiwi_fhir.extractors.decode import (
    MAIN_TAGS,
    MOD_TAGS,
    N_FEATS,
    WordSpan,
    pair_candidates,
    tags_for_spans,
)
from kiwi_fhir.extractors.encoding import EncodedNote, encode_note, window_inputs
from kiwi_fhir.extractors.pipeline import (
    BertPipeline,
    char_to_word_span,
    pair_window,
    word_context,
)


@dataclass(frozen=True)
class WindowSample:
    ids: NDArray[np.int64]  # [CLS] window [SEP]
    feats: NDArray[np.int64]  # word feature id per position of ids
    word_pos: NDArray[np.int64]  # positions of the words inside the window
    main_tags: NDArray[np.int64]
    mod_tags: NDArray[np.int64]
    pair_pos: NDArray[np.int64]  # (P, 4) positions of e_first, e_last, m_first, m_last
    pair_feats: NDArray[np.int64]  # (P, N_FEATS)
    pair_labels: NDArray[np.float32]  # (P,)
    # Teachers' per-word tag distributions (distill.py), rows as word_pos;
    # None: the hard tags are the targets.
    soft_main: NDArray[np.float32] | None = None
    soft_mod: NDArray[np.float32] | None = None


@dataclass(frozen=True)
class SoftLabels:
    """A teacher ensemble's targets for one unlabeled note (distill.py).

    ``main`` / ``mod``: averaged per-word tag distributions, (words, tags),
    stored as float16. ``links``: averaged link probability of each
    candidate (entity id, modifier id) pair between the decoded spans; empty
    means the relation pairs train on the decoded links (0/1) instead."""

    main: NDArray[Any]
    mod: NDArray[Any]
    links: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def hard_links(self) -> SoftLabels:
        return SoftLabels(self.main, self.mod)


def _word_spans(note: EncodedNote, mentions: Sequence[Mention]) -> list[tuple[WordSpan, str]]:
    out = []
    for m in mentions:
        ws = char_to_word_span(note, m.start, m.end)
        if ws is not None:
            out.append((WordSpan(m.label, ws[0], ws[1], 1.0), m.id))
    return out


TRAIN_LEN = 256


def note_samples(
    pipe: BertPipeline,
    gold: Extraction,
    *,
    shift: int = 0,
    max_len: int = TRAIN_LEN,
    soft: SoftLabels | None = None,
) -> list[WindowSample]:
    """Non-overlapping windows (cheaper than inference's overlapping ones);
    alternate ``shift`` values move the cut points between epochs. Training
    windows are longer than inference's (256 vs 192 subtokens): more context
    per step, and the shorter inference windows scored as well or better on
    dev (docs/model.md). ``soft``: the note's teacher targets instead of
    the hard tags of its spans (which still give the relation pairs; their
    labels are ``soft.links`` where it scores the pair)."""
    text = gold.document.text
    width = max_len - 2
    note = encode_note(
        pipe.tok, text, max_len=max_len, stride=width, shift=shift, featurizer=pipe.featurizer
    )
    if not note.n_words:
        return []
    if soft is not None and any(len(p) != note.n_words for p in (soft.main, soft.mod)):
        raise ValueError(f"{gold.document.id}: soft labels do not match its {note.n_words} words")
    main = tags_for_spans(
        note.word_spans, [(e.label, e.start, e.end) for e in gold.entities], MAIN_TAGS
    )
    mod = tags_for_spans(
        note.word_spans, [(m.label, m.start, m.end) for m in gold.modifiers], MOD_TAGS
    )
    ents = _word_spans(note, gold.entities)
    mods = _word_spans(note, gold.modifiers)
    links = soft.links if soft is not None else {}
    linked = {(r.entity_id, r.modifier_id) for r in gold.relations}
    sent, newline = word_context(text, note)
    pairs, feats = pair_candidates([e for e, _ in ents], [m for m, _ in mods], sent, newline)
    per_window: dict[int, list[tuple[list[int], NDArray[np.int64], float]]] = {}
    for (ei, mi), f in zip(pairs, feats, strict=True):
        e, m = ents[ei][0], mods[mi][0]
        words = (e.first, e.last, m.first, m.last)
        k = pair_window(note, min(words), max(words))
        if k is None:
            continue
        a = note.windows[k][0]
        pos = [int(note.word_first[w]) - a + 1 for w in words]
        key = (ents[ei][1], mods[mi][1])
        label = links.get(key, float(key in linked))
        per_window.setdefault(k, []).append((pos, f, label))
    out = []
    for k, (a, b) in enumerate(note.windows):
        inside = np.nonzero((note.word_first >= a) & (note.word_first < b))[0]
        prs = per_window.get(k, [])
        ids, feats = window_inputs(note, k, pipe.cls_id, pipe.sep_id)
        out.append(
            WindowSample(
                ids=ids,
                feats=feats,
                word_pos=note.word_first[inside] - a + 1,
                main_tags=main[inside],
                mod_tags=mod[inside],
                pair_pos=np.asarray([p for p, _, _ in prs], dtype=np.int64).reshape(-1, 4),
                pair_feats=np.asarray([f for _, f, _ in prs], dtype=np.int64).reshape(-1, N_FEATS),
                pair_labels=np.asarray([lab for _, _, lab in prs], dtype=np.float32),
                soft_main=None if soft is None else soft.main[inside].astype(np.float32),
                soft_mod=None if soft is None else soft.mod[inside].astype(np.float32),
            )
        )
    return out
