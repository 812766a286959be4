"""Domain-adaptive pretraining: whole-word masked-LM on unlabeled clinical notes.

The supervised recipe plateaued on 80 annotated notes (docs/model.md); the
shared corpus adds ~1,900 unannotated in-domain transcriptions (24x the
annotated text). Unlike :mod:`.tapt` (a few epochs over the training
notes, in memory, thrown away after fitting), this stage is long enough to
outlive a working session, so it is *step*-based, checkpoints its whole
state (weights, optimiser, schedule, step) to its output directory every
``save_every`` steps and resumes from there, and leaves a plain encoder
directory (config, weights, tokenizer, ``pretrain.json``) that any later
``kiwi-fhir train --encoder DIR`` can start from.

Whole-word masking: a word-piece of a masked word gives the rest away
("hyper ##tension"), so targets are chosen per word (the tokenizer's word
ids), then 80/10/10 [MASK]/random/kept per piece as in BERT.

Seeded without saving RNG streams: the note order of epoch ``e`` is a
permutation drawn from ``(seed, e)`` and the masks and dropout of step ``s``
from ``(seed, s)``, so a resumed run sees the same batches and masks as one
that was not stopped. (Two runs' weights still differ measurably; where the
remaining nondeterminism comes from is not yet found.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from kiwi_fhir.errors import InputError
from kiwi_fhir.training.device import pick_device
from kiwi_fhir.training.tapt import IGNORE, MLM_PROB, corrupt, mlm_setup

CHECKPOINT = "checkpoint.pt"
DONE = "pretrain.json"


@dataclass(frozen=True)
class PretrainConfig:
    steps: int
    seed: int = 13
    batch_size: int = 16
    width: int = 254  # pieces per chunk; +[CLS]/[SEP] = 256
    lr: float = 1e-4
    head_lr: float = 1e-3
    warmup: float = 0.06
    save_every: int = 100


@dataclass(frozen=True)
class Chunk:
    ids: tuple[int, ...]
    words: tuple[int, ...]  # word index of each piece, local to the chunk


def read_texts(dirs: Sequence[Path]) -> list[str]:
    """Every ``*.txt`` under the given directories, in a stable order."""
    texts: list[str] = []
    for d in dirs:
        if not d.is_dir():
            raise InputError(f"--pretrain-data {d}: not a directory")
        files = sorted(d.glob("*.txt"))
        if not files:
            raise InputError(f"--pretrain-data {d}: no .txt notes")
        texts.extend(f.read_text(encoding="utf-8", errors="replace") for f in files)
    return texts


def chunk_notes(tok: Tokenizer, texts: Sequence[str], width: int) -> list[Chunk]:
    """Word-piece ids cut into ``width``-long chunks at word starts where possible."""
    out: list[Chunk] = []
    for text in texts:
        enc = tok.encode(text, add_special_tokens=False)
        ids, words = enc.ids, [w if w is not None else -1 for w in enc.word_ids]
        a = 0
        while a < len(ids):
            b = min(len(ids), a + width)
            if b < len(ids):  # back off to the start of the word that straddles the cut
                c = b
                while c > a + width // 2 and words[c] == words[c - 1]:
                    c -= 1
                b = c if c > a + width // 2 else b
            base = words[a]
            out.append(Chunk(tuple(ids[a:b]), tuple(w - base for w in words[a:b])))
            a = b
    return out


def whole_word_mask(
    ids: torch.Tensor, words: torch.Tensor, real: torch.Tensor, mask_id: int, vocab: int,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Targets chosen per word (``words``: word index per piece, -1 where not real)."""
    n_words = int(words.max().item()) + 1 if words.numel() else 0
    pick = torch.rand((ids.shape[0], max(1, n_words)), generator=gen) < MLM_PROB
    target = torch.gather(pick, 1, words.clamp(min=0)) & real
    return corrupt(ids, target, mask_id, vocab, gen)


def _corpus_digest(chunks: Sequence[Chunk]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(np.asarray(c.ids, dtype=np.int32).tobytes())
    return h.hexdigest()[:16]


def _batch_order(n: int, batch: int, seed: int, epoch: int) -> list[np.ndarray]:
    perm = np.random.default_rng([seed, 3, epoch]).permutation(n)
    return [perm[i : i + batch] for i in range(0, n, batch)]


def pretrain(
    encoder: Path, tok: Tokenizer, texts: Sequence[str], out: Path, cfg: PretrainConfig,
    *, epochs: float | None = None, device: str = "cpu",
) -> Path:  # fmt: skip
    """Run (or resume, or skip when already finished) the stage; returns ``out``.

    With ``epochs``, ``cfg.steps`` is replaced by that many passes over the
    chunks (known only once the notes are tokenised)."""
    chunks = chunk_notes(tok, texts, cfg.width)
    if epochs is not None:
        per_epoch = -(-len(chunks) // cfg.batch_size)
        cfg = dataclasses.replace(cfg, steps=max(1, round(per_epoch * epochs)))
    digest = _corpus_digest(chunks)
    done = out / DONE
    if done.is_file():
        prior = json.loads(done.read_text(encoding="utf-8"))
        if prior.get("config") == asdict(cfg) and prior.get("corpus") == digest:
            print(f"pretrain: {out} already holds this stage's encoder; reusing it",
                  file=sys.stderr)  # fmt: skip
            return out
        raise InputError(f"--pretrain-dir {out}: holds an encoder from other settings or data")
    torch.manual_seed(cfg.seed)  # the fresh MLM head's initial weights
    m = mlm_setup(encoder, tok, cfg.lr, cfg.head_lr)
    m.model.to(pick_device(device))  # in place: the optimiser keeps its parameters
    model, base, lm_head, vocab, opt = m.model, m.base, m.lm_head, m.vocab, m.opt
    warm = max(1, int(cfg.steps * cfg.warmup))

    def rate(s: int) -> float:
        return min((s + 1) / warm, max(0.0, (cfg.steps - s) / max(1, cfg.steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, [rate, rate])
    out.mkdir(parents=True, exist_ok=True)
    step, losses = 0, []
    ckpt = out / CHECKPOINT
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False, map_location="cpu")  # GPU-made too
        if state["config"] != asdict(cfg) or state["corpus"] != digest:
            raise InputError(f"--pretrain-dir {out}: its checkpoint is from other settings")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, losses = int(state["step"]), list(state["losses"])
        print(f"pretrain: resuming at step {step}/{cfg.steps}", file=sys.stderr)
    per_epoch = -(-len(chunks) // cfg.batch_size)
    print(f"pretrain: {len(texts)} notes, {len(chunks)} chunks of <= {cfg.width} pieces, "
          f"{per_epoch} steps per epoch, {cfg.steps} steps", file=sys.stderr)  # fmt: skip
    bar = tqdm(total=cfg.steps, initial=step, desc="pretrain (masked-LM)", unit="step",
               file=sys.stderr, dynamic_ncols=True, mininterval=5)  # fmt: skip
    ce = torch.nn.CrossEntropyLoss()
    model.train()
    t0 = time.time()
    while step < cfg.steps:
        epoch, k = divmod(step, per_epoch)
        rows = [chunks[i] for i in _batch_order(len(chunks), cfg.batch_size, cfg.seed, epoch)[k]]
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout too, so a resume is exact
        loss = _step(model, base, lm_head, rows, m.special, vocab,
                     torch.Generator().manual_seed(cfg.seed * 1_000_003 + step), ce)  # fmt: skip
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-50:]):.3f}")
        if step % cfg.save_every == 0 or step == cfg.steps:
            _save_checkpoint(ckpt, model, opt, sched, step, losses, cfg, digest)
    bar.close()
    base.save_pretrained(str(out))
    shutil.copy(encoder / "tokenizer.json", out / "tokenizer.json")
    meta: dict[str, Any] = {
        "config": asdict(cfg), "corpus": digest, "notes": len(texts), "chunks": len(chunks),
        "source_encoder": encoder.name, "epochs": round(cfg.steps / per_epoch, 2),
        "loss_first_100": float(np.mean(losses[:100])),
        "loss_last_100": float(np.mean(losses[-100:])),
        "minutes_this_run": round((time.time() - t0) / 60, 1),
    }  # fmt: skip
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    tmp.replace(done)
    ckpt.unlink(missing_ok=True)  # the finished encoder supersedes it
    return out


def _step(
    model: Any, base: Any, lm_head: Any, rows: Sequence[Chunk], special: tuple[int, int, int, int],
    vocab: int, gen: torch.Generator, ce: torch.nn.CrossEntropyLoss,
) -> torch.Tensor:  # fmt: skip
    cls_id, sep_id, mask_id, pad_id = special
    w = max(len(r.ids) for r in rows) + 2
    ids = torch.full((len(rows), w), pad_id, dtype=torch.long)
    words = torch.full((len(rows), w), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row.ids) + 2] = torch.tensor([cls_id, *row.ids, sep_id])
        words[r, 1 : len(row.ids) + 1] = torch.tensor(row.words)
    real = words >= 0
    inputs, labels = whole_word_mask(ids, words, real, mask_id, vocab, gen)  # CPU: same draws
    dev = next(base.parameters()).device
    inputs, labels, ids = inputs.to(dev), labels.to(dev), ids.to(dev)
    hidden: torch.Tensor = base(
        input_ids=inputs, attention_mask=(ids != pad_id).long()
    ).last_hidden_state
    picked = labels != IGNORE
    if not picked.any():  # a batch of tiny chunks can draw no target
        return hidden.sum() * 0.0
    loss: torch.Tensor = ce(lm_head(hidden[picked]), labels[picked])
    return loss


def _save_checkpoint(
    path: Path, model: Any, opt: Any, sched: Any, step: int, losses: list[float],
    cfg: PretrainConfig, digest: str,
) -> None:  # fmt: skip
    """Atomic: a kill mid-write leaves the previous checkpoint intact."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "step": step, "losses": losses,
                "config": asdict(cfg), "corpus": digest}, tmp)  # fmt: skip
    os.replace(tmp, path)
