"""Coders: one per code system, each a lookup in a shipped table.

Matching, in order, stopping at the first hit:

1. ``exact`` (score 1.0): the mention, case and spacing aside, is a term of
   the source (a title, an inclusion term, a drug name);
2. ``normalised`` (0.9): equal after :func:`.normalize.normalise` (plurals,
   punctuation, "unspecified"/"NOS", parentheticals, a leading "the");
   for drugs also with trailing formulation words stripped (0.85);
3. ``synonym`` (0.85): a curated term of ``mappings/terminology.yaml``
   that no title spells ("pneumonia", "coronary artery disease"), with the
   code the ICD-10-CM alphabetic index gives it;
4. ``abbreviation`` (0.8): the abbreviation table there (HTN, CHF, ASA,
   HCTZ ...).

An optional fifth, ``embedding`` (MiniLM cosine against code titles, off by
default), wraps a table coder: :mod:`.embedding`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kiwi_fhir.core import Code
from kiwi_fhir.terminology.normalize import normalise, plain, plain_term, strip_drug_suffixes
from kiwi_fhir.terminology.tables import Row, Table

# "<site> pain" as ICD-10-CM titles say it: "Pain in right shoulder".
_SITE_PAIN = re.compile(r"^((?:left|right) [a-z]+(?: [a-z]+)?) pain$")

SCORES: Mapping[str, float] = {
    "exact": 1.0,
    "normalised": 0.9,
    "suffix": 0.85,
    "synonym": 0.85,
    "abbreviation": 0.8,
}


class Coder(Protocol):
    """Ranked candidate codes of one system for a mention's text."""

    @property
    def name(self) -> str: ...

    @property
    def system(self) -> str: ...

    def candidates(self, text: str, limit: int = 1) -> list[Code]: ...

    def candidates_many(self, texts: Sequence[str], limit: int = 1) -> list[list[Code]]:
        """One list per text, best first, at most ``limit`` each; a batch, so a
        coder that runs a network runs it once per note, not per mention."""
        ...


@dataclass
class TableCoder:
    """A coder over one table; ``abbreviations`` maps an abbreviation either to
    a code of the table (``code_abbreviations``) or to a term to look up."""

    name: str
    load: Callable[[], Table]
    code_abbreviations: Mapping[str, str] = field(default_factory=dict)
    code_synonyms: Mapping[str, str] = field(default_factory=dict)  # keys normalised
    term_abbreviations: Mapping[str, str] = field(default_factory=dict)
    drug: bool = False
    _table: Table | None = field(default=None, init=False, repr=False)
    _by_code: dict[str, Row] | None = field(default=None, init=False, repr=False)

    @property
    def table(self) -> Table:
        if self._table is None:
            self._table = self.load()
        return self._table

    @property
    def system(self) -> str:
        return self.table.system

    def row_for_code(self, code: str) -> Row | None:
        if self._by_code is None:
            by: dict[str, Row] = {}
            for key in self.table.rows:
                row = self.table.get(key)
                if row is not None and (row.code not in by or row.name == row.display):
                    by[row.code] = row
            self._by_code = by
        return self._by_code.get(code)

    def _code(self, row: Row, method: str) -> Code:
        return Code(self.system, row.code, row.display, SCORES[method], method,
                    self.table.version)  # fmt: skip

    def candidates_many(self, texts: Sequence[str], limit: int = 1) -> list[list[Code]]:
        return [self.candidates(t, limit) for t in texts]

    def candidates(self, text: str, limit: int = 1) -> list[Code]:
        """The table methods give at most one code: a title or term either
        matches or not, so there is nothing to rank below it."""
        key = normalise(text)
        if not key:
            return []
        row = self.table.get(key)
        if row is None and (m := _SITE_PAIN.match(key)):  # "right shoulder pain"
            row = self.table.get(f"pain in {m.group(1)}")
        if row is not None:
            said = plain(text)
            exact = said in (plain(row.name), plain_term(row.name), plain_term(row.display))
            method = "exact" if exact else "normalised"
            return [self._code(row, method)]
        if self.drug:
            short = strip_drug_suffixes(key)
            row = self.table.get(short) if short != key else None
            if row is not None:
                return [self._code(row, "suffix")]
        abbr = plain(text)
        for table, method in ((self.code_synonyms, "synonym"),
                              (self.code_abbreviations, "abbreviation")):  # fmt: skip
            code = table.get(abbr) or table.get(key)
            row = self.row_for_code(code) if code is not None else None
            if row is not None:
                return [self._code(Row(row.code, row.display, abbr), method)]
        term = self.term_abbreviations.get(abbr) or self.term_abbreviations.get(key)
        if term is not None:
            row = self.table.get(normalise(term))
            if row is not None:
                return [self._code(row, "abbreviation")]
        return []
