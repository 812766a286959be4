"""Average the weights of several trained model directories ("model soup").

Runs trained with the same ``--seed`` start from identical weights and
differ only in batch order (``--order-seed``), so their fine-tuned weights
usually sit in one basin and their average can beat each of them at the
cost of one model at run time (Wortsman et al., 2022). The fp32 ONNX
initializers are averaged name by name, the result quantized like
``kiwi-fhir train`` does, and scored on the dev split.

    python scripts/soup.py OUT_DIR MODEL_DIR MODEL_DIR [...] [--data DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np


def average_onnx(paths: list[Path], out: Path) -> None:
    import onnx
    from onnx import numpy_helper

    models = [onnx.load(str(p)) for p in paths]
    base = models[0]
    others = [{t.name: t for t in m.graph.initializer} for m in models[1:]]
    for init in base.graph.initializer:
        arrays = [numpy_helper.to_array(init)]
        for o in others:
            if init.name not in o:
                raise SystemExit(f"{paths[0]}: initializer {init.name} missing elsewhere")
            arrays.append(numpy_helper.to_array(o[init.name]))
        if arrays[0].dtype.kind != "f":  # shapes, indices: must agree, not averaged
            if any(not np.array_equal(arrays[0], a) for a in arrays[1:]):
                raise SystemExit(f"initializer {init.name} differs between models")
            continue
        avg = np.mean(np.stack(arrays), axis=0).astype(arrays[0].dtype)
        init.CopyFrom(numpy_helper.from_array(avg, init.name))
    onnx.save(base, str(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("--data", type=Path)
    a = ap.parse_args()
    from kiwi_fhir.corpus import default_data_dir, load_corpus, split
    from kiwi_fhir.extractors.onnx import OnnxExtractor, read_model_config
    from kiwi_fhir.training.export import quantize_int8
    from kiwi_fhir.training.report import dev_metrics

    cfgs = [read_model_config(m) for m in a.models]
    a.out.mkdir(parents=True, exist_ok=True)
    average_onnx(
        [m / c["tagger_fp32"] for m, c in zip(a.models, cfgs, strict=True)],
        a.out / "tagger.fp32.onnx",
    )
    average_onnx(
        [m / c["relation"] for m, c in zip(a.models, cfgs, strict=True)], a.out / "relation.onnx"
    )
    quantize_int8(a.out / "tagger.fp32.onnx", a.out / "tagger.int8.onnx")
    shutil.copy(a.models[0] / cfgs[0]["tokenizer"], a.out / "tokenizer.json")
    cfg = dict(cfgs[0])
    digest = hashlib.sha256((a.out / "tagger.fp32.onnx").read_bytes()).hexdigest()[:10]
    cfg["model_id"] = f"kiwi-soup-{dt.date.today():%Y%m%d}-{digest}"
    cfg.update(
        tagger="tagger.int8.onnx",
        tagger_fp32="tagger.fp32.onnx",
        relation="relation.onnx",
        tokenizer="tokenizer.json",
    )
    (a.out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    cards = [json.loads((m / "model_card.json").read_text(encoding="utf-8")) for m in a.models]
    card = dict(cards[0])
    card.update(
        model_id=cfg["model_id"],
        soup_of=[c["model_id"] for c in cards],
        train_minutes=round(sum(c["train_minutes"] for c in cards), 1),
        date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    data = a.data or default_data_dir()
    if data is not None:
        _, dev = split(load_corpus(data))
        card["dev_metrics"] = {
            p: dev_metrics(OnnxExtractor(a.out, precision=p), dev) for p in ("fp32", "int8")
        }
        for p, m in card["dev_metrics"].items():
            print(p, {k: round(v["f1"], 4) for k, v in m["headline"].items()})
    (a.out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
