"""Score a logit-averaging ensemble of trained model directories on dev.

A measuring tool, not a product path: it answers how far more models would
take the dev scores (docs/model.md), which bounds what distilling them into
one model could reach. Every model's tag logits are averaged per window, and
its relation head scores the pairs from its own hidden states before the
relation logits are averaged; decoding (boundary rules, thresholds) is the
first model's.

    python scripts/ensemble.py MODEL_DIR MODEL_DIR [...] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from kiwi_fhir.corpus import default_data_dir, load_corpus, split
from kiwi_fhir.evaluation import evaluate
from kiwi_fhir.extractors.onnx import OrtRunner, pipeline_for, read_model_config

Floats = NDArray[np.float32]


class MeanRunner:
    """A pipeline ``Runner`` over several models. ``tag`` returns their
    hidden states side by side, so the pipeline's span representations hold
    each model's slice in turn, which ``relate`` splits back apart."""

    def __init__(self, runners: list[OrtRunner]) -> None:
        self.runners = runners

    def tag(
        self, input_ids: NDArray[np.int64], mask: NDArray[np.int64], feats: NDArray[np.int64]
    ) -> tuple[Floats, Floats, Floats]:
        outs = [r.tag(input_ids, mask, feats) for r in self.runners]
        n = len(outs)
        main: Floats = sum(o[0] for o in outs) / n  # type: ignore[assignment]
        mod: Floats = sum(o[1] for o in outs) / n  # type: ignore[assignment]
        return main, mod, np.concatenate([o[2] for o in outs], axis=-1)

    def relate(self, span_repr: Floats, feats: NDArray[np.int64]) -> Floats:
        n = len(self.runners)
        parts = span_repr.reshape(len(span_repr), 4, n, -1)
        scores = [
            r.relate(np.ascontiguousarray(parts[:, :, i, :].reshape(len(span_repr), -1)), feats)
            for i, r in enumerate(self.runners)
        ]
        out: Floats = sum(scores) / n  # type: ignore[assignment]
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("--data", type=Path, default=default_data_dir())
    a = ap.parse_args()
    if a.data is None:
        print("no data: pass --data", file=sys.stderr)
        return 2
    _, dev = split(load_corpus(a.data))
    runners = []
    for m in a.models:
        cfg = read_model_config(m)
        runners.append(OrtRunner(m / cfg["tagger"], m / cfg["relation"], threads=2))
    runner = MeanRunner(runners)
    pipe = pipeline_for(a.models[0], read_model_config(a.models[0]), 16)
    docs = [g.document for g in dev]
    e2e = evaluate(dev, pipe.run(runner, docs), resamples=1)
    given = evaluate(dev, pipe.run(runner, docs, [g.entities for g in dev]), resamples=1)
    scores = {k: round(e2e[k]["exact"]["f1"], 4) for k in ("ner", "modifier", "re")}
    scores["re_given_entities"] = round(given["re"]["exact"]["f1"], 4)
    print(json.dumps({"models": [str(m) for m in a.models], "dev_exact_f1": scores}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
