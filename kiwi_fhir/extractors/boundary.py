"""Span-boundary rules learned from the training notes, applied in decoding.

Half of the model's exact-match errors on dev are boundaries, and many are
spans no annotator would draw: "pain in his ankles and", "temperature of",
"Pancreatic and" + "left adrenal lesions" as two spans. The corpus is very
regular about this: in the 80 training notes no entity ends on "the", "of",
"and", "her" (hundreds of occurrences each inside spans), none starts on
"of", "and" or ",", and two entities touch with no word between them 16
times in 5,773. Per-word independent softmaxes cannot see such span-level
facts; Viterbi can obey them, choosing the best path that does (extend or
trim, by the model's own probabilities).

The rules are counted at training time and stored in the model's
``config.json`` (they belong to the model, like its label set):

* ``no_end``: words seen at least ``min_count`` times inside a span and
  never as its last word;
* ``no_start``: the same for first words;
* ``adjacent``: whether a span may start on the word right after another
  span of the same layer ended (false when that happens in under 1% of
  spans);
* ``absorb``: words that, standing right before a span (spaces only in
  between), belong to it at least ``ABSORB_MIN_RATE`` of the time -- the
  guideline's "articles and possessives should be included" (a 94%, his
  93%, her 86%, the 77% in training) plus modifiers such as "chronic".
  The model leaves them out now and then ("an extensive workup" predicted
  as "extensive workup"); decoding then extends the span by that word.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer

from kiwi_fhir.core import Extraction
from kiwi_fhir.extractors.decode import WordSpan
from kiwi_fhir.extractors.encoding import encode_note

ADJACENT_MAX_RATE = 0.01
# Dev NER exact F1 of the shipped model: no absorbing 0.812; rate 0.5-0.75
# (the same words bar "other") 0.817; 0.8 0.815; 0.9 0.813.
ABSORB_MIN_RATE = 0.75
# Dev NER exact F1 of the first shipped model: no rules 0.775; min_count
# 3 / 5 / 10 / 20: 0.784 / 0.787 / 0.791 / 0.789.
RULES_MIN_COUNT = 10


@dataclass(frozen=True)
class BoundaryRules:
    no_start: frozenset[str] = field(default_factory=frozenset)
    no_end: frozenset[str] = field(default_factory=frozenset)
    adjacent: bool = True
    absorb: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> dict[str, Any]:
        return {
            "no_start": sorted(self.no_start),
            "no_end": sorted(self.no_end),
            "adjacent": self.adjacent,
            "absorb": sorted(self.absorb),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> BoundaryRules:
        if not data:
            return cls()
        return cls(
            frozenset(data.get("no_start", ())),
            frozenset(data.get("no_end", ())),
            bool(data.get("adjacent", True)),
            frozenset(data.get("absorb", ())),
        )

    def word_masks(self, words: Sequence[str]) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        """Per word: may a span start here, may a span end here."""
        low = [w.lower() for w in words]
        can_start = np.asarray([w not in self.no_start for w in low], dtype=bool)
        can_end = np.asarray([w not in self.no_end for w in low], dtype=bool)
        return can_start, can_end


NO_RULES = BoundaryRules()

Note = tuple[Sequence[str], Sequence[tuple[int, int]], Sequence[bool]]


def space_joins(text: str, word_spans: NDArray[np.int64]) -> list[bool]:
    """Per word: is the next word separated from it by spaces/tabs only
    (same line, nothing but blanks)? Only such a word can be absorbed."""
    ends, starts = word_spans[:-1, 1].tolist(), word_spans[1:, 0].tolist()
    return [e < s and not text[e:s].strip(" \t") for e, s in zip(ends, starts, strict=True)] + [
        False
    ]


def learn_rules(notes: Iterable[Note], min_count: int = 5) -> BoundaryRules:
    """Count boundary facts over ``(words, spans, joins)`` per note, where
    spans are inclusive word ranges of one layer and ``joins`` comes from
    :func:`space_joins`."""
    first, not_first = Counter[str](), Counter[str]()
    last, not_last = Counter[str](), Counter[str]()
    left_out = Counter[str]()
    n_spans = n_adjacent = 0
    for words, spans, joins in notes:
        low = [w.lower() for w in words]
        ordered = sorted(spans)
        prev_last = -1
        for a, b in ordered:
            n_spans += 1
            for i in range(a, b + 1):
                (first if i == a else not_first)[low[i]] += 1
                (last if i == b else not_last)[low[i]] += 1
            if a - 1 > prev_last and joins[a - 1]:
                left_out[low[a - 1]] += 1
            prev_last = max(prev_last, b)
        n_adjacent += sum(1 for (_, b), (c, _) in pairwise(ordered) if c == b + 1)
    return BoundaryRules(
        no_start=frozenset(w for w, n in not_first.items() if n >= min_count and not first[w]),
        no_end=frozenset(w for w, n in not_last.items() if n >= min_count and not last[w]),
        adjacent=n_spans == 0 or n_adjacent / n_spans >= ADJACENT_MAX_RATE,
        absorb=frozenset(
            w
            for w, n in left_out.items()
            if w.isalpha()
            and first[w] + n >= min_count
            and first[w] >= ABSORB_MIN_RATE * (first[w] + n)
        ),
    )


def absorb_left(
    spans: Sequence[WordSpan], words: Sequence[str], joins: Sequence[bool], rules: BoundaryRules
) -> list[WordSpan]:
    """Extend each span by the word before it when that word is in
    ``rules.absorb``, blank-joined to the span and not in another span."""
    out: list[WordSpan] = []
    prev_last = -1
    for s in sorted(spans, key=lambda s: (s.first, s.last)):
        k = s.first - 1
        if k > prev_last and joins[k] and words[k].lower() in rules.absorb:
            s = dataclasses.replace(s, first=k)
        out.append(s)
        prev_last = max(prev_last, s.last)
    return out


def learn_from_corpus(
    tok: Tokenizer, gold: Sequence[Extraction], min_count: int = 5
) -> dict[str, BoundaryRules]:
    """Rules for both layers (``main``, ``mod``) from gold notes, on the
    tokenizer's words: the units the decoder labels."""
    layers: dict[str, list[Note]] = {"main": [], "mod": []}
    for g in gold:
        text = g.document.text
        note = encode_note(tok, text, max_len=10**9, stride=10**9)
        words = [text[a:b] for a, b in note.word_spans.tolist()]
        starts = note.word_spans[:, 0]
        joins = space_joins(text, note.word_spans)
        for key, mentions in (("main", g.entities), ("mod", g.modifiers)):
            spans = []
            for m in mentions:
                inside = np.nonzero((starts >= m.start) & (starts < m.end))[0]
                if inside.size:
                    spans.append((int(inside[0]), int(inside[-1])))
            layers[key].append((words, spans, joins))
    return {key: learn_rules(notes, min_count) for key, notes in layers.items()}
