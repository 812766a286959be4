"""Terminology coding: coverage on the gold entities of the shared notes, and
what coding costs in time, memory and wheel size against extraction itself.

A benchmark, not a test: it prints one report and asserts nothing.

- coverage: share of the corpus's gold main entities (all 96 notes) that get
  a code, per entity type and system (precision needs the hand-checked gold
  table: ``kiwi-fhir eval-codes``);
- cost: one process extracts the notes with the in-process ONNX model, then
  codes the results; time is the best of ``--repeat`` runs of each, and the
  RSS growth of loading the tables is measured once;
- size: the gzipped tables shipped in the wheel.

With ``--embedding`` the optional embedding match is on too (its encoder
and title vectors count in load time, RSS and size; build the title cache
first, e.g. with one ``kiwi-fhir eval-codes --embedding``, or the first
load includes embedding every title).

    python benchmarks/bench_codes.py [--data DIR] [--repeat 3] [--embedding]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections import Counter
from pathlib import Path

from kiwi_fhir.corpus import default_data_dir, load_corpus
from kiwi_fhir.extractors.onnx import OnnxExtractor
from kiwi_fhir.terminology import CodingOptions, code_all, coders_for
from kiwi_fhir.terminology.embedding import ENCODER_FILE, TOKENIZER_FILE, data_dir
from kiwi_fhir.terminology.tables import table_path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, default=default_data_dir())
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--embedding", action="store_true")
    args = p.parse_args()
    if args.data is None:
        raise SystemExit("no corpus: pass --data DIR (brat .txt/.ann)")
    gold = load_corpus(args.data)
    seen: Counter[str] = Counter()
    coded: Counter[str] = Counter()
    methods: Counter[str] = Counter()
    before = _rss_mb()
    t0 = time.perf_counter()
    for etype in ("problem", "drug", "test"):
        for coder in coders_for(etype, args.embedding):
            coder.candidates("warm up sentinel xq")  # loads the table (and the encoder)
    load_s = time.perf_counter() - t0
    table_mb = _rss_mb() - before
    for ex in gold:
        for e in ex.entities:
            for coder in coders_for(e.label, args.embedding):
                key = f"{e.label}/{coder.name}"
                seen[key] += 1
                found = coder.candidates(e.text)
                if found:
                    coded[key] += 1
                    methods[f"{key}/{found[0].method}"] += 1
    print(f"gold main entities of {len(gold)} notes ({args.data}):")
    for key in sorted(seen):
        share = coded[key] / seen[key]
        by = ", ".join(f"{m.rsplit('/', 1)[1]} {n}" for m, n in sorted(methods.items())
                       if m.startswith(key + "/"))  # fmt: skip
        print(f"  {key:<18} {coded[key]:>5}/{seen[key]:<5} coded {share:6.1%}  ({by})")
    options = CodingOptions(embedding=args.embedding)
    docs = [g.document for g in gold]
    onnx = OnnxExtractor(threads=2)
    onnx.load()
    onnx.extract(docs[:2])
    t_ex = t_code = float("inf")
    for _ in range(args.repeat):
        t = time.perf_counter()
        out = [r for c in range(0, len(docs), 8) for r in onnx.extract(docs[c : c + 8])]
        t_ex = min(t_ex, time.perf_counter() - t)
        t = time.perf_counter()
        code_all(out, options)
        t_code = min(t_code, time.perf_counter() - t)
    files = [table_path(n) for n in ("icd10cm", "unii", "drugbank")]
    if args.embedding:
        files += [data_dir() / ENCODER_FILE, data_dir() / TOKENIZER_FILE]
    size = sum(f.stat().st_size for f in files) / 1e6
    print(f"extraction {t_ex:.2f} s, coding {t_code * 1000:.0f} ms for {len(docs)} notes "
          f"(+{t_code / t_ex:.1%}); tables load once in {load_s:.2f} s, +{table_mb:.0f} MB RSS; "
          f"{size:.1f} MB gzipped in the wheel")  # fmt: skip


if __name__ == "__main__":
    main()
