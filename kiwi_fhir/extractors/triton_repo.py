"""Assemble a Triton model repository from ``triton_models/`` and a model dir.

The ONNX files are not kept in git twice: ``triton_models/`` holds only the
configuration templates, and this script copies the packaged (or a site's)
model into a ready-to-mount repository at deploy time::

    python -m kiwi_fhir.extractors.triton_repo --out build/triton_repo          # CPU
    python -m kiwi_fhir.extractors.triton_repo --variant onnx --precision fp32  # GPU

Both variants expose the same two models (``kiwi_tagger``, ``kiwi_relation``)
with the same tensor names, so :class:`~kiwi_fhir.extractors.triton.TritonExtractor`
talks to either. Each config carries the model's ``model_id`` so the client
can refuse a server that runs a different model than its tokenizer expects.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from kiwi_fhir.errors import ConfigError, KiwiError, ModelError
from kiwi_fhir.extractors.decode import FEAT_SIZES, MAIN_TAGS, MOD_TAGS
from kiwi_fhir.extractors.onnx import default_model_dir, read_model_config

VARIANTS = ("python", "onnx")
MODELS = ("kiwi_tagger", "kiwi_relation")


def templates_dir() -> Path:
    """``triton_models/`` of a checkout, else the copy a wheel installs under share/."""
    candidates = [
        Path(__file__).resolve().parents[2] / "triton_models",
        Path(sys.prefix) / "share" / "kiwi-fhir" / "triton_models",
    ]
    for c in candidates:
        if (c / "python" / "model.py").is_file():
            return c
    raise ConfigError("triton_models/ templates not found (checkout or wheel share/ dir)")


def assemble(
    out: Path,
    *,
    model_dir: Path | None = None,
    variant: str = "python",
    precision: str = "int8",
    instances: int = 1,
    threads: int = 1,
) -> Path:
    """Write the repository to ``out`` (replacing it) and return ``out``."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown Triton variant {variant!r}; choose from {VARIANTS}")
    if instances < 1 or threads < 1:
        raise ConfigError("instances and threads must be at least 1")
    model_dir = model_dir or default_model_dir()
    cfg = read_model_config(model_dir)
    key = "tagger" if precision == "int8" else "tagger_fp32"
    sources = {"kiwi_tagger": cfg.get(key), "kiwi_relation": cfg.get("relation")}
    for name, fname in sources.items():
        if not fname or not (model_dir / fname).is_file():
            what = f"{precision} tagger" if name == "kiwi_tagger" else "relation model"
            raise ModelError(f"{model_dir}: no {what} in this model")
    values = {
        "@MODEL_ID@": str(cfg.get("model_id", "")),
        "@N_MAIN@": str(len(MAIN_TAGS)),
        "@N_MOD@": str(len(MOD_TAGS)),
        "@N_FEATS@": str(len(FEAT_SIZES)),
        "@INSTANCES@": str(instances),
        "@THREADS@": str(threads),
    }
    src = templates_dir() / variant
    if out.exists():
        shutil.rmtree(out)
    for name in MODELS:
        text = (src / name / "config.pbtxt").read_text(encoding="utf-8")
        for k, v in values.items():
            text = text.replace(k, v)
        if left := re.findall(r"@[A-Z_]+@", text):
            raise ConfigError(f"{src / name}/config.pbtxt: unknown placeholder(s) {left}")
        version = out / name / "1"
        version.mkdir(parents=True)
        (out / name / "config.pbtxt").write_text(text, encoding="utf-8")
        shutil.copyfile(model_dir / str(sources[name]), version / "model.onnx")
        if variant == "python":
            shutil.copyfile(src / "model.py", version / "model.py")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m kiwi_fhir.extractors.triton_repo",
        description="assemble a Triton model repository for a kiwi-fhir model",
    )
    ap.add_argument("--out", type=Path, default=Path("build/triton_repo"))
    ap.add_argument("--model", type=Path, default=None, help="model dir (default: packaged)")
    ap.add_argument(
        "--variant",
        choices=VARIANTS,
        default="python",
        help="python = CPU (Python backend + onnxruntime); onnx = GPU",
    )
    ap.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    ap.add_argument("--instances", type=int, default=1, help="model instances per model")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads per instance")
    args = ap.parse_args(argv)
    try:
        out = assemble(
            args.out,
            model_dir=args.model,
            variant=args.variant,
            precision=args.precision,
            instances=args.instances,
            threads=args.threads,
        )
    except KiwiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
