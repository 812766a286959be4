"""The flags of ``kiwi-fhir train``, apart from the CLI module so it stays small.

Only argparse here: ``kiwi-fhir --help`` must not import torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from kiwi_fhir.training import MASK_SCOPES


def add_train_arguments(tr: argparse.ArgumentParser, positive: Callable[[str], int]) -> None:
    """``positive``: the CLI's parser of integers >= 1, shared with other subcommands."""
    tr.add_argument("--data", required=True, metavar="DIR", help="brat .txt/.ann directory")
    held = tr.add_mutually_exclusive_group()
    held.add_argument(
        "--dev-split",
        metavar="FILE",
        help="note IDs held out, one per line (default: the packaged 16-note dev split)",
    )
    held.add_argument(
        "--fold",
        metavar="I/K",
        help="hold out cross-validation fold I of K instead (a seeded partition of "
        "the notes; folds 1/K..K/K together cover them; e.g. 2/5)",
    )
    held.add_argument(
        "--all-notes",
        action="store_true",
        help="train on every note, no dev split (the shipped model, once CV fixed "
        "the recipe); the model card then has no dev figures",
    )
    tr.add_argument(
        "--out",
        required=True,
        metavar="MODEL_DIR",
        help="where the model (config.json, ONNX files, model_card.json) is written",
    )
    tr.add_argument(
        "--encoder",
        metavar="DIR",
        help="BERT-style encoder (default: the packaged all-MiniLM-L6-v2)",
    )
    tr.add_argument("--epochs", type=positive, default=36, help="fine-tuning epochs (default 36)")
    tr.add_argument(
        "--seed", type=int, default=13, help="seed of weights, dropout and batch order (default 13)"
    )
    tr.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the training steps run: auto = a CUDA GPU when torch sees one, else the "
        "CPU (default); export, int8 quantisation and the ONNX dev scores always run on the "
        "CPU, and GPU checkpoints resume on a CPU",
    )
    tr.add_argument(
        "--order-seed",
        type=int,
        help="seed of the batch order only (default: --seed); runs that share --seed "
        "start from identical weights, so their weights can be averaged",
    )
    tr.add_argument(
        "--lr", type=float, default=1.5e-4, help="encoder learning rate (default 1.5e-4)"
    )
    tr.add_argument(
        "--ema",
        type=float,
        default=0.0,
        metavar="DECAY",
        help="export an exponential moving average of the weights (e.g. 0.995; default: off)",
    )
    tr.add_argument(
        "--mask-prob",
        type=float,
        default=0.0,
        metavar="P",
        help="replace this share of word pieces with [MASK] while training (default 0)",
    )
    tr.add_argument(
        "--mask-scope",
        choices=MASK_SCOPES,
        default="non-modifier",
        help="which word pieces --mask-prob may mask: all, all but gold modifiers' "
        "(default), or those of gold main entities outside their modifiers",
    )
    tr.add_argument(
        "--mask-until",
        type=float,
        default=1.0,
        metavar="F",
        help="mask only during this first share of the training steps (default 1: all)",
    )
    tr.add_argument(
        "--mask-drop-labels",
        action="store_true",
        help="with --mask-prob: no modifier label on a word with a masked piece, no "
        "relation pair whose modifier has one (default: keep them)",
    )
    tr.add_argument(
        "--replace-prob",
        type=float,
        default=0.0,
        metavar="P",
        help="each epoch, swap this share of the main entities that hold no other span for "
        "another training mention of the same type (default 0)",
    )
    tr.add_argument(
        "--crf",
        action="store_true",
        help="also train a CRF's tag transitions on the entity layer (decoded by the same "
        "Viterbi; default off)",
    )
    tr.add_argument(
        "--tapt-epochs",
        type=int,
        default=0,
        metavar="N",
        help="masked-LM epochs on the training notes' text before fine-tuning "
        "(task-adaptive pretraining; default 0: none)",
    )
    tr.add_argument(
        "--pretrain-data",
        action="append",
        metavar="DIR",
        help="unlabeled .txt notes for domain-adaptive masked-LM pretraining (whole-word "
        "masking) before fine-tuning; the training split's text is added; repeatable "
        "(default: no pretraining stage)",
    )
    tr.add_argument(
        "--pretrain-steps",
        type=int,
        metavar="N",
        help="optimiser steps of the pretraining stage (batch 16 x 256 pieces; "
        "default: --pretrain-epochs)",
    )
    tr.add_argument(
        "--pretrain-epochs",
        type=float,
        default=2.0,
        metavar="E",
        help="pretraining length in passes over the text when --pretrain-steps is not "
        "given (default 2)",
    )
    tr.add_argument(
        "--pretrain-dir",
        metavar="DIR",
        help="where the adapted encoder and its resumable checkpoint live "
        "(default: MODEL_DIR/pretrained-encoder); an unfinished run there is resumed, "
        "a finished one with the same settings is reused",
    )
    tr.add_argument(
        "--pretrain-only",
        action="store_true",
        help="stop after the pretraining stage (its encoder is then a --encoder for later runs)",
    )
    tr.add_argument(
        "--pseudo-data",
        metavar="DIR",
        help="self-training: notes a teacher model labelled (kiwi-fhir extract --format brat "
        "--out DIR, with the .txt files copied beside the .ann); the encoder is first "
        "fine-tuned on them plus the gold training split, then the normal gold-only "
        "fine-tuning starts from it (default: no self-training stage)",
    )
    tr.add_argument(
        "--pseudo-notes",
        type=int,
        metavar="N",
        help="use the first N notes of --pseudo-data, by file name (default: all)",
    )
    tr.add_argument(
        "--pseudo-epochs",
        type=int,
        default=8,
        metavar="N",
        help="epochs of the gold + pseudo-labelled stage (default 8)",
    )
    tr.add_argument(
        "--distill-teachers",
        metavar="DIR[,DIR...]",
        help="distillation: label the --pseudo-data .txt notes (no .ann needed) with these "
        "model directories' averaged per-word tag distributions and train the stage on them "
        "as soft targets (relations: the ensemble's decoded links, or with --soft-relations "
        "its link probabilities); default: hard labels from --pseudo-data's .ann files",
    )
    tr.add_argument(
        "--soft-relations",
        action="store_true",
        help="with --distill-teachers: the student's relation pairs fit the teachers' "
        "averaged link probability of each candidate pair, not the decoded 0/1 links",
    )
    tr.add_argument(
        "--distill-labels",
        metavar="DIR",
        help="where the teachers' labels are stored (soft.npz, labels.json; default: "
        "MODEL_DIR/distill-labels); labels of the same teachers and notes are reused",
    )
    tr.add_argument(
        "--min-confidence",
        type=float,
        default=0.0,
        metavar="X",
        help="with --distill-teachers: drop notes whose mean highest entity-tag probability "
        "per word is below X (default 0: keep all)",
    )
    tr.add_argument(
        "--selftrain-dir",
        metavar="DIR",
        help="where the self-trained encoder is written (default: MODEL_DIR/selftrained-encoder); "
        "a finished one with the same notes and settings is reused",
    )
    tr.add_argument(
        "--layer-decay",
        type=float,
        default=1.0,
        metavar="F",
        help="learning rate factor per encoder layer, top to bottom (default 1: one rate)",
    )
    tr.add_argument("--max-notes", type=int, help="train on the first N notes only (smoke tests)")
    tr.add_argument("--no-quantize", action="store_true", help="skip the int8 model")
    tr.add_argument(
        "--no-lexicon",
        action="store_true",
        help="no drug-lexicon word feature (default: the drug-named-entity-recognition "
        "dictionary, shipped inside the model directory)",
    )
    tr.add_argument(
        "--problem-lexicon",
        action="store_true",
        help="add an ICD-10-CM problem-lexicon word feature (simple-icd-10-cm terms, "
        "shipped inside the model directory; default: none)",
    )
    tr.add_argument(
        "--problem-lexicon-min-share",
        type=float,
        default=0.5,
        metavar="P",
        help="with --problem-lexicon, drop terms whose matches in the training notes lie "
        "inside gold problems less than this share of the time; 0 keeps every term "
        "(default: 0.5)",
    )
