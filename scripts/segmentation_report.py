#!/usr/bin/env python
"""How well do sentence/token boundaries respect the gold mentions?

A gold span that crosses a sentence boundary cannot be predicted by a model
that reads one sentence at a time, and one that does not start and end on
token boundaries cannot be predicted by a token tagger; so these counts are
the ceiling each segmenter puts on recall. Compares ``kiwi_fhir.segment``
with pysbd and PyRuSH when they are importable (they are not dependencies).

    python scripts/segmentation_report.py [DATA_DIR] [--rush-rules TSV] [--show N]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kiwi_fhir import segment
from kiwi_fhir.core import Extraction, Mention
from kiwi_fhir.corpus import default_data_dir, load_corpus

Span = tuple[int, int]
Splitter = Callable[[str], list[Span]]


def _stripped(text: str, s: int, e: int) -> Span | None:
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return (s, e) if s < e else None


def _locate(text: str, pieces: Sequence[str]) -> list[Span]:
    """Offsets of consecutive sentence strings (libraries that return text)."""
    out: list[Span] = []
    cursor = 0
    for piece in pieces:
        p = piece.strip()
        if not p:
            continue
        i = text.find(p, cursor)
        if i < 0:
            raise ValueError(f"segment not found in text: {p[:40]!r}")
        out.append((i, i + len(p)))
        cursor = i + len(p)
    return out


def pysbd_splitter() -> Splitter | str:
    try:
        import pysbd
    except ImportError:
        return "not installed (`pip install pysbd`)"
    seg = pysbd.Segmenter(language="en", clean=False, char_span=False)
    return lambda text: _locate(text, seg.segment(text))


def rush_splitter(rules: Path | None) -> Splitter | str:
    try:
        from PyRuSH import RuSH
    except ImportError:
        return "not installed (`pip install PyRuSH`)"
    if rules is None or not rules.is_file():
        return "no rules file: the wheel ships none; pass --rush-rules conf/rush_rules.tsv (sdist)"
    rush: Any = RuSH(str(rules))

    def split(text: str) -> list[Span]:
        spans = (_stripped(text, s.begin, s.end) for s in rush.segToSentenceSpans(text))
        return [s for s in spans if s is not None]

    return split


def crossing(spans: list[Span], mentions: Sequence[Mention]) -> list[Mention]:
    """Mentions whose extent is not inside a single sentence."""
    starts = [s for s, _ in spans]
    bad = []
    for m in mentions:
        i = bisect_right(starts, m.start) - 1
        if i < 0 or m.end > spans[i][1]:
            bad.append(m)
    return bad


def misaligned(toks: list[Span], mentions: Sequence[Mention]) -> list[Mention]:
    starts, ends = {s for s, _ in toks}, {e for _, e in toks}
    return [m for m in mentions if any(s not in starts or e not in ends for s, e in m.pieces())]


def cross_relations(spans: list[Span], doc: Extraction) -> int:
    starts = [s for s, _ in spans]
    where = {m.id: bisect_right(starts, m.start) - 1 for m in (*doc.entities, *doc.modifiers)}
    return sum(where[r.entity_id] != where[r.modifier_id] for r in doc.relations)


def report(docs: list[Extraction], splitters: dict[str, Splitter | str], show: int) -> str:
    ents = sum(len(d.entities) for d in docs)
    mods = sum(len(d.modifiers) for d in docs)
    rels = sum(len(d.relations) for d in docs)
    lines = [
        f"{len(docs)} notes, {ents} entities, {mods} modifiers, {rels} relations\n",
        "| sentence splitter | sentences | entities crossing | modifiers crossing "
        "| relations split | median / max tokens | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    examples: list[str] = []
    for name, split in splitters.items():
        if isinstance(split, str):
            lines.append(f"| {name} | {split} | | | | | |")
            continue
        n_sent = bad_e = bad_m = bad_r = 0
        lengths: list[int] = []
        elapsed = 0.0
        for d in docs:
            text = d.document.text
            t0 = time.perf_counter()
            spans = split(text)
            elapsed += time.perf_counter() - t0
            n_sent += len(spans)
            lengths += [len(segment.tokens(text, s, e)) for s, e in spans]
            be, bm = crossing(spans, d.entities), crossing(spans, d.modifiers)
            bad_e, bad_m = bad_e + len(be), bad_m + len(bm)
            bad_r += cross_relations(spans, d)
            if name == "kiwi_fhir.segment":
                for m in (*be, *bm)[: max(show - len(examples), 0)]:
                    ctx = text[max(m.start - 40, 0) : m.end + 20].replace("\n", "\u23ce")
                    examples.append(f"{d.document.id} {m.label} {m.text!r}: ...{ctx}...")
        med = statistics.median(lengths) if lengths else 0
        lines.append(
            f"| {name} | {n_sent} | {bad_e} | {bad_m} | {bad_r} "
            f"| {med:g} / {max(lengths, default=0)} | {elapsed:.2f} |"
        )
    lines += [
        "",
        "| tokenizer | tokens | entities misaligned | modifiers misaligned |",
        "|---|---|---|---|",
    ]
    baselines: dict[str, Callable[[str], list[Span]]] = {
        "kiwi_fhir.segment": segment.tokens,
        "whitespace": lambda t: [m.span() for m in re.finditer(r"\S+", t)],
        "\\w+ or one mark": lambda t: [m.span() for m in re.finditer(r"\w+|\S", t)],
    }
    for name, tok in baselines.items():
        n = mis_e = mis_m = 0
        for d in docs:
            toks = tok(d.document.text)
            n += len(toks)
            mis_e += len(misaligned(toks, d.entities))
            mis_m += len(misaligned(toks, d.modifiers))
            if name == "kiwi_fhir.segment" and show:
                for m in misaligned(toks, (*d.entities, *d.modifiers)):
                    t = d.document.text
                    examples.append(f"tok {m.label} {m.text!r} in {t[m.start - 8 : m.end + 8]!r}")
        lines.append(f"| {name} | {n} | {mis_e} | {mis_m} |")
    if examples:
        lines += ["", *examples]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("data_dir", nargs="?", type=Path, help="brat .txt/.ann directory")
    ap.add_argument("--rush-rules", type=Path, help="PyRuSH rules TSV (rush_rules.tsv)")
    ap.add_argument("--show", type=int, default=0, help="print this many problem spans")
    args = ap.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    if data_dir is None:
        print("no data: pass DATA_DIR or set KIWI_FHIR_DATA", file=sys.stderr)
        return 2
    docs = load_corpus(data_dir)
    splitters: dict[str, Splitter | str] = {
        "kiwi_fhir.segment": segment.sentences,
        "pysbd 0.3 (en)": pysbd_splitter(),
        "PyRuSH": rush_splitter(args.rush_rules),
    }
    print(report(docs, splitters, args.show))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
