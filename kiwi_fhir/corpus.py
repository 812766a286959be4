"""Loading annotated corpora and the fixed dev split.

The shared training notes live outside the repo (``../shared/data``); code
that wants them asks :func:`default_data_dir`, which honours
``KIWI_FHIR_DATA`` and returns None when the corpus is absent so callers
(and tests) can skip cleanly. The product never needs it at run time.
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

from kiwi_fhir.brat import ParseReport, iter_txt, read_pair
from kiwi_fhir.core import Extraction

_DEFAULT_REL = Path("..") / "shared" / "data" / "mtsamples" / "train"


def default_data_dir() -> Path | None:
    """The shared MTSamples training notes, if this checkout can see them."""
    env = os.environ.get("KIWI_FHIR_DATA")
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parent.parent
    candidates += [repo / _DEFAULT_REL, Path.cwd() / _DEFAULT_REL]
    for c in candidates:
        if c.is_dir() and any(c.glob("*.ann")):
            return c
    return None


def parse_split_file(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def dev_ids(split_file: Path | None = None) -> list[str]:
    """Note IDs of the dev split (the packaged list unless a file is given)."""
    if split_file is not None:
        return parse_split_file(split_file.read_text(encoding="utf-8"))
    ref = resources.files("kiwi_fhir") / "data" / "dev_split.txt"
    return parse_split_file(ref.read_text(encoding="utf-8"))


def fold_ids(ids: list[str], fold: int, folds: int, seed: int = 13) -> list[str]:
    """Note IDs of cross-validation fold ``fold`` (1-based) of ``folds``.

    A seeded shuffle of the sorted IDs dealt round-robin: the partition
    depends only on the set of notes and the seed, so every fold run of one
    CV (possibly on different days and machines) holds out disjoint notes
    that together cover the corpus.
    """
    if not 1 <= fold <= folds:
        raise ValueError(f"fold {fold} outside 1..{folds}")
    import random

    order = sorted(ids)
    random.Random(seed).shuffle(order)
    return sorted(order[fold - 1 :: folds])


def load_corpus(data_dir: Path, *, strict: bool = False) -> list[Extraction]:
    """Read every ``.txt``/``.ann`` pair; stray lines are reported on stderr.

    Lenient by default because real corpora carry the odd broken line (the
    shared corpus has one) and losing a whole note for it would be worse.
    """
    report = ParseReport()
    docs = [read_pair(p, strict=strict, report=report) for p in iter_txt([data_dir])]
    for problem in report.problems:
        print(f"warning: skipped {problem}", file=sys.stderr)
    return docs


def split(
    docs: list[Extraction],
    split_file: Path | None = None,
    *,
    fold: tuple[int, int] | None = None,
    all_notes: bool = False,
) -> tuple[list[Extraction], list[Extraction]]:
    """(train, dev) by the fixed dev list, a CV fold, or no dev at all."""
    if all_notes:
        return list(docs), []
    if fold is not None:
        dev = set(fold_ids([d.document.id for d in docs], *fold))
    else:
        dev = set(dev_ids(split_file))
    return [d for d in docs if d.document.id not in dev], [d for d in docs if d.document.id in dev]
