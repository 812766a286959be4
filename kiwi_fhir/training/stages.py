"""The optional stages before the gold fine-tuning of ``kiwi-fhir train``.

Each returns the encoder directory the next stage starts from: masked-LM
pretraining on unlabeled text, or a gold + pseudo-labelled stage (hard labels
from one teacher's brat output, or an ensemble's averaged distributions) whose
encoder is kept and whose heads are dropped, so the shipped networks keep
their size and the last steps fit gold alone. Finished stages are reused by
digest (``selftrain.json``), unfinished ones resume from their checkpoints.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiwi_fhir.errors import InputError
from kiwi_fhir.extractors.pipeline import BertPipeline

if TYPE_CHECKING:
    from kiwi_fhir.training.dataset import SoftLabels

#: fit() settings that do not change what a finished stage holds, so a stage
#: trained on a GPU is reused by a CPU rerun.
_NOT_DIGESTED = ("order_seed", "device")


def pretrain_stage(
    args: argparse.Namespace, encoder: Path, tok: Any, train_docs: list[Any], out: Path
) -> Path:
    """Masked-LM on the unlabeled notes plus the training split (never the dev notes)."""
    from kiwi_fhir.training.pretrain import PretrainConfig, pretrain, read_texts

    steps, epochs = args.pretrain_steps, None
    if steps is None:
        if args.pretrain_epochs <= 0:
            raise InputError(f"--pretrain-epochs {args.pretrain_epochs}: must be above 0")
        steps, epochs = 1, args.pretrain_epochs
    if steps < 1:
        raise InputError(f"--pretrain-steps {steps}: must be 1 or more")
    texts = read_texts([Path(d) for d in args.pretrain_data])
    texts += [d.document.text for d in train_docs]
    where = Path(args.pretrain_dir) if args.pretrain_dir else out / "pretrained-encoder"
    cfg = PretrainConfig(steps=steps, seed=args.seed)
    return pretrain(encoder, tok, texts, where, cfg, epochs=epochs, device=args.device)


def _encoder_stage(
    args: argparse.Namespace,
    pipe: BertPipeline,
    encoder: Path,
    train_docs: list[Any],
    dev_docs: list[Any],
    pseudo: list[Any],
    where: Path,
    fit_kwargs: dict[str, Any],
    *,
    soft: dict[str, SoftLabels] | None = None,
    labels_key: str | None = None,
) -> Path:
    """The gold + pseudo stage both self-training and distillation run (hard
    labels, or the teachers' distributions in ``soft``); keeps its encoder."""
    from kiwi_fhir.training.loop import fit
    from kiwi_fhir.training.selftrain import selftrain

    settings: dict[str, Any] = {"epochs": args.pseudo_epochs, "encoder": encoder.name,
                                **{k: v for k, v in fit_kwargs.items()
                                   if k not in _NOT_DIGESTED}}  # fmt: skip
    if labels_key is not None:
        settings["soft"] = labels_key

    def fit_encoder(docs: Any, ck: Any) -> Any:
        tagger, _ = fit(pipe, encoder, docs, dev_docs, epochs=args.pseudo_epochs, soft=soft,
                        checkpoint=ck, **fit_kwargs)  # fmt: skip
        return tagger

    return selftrain(fit_encoder, encoder, train_docs, pseudo, where, settings)


def selftrain_stage(
    args: argparse.Namespace,
    pipe: BertPipeline,
    encoder: Path,
    train_docs: list[Any],
    dev_docs: list[Any],
    out: Path,
    fit_kwargs: dict[str, Any],
) -> Path:
    """Gold + teacher-labelled notes first; the gold-only fine-tuning follows."""
    from kiwi_fhir.training.selftrain import load_pseudo

    pseudo = load_pseudo(Path(args.pseudo_data), [*train_docs, *dev_docs], args.pseudo_notes)
    where = Path(args.selftrain_dir) if args.selftrain_dir else out / "selftrained-encoder"
    return _encoder_stage(args, pipe, encoder, train_docs, dev_docs, pseudo, where, fit_kwargs)


def teacher_names(teachers: str | None) -> list[str] | None:
    return [Path(t).name for t in teachers.split(",")] if teachers else None


def distill_stage(
    args: argparse.Namespace,
    pipe: BertPipeline,
    encoder: Path,
    train_docs: list[Any],
    dev_docs: list[Any],
    out: Path,
    fit_kwargs: dict[str, Any],
) -> Path:
    """Gold + notes with the teachers' averaged distributions; gold-only follows."""
    from kiwi_fhir.training.distill import labelled, read_unlabeled

    if not 0.0 <= args.min_confidence <= 1.0:
        raise InputError(f"--min-confidence {args.min_confidence}: must be in [0, 1]")
    if args.replace_prob > 0:
        raise InputError("--distill-teachers cannot be combined with --replace-prob")
    teachers = [Path(t) for t in args.distill_teachers.split(",") if t]
    gold_ids = {d.document.id for d in [*train_docs, *dev_docs]}
    notes = read_unlabeled(Path(args.pseudo_data), gold_ids, args.pseudo_notes)
    where = Path(args.distill_labels) if args.distill_labels else out / "distill-labels"
    pseudo, soft, conf = labelled(teachers, notes, where)
    kept = [d for d in pseudo if conf[d.document.id] >= args.min_confidence]
    if not kept:
        raise InputError(f"--min-confidence {args.min_confidence}: no pseudo note left")
    print(f"distill: {len(kept)} of {len(pseudo)} notes at confidence >= {args.min_confidence}")
    enc_dir = Path(args.selftrain_dir) if args.selftrain_dir else out / "distilled-encoder"
    labels_key = json.loads((where / "labels.json").read_text(encoding="utf-8"))["digest"]
    if args.soft_relations:  # a stage of other targets: not reused for the hard-link one
        labels_key += ":soft-relations"
    targets = {
        i: soft[i] if args.soft_relations else soft[i].hard_links()
        for i in (d.document.id for d in kept)
    }
    return _encoder_stage(args, pipe, encoder, train_docs, dev_docs, kept, enc_dir, fit_kwargs,
                          soft=targets, labels_key=labels_key)  # fmt: skip
