"""``kiwi-fhir eval-codes``: coverage and precision of the coders on a gold table.

The gold table (``tests/data/terminology_gold.tsv`` in the repo) holds main
entities of the shared training notes with the codes an annotator judged
right, by someone who did not see the coder. A cell holds the acceptable
codes (``|``-separated), ``-`` when the system has no right code for the
mention, ``?`` when not judged (left out of the scores); an empty cell means
the system does not apply to that entity type.

Per entity type and system: *coverage* is the share of judged mentions that
got a code, *precision* the share of given codes that are acceptable (a
code where gold says ``-`` is wrong), *recall* the share of mentions with a
right code that got it; precision is also broken down by match method.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiwi_fhir.errors import InputError
from kiwi_fhir.terminology import coders_for

SYSTEM_COLUMNS = {"icd10cm": "icd10cm", "unii": "unii", "drugbank": "drugbank", "loinc": "loinc"}


@dataclass
class Score:
    judged: int = 0
    with_gold_code: int = 0
    coded: int = 0
    correct: int = 0
    by_method: Counter[str] = field(default_factory=Counter)
    correct_by_method: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def ratio(a: int, b: int) -> float | None:
            return round(a / b, 4) if b else None

        return {
            "judged": self.judged,
            "coverage": ratio(self.coded, self.judged),
            "precision": ratio(self.correct, self.coded),
            "recall": ratio(self.correct, self.with_gold_code),
            "coded": self.coded,
            "correct": self.correct,
            "by_method": {
                m: {"coded": n, "precision": ratio(self.correct_by_method[m], n)}
                for m, n in sorted(self.by_method.items())
            },
            "errors": self.errors,
        }


def read_gold(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError(f"{path}: no such gold table")
    with path.open(encoding="utf-8", newline="") as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    need = {"type", "text", *SYSTEM_COLUMNS.values()}
    if not rows or not need <= set(rows[0]):
        raise InputError(f"{path}: expected a TSV header with {sorted(need)}")
    return rows


def evaluate_codes(path: Path, embedding: bool = False) -> dict[str, dict[str, Any]]:
    """``{"problem/icd10cm": {...}, ...}`` over the gold table at ``path``."""
    scores: dict[str, Score] = {}
    for row in read_gold(path):
        etype, text = row["type"], row["text"]
        for coder in coders_for(etype, embedding):
            cell = (row.get(SYSTEM_COLUMNS.get(coder.name, coder.name)) or "").strip()
            if not cell or cell == "?":
                continue
            s = scores.setdefault(f"{etype}/{coder.name}", Score())
            gold = set() if cell == "-" else {c.strip() for c in cell.split("|") if c.strip()}
            s.judged += 1
            s.with_gold_code += bool(gold)
            found = coder.candidates(text)[:1]
            if not found:
                continue
            got = found[0]
            s.coded += 1
            s.by_method[got.method] += 1
            if got.code in gold:
                s.correct += 1
                s.correct_by_method[got.method] += 1
            else:
                want = cell if gold else "none"
                s.errors.append(f"{text!r}: {got.code} ({got.method}), gold {want}")
    return {k: s.as_dict() for k, s in sorted(scores.items())}


def format_codes_report(result: dict[str, dict[str, Any]]) -> str:
    def pct(v: float | None) -> str:
        return "   -" if v is None else f"{100 * v:5.1f}%"

    lines = [f"{'type/system':<20}{'judged':>7}{'coverage':>10}{'precision':>11}{'recall':>9}"]
    for key, r in result.items():
        lines.append(f"{key:<20}{r['judged']:>7}{pct(r['coverage']):>10}"
                     f"{pct(r['precision']):>11}{pct(r['recall']):>9}")  # fmt: skip
        for method, m in r["by_method"].items():
            lines.append(f"  {method:<18}{m['coded']:>7}{'':>10}{pct(m['precision']):>11}")
    return "\n".join(lines)
