"""Learn span-boundary rules from the training notes into a model's config.

``kiwi-fhir train`` does this itself; this script adds the rules to a model
directory trained before they existed (it reads only the non-dev notes, the
ones the model was trained on).

    python scripts/boundary_rules.py MODEL_DIR [--data DIR] [--min-count 10]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kiwi_fhir.corpus import default_data_dir, load_corpus, split
from kiwi_fhir.extractors.boundary import RULES_MIN_COUNT, learn_from_corpus
from kiwi_fhir.extractors.encoding import load_tokenizer
from kiwi_fhir.extractors.onnx import read_model_config


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--min-count", type=int, default=RULES_MIN_COUNT)
    a = ap.parse_args()
    if a.data is None:
        print("no data: pass --data", file=sys.stderr)
        return 2
    cfg = read_model_config(a.model)
    train, _ = split(load_corpus(a.data))
    rules = learn_from_corpus(load_tokenizer(a.model / cfg["tokenizer"]), train, a.min_count)
    cfg["boundary_rules"] = {"main": rules["main"].to_json()}
    (a.model / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    main_rules = rules["main"]
    print(
        f"{a.model}: {len(main_rules.no_start)} no-start and {len(main_rules.no_end)} "
        f"no-end words, adjacent spans {'allowed' if main_rules.adjacent else 'forbidden'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
