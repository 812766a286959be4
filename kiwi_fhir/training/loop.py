"""The fine-tuning loop: joint loss over both tag layers and relations."""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from tqdm import tqdm

from kiwi_fhir.core import Extraction
from kiwi_fhir.extractors.decode import FEAT_SIZES, MAIN_TAGS, MOD_TAGS
from kiwi_fhir.extractors.pipeline import BertPipeline
from kiwi_fhir.training import MASK_SCOPES
from kiwi_fhir.training.augment import mention_pool, replace_mentions
from kiwi_fhir.training.checkpoint import Checkpoint, Resumable, save_checkpoint
from kiwi_fhir.training.crf import crf_nll, word_grid
from kiwi_fhir.training.dataset import TRAIN_LEN, SoftLabels, WindowSample, note_samples
from kiwi_fhir.training.device import pick_device
from kiwi_fhir.training.model import RelationHead, Tagger, TorchRunner

MOD_O = MOD_TAGS.index("O")
IGNORE = -100  # CrossEntropyLoss's ignore_index
MAIN_O = MAIN_TAGS.index("O")


def _collate(batch: Sequence[WindowSample], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(s.ids) for s in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    feats = torch.zeros((len(batch), width), dtype=torch.long)
    in_mod = torch.zeros((len(batch), width), dtype=torch.bool)
    in_ent = torch.zeros((len(batch), width), dtype=torch.bool)
    rows, pos, wend, main, mod = [], [], [], [], []
    prow, ppos, pfeat, plab = [], [], [], []
    for r, s in enumerate(batch):
        ids[r, : len(s.ids)] = torch.from_numpy(s.ids)
        mask[r, : len(s.ids)] = 1
        feats[r, : len(s.ids)] = torch.from_numpy(s.feats)
        ends = np.append(s.word_pos[1:], len(s.ids) - 1)
        for k in np.nonzero(s.mod_tags != MOD_O)[0]:
            in_mod[r, s.word_pos[k] : ends[k]] = True
        for k in np.nonzero(s.main_tags != MAIN_O)[0]:
            in_ent[r, s.word_pos[k] : ends[k]] = True
        rows.append(np.full(len(s.word_pos), r))
        pos.append(s.word_pos)
        wend.append(ends)
        main.append(s.main_tags)
        mod.append(s.mod_tags)
        prow.append(np.full(len(s.pair_labels), r))
        ppos.append(s.pair_pos)
        pfeat.append(s.pair_feats)
        plab.append(s.pair_labels)

    def cat(xs: list[NDArray[Any]], dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.concatenate(xs)).to(dtype)

    soft: dict[str, torch.Tensor] = {}
    if any(s.soft_main is not None for s in batch):  # a distillation batch (distill.py)
        soft["smain"] = cat([_target(s.soft_main, s.main_tags, len(MAIN_TAGS)) for s in batch],
                            torch.float32)  # fmt: skip
        soft["smod"] = cat([_target(s.soft_mod, s.mod_tags, len(MOD_TAGS)) for s in batch],
                           torch.float32)  # fmt: skip
    return soft | {
        "ids": ids,
        "mask": mask,
        "feats": feats,
        "in_mod": in_mod,
        "in_ent": in_ent,
        "rows": cat(rows, torch.long),
        "pos": cat(pos, torch.long),
        "wend": cat(wend, torch.long),
        "main": cat(main, torch.long),
        "mod": cat(mod, torch.long),
        "prow": cat(prow, torch.long),
        "ppos": cat(ppos, torch.long),
        "pfeat": cat(pfeat, torch.long),
        "plab": cat(plab, torch.float32),
    }


def _target(probs: NDArray[Any] | None, tags: NDArray[np.int64], n: int) -> NDArray[np.float32]:
    """Per-word target distributions: a teacher's, renormalised (they are
    stored as float16), or the one-hot of the hard tags."""
    if probs is None:
        out = np.zeros((len(tags), n), dtype=np.float32)
        ok = tags >= 0
        out[np.nonzero(ok)[0], tags[ok]] = 1.0
        return out
    p = probs.astype(np.float32)
    result: NDArray[np.float32] = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-6)
    return result


def soft_ce(logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against target distributions over the ``keep``
    rows: KL(target || model) plus the target's entropy, a constant, so the
    same gradients; on one-hot targets it is ``CrossEntropyLoss``."""
    logp = torch.log_softmax(logits[keep], dim=-1)
    return -(target[keep] * logp).sum(dim=-1).mean()


def fit(
    pipe: BertPipeline,
    encoder: Path,
    train_docs: Sequence[Extraction],
    dev_docs: Sequence[Extraction],
    *,
    epochs: int,
    seed: int,
    order_seed: int | None = None,
    batch_size: int = 8,
    lr: float = 1e-4,
    head_lr: float = 1e-3,
    eval_every: int = 5,
    ema: float = 0.0,
    mask_prob: float = 0.0,
    layer_decay: float = 1.0,
    mask_scope: str = "non-modifier",
    mask_until: float = 1.0,
    replace_prob: float = 0.0,
    crf: bool = False,
    mask_drop_labels: bool = False,
    soft: Mapping[str, SoftLabels] | None = None,
    device: str = "cpu",
    checkpoint: Checkpoint | None = None,
) -> tuple[Tagger, RelationHead]:
    """Train and return the networks to export.

    ``ema`` > 0 keeps an exponential moving average of the weights and
    returns it instead of the last step's weights (both are scored on dev
    at the end, so one run measures what the average is worth).
    ``mask_prob`` replaces that share of a window's word-piece ids with
    [MASK] at each step, so the tagger learns to type a span from its
    context and word features rather than memorising the 80 notes' words.
    ``mask_scope`` says which pieces may be masked: "all"; "non-modifier"
    (gold modifiers' pieces are left alone: a masked "no" or "mg" leaves a
    label nothing in the input supports); or "entity" (only gold main
    entities' pieces outside modifiers, where typing from context is the
    skill wanted). Masking stops after the first ``mask_until`` share of the
    steps, so the last ones fit the unmasked input the model will see.
    ``mask_drop_labels`` drops, at each step, the modifier labels of words
    with a masked piece and the relation pairs whose modifier has such a
    word: a masked "no" leaves nothing to learn negation from, and training
    on it anyway is what cost modifiers and relations.
    ``replace_prob`` swaps that share of the free main entities for another
    training mention of the same type, afresh each epoch (``augment``).
    ``layer_decay`` < 1 gives each encoder layer below the top that factor
    less learning rate than the one above it (embeddings lowest).
    ``crf`` adds a CRF likelihood on the entity layer (``crf.py``) to its
    per-word loss; dev scores during training decode with its transitions.
    ``soft`` maps note ids to their teachers' targets (distill.py): those
    notes' words are fitted to the per-word distributions by soft
    cross-entropy, every other note's to its one-hot gold tags; their
    relation pairs to the averaged link probabilities where given (binary
    cross-entropy takes soft targets as they are).
    ``device`` (device.py) is where the steps run; the networks come back on
    the CPU either way. ``checkpoint``: see ``Checkpoint``.
    """
    soft = soft or {}
    if soft and replace_prob > 0:
        raise ValueError("soft labels cannot follow mention replacement (the words change)")
    dev = pick_device(device)
    tagger = Tagger(encoder, len(MAIN_TAGS), len(MOD_TAGS), pipe.featurizer.n_feats, crf=crf)
    head = RelationHead(tagger.hidden_size, FEAT_SIZES)
    tagger.to(dev)
    head.to(dev)
    half = (TRAIN_LEN - 2) // 2
    sample_sets = [
        [
            s
            for d in train_docs
            for s in note_samples(pipe, d, shift=sh, soft=soft.get(d.document.id))
        ]
        for sh in (0, half)
    ]
    pool = mention_pool(train_docs) if replace_prob > 0 else {}
    aug_rng = np.random.default_rng([seed, 1])
    samples = sample_sets[0]
    groups = _encoder_groups(tagger, lr, layer_decay)
    enc_ids = {id(p) for g in groups for p in g["params"]}
    trans = [] if tagger.main_trans is None else [tagger.main_trans]
    fixed = enc_ids | {id(p) for p in trans}
    other = [p for p in tagger.parameters() if id(p) not in fixed] + list(head.parameters())
    # Transitions start at zero and need to reach several units: a faster rate.
    opt = torch.optim.AdamW(
        [*groups, {"params": other, "lr": head_lr}, {"params": trans, "lr": head_lr * 10}],
        weight_decay=0.01,
    )
    steps = sum(math.ceil(len(sample_sets[e % 2]) / batch_size) for e in range(epochs))
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm)))
    )
    ce = nn.CrossEntropyLoss()
    bce = nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(seed if order_seed is None else order_seed)
    mask_gen = torch.Generator().manual_seed(seed)
    mask_tok = pipe.tok.token_to_id("[MASK]")
    if mask_scope not in MASK_SCOPES:
        raise ValueError(f"mask_scope {mask_scope!r}: not one of {MASK_SCOPES}")
    mask_steps = round(steps * mask_until)
    step = 0
    if mask_prob > 0 and mask_tok is None:
        raise ValueError("mask_prob > 0 needs a [MASK] token in the tokenizer")
    mask_id = -1 if mask_tok is None else mask_tok
    averaged = _Ema(tagger, head, ema) if ema > 0 else None
    state = Resumable(tagger, head, opt, sched, rng, aug_rng, mask_gen, averaged, dev)
    first = 1
    if checkpoint is not None and checkpoint.path.is_file():
        first, step = state.load(checkpoint)
        print(f"train: resuming after epoch {first - 1}/{epochs} ({checkpoint.path})",
              file=sys.stderr)  # fmt: skip
    bar = tqdm(total=steps, initial=step, desc="train", unit="step", file=sys.stderr,
               dynamic_ncols=True)  # fmt: skip
    for epoch in range(first, epochs + 1):
        tagger.train()
        head.train()
        samples = sample_sets[(epoch - 1) % 2]
        if replace_prob > 0:  # same cut points as sample_sets, fresh swaps
            shift = (0, half)[(epoch - 1) % 2]
            docs = [replace_mentions(d, pool, replace_prob, aug_rng) for d in train_docs]
            samples = [s for d in docs for s in note_samples(pipe, d, shift=shift)]
        order = rng.permutation(len(samples))
        losses = []
        for b0 in range(0, len(order), batch_size):
            batch = _collate([samples[i] for i in order[b0 : b0 + batch_size]], pipe.pad_id)
            if mask_prob > 0 and step < mask_steps:
                masked = _mask_ids(batch, mask_prob, mask_gen, pipe, mask_id, mask_scope)
                if mask_drop_labels:
                    _drop_masked_labels(batch, masked != batch["ids"])
                batch["ids"] = masked
            batch = {k: v.to(dev) for k, v in batch.items()}  # masked on the CPU: same draws
            step += 1
            main_logits, mod_logits, hidden = tagger(batch["ids"], batch["mask"], batch["feats"])
            word_logits = main_logits[batch["rows"], batch["pos"]]
            loss: Any  # nn.Module calls are untyped; soft_ce's Tensor would make backward() so
            if "smain" in batch:
                loss = soft_ce(word_logits, batch["smain"], batch["main"] != IGNORE)
            else:
                loss = ce(word_logits, batch["main"])
            if tagger.main_trans is not None:
                em, words = word_grid(word_logits, batch["rows"], len(batch["ids"]))
                gold, _ = word_grid(batch["main"], batch["rows"], len(batch["ids"]))
                loss = loss + crf_nll(em, gold, words, tagger.main_trans)
            if (batch["mod"] != IGNORE).any():
                mod_word = mod_logits[batch["rows"], batch["pos"]]
                if "smod" in batch:
                    loss = loss + soft_ce(mod_word, batch["smod"], batch["mod"] != IGNORE)
                else:
                    loss = loss + ce(mod_word, batch["mod"])
            if len(batch["plab"]):
                reps = hidden[batch["prow"][:, None], batch["ppos"]].reshape(len(batch["plab"]), -1)
                loss = loss + bce(head(reps, batch["pfeat"]), batch["plab"])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*tagger.parameters(), *head.parameters()], 1.0)
            opt.step()
            sched.step()
            if averaged is not None:
                averaged.update(tagger, head)
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-20:]):.3f}")
        if dev_docs and (epoch % eval_every == 0 or epoch == epochs):
            from kiwi_fhir.training.report import dev_metrics_with

            live = with_transitions(pipe, tagger)
            m = dev_metrics_with(live, TorchRunner(tagger, head), dev_docs, bootstrap=False)
            head_f1 = {k: round(v["f1"], 3) for k, v in m["headline"].items()}
            bar.write(f"epoch {epoch}: loss {np.mean(losses):.3f} dev exact F1 {head_f1}")
            if averaged is not None and (epoch == epochs or epoch >= epochs * 2 // 3):
                runner = TorchRunner(*averaged.modules)
                avg_pipe = with_transitions(pipe, averaged.modules[0])
                m = dev_metrics_with(avg_pipe, runner, dev_docs, bootstrap=False)
                head_f1 = {k: round(v["f1"], 3) for k, v in m["headline"].items()}
                bar.write(f"epoch {epoch}: EMA weights dev exact F1 {head_f1}")
        if checkpoint is not None:
            save_checkpoint(checkpoint, state, epoch, step)
    bar.close()
    final = averaged.modules if averaged is not None else (tagger, head)
    final[0].cpu()
    final[1].cpu()
    return final


def transitions(tagger: Tagger) -> tuple[tuple[float, ...], ...]:
    """The entity layer's CRF transitions as config.json stores them."""
    if tagger.main_trans is None:
        return ()
    rows = tagger.main_trans.detach().tolist()
    return tuple(tuple(round(float(x), 4) for x in r) for r in rows)


def with_transitions(pipe: BertPipeline, tagger: Tagger) -> BertPipeline:
    if tagger.main_trans is None:
        return pipe
    cfg = dataclasses.replace(pipe.cfg, main_transitions=transitions(tagger))
    return BertPipeline(pipe.tok, cfg, pipe.featurizer)


def _encoder_groups(tagger: Tagger, lr: float, decay: float) -> list[dict[str, Any]]:
    params = list(tagger.encoder.named_parameters())
    if decay == 1.0:
        return [{"params": [p for _, p in params], "lr": lr}]
    n_layers = int(tagger.encoder.config.num_hidden_layers)
    by_depth: dict[int, list[nn.Parameter]] = {}
    for name, p in params:
        parts = name.split(".")
        if parts[0] == "embeddings":
            depth = 0
        elif parts[:2] == ["encoder", "layer"]:
            depth = int(parts[2]) + 1
        else:  # pooler: unused by the tagger
            depth = n_layers
        by_depth.setdefault(depth, []).append(p)
    return [
        {"params": ps, "lr": lr * decay ** (n_layers - d)} for d, ps in sorted(by_depth.items())
    ]


def _mask_ids(
    batch: dict[str, torch.Tensor],
    prob: float,
    gen: torch.Generator,
    pipe: BertPipeline,
    mask_id: int,
    scope: str,
) -> torch.Tensor:
    ids = batch["ids"]
    hit = torch.rand(ids.shape, generator=gen) < prob
    hit &= (batch["mask"] == 1) & (ids != pipe.cls_id) & (ids != pipe.sep_id)
    if scope != "all":
        hit &= ~batch["in_mod"]
    if scope == "entity":
        hit &= batch["in_ent"]
    return torch.where(hit, torch.full_like(ids, mask_id), ids)


def _drop_masked_labels(batch: dict[str, torch.Tensor], hit: torch.Tensor) -> None:
    """In place: modifier labels of words with a masked piece become
    IGNORE; relation pairs whose modifier spans such a word are removed."""
    rows, pos = batch["rows"], batch["pos"]
    before = torch.cat([torch.zeros_like(hit[:, :1], dtype=torch.long), hit.long().cumsum(1)], 1)
    word_hit = (before[rows, batch["wend"]] - before[rows, pos]) > 0
    batch["mod"] = torch.where(word_hit, torch.full_like(batch["mod"], IGNORE), batch["mod"])
    at_first = torch.zeros_like(hit, dtype=torch.long)
    at_first[rows, pos] = word_hit.long()
    words_before = torch.cat([torch.zeros_like(at_first[:, :1]), at_first.cumsum(1)], 1)
    prow, m_first, m_last = batch["prow"], batch["ppos"][:, 2], batch["ppos"][:, 3]
    lost = (words_before[prow, m_last + 1] - words_before[prow, m_first]) > 0
    for key in ("prow", "ppos", "pfeat", "plab"):
        batch[key] = batch[key][~lost]


class _Ema:
    """Weight average with the usual warm-up, so early random-ish weights
    fade quickly instead of dominating a long horizon."""

    def __init__(self, tagger: Tagger, head: RelationHead, decay: float) -> None:
        self.decay = decay
        self.steps = 0
        self.modules = (copy.deepcopy(tagger), copy.deepcopy(head))
        for m in self.modules:
            m.requires_grad_(False)

    @torch.no_grad()
    def update(self, tagger: Tagger, head: RelationHead) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for avg, live in zip(self.modules, (tagger, head), strict=True):
            for pa, pl in zip(avg.parameters(), live.parameters(), strict=True):
                pa.mul_(d).add_(pl.detach(), alpha=1 - d)
            for ba, bl in zip(avg.buffers(), live.buffers(), strict=True):
                ba.copy_(bl)
