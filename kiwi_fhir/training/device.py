"""Where training runs: ``--device auto|cpu|cuda``.

``auto`` takes a CUDA GPU when torch sees one (a lent GPU machine) and the
CPU otherwise, so one command serves both. Networks always come back on the
CPU: export, quantisation and dev scoring through the ONNX path stay CPU
work, and a checkpoint written on a GPU resumes on a CPU. Results on a GPU
are not bit-identical to the CPU's (different kernels); a seed fixes each.
"""

from __future__ import annotations

import torch

from kiwi_fhir.errors import ModelError

DEVICES = ("auto", "cpu", "cuda")


def pick_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise ModelError(f"--device {name!r}: not one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda: torch sees no CUDA GPU here (use auto or cpu)")
    return torch.device(name)
