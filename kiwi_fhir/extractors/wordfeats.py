"""Word features the encoder cannot see: letter case and lexicon hits.

The default encoder is uncased, so "PE" (pulmonary embolism), "pe" and
"Pe" are one token to it, and a brand name is a string of meaningless
word pieces ("levaquin" → lev ##aq ##uin). Each word gets one feature id,
shared by all its subtokens, which the tagger embeds and adds to the
encoder's input embeddings (training/model.py):

    id = shape + N_SHAPES * in_drug_lexicon + 2 * N_SHAPES * in_problem_lexicon

shape: 0 none (special tokens, padding), 1 lower, 2 Title, 3 UPPER (two or
more letters), 4 mixed, 5 no letters. A word is in the drug lexicon when a
run of up to ``MAX_WORDS`` words containing it spells a lexicon entry
(case-insensitive; see ``WordFeaturizer.lexicon_hits``).

The lexicon ships inside the model directory (one entry per line, gzip), so
the product needs no extra package at run time; training builds it from the
MIT-licensed ``drug-named-entity-recognition`` dictionary (MedlinePlus,
DrugBank and brand names), which knows drugs the 80 training notes never
mention. A model trained with ``--problem-lexicon`` also carries a problem
lexicon (ICD-10-CM terms, ``problem_lexicon_from_package``, less those the
training notes show outside problems: training/lexfilter.py) and a 24-row
feature table; without one, ids stay below ``N_WORD_FEATS`` as older models
expect. Like the sentence rule in pipeline.py, this definition is frozen
with the model: changing it silently changes what a trained tagger sees.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

N_SHAPES = 6
N_WORD_FEATS = 2 * N_SHAPES  # without a problem lexicon
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

    def __init__(self, lexicon: Iterable[str] = (), problems: Iterable[str] | None = None) -> None:
        self.lexicon = _entries(lexicon)
        self.problems = None if problems is None else _entries(problems)
        self._first = _first_words(self.lexicon)
        self._problem_first = _first_words(self.problems or frozenset())

    @property
    def n_feats(self) -> int:
        """Rows the tagger's feature table needs for these ids."""
        return N_WORD_FEATS if self.problems is None else 2 * N_WORD_FEATS

    @classmethod
    def load(cls, path: Path | None, problems: Path | None = None) -> WordFeaturizer:
        """``None`` for a lexicon the model was trained without."""
        return cls(
            _read(path) if path is not None else (),
            _read(problems) if problems is not None else None,
        )

    def save(self, path: Path | None, problems: Path | None = None) -> None:
        if path is not None:
            _write(path, self.lexicon)
        if problems is not None:
            _write(problems, self.problems or frozenset())

    def lexicon_hits(
        self, text: str, spans: NDArray[np.int64], *, problems: bool = False
    ) -> NDArray[np.bool_]:
        """Longest match first. A run of words spells the lowercased words,
        joined by one space where anything separates them and directly
        where they touch ("co" "-" "trimoxazole" → "co-trimoxazole"). Only
        words that begin some entry are tried: this runs on every note, and
        checking all n-grams would cost 10-20% of the end-to-end time."""
        hit = np.zeros(len(spans), dtype=bool)
        for i, j, _ in self.matches(text, spans, problems=problems):
            hit[i : j + 1] = True
        return hit

    def matches(
        self, text: str, spans: NDArray[np.int64], *, problems: bool = False
    ) -> list[tuple[int, int, str]]:
        """(first word, last word, entry) of each match, as ``lexicon_hits``
        finds them; training/lexfilter.py fits the problem lexicon with it."""
        bounds = spans.tolist()
        low = [text[a:b].lower() for a, b in bounds]
        if problems:
            return list(_matches(self.problems or frozenset(), self._problem_first, bounds, low))
        return list(_matches(self.lexicon, self._first, bounds, low))

    def word_ids(self, text: str, spans: NDArray[np.int64]) -> NDArray[np.int64]:
        """Feature id per word; ``spans`` are the words' character ranges."""
        bounds = spans.tolist()
        words = [text[a:b] for a, b in bounds]
        low = [w.lower() for w in words]
        ids = np.asarray([shape(w) for w in words], dtype=np.int64)
        ids += N_SHAPES * _hits(self.lexicon, self._first, bounds, low)
        if self.problems is not None:
            ids += 2 * N_SHAPES * _hits(self.problems, self._problem_first, bounds, low)
        return ids


def _hits(
    lexicon: frozenset[str], first: frozenset[str], bounds: list[list[int]], low: list[str]
) -> NDArray[np.bool_]:
    hit = np.zeros(len(bounds), dtype=bool)
    for i, j, _ in _matches(lexicon, first, bounds, low):
        hit[i : j + 1] = True
    return hit


def _matches(
    lexicon: frozenset[str], first: frozenset[str], bounds: list[list[int]], low: list[str]
) -> Iterator[tuple[int, int, str]]:
    """(first word, last word, entry) of each longest match, left to right."""
    n = len(bounds) if lexicon else 0
    i = 0
    while i < n:
        if low[i] not in first:
            i += 1
            continue
        s, best, entry = low[i], i - 1, ""
        for j in range(i, min(n, i + MAX_WORDS)):
            if j > i:
                s += (" " if bounds[j][0] > bounds[j - 1][1] else "") + low[j]
            if s in lexicon:
                best, entry = j, s
        if best >= i:
            yield i, best, entry
            i = best + 1
        else:
            i += 1


def _entries(lexicon: Iterable[str]) -> frozenset[str]:
    entries = {normalize(e) for e in lexicon}
    return frozenset(e for e in entries if len(e) >= MIN_ENTRY_CHARS)


def _first_words(entries: frozenset[str]) -> frozenset[str]:
    return frozenset(m.group(0) for e in entries if (m := _WORD.match(e)))


def _read(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh]


def _write(path: Path, entries: frozenset[str]) -> None:
    # No name, mtime 0: the same lexicon gives the same bytes (reproducible models).
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
    ):
        gz.write("".join(e + "\n" for e in sorted(entries)).encode("utf-8"))


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


# ICD-10-CM titles are long and formal ("Other specified acute gastritis, without
# bleeding"); notes say "gastritis". A title is cut at these words, and each
# piece after the first is kept only with two words or more: single-word tails
# are laterality and encounter words ("right", "initial") far more than problems.
_ICD_CUT = re.compile(r",|;| with | without | due to | of unspecified ")
_ICD_DROP = re.compile(r"\[[^\]]*\]|\([^)]*\)|\bNOS\b")
_ICD_LEAD = re.compile(r"(?i)(unspecified|other|acute|chronic) ")


def icd_terms(titles: Iterable[str]) -> list[str]:
    """Note-like problem terms from ICD-10-CM titles and inclusion terms."""
    terms: set[str] = set()
    for title in titles:
        for k, piece in enumerate(_ICD_CUT.split(_ICD_DROP.sub(" ", title))):
            term = " ".join(piece.split())
            if _ICD_LEAD.match(term):
                term = term.split(" ", 1)[1]
            n = len(term.split())
            if (k == 0 or n >= 2) and n <= MAX_WORDS and len(term) >= 4:
                terms.add(term)
    return sorted(terms)


def problem_lexicon_from_package() -> list[str]:
    """Problem terms from the ICD-10-CM tabular list in ``simple-icd-10-cm``
    (MIT; the data are the public-domain CDC release): every code's title
    and inclusion terms, through ``icd_terms``."""
    import xml.etree.ElementTree as ET  # the pinned package's own data file
    from importlib.util import find_spec

    spec = find_spec("simple_icd_10_cm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("simple-icd-10-cm is not installed")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    paths = sorted(data.glob("icd10cm-tabular-*.xml")) or sorted(data.glob("*tabular*.xml"))
    if not paths:
        raise ImportError(f"simple-icd-10-cm has no tabular list in {data}")
    titles: list[str] = []
    for diag in ET.parse(paths[-1]).getroot().iter("diag"):
        titles.append(diag.findtext("desc") or "")
        titles.extend(n.text or "" for inc in diag.iter("inclusionTerm") for n in inc.iter("note"))
    return icd_terms(titles)
