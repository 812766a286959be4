"""Cross-validation summary: per metric, the mean, spread and range over fold runs.

Each fold is a ``kiwi-fhir train --fold I/K`` run; its model card holds the
held-out fold's figures. Pooled micro F1 (summing TP / predicted / gold over
the folds, i.e. every note scored once by a model that did not see it) is
printed beside the mean of the per-fold F1s.

    python scripts/cv_report.py build/cv-1 build/cv-2 build/cv-3 [--precision int8]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

METRICS = ("ner", "ner_relaxed", "modifier", "re_end_to_end", "re_given_entities")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+", type=Path, help="model directories of the fold runs")
    p.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    args = p.parse_args()
    cards = [json.loads((r / "model_card.json").read_text(encoding="utf-8")) for r in args.runs]
    folds = sorted(str(c.get("fold")) for c in cards)
    notes = sum(len(c["dev_notes"]) for c in cards)
    print(f"{len(cards)} folds ({', '.join(folds)}), {notes} held-out notes, {args.precision}")
    print(f"{'metric':<20}{'pooled F1':>10}{'mean':>8}{'sd':>7}{'min':>7}{'max':>7}")
    for m in METRICS:
        heads = [c["dev_metrics"][args.precision]["headline"][m] for c in cards]
        f1s = [h["f1"] for h in heads]
        tp, pred, gold = (sum(h[k] for h in heads) for k in ("tp", "pred", "gold"))
        pooled = 2 * tp / (pred + gold) if pred + gold else 0.0
        sd = statistics.stdev(f1s) if len(f1s) > 1 else 0.0
        print(f"{m:<20}{pooled:>10.3f}{statistics.mean(f1s):>8.3f}{sd:>7.3f}"
              f"{min(f1s):>7.3f}{max(f1s):>7.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
