"""Epoch checkpoints of the fine-tuning loop (``loop.fit``).

Pretraining has its own step checkpoints (``pretrain.py``); this is the
same idea for fine-tuning, whose state is larger: two networks, AdamW's
moments, the schedule, an optional weight average and four random streams.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from kiwi_fhir.core import Extraction
from kiwi_fhir.errors import InputError
from kiwi_fhir.training.selftrain import digest

CHECKPOINT = "fit-checkpoint.pt"  # beside the stage's output


@dataclass(frozen=True)
class Checkpoint:
    """Where ``fit`` saves its state after every epoch, and the digest of
    the data and settings it belongs to. A fine-tuning run is 30-50 min on
    2 cores, so a kill (or the end of a working session) costs at most one
    epoch: the next run with the same key resumes after the last saved
    epoch and, RNG states included, ends with the weights an uninterrupted
    run would have. A checkpoint with another key is refused, not
    overwritten. The caller deletes it once the networks are written."""

    path: Path
    key: str


def fit_key(settings: Mapping[str, object], encoder: Path, docs: Sequence[Extraction]) -> str:
    """A checkpoint's key: the settings, the starting encoder's weights (by
    content: a stage's encoder keeps its directory name when retrained) and
    the training notes with their labels."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for f in sorted(encoder.glob("*.safetensors")) + sorted(encoder.glob("*.bin")):
        h.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
    h.update(digest(docs, {}).encode())
    return h.hexdigest()


class Averaged(Protocol):
    """``loop._Ema``: the averaged copies and the step count of its warm-up."""

    @property
    def modules(self) -> tuple[nn.Module, nn.Module]: ...

    steps: int


class Resumable:
    """Everything an epoch boundary must restore for a resumed run to
    continue exactly: weights, optimiser and schedule, and the four random
    streams (batch order, mention swaps, [MASK] draws, torch's dropout)."""

    def __init__(
        self, tagger: nn.Module, head: nn.Module, opt: Any, sched: Any,
        rng: np.random.Generator, aug_rng: np.random.Generator, mask_gen: torch.Generator,
        ema: Averaged | None, device: torch.device,
    ) -> None:  # fmt: skip
        self.tagger, self.head, self.opt, self.sched = tagger, head, opt, sched
        self.rng, self.aug_rng, self.mask_gen, self.ema = rng, aug_rng, mask_gen, ema
        self.cuda = device.type == "cuda"

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tagger": self.tagger.state_dict(), "head": self.head.state_dict(),
            "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
            "rng": self.rng.bit_generator.state, "aug_rng": self.aug_rng.bit_generator.state,
            "mask_gen": self.mask_gen.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if self.cuda else None,
        }  # fmt: skip
        if self.ema is not None:
            out["ema"] = [m.state_dict() for m in self.ema.modules]
            out["ema_steps"] = self.ema.steps
        return out

    def load(self, ck: Checkpoint) -> tuple[int, int]:
        """Restore from ``ck``; returns (first epoch still to run, steps done)."""
        s = torch.load(ck.path, weights_only=False, map_location="cpu")  # GPU-made too
        if s.get("key") != ck.key:
            raise InputError(f"{ck.path}: a fine-tuning checkpoint from other settings or "
                             "data; delete it to start this run afresh")  # fmt: skip
        self.tagger.load_state_dict(s["tagger"])
        self.head.load_state_dict(s["head"])
        self.opt.load_state_dict(s["opt"])
        self.sched.load_state_dict(s["sched"])
        self.rng.bit_generator.state = s["rng"]
        self.aug_rng.bit_generator.state = s["aug_rng"]
        self.mask_gen.set_state(s["mask_gen"])
        torch.set_rng_state(s["torch_rng"])
        if self.cuda and s["cuda_rng"] is not None:
            torch.cuda.set_rng_state(s["cuda_rng"])
        if self.ema is not None:
            for m, sd in zip(self.ema.modules, s["ema"], strict=True):
                m.load_state_dict(sd)
            self.ema.steps = int(s["ema_steps"])
        return int(s["epoch"]) + 1, int(s["step"])


def save_checkpoint(ck: Checkpoint, state: Resumable, epoch: int, step: int) -> None:
    """Atomic: a kill mid-write leaves the previous epoch's checkpoint intact."""
    ck.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = ck.path.with_suffix(".tmp")
    torch.save(state.dump() | {"key": ck.key, "epoch": epoch, "step": step}, tmp)
    os.replace(tmp, ck.path)
