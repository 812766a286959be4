"""Dev NER exact F1 split by whether an entity's string was seen in training.

Issue 19's error analysis found the held-out loss in entities whose string
never occurs as a same-type entity in the training notes (about 0.70 F1,
against about 0.92 for seen ones, the annotation-noise ceiling). Unlabeled
notes are meant to help the unseen half; this measures whether a model did.
A gold or predicted entity is *seen* when its lower-cased, space-collapsed
text with its type occurs among the training split's gold entities; each half
is scored on its own (exact match, 95% CI over notes), so a spurious
prediction of a seen string counts against the seen half.

    python scripts/seen_split.py MODEL_DIR [MODEL_DIR,MODEL_DIR ...] [--data DIR]

A comma-separated argument is an ensemble (averaged probabilities, fp32 where
present: ``kiwi_fhir.training.distill``); a single directory is scored as it
ships (int8 where it has one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kiwi_fhir.core import Entity, Extraction
from kiwi_fhir.corpus import default_data_dir, load_corpus, split
from kiwi_fhir.evaluation import evaluate

Key = tuple[str, str]


def key(e: Entity) -> Key:
    return e.label, " ".join(e.text.lower().split())


def seen_keys(train: Iterable[Extraction]) -> set[Key]:
    return {key(e) for ex in train for e in ex.entities}


def half(ex: Extraction, seen: set[Key], want: bool) -> Extraction:
    """Only the entities on one side of the split (no modifiers, no relations)."""
    kept = tuple(e for e in ex.entities if (key(e) in seen) == want)
    return dataclasses.replace(ex, entities=kept, modifiers=(), relations=())


def split_scores(
    gold: Sequence[Extraction], pred: Sequence[Extraction], seen: set[Key]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, want in (("seen", True), ("unseen", False)):
        m = evaluate([half(g, seen, want) for g in gold], [half(p, seen, want) for p in pred])
        ex = m["ner"]["exact"]
        out[name] = {k: ex[k] for k in ("f1", "p", "r", "tp", "pred", "gold", "ci")}
    out["all"] = {k: evaluate(gold, pred)["ner"]["exact"][k] for k in ("f1", "ci")}
    return out


def predict(model: str, dev: Sequence[Extraction]) -> list[Extraction]:
    docs = [g.document for g in dev]
    dirs = [Path(d) for d in model.split(",") if d]
    if len(dirs) > 1:
        from kiwi_fhir.training.distill import load_teachers

        t = load_teachers(dirs)
        return t.pipe.run(t.runner, docs)
    from kiwi_fhir.extractors.onnx import OnnxExtractor, read_model_config

    precision = "int8" if read_model_config(dirs[0]).get("tagger") else "fp32"
    return OnnxExtractor(dirs[0], precision=precision).extract(docs)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("models", nargs="+", help="model directories; DIR,DIR,... = an ensemble")
    ap.add_argument("--data", type=Path, default=default_data_dir())
    a = ap.parse_args(argv)
    if a.data is None:
        raise SystemExit("no data: pass --data")
    train, dev = split(load_corpus(a.data))
    seen = seen_keys(train)
    for model in a.models:
        s = split_scores(dev, predict(model, dev), seen)
        row = {k: [round(v["f1"], 4), [round(x, 4) for x in v["ci"]]] for k, v in s.items()}
        counts = {k: {c: s[k][c] for c in ("tp", "pred", "gold")} for k in ("seen", "unseen")}
        print(json.dumps({"model": model, "ner_exact_f1_ci": row, "counts": counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
