"""Gold brat notes → per-window training samples for both networks."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

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
from kiwi_fhir.extractors.refine import REFINE_FEAT_SIZES, candidates, positions, window_words
from kiwi_fhir.extractors.refine import features as refine_features


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
    # Boundary-refinement candidates (refine.py), empty unless asked for:
    # positions (C, 4), features (C, 2), which gold entity's set each is in
    # (C,), and whether it is that entity's gold span (C,).
    cand_pos: NDArray[np.int64] = field(default_factory=lambda: _ints((0, 4)))
    cand_feats: NDArray[np.int64] = field(
        default_factory=lambda: _ints((0, len(REFINE_FEAT_SIZES)))
    )
    cand_group: NDArray[np.int64] = field(default_factory=lambda: _ints((0,)))
    cand_gold: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))


def _ints(shape: tuple[int, ...]) -> NDArray[np.int64]:
    return np.zeros(shape, dtype=np.int64)


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
    refine: bool = False,
) -> list[WindowSample]:
    """Non-overlapping windows (cheaper than inference's overlapping ones);
    alternate ``shift`` values move the cut points between epochs. Training
    windows are longer than inference's (256 vs 192 subtokens): more context
    per step, and the shorter inference windows scored as well or better on
    dev (docs/model.md)."""
    text = gold.document.text
    width = max_len - 2
    note = encode_note(
        pipe.tok, text, max_len=max_len, stride=width, shift=shift, featurizer=pipe.featurizer
    )
    if not note.n_words:
        return []
    main = tags_for_spans(
        note.word_spans, [(e.label, e.start, e.end) for e in gold.entities], MAIN_TAGS
    )
    mod = tags_for_spans(
        note.word_spans, [(m.label, m.start, m.end) for m in gold.modifiers], MOD_TAGS
    )
    ents = _word_spans(note, gold.entities)
    mods = _word_spans(note, gold.modifiers)
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
        label = float((ents[ei][1], mods[mi][1]) in linked)
        per_window.setdefault(k, []).append((pos, f, label))
    out: list[WindowSample] = []
    for k, (a, b) in enumerate(note.windows):
        inside = np.nonzero((note.word_first >= a) & (note.word_first < b))[0]
        prs = per_window.get(k, [])
        ids, feats = window_inputs(note, k, pipe.cls_id, pipe.sep_id)
        sample = WindowSample(
            ids=ids,
            feats=feats,
            word_pos=note.word_first[inside] - a + 1,
            main_tags=main[inside],
            mod_tags=mod[inside],
            pair_pos=np.asarray([p for p, _, _ in prs], dtype=np.int64).reshape(-1, 4),
            pair_feats=np.asarray([f for _, f, _ in prs], dtype=np.int64).reshape(-1, N_FEATS),
            pair_labels=np.asarray([lab for _, _, lab in prs], dtype=np.float32),
        )
        out.append(
            _with_refine_sets(sample, note, ents, k, shift, gold.document.id) if refine else sample
        )
    return out


def _with_refine_sets(
    sample: WindowSample,
    note: EncodedNote,
    ents: list[tuple[WordSpan, str]],
    k: int,
    shift: int,
    doc_id: str,
) -> WindowSample:
    """Candidate sets around the window's gold entities. Half the sets are
    centred on the gold span, half on a copy with an end moved by one or
    two words (as the tagger's errors are), so the gold span is not always
    the centre; seeded by note, window and shift, so training stays
    deterministic."""
    a, b = note.windows[k]
    lo, hi = window_words(note.word_first, a, b)
    rng = np.random.default_rng([zlib.crc32(doc_id.encode()), k, shift])
    spans = [e for e, _ in ents if lo <= e.first and e.last <= hi]
    pos: list[NDArray[np.int64]] = []
    feats: list[NDArray[np.int64]] = []
    group: list[NDArray[np.int64]] = []
    is_gold: list[NDArray[np.bool_]] = []
    for e in spans:
        blocked = [w for o in spans if o is not e for w in range(o.first, o.last + 1)]
        f, la = e.first, e.last
        if rng.random() < 0.5:
            f = min(max(lo, f + int(rng.choice([-2, -1, 0, 1, 2]))), hi)
            la = min(max(f, la + int(rng.choice([-2, -1, 0, 1, 2]))), hi)
            if any(w in set(blocked) for w in range(f, la + 1)):
                f, la = e.first, e.last
        cs = candidates(f, la, lo, hi, blocked)
        if (e.first, e.last) not in cs:
            continue
        pos.append(positions(cs, note.word_first, a, b, note.n_words))
        feats.append(refine_features(e.label, cs))
        group.append(np.full(len(cs), len(group), dtype=np.int64))
        is_gold.append(np.asarray([c == (e.first, e.last) for c in cs], dtype=np.bool_))
    if not pos:
        return sample
    return replace(
        sample,
        cand_pos=np.concatenate(pos),
        cand_feats=np.concatenate(feats),
        cand_group=np.concatenate(group),
        cand_gold=np.concatenate(is_gold),
    )
