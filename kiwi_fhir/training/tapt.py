"""Task-adaptive pretraining: masked-LM on the training notes' own text.

The encoder is a general-domain sentence model; fine-tuning with [MASK]
noise raised dev NER but cost modifiers and relations, because the noise
also corrupts the labelled objective (a masked "no" keeps its negation
label). Running the masked-LM objective first, on the same 80 notes and
nothing else (Gururangan et al. 2020), adapts the encoder to clinical
wording without touching the tag losses. Only training notes are read: the
dev notes' text stays unseen, like their labels.

all-MiniLM-L6-v2 ships without an MLM head, so a fresh one is trained
(transform + LayerNorm, decoder tied to the word embeddings); the encoder's
rate warms up over the first epochs so the random head's early gradients
do not scramble it.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from kiwi_fhir.extractors.pipeline import special_token_id

MLM_PROB = 0.15
IGNORE = -100  # CrossEntropyLoss's ignore_index, as in loop.py


def note_chunks(tok: Tokenizer, texts: Sequence[str], width: int, shift: int) -> list[list[int]]:
    """Word-piece ids of each note cut into ``width``-long pieces; ``shift``
    moves the cut points so epochs see different neighbourhoods."""
    out: list[list[int]] = []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        cuts = [0, *range(shift or width, len(ids), width)]
        out.extend(ids[a:b] for a, b in zip(cuts, [*cuts[1:], len(ids)], strict=True) if b > a)
    return out


def mask_tokens(
    ids: torch.Tensor, special: torch.Tensor, mask_id: int, vocab: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's recipe: 15% of the real pieces are targets; of those 80%
    become [MASK], 10% a random piece, 10% stay. Labels are -100 elsewhere."""
    target = (torch.rand(ids.shape, generator=gen) < MLM_PROB) & ~special
    return corrupt(ids, target, mask_id, vocab, gen)


def corrupt(
    ids: torch.Tensor, target: torch.Tensor, mask_id: int, vocab: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Of the ``target`` pieces 80% become [MASK], 10% a random piece, 10% stay;
    labels hold the original there and -100 elsewhere."""
    labels = torch.where(target, ids, torch.full_like(ids, IGNORE))
    roll = torch.rand(ids.shape, generator=gen)
    out = torch.where(target & (roll < 0.8), torch.full_like(ids, mask_id), ids)
    rand_ids = torch.randint(vocab, ids.shape, generator=gen)
    out = torch.where(target & (roll >= 0.8) & (roll < 0.9), rand_ids, out)
    return out, labels


@dataclass(frozen=True)
class MlmSetup:
    """An encoder with a fresh MLM head, its optimiser and the special ids."""

    model: Any
    base: Any  # the encoder inside ``model``: what is saved afterwards
    lm_head: Any
    special: tuple[int, int, int, int]  # [CLS], [SEP], [MASK], [PAD]
    vocab: int
    opt: torch.optim.AdamW


def mlm_setup(encoder: Path, tok: Tokenizer, lr: float, head_lr: float) -> MlmSetup:
    """all-MiniLM-L6-v2 ships without an MLM head: a fresh one is trained at its
    own (higher) rate, the encoder at ``lr``."""
    from transformers import AutoModelForMaskedLM, logging

    logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # the fresh head is expected
    model = AutoModelForMaskedLM.from_pretrained(str(encoder)).float()  # fp16 encoders too
    base = model.base_model
    lm_head = model.cls if hasattr(model, "cls") else model.lm_head  # BERT / RoBERTa naming
    cls_id, sep_id, mask_id, pad_id = (
        special_token_id(tok, t) for t in ("[CLS]", "[SEP]", "[MASK]", "[PAD]")
    )
    enc_ids = {id(p) for p in base.parameters()}
    head_params = [p for p in model.parameters() if id(p) not in enc_ids]
    opt = torch.optim.AdamW(
        [{"params": list(base.parameters()), "lr": lr}, {"params": head_params, "lr": head_lr}],
        weight_decay=0.01,
    )
    special = (cls_id, sep_id, mask_id, pad_id)
    return MlmSetup(model, base, lm_head, special, int(model.config.vocab_size), opt)


def adapt(
    encoder: Path,
    tok: Tokenizer,
    texts: Sequence[str],
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-4,
    head_lr: float = 1e-3,
    batch_size: int = 16,
    width: int = 254,
) -> tuple[tempfile.TemporaryDirectory[str], list[float]]:
    """Return a temporary directory holding the adapted encoder (config and
    weights, loadable with ``AutoModel.from_pretrained``; the caller keeps
    it alive for as long as it needs the files) and each epoch's mean loss."""
    m = mlm_setup(encoder, tok, lr, head_lr)
    model, base, lm_head, vocab, opt = m.model, m.base, m.lm_head, m.vocab, m.opt
    cls_id, sep_id, mask_id, pad_id = m.special
    chunk_sets = [note_chunks(tok, texts, width, sh) for sh in (0, width // 2)]
    steps = sum(-(-len(chunk_sets[e % 2]) // batch_size) for e in range(epochs))
    warm = max(1, steps // 5)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        [
            lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))),
            lambda s: max(0.0, (steps - s) / steps),
        ],
    )
    gen = torch.Generator().manual_seed(seed)
    ce = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng([seed, 2])
    bar = tqdm(total=steps, desc="masked-LM", unit="step", file=sys.stderr, dynamic_ncols=True)
    model.train()
    epoch_losses: list[float] = []
    for epoch in range(1, epochs + 1):
        chunks = chunk_sets[(epoch - 1) % 2]
        order = rng.permutation(len(chunks))
        losses: list[float] = []
        for b0 in range(0, len(order), batch_size):
            rows = [[cls_id, *chunks[i], sep_id] for i in order[b0 : b0 + batch_size]]
            w = max(len(r) for r in rows)
            ids = torch.full((len(rows), w), pad_id, dtype=torch.long)
            for r, row in enumerate(rows):
                ids[r, : len(row)] = torch.tensor(row)
            attn = (ids != pad_id).long()
            special = (ids == cls_id) | (ids == sep_id) | (ids == pad_id)
            inputs, labels = mask_tokens(ids, special, mask_id, vocab, gen)
            hidden = base(input_ids=inputs, attention_mask=attn).last_hidden_state
            picked = labels != IGNORE
            logits = lm_head(hidden[picked])  # the vocabulary projection only where scored
            loss = ce(logits, labels[picked])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-20:]):.3f}")
        epoch_losses.append(float(np.mean(losses)))
        bar.write(f"masked-LM epoch {epoch}: loss {epoch_losses[-1]:.3f}")
    bar.close()
    out = tempfile.TemporaryDirectory(prefix="kiwi-tapt-")
    base.save_pretrained(out.name)
    return out, epoch_losses
