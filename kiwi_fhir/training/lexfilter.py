"""Fit a packaged problem lexicon to what the guideline calls a problem.

ICD-10-CM titles name body parts ("abdomen", "left foot"), people ("wife",
"female") and findings annotators type as tests ("blood pressure", "sinus
rhythm"). Unfiltered, a third of the lexicon's matches in the training
notes lie outside gold problems, and a model trained with it gained on
problems but lost 3 points on tests (docs/model.md). The training notes
say which terms mislead, so those are dropped; terms the notes never
contain are kept, since knowing problems the 80 notes never mention is what
the lexicon is for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer

from kiwi_fhir.core import Extraction
from kiwi_fhir.extractors.encoding import encode_note
from kiwi_fhir.extractors.wordfeats import WordFeaturizer


@dataclass(frozen=True)
class LexiconFit:
    kept: tuple[str, ...]
    dropped: tuple[str, ...]
    matches: int  # matches in the notes before filtering
    precision_before: float  # share of those matches that are problems
    precision_after: float


def fit_problem_lexicon(
    featurizer: WordFeaturizer, tok: Tokenizer, docs: Sequence[Extraction], min_share: float
) -> LexiconFit:
    """Drop terms whose matches in ``docs`` are problems less than
    ``min_share`` of the time. A match is a problem when its first and last
    words both lie inside gold problems, so "nausea and vomiting" annotated
    as two problems counts."""
    hits: Counter[str] = Counter()
    good: Counter[str] = Counter()
    for doc in docs:
        text = doc.document.text
        spans = encode_note(tok, text).word_spans
        problems = [(e.start, e.end) for e in doc.entities if e.label == "problem"]
        for i, j, term in featurizer.matches(text, spans, problems=True):
            hits[term] += 1
            good[term] += _inside(spans[i], problems) and _inside(spans[j], problems)
    dropped = {t for t, n in hits.items() if good[t] < min_share * n}
    terms = featurizer.problems or frozenset()
    total = sum(hits.values())
    kept_hits = sum(n for t, n in hits.items() if t not in dropped)
    return LexiconFit(
        kept=tuple(sorted(terms - dropped)),
        dropped=tuple(sorted(dropped)),
        matches=total,
        precision_before=sum(good.values()) / total if total else 0.0,
        precision_after=(
            sum(n for t, n in good.items() if t not in dropped) / kept_hits if kept_hits else 0.0
        ),
    )


def _inside(word: NDArray[np.int64], spans: list[tuple[int, int]]) -> bool:
    a, b = int(word[0]), int(word[1])
    return any(s <= a and b <= e for s, e in spans)
