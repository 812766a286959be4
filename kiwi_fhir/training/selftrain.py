"""Self-training stage: fine-tune on gold plus a teacher's pseudo-labelled notes.

The teacher is any model directory: ``kiwi-fhir extract --format brat`` over
unlabeled notes writes ``.ann`` files beside copies of the ``.txt`` files,
and that directory is ``--pseudo-data``. This stage fine-tunes the encoder on
the gold training split plus those notes (entities, modifiers and relations
as the teacher predicted them), keeps only the encoder, and hands it to the
normal gold-only fine-tuning as its starting point, so the shipped tagger is
the same size and shape as without the stage and the last steps fit gold
alone. Hard labels, not the soft distributions of a distillation: the
pipeline decodes spans, and brat is what it writes.

A finished stage is reused when its inputs match (a digest of the pseudo
notes, the gold split and the settings), so a killed run restarts at the
gold stage rather than redoing an hour of CPU time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kiwi_fhir.core import Extraction
from kiwi_fhir.corpus import load_corpus
from kiwi_fhir.errors import InputError

if TYPE_CHECKING:
    from kiwi_fhir.training.checkpoint import Checkpoint

DONE = "selftrain.json"


def load_pseudo(
    pseudo_dir: Path, gold: Sequence[Extraction], limit: int | None
) -> list[Extraction]:
    """The teacher-labelled notes, without any that share an id with a gold note."""
    if not pseudo_dir.is_dir():
        raise InputError(f"--pseudo-data {pseudo_dir}: not a directory")
    gold_ids = {d.document.id for d in gold}
    docs = [d for d in load_corpus(pseudo_dir) if d.document.id not in gold_ids]
    if not docs:
        raise InputError(f"--pseudo-data {pseudo_dir}: no .txt + .ann pairs")
    return docs[:limit] if limit else docs


def digest(docs: Sequence[Extraction], settings: dict[str, object]) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for d in docs:
        h.update(d.document.id.encode())
        h.update(d.document.text.encode())
        for e in d.entities:
            h.update(f"{e.label}:{e.start}:{e.end}".encode())
        for m in d.modifiers:
            h.update(f"{m.label}:{m.start}:{m.end}".encode())
        h.update(str(len(d.relations)).encode())
    return h.hexdigest()


def selftrain(
    fit_encoder: Callable[[Sequence[Extraction], Checkpoint], object],
    encoder: Path,
    gold: Sequence[Extraction],
    pseudo: Sequence[Extraction],
    out: Path,
    settings: dict[str, object],
) -> Path:
    """Run (or reuse) the stage; returns the directory of the adapted encoder.

    ``fit_encoder`` trains on the given notes, saving epochs to the given
    checkpoint (removed once the encoder is saved), and returns the tagger,
    whose ``encoder`` attribute is a transformers model."""
    from kiwi_fhir.training.checkpoint import CHECKPOINT, Checkpoint, fit_key

    key = digest([*gold, *pseudo], settings)
    done = out / DONE
    if done.is_file():
        prior = json.loads(done.read_text(encoding="utf-8"))
        if prior.get("digest") == key:
            print(f"selftrain: {out} already holds this stage's encoder; reusing it",
                  file=sys.stderr)  # fmt: skip
            return out
        raise InputError(f"--selftrain-dir {out}: holds an encoder from other settings or data")
    t0 = time.time()
    print(f"selftrain: {len(gold)} gold + {len(pseudo)} pseudo-labelled notes", file=sys.stderr)
    docs = [*gold, *pseudo]
    ck = Checkpoint(out / CHECKPOINT, fit_key(settings, encoder, docs))
    tagger = fit_encoder(docs, ck)
    out.mkdir(parents=True, exist_ok=True)
    tagger.encoder.save_pretrained(str(out))  # type: ignore[attr-defined]
    shutil.copy(encoder / "tokenizer.json", out / "tokenizer.json")
    meta = {
        "digest": key,
        "settings": settings,
        "gold_notes": len(gold),
        "pseudo_notes": len(pseudo),
        "pseudo_entities": sum(len(d.entities) for d in pseudo),
        "source_encoder": encoder.name,
        "minutes": round((time.time() - t0) / 60, 1),
    }
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    tmp.replace(done)
    ck.path.unlink(missing_ok=True)
    return out
