"""Distillation stage: unlabeled notes labelled by an ensemble of teachers.

Each teacher is a trained model directory (same tokenizer, windows and word
features). Their per-word tag distributions of both BIO layers are averaged
(probabilities, not logits) and become the student's targets: soft
cross-entropy at word positions (``loop.soft_ce``). Relation pairs are
built from the ensemble's decoded spans, as the pipeline builds them; each
candidate pair's averaged link probability is kept too, so the student's
pairs can fit it (``--soft-relations``) instead of the decoded 0/1 links.

The labels of a set of notes are stored once (``soft.npz``: float16 per
word and note; ``labels.json``: the decoded spans, the pairs' link
probabilities, a confidence per note and a digest of teachers, notes and
``LABELS_FORMAT``) and reused by any later run with the same
teachers and notes. The student stage itself is ``selftrain.selftrain``
with those targets: gold + pseudo notes, then the normal gold-only
fine-tuning from the adapted encoder.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from kiwi_fhir.core import Document, Entity, Extraction, Modifier, Relation
from kiwi_fhir.errors import InputError
from kiwi_fhir.extractors.decode import MAIN_TAGS, MOD_TAGS
from kiwi_fhir.extractors.encoding import batch_windows
from kiwi_fhir.extractors.onnx import OrtRunner, pipeline_for, read_model_config
from kiwi_fhir.extractors.pipeline import BertPipeline
from kiwi_fhir.training.dataset import SoftLabels

Floats = NDArray[np.float32]
SOFT_FILE, META_FILE = "soft.npz", "labels.json"
# Part of the labels' digest: a folder written before the pairs' link
# probabilities were kept (format 1) is relabelled, not reused without them.
LABELS_FORMAT = 2
Links = dict[tuple[str, str], float]


def average(dists: Sequence[Floats]) -> Floats:
    """The mean of several models' probability distributions (same shape)."""
    out: Floats = np.mean(np.stack(dists), axis=0).astype(np.float32)
    return out


def _softmax(x: Floats) -> Floats:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    out: Floats = e / e.sum(axis=-1, keepdims=True)
    return out


class MeanProbRunner:
    """A pipeline ``Runner`` over several teachers. ``tag`` returns the log
    of their averaged tag probabilities (the pipeline's softmax of it is
    that average) and their hidden states side by side; ``relate`` splits
    the span representations back per teacher and returns the logit of
    the averaged relation probability."""

    def __init__(self, runners: Sequence[Any]) -> None:
        self.runners = list(runners)

    def tag(
        self, input_ids: NDArray[np.int64], mask: NDArray[np.int64], feats: NDArray[np.int64]
    ) -> tuple[Floats, Floats, Floats]:
        outs = [r.tag(input_ids, mask, feats) for r in self.runners]
        main = np.log(average([_softmax(o[0]) for o in outs]) + 1e-12)
        mod = np.log(average([_softmax(o[1]) for o in outs]) + 1e-12)
        return main, mod, np.concatenate([o[2] for o in outs], axis=-1)

    def relate(self, span_repr: Floats, feats: NDArray[np.int64]) -> Floats:
        n, rows = len(self.runners), len(span_repr)
        parts = span_repr.reshape(rows, 4, n, -1)
        probs = []
        for i, r in enumerate(self.runners):
            own = np.ascontiguousarray(parts[:, :, i].reshape(rows, -1))
            probs.append(1 / (1 + np.exp(-r.relate(own, feats))))
        p = np.clip(average(probs), 1e-6, 1 - 1e-6)
        out: Floats = np.log(p / (1 - p)).astype(np.float32)
        return out


@dataclass(frozen=True)
class Teachers:
    pipe: BertPipeline
    runner: MeanProbRunner
    key: str  # digest of the teachers' network files


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_teachers(dirs: Sequence[Path], threads: int = 2) -> Teachers:
    """fp32 taggers where a directory has one (else int8); decoding is the
    first teacher's (boundary rules, thresholds)."""
    if not dirs:
        raise InputError("--distill-teachers: no model directories given")
    runners, key, first = [], hashlib.sha256(), None
    for d in dirs:
        cfg = read_model_config(d)
        tagger = cfg.get("tagger_fp32") or cfg["tagger"]
        if not (d / tagger).is_file():
            tagger = cfg["tagger"]
        same = (cfg["max_len"], cfg["stride"], _sha(d / cfg["tokenizer"]), _lexicons(d, cfg))
        if first is None:
            first = same
        elif same != first:
            raise InputError(f"--distill-teachers {d}: tokenizer, windows or lexicons differ")
        runners.append(OrtRunner(d / tagger, d / cfg["relation"], threads))
        for f in (tagger, cfg["relation"]):
            key.update(_sha(d / f).encode())
    pipe = pipeline_for(dirs[0], read_model_config(dirs[0]), 16)
    return Teachers(pipe, MeanProbRunner(runners), key.hexdigest())


def _lexicons(d: Path, cfg: dict[str, Any]) -> tuple[str, ...]:
    wf = cfg.get("word_features") or {}
    names = (wf.get("lexicon"), wf.get("problem_lexicon"))
    return tuple(_sha(d / n) if n else "" for n in names)


def label_note(t: Teachers, doc: Document) -> tuple[Extraction, Floats, Floats, Links]:
    """The ensemble's decoded extraction, per-word distributions and
    candidate pairs' link probabilities of one note, from one pass of each
    teacher (the pipeline's own window loop)."""
    pipe, note = t.pipe, t.pipe.encode(doc.text)
    main = np.zeros((note.n_words, len(MAIN_TAGS)), np.float32)
    mod = np.zeros((note.n_words, len(MOD_TAGS)), np.float32)
    hidden: dict[tuple[int, int], Floats] = {}
    ks = list(range(len(note.windows))) if note.n_words else []
    for b0 in range(0, len(ks), pipe.cfg.batch_size):
        chunk = ks[b0 : b0 + pipe.cfg.batch_size]
        ids, mask, feats = batch_windows(
            [(note, k) for k in chunk], pipe.cls_id, pipe.sep_id, pipe.pad_id
        )
        main_l, mod_l, hid = t.runner.tag(ids, mask, feats)
        for row, k in enumerate(chunk):
            owned = np.nonzero(note.owner[note.word_first] == k)[0]
            pos = note.word_first[owned] - note.windows[k][0] + 1
            main[owned] = _softmax(main_l[row, pos])
            mod[owned] = _softmax(mod_l[row, pos])
            hidden[(0, k)] = hid[row]
    links: Links = {}
    ex = pipe._decode(
        t.runner, doc, note, 0, main, mod, hidden, None, "ensemble", "distill", pair_scores=links
    )
    return ex, main, mod, links


def confidence(main: Floats) -> float:
    """Mean over words of the entity layer's highest probability."""
    return float(main.max(axis=1).mean()) if len(main) else 1.0


def read_unlabeled(where: Path, exclude: set[str], limit: int | None) -> list[Document]:
    if not where.is_dir():
        raise InputError(f"--pseudo-data {where}: not a directory")
    paths = [p for p in sorted(where.glob("*.txt")) if p.stem not in exclude]
    if not paths:
        raise InputError(f"--pseudo-data {where}: no .txt notes")
    return [Document(p.stem, p.read_text(encoding="utf-8")) for p in paths[:limit]]


def labelled(
    teacher_dirs: Sequence[Path], docs: Sequence[Document], where: Path
) -> tuple[list[Extraction], dict[str, SoftLabels], dict[str, float]]:
    """Label ``docs`` with the teachers, or reuse the labels ``where`` holds."""
    h = hashlib.sha256(f"labels format {LABELS_FORMAT}".encode())
    for d in teacher_dirs:  # cheap part of the key first: the files are hashed below
        h.update(str(d.resolve()).encode())
    for doc in docs:
        h.update(doc.id.encode() + b"\0" + doc.text.encode())
    meta_path = where / META_FILE
    prior = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    # The training threads setting also sizes labelling (a GPU machine's 16 cores).
    teachers = load_teachers(teacher_dirs, int(os.environ.get("KIWI_FHIR_TRAIN_THREADS", "2")))
    h.update(teachers.key.encode())
    key = h.hexdigest()
    if prior.get("digest") == key:
        print(f"distill: {where} already holds these notes' labels; reusing them", file=sys.stderr)
        return _read(where, prior, docs)
    t0, exs, soft = time.time(), [], {}
    for doc in tqdm(docs, desc="teachers", unit="note", file=sys.stderr, dynamic_ncols=True):
        ex, main, mod, links = label_note(teachers, doc)
        exs.append(ex)
        soft[doc.id] = SoftLabels(main.astype(np.float16), mod.astype(np.float16), links)
    where.mkdir(parents=True, exist_ok=True)
    arrays = {f"{i}/e": s.main for i, s in soft.items()} | {
        f"{i}/m": s.mod for i, s in soft.items()
    }
    np.savez_compressed(where / SOFT_FILE, **arrays)  # type: ignore[arg-type]
    conf = {i: round(confidence(s.main.astype(np.float32)), 5) for i, s in soft.items()}
    meta = {
        "digest": key,
        "format": LABELS_FORMAT,
        "teachers": [str(d) for d in teacher_dirs],
        "minutes": round((time.time() - t0) / 60, 1),
        "notes": [
            _ann(ex)
            | {"links": [[e, m, p] for (e, m), p in soft[ex.document.id].links.items()]}
            | {"confidence": conf[ex.document.id]}
            for ex in exs
        ],
    }
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta), encoding="utf-8")
    tmp.replace(meta_path)
    return exs, soft, conf


def _ann(ex: Extraction) -> dict[str, Any]:
    return {
        "id": ex.document.id,
        "entities": [[e.id, e.label, e.start, e.end] for e in ex.entities],
        "modifiers": [[m.id, m.label, m.start, m.end] for m in ex.modifiers],
        "relations": [[r.entity_id, r.modifier_id] for r in ex.relations],
    }


def _read(
    where: Path, meta: dict[str, Any], docs: Sequence[Document]
) -> tuple[list[Extraction], dict[str, SoftLabels], dict[str, float]]:
    by_id = {n["id"]: n for n in meta["notes"]}
    exs, conf = [], {}
    with np.load(where / SOFT_FILE) as z:
        soft = {
            d.id: SoftLabels(
                z[f"{d.id}/e"], z[f"{d.id}/m"], {(e, m): p for e, m, p in by_id[d.id]["links"]}
            )
            for d in docs
        }
    for doc in docs:
        n, t = by_id[doc.id], doc.text
        exs.append(
            Extraction(
                document=doc,
                entities=tuple(Entity(i, lab, a, b, t[a:b]) for i, lab, a, b in n["entities"]),
                modifiers=tuple(Modifier(i, lab, a, b, t[a:b]) for i, lab, a, b in n["modifiers"]),
                relations=tuple(Relation(e, m) for e, m in n["relations"]),
            )
        )
        conf[doc.id] = float(n["confidence"])
    return exs, soft, conf


def ensemble_dev_metrics(teacher_dirs: Sequence[Path], dev: Sequence[Extraction]) -> dict[str, Any]:
    """The averaged teachers scored on dev as ``kiwi-fhir eval`` scores a model."""
    from kiwi_fhir.training.report import dev_metrics_with

    t = load_teachers(teacher_dirs)
    return dev_metrics_with(t.pipe, t.runner, dev)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kiwi_fhir.training.distill DIR,DIR[,...] [--data DIR]``:
    the ensemble teacher's dev metrics (headline F1 with 95% CIs) as JSON."""
    import argparse

    from kiwi_fhir.corpus import default_data_dir, load_corpus, split

    ap = argparse.ArgumentParser(description="score an ensemble of teachers on dev")
    ap.add_argument("teachers", help="model directories, comma-separated")
    ap.add_argument("--data", type=Path, default=default_data_dir())
    a = ap.parse_args(argv)
    if a.data is None:
        raise InputError("no data: pass --data")
    _, dev = split(load_corpus(a.data))
    m = ensemble_dev_metrics([Path(d) for d in a.teachers.split(",")], dev)
    head = {
        k: [round(v["f1"], 4), [round(x, 4) for x in v["ci"]]] for k, v in m["headline"].items()
    }
    print(json.dumps({"teachers": a.teachers.split(","), "dev_f1_ci": head}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
