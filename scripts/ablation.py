"""Dev-split ablations of decoding choices on one trained model directory.

Each row changes one inference-time choice of the shipped pipeline and
re-scores the fixed dev split with ``kiwi_fhir.evaluation`` (exact F1 with
95% bootstrap CIs). Training-time choices need a retrain; see the README.

    python scripts/ablation.py MODEL_DIR [--data DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from kiwi_fhir.corpus import default_data_dir, load_corpus, split
from kiwi_fhir.extractors.boundary import RULES_MIN_COUNT, BoundaryRules, learn_from_corpus
from kiwi_fhir.extractors.encoding import load_tokenizer
from kiwi_fhir.extractors.onnx import OnnxExtractor, pipeline_for, read_model_config
from kiwi_fhir.extractors.pipeline import PipelineConfig
from kiwi_fhir.training.report import dev_metrics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.data is None:
        print("no data: pass --data", file=sys.stderr)
        return 2
    train, dev = split(load_corpus(a.data))
    cfg = read_model_config(a.model)
    base = pipeline_for(a.model, cfg, 16).cfg
    both = learn_from_corpus(load_tokenizer(a.model / cfg["tokenizer"]), train, RULES_MIN_COUNT)
    variants: list[tuple[str, str, PipelineConfig]] = [
        ("shipped (int8, Viterbi + boundary rules, learned RE, threshold 0.6)", "int8", base),
        ("fp32", "fp32", base),
        ("no boundary rules", "int8", dataclasses.replace(base, main_rules=BoundaryRules())),
        (
            "boundary rules without absorbing the word before",
            "int8",
            dataclasses.replace(
                base, main_rules=dataclasses.replace(base.main_rules, absorb=frozenset())
            ),
        ),
        (
            "boundary rules on the modifier layer too",
            "int8",
            dataclasses.replace(base, mod_rules=both["mod"]),
        ),
        (
            "no one type per string in a note",
            "int8",
            dataclasses.replace(base, one_type_per_string=False),
        ),
        *(
            [
                (
                    "Viterbi without the CRF's learned transitions",
                    "int8",
                    dataclasses.replace(base, main_transitions=()),
                )
            ]
            if base.main_transitions
            else []
        ),
        (
            "argmax instead of BIO-constrained Viterbi",
            "int8",
            dataclasses.replace(base, constrained=False),
        ),
        (
            "nearest-entity rule instead of learned RE",
            "int8",
            dataclasses.replace(base, learned_relations=False),
        ),
        ("no span threshold (0.0)", "int8", dataclasses.replace(base, span_threshold=0.0)),
        (
            "256/192 windows (trained length)",
            "int8",
            dataclasses.replace(base, max_len=256, stride=192),
        ),
        (
            "192-subtoken windows without overlap",
            "int8",
            dataclasses.replace(base, stride=base.max_len - 2),
        ),
        (
            "none of: boundary rules, span threshold, 192/160 windows",
            "int8",
            dataclasses.replace(
                base, main_rules=BoundaryRules(), span_threshold=0.0, max_len=256, stride=192
            ),
        ),
    ]
    rows: list[dict[str, Any]] = []
    for name, precision, pc in variants:
        ex = OnnxExtractor(a.model, precision=precision, pipeline=pc)
        m = dev_metrics(ex, dev)["headline"]
        rows.append({"variant": name, **{k: (v["f1"], v["ci"]) for k, v in m.items()}})
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    keys = ["ner", "ner_relaxed", "modifier", "re_end_to_end", "re_given_entities"]
    print("| variant | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for r in rows:
        cells = [f"{r[k][0]:.3f} [{r[k][1][0]:.3f}, {r[k][1][1]:.3f}]" for k in keys]
        print(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
