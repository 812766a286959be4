"""The BERT-style extraction pipeline, independent of where the network runs.

read → encode into windows → tag both layers → constrained decode → pair
candidates → relation scores → core ``Extraction``. A :class:`Runner`
executes the two networks (onnxruntime in-process, Triton remotely, torch
during training), so every backend shares one pre/post-processing path and
gives identical spans for identical logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer

from kiwi_fhir.core import Document, Entity, Extraction, Modifier, Relation
from kiwi_fhir.errors import ModelError
from kiwi_fhir.extractors.boundary import NO_RULES, BoundaryRules, absorb_left, space_joins
from kiwi_fhir.extractors.clauses import same_clause_links
from kiwi_fhir.extractors.decode import (
    MAIN_TAGS,
    MOD_TAGS,
    WordSpan,
    one_type_per_string,
    pair_candidates,
    spans_from_tags,
    viterbi,
)
from kiwi_fhir.extractors.encoding import EncodedNote, batch_windows, encode_note
from kiwi_fhir.extractors.segments import by_segments
from kiwi_fhir.extractors.wordfeats import WordFeaturizer

FloatArray = NDArray[np.float32]


class Runner(Protocol):
    def tag(
        self, input_ids: NDArray[np.int64], mask: NDArray[np.int64], feats: NDArray[np.int64]
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(main_logits, mod_logits, hidden) each (batch, seq, ·); ``feats``
        are the word feature ids (wordfeats.py), shaped like ``input_ids``."""
        ...

    def relate(self, span_repr: FloatArray, feats: NDArray[np.int64]) -> FloatArray:
        """Relation logits (pairs,)."""
        ...


@dataclass(frozen=True)
class PipelineConfig:
    # 192-subtoken windows, 160 apart: every subtoken is decoded with at least
    # 15 subtokens of context on each side (see encoding.py).
    max_len: int = 192
    stride: int = 160
    batch_size: int = 16
    relation_threshold: float = 0.5
    # Drop a modifier's links across a clause boundary when another stays inside (clauses.py).
    same_clause_links: bool = True
    # Spans whose mean tag probability is below this are dropped (both
    # layers; never given entities): both layers over-predict (P < R), and
    # 0.6 beat 0 and 0.5 on dev for both models measured (docs/model.md).
    span_threshold: float = 0.6
    constrained: bool = True
    learned_relations: bool = True
    # Span-boundary rules of the model (config.json); empty ones are no rules.
    main_rules: BoundaryRules = NO_RULES
    mod_rules: BoundaryRules = NO_RULES
    # Transition scores of a CRF trained on the entity layer (``train
    # --crf``; config.json "main_transitions"), (from tag, to tag); empty: none.
    main_transitions: tuple[tuple[float, ...], ...] = ()
    # Predicted entities with the same words in one note get one type
    # (decode.one_type_per_string); +0.2 point of dev NER on both models
    # measured.
    one_type_per_string: bool = True
    # Notes longer than this many characters run segment by segment
    # (segments.py): memory stays that of one segment. 16 K characters
    # peaked at about 250 MB; the longest annotated note is far shorter.
    segment_chars: int = 16 * 1024


def _softmax(x: FloatArray) -> FloatArray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: FloatArray = e / e.sum(axis=-1, keepdims=True)
    return out


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    return out


def word_context(text: str, note: EncodedNote) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per word: a sentence index, and whether a line break precedes it.

    The break rule is part of the model's feature definition (frozen with
    it), deliberately not ``kiwi_fhir.segment``: tuning the product
    segmenter must never shift the inputs a trained model expects.
    A sentence ends at a line break, or after ``. ? !`` when the next word
    starts with an upper-case letter or digit.
    """
    n = note.n_words
    if not n:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    spans = note.word_spans.tolist()
    newline = np.zeros(n, dtype=np.int64)
    brk = np.zeros(n, dtype=np.int64)
    for w in range(1, n):
        gap = text[spans[w - 1][1] : spans[w][0]]
        if "\n" in gap:
            newline[w] = brk[w] = 1
        elif text[spans[w - 1][0] : spans[w - 1][1]] in _ENDERS and gap:
            first = text[spans[w][0]]
            brk[w] = int(first.isupper() or first.isdigit())
    return np.cumsum(brk).astype(np.int64), newline


_ENDERS = frozenset({".", "?", "!"})


def char_to_word_span(note: EncodedNote, start: int, end: int) -> tuple[int, int] | None:
    ws = note.word_spans[:, 0]
    inside = np.nonzero((ws >= start) & (ws < end))[0]
    if inside.size == 0:
        return None
    return int(inside[0]), int(inside[-1])


def special_token_id(tok: Tokenizer, token: str) -> int:
    idx = tok.token_to_id(token)
    if idx is None:
        raise ModelError(f"tokenizer has no {token} token; a BERT-style vocabulary is needed")
    return int(idx)


class BertPipeline:
    """Stateless apart from the tokenizer and featurizer; safe to share
    between threads."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        config: PipelineConfig | None = None,
        featurizer: WordFeaturizer | None = None,
    ) -> None:
        self.tok = tokenizer
        self.cfg = config or PipelineConfig()
        self.featurizer = featurizer or WordFeaturizer()
        self.cls_id = special_token_id(tokenizer, "[CLS]")
        self.sep_id = special_token_id(tokenizer, "[SEP]")
        self.pad_id = special_token_id(tokenizer, "[PAD]")

    def encode(self, text: str) -> EncodedNote:
        return encode_note(
            self.tok,
            text,
            max_len=self.cfg.max_len,
            stride=self.cfg.stride,
            featurizer=self.featurizer,
        )

    def run(
        self,
        runner: Runner,
        documents: Sequence[Document],
        given: Sequence[Sequence[Entity] | None] | None = None,
        *,
        model_id: str = "",
        backend: str = "",
    ) -> list[Extraction]:
        limit = self.cfg.segment_chars
        if all(len(d.text) <= limit for d in documents):
            return self._run(runner, documents, given, model_id, backend)
        out: list[Extraction] = []
        for i, doc in enumerate(documents):  # one at a time: bounded memory
            g = given[i] if given is not None else None
            if len(doc.text) <= limit:
                out += self._run(runner, [doc], None if g is None else [g], model_id, backend)
                continue

            def one(seg: Document, seg_given: Sequence[Entity] | None) -> Extraction:
                sg = None if seg_given is None else [seg_given]
                return self._run(runner, [seg], sg, model_id, backend)[0]

            out.append(by_segments(doc, limit, g, one))
        return out

    def _run(
        self,
        runner: Runner,
        documents: Sequence[Document],
        given: Sequence[Sequence[Entity] | None] | None,
        model_id: str,
        backend: str,
    ) -> list[Extraction]:
        notes = [self.encode(d.text) for d in documents]
        items = [(i, k) for i, n in enumerate(notes) for k in range(len(n.windows)) if n.n_words]
        main_lp = [np.zeros((n.n_words, len(MAIN_TAGS)), np.float32) for n in notes]
        mod_lp = [np.zeros((n.n_words, len(MOD_TAGS)), np.float32) for n in notes]
        hidden: dict[tuple[int, int], FloatArray] = {}
        bs = self.cfg.batch_size
        for b0 in range(0, len(items), bs):
            chunk = items[b0 : b0 + bs]
            ids, mask, feats = batch_windows(
                [(notes[i], k) for i, k in chunk], self.cls_id, self.sep_id, self.pad_id
            )
            main_logits, mod_logits, hid = runner.tag(ids, mask, feats)
            for row, (i, k) in enumerate(chunk):
                note = notes[i]
                a, _ = note.windows[k]
                owned = np.nonzero(note.owner[note.word_first] == k)[0]
                pos = note.word_first[owned] - a + 1
                main_lp[i][owned] = _softmax(main_logits[row, pos])
                mod_lp[i][owned] = _softmax(mod_logits[row, pos])
                hidden[(i, k)] = hid[row]
        out = []
        for i, (doc, note) in enumerate(zip(documents, notes, strict=True)):
            given_i = given[i] if given is not None else None
            out.append(
                self._decode(
                    runner, doc, note, i, main_lp[i], mod_lp[i], hidden, given_i, model_id, backend
                )
            )
        return out

    def _path(
        self, probs: FloatArray, tags: tuple[str, ...], rules: BoundaryRules, words: list[str]
    ) -> NDArray[np.int64]:
        learned = None
        if tags == MAIN_TAGS and self.cfg.main_transitions:
            learned = np.asarray(self.cfg.main_transitions, dtype=np.float64)
        if self.cfg.constrained:
            # No rules (the modifier layer): skip building the word masks.
            can_start, can_end = (
                rules.word_masks(words) if rules.no_start or rules.no_end else (None, None)
            )
            return viterbi(np.log(probs + 1e-9), tags, can_start, can_end, rules.adjacent, learned)
        path: NDArray[np.int64] = probs.argmax(axis=-1).astype(np.int64)
        return path

    def _decode(
        self,
        runner: Runner,
        doc: Document,
        note: EncodedNote,
        i: int,
        main_p: FloatArray,
        mod_p: FloatArray,
        hidden: dict[tuple[int, int], FloatArray],
        given: Sequence[Entity] | None,
        model_id: str,
        backend: str,
        pair_scores: dict[tuple[str, str], float] | None = None,
    ) -> Extraction:
        """``pair_scores``, when given, receives the link probability of every
        candidate pair scored, by (entity id, modifier id), before the
        threshold and the same-clause rule pick the links (distillation's
        soft relation targets)."""
        text = doc.text
        if not note.n_words:
            return Extraction(document=doc, model=model_id, backend=backend)
        words = [text[a:b] for a, b in note.word_spans.tolist()]
        if given is not None:
            ents_w: list[WordSpan] = []
            kept: list[Entity] = []
            for e in given:
                ws = char_to_word_span(note, e.start, e.end)
                if ws is not None:
                    ents_w.append(WordSpan(e.label, ws[0], ws[1], 1.0))
                    kept.append(e)
            entities = list(given)
            ent_ids = [e.id for e in kept]
        else:
            ents_w = self._spans(main_p, MAIN_TAGS, self.cfg.main_rules, words)
            if self.cfg.one_type_per_string:
                ents_w = one_type_per_string(ents_w, words)
            if self.cfg.main_rules.absorb:
                joins = space_joins(text, note.word_spans)
                ents_w = absorb_left(ents_w, words, joins, self.cfg.main_rules)
            entities = [
                Entity(**self._mention(f"T{n + 1}", s, note, text, backend))
                for n, s in enumerate(ents_w)
            ]
            ent_ids = [e.id for e in entities]
        mods_w = self._spans(mod_p, MOD_TAGS, self.cfg.mod_rules, words)
        used = {e.id for e in entities}
        modifiers: list[Modifier] = []
        for s in mods_w:
            n = len(used) + 1
            while f"T{n}" in used:
                n += 1
            used.add(f"T{n}")
            modifiers.append(Modifier(**self._mention(f"T{n}", s, note, text, backend)))
        scored: list[tuple[int, int, float]] | None = None if pair_scores is None else []
        relations = self._relate(runner, text, note, i, ents_w, mods_w, hidden, scored)
        if pair_scores is not None:
            for ei, mi, prob in scored or ():
                pair_scores[(ent_ids[ei], modifiers[mi].id)] = prob
        return Extraction(
            document=doc,
            entities=tuple(entities),
            modifiers=tuple(modifiers),
            relations=tuple(
                Relation(ent_ids[e], modifiers[m].id, conf, f"R{n + 1}")
                for n, (e, m, conf) in enumerate(relations)
            ),
            model=model_id,
            backend=backend,
        )

    def _spans(
        self, probs: FloatArray, tags: tuple[str, ...], rules: BoundaryRules, words: list[str]
    ) -> list[WordSpan]:
        spans = spans_from_tags(self._path(probs, tags, rules, words), probs, tags)
        return [s for s in spans if s.confidence >= self.cfg.span_threshold]

    @staticmethod
    def _mention(
        mid: str, s: WordSpan, note: EncodedNote, text: str, backend: str
    ) -> dict[str, Any]:
        start = int(note.word_spans[s.first, 0])
        end = int(note.word_spans[s.last, 1])
        return {
            "id": mid,
            "label": s.label,
            "start": start,
            "end": end,
            "text": text[start:end],
            "confidence": round(s.confidence, 4),
            "source": backend or None,
        }

    def _relate(
        self,
        runner: Runner,
        text: str,
        note: EncodedNote,
        i: int,
        ents: Sequence[WordSpan],
        mods: Sequence[WordSpan],
        hidden: dict[tuple[int, int], FloatArray],
        scored: list[tuple[int, int, float]] | None = None,
    ) -> list[tuple[int, int, float]]:
        if not ents or not mods:
            return []
        sent, newline = word_context(text, note)
        pairs, feats = pair_candidates(ents, mods, sent, newline)
        if not pairs:
            return []
        if not self.cfg.learned_relations:
            return [(e, m, 1.0) for (e, m), f in zip(pairs, feats, strict=True) if f[4] == 0]
        reprs, keep = gather_pairs(note, pairs, ents, mods, lambda k: hidden[(i, k)])
        if not keep:
            return []
        probs = _sigmoid(runner.relate(np.stack(reprs), feats[keep]))
        if scored is not None:
            scored.extend(
                (pairs[j][0], pairs[j][1], round(float(p), 4))
                for j, p in zip(keep, probs.tolist(), strict=True)
            )
        links = [
            (pairs[j][0], pairs[j][1], round(float(p), 4))
            for j, p in zip(keep, probs.tolist(), strict=True)
            if p >= self.cfg.relation_threshold
        ]
        if not self.cfg.same_clause_links:
            return links
        spans = note.word_spans
        return same_clause_links(
            text,
            links,
            [(int(spans[e.first, 0]), int(spans[e.last, 1])) for e in ents],
            [(int(spans[m.first, 0]), int(spans[m.last, 1])) for m in mods],
        )


def pair_window(note: EncodedNote, lo_word: int, hi_word: int) -> int | None:
    """The window holding both words whose centre is nearest their midpoint."""
    a_sub, b_sub = int(note.word_first[lo_word]), int(note.word_first[hi_word])
    mid = (a_sub + b_sub) / 2
    best, best_d = None, float("inf")
    for k, (a, b) in enumerate(note.windows):
        if a <= a_sub and b_sub < b:
            d = abs((a + b) / 2 - mid)
            if d < best_d:
                best, best_d = k, d
    return best


def gather_pairs(
    note: EncodedNote,
    pairs: Sequence[tuple[int, int]],
    ents: Sequence[WordSpan],
    mods: Sequence[WordSpan],
    hidden_of: Callable[[int], FloatArray],
) -> tuple[list[FloatArray], list[int]]:
    """Span representations [e_first, e_last, m_first, m_last] per pair."""
    reprs: list[FloatArray] = []
    keep: list[int] = []
    for j, (ei, mi) in enumerate(pairs):
        e, m = ents[ei], mods[mi]
        words = (e.first, e.last, m.first, m.last)
        k = pair_window(note, min(words), max(words))
        if k is None:
            continue
        h = hidden_of(k)
        a = note.windows[k][0]
        pos = [int(note.word_first[w]) - a + 1 for w in words]
        reprs.append(np.concatenate([h[p] for p in pos]).astype(np.float32))
        keep.append(j)
    return reprs, keep
