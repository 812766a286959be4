"""Word features the encoder cannot see: letter case and drug-lexicon hits.

The default encoder is uncased, so "PE" (pulmonary embolism), "pe" and
"Pe" are one token to it, and a brand name is a string of meaningless
word pieces ("levaquin" → lev ##aq ##uin). Each word gets one feature id,
shared by all its subtokens, which the tagger embeds and adds to the
encoder's input embeddings (training/model.py):

    id = shape + N_SHAPES * in_drug_lexicon

shape: 0 none (special tokens, padding), 1 lower, 2 Title, 3 UPPER (two or
more letters), 4 mixed, 5 no letters. A word is in the drug lexicon when a
run of up to ``MAX_WORDS`` words containing it spells a lexicon entry
(case-insensitive; see ``WordFeaturizer.lexicon_hits``).

The lexicon ships inside the model directory (one entry per line, gzip), so
the product needs no extra package at run time; training builds it from the
MIT-licensed ``drug-named-entity-recognition`` dictionary (MedlinePlus,
DrugBank and brand names), which knows drugs the 80 training notes never
mention. Like the sentence rule in pipeline.py, this definition is frozen
with the model: changing it silently changes what a trained tagger sees.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

N_SHAPES = 6
N_WORD_FEATS = 2 * N_SHAPES
MAX_WORDS = 6
# Entries shorter than this are mostly abbreviations that collide with
# ordinary words ("ca", "mg").
MIN_ENTRY_CHARS = 3

_SPACE = re.compile(r"\s+")
# The first word of an entry as the BERT pre-tokenizer splits it: a run of
# letters/digits or one punctuation mark.
_WORD = re.compile(r"\w+|[^\w\s]")


def normalize(text: str) -> str:
    return _SPACE.sub(" ", text.strip().lower())


def shape(word: str) -> int:
    letters = [c for c in word if c.isalpha()]
    if not letters:
        return 5
    if all(c.islower() for c in letters):
        return 1
    if all(c.isupper() for c in letters):
        return 3 if len(letters) > 1 else 2
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return 2
    return 4


class WordFeaturizer:
    """Immutable after construction; safe to share between threads."""

    def __init__(self, lexicon: Iterable[str] = ()) -> None:
        entries = {normalize(e) for e in lexicon}
        self.lexicon = frozenset(e for e in entries if len(e) >= MIN_ENTRY_CHARS)
        self._first = frozenset(m.group(0) for e in self.lexicon if (m := _WORD.match(e)))

    @classmethod
    def load(cls, path: Path) -> WordFeaturizer:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return cls(line.rstrip("\n") for line in fh)

    def save(self, path: Path) -> None:
        # No name, mtime 0: the same lexicon gives the same bytes (reproducible models).
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
        ):
            gz.write("".join(e + "\n" for e in sorted(self.lexicon)).encode("utf-8"))

    def lexicon_hits(self, text: str, spans: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Longest match first. A run of words spells the lowercased words,
        joined by one space where anything separates them and directly
        where they touch ("co" "-" "trimoxazole" → "co-trimoxazole"). Only
        words that begin some entry are tried: this runs on every note, and
        checking all n-grams would cost 10-20% of the end-to-end time."""
        n = len(spans)
        hit = np.zeros(n, dtype=bool)
        if not self.lexicon:
            return hit
        bounds = spans.tolist()
        low = [text[a:b].lower() for a, b in bounds]
        i = 0
        while i < n:
            if low[i] not in self._first:
                i += 1
                continue
            s, best = low[i], i - 1
            for j in range(i, min(n, i + MAX_WORDS)):
                if j > i:
                    s += (" " if bounds[j][0] > bounds[j - 1][1] else "") + low[j]
                if s in self.lexicon:
                    best = j
            if best >= i:
                hit[i : best + 1] = True
                i = best + 1
            else:
                i += 1
        return hit

    def word_ids(self, text: str, spans: NDArray[np.int64]) -> NDArray[np.int64]:
        """Feature id per word; ``spans`` are the words' character ranges."""
        shapes = np.asarray([shape(text[a:b]) for a, b in spans.tolist()], dtype=np.int64)
        return shapes + N_SHAPES * self.lexicon_hits(text, spans).astype(np.int64)


def drug_lexicon_from_package() -> list[str]:
    """Every name variant in the drug-named-entity-recognition dictionary.

    Read from the package's data file without importing the package, whose
    import loads its matcher and pulls in ``requests``."""
    import bz2
    import pickle
    from importlib.util import find_spec

    spec = find_spec("drug_named_entity_recognition")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("drug-named-entity-recognition is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "drug_ner_dictionary.pkl.bz2"
    with bz2.open(path) as fh:
        data = pickle.load(fh)  # the pinned package's own data file
    return sorted(data["drug_variant_to_canonical"])
