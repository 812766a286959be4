"""``scripts/ensemble.py``: logit averaging over several model directories."""

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from kiwi_fhir.core import Document
from kiwi_fhir.extractors.onnx import OrtRunner, default_model_dir, pipeline_for, read_model_config

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "note.txt"


def _runner(model: Path) -> OrtRunner:
    cfg = read_model_config(model)
    return OrtRunner(model / cfg["tagger"], model / cfg["relation"], threads=1)


def test_an_ensemble_of_one_model_twice_is_that_model(
    load_script: Callable[[str], ModuleType],
) -> None:
    mod = load_script("ensemble")
    model = default_model_dir()
    pipe = pipeline_for(model, read_model_config(model), 16)
    doc = Document("n", EXAMPLE.read_text(encoding="utf-8"))
    single = pipe.run(_runner(model), [doc])[0]
    double = pipe.run(mod.MeanRunner([_runner(model), _runner(model)]), [doc])[0]
    assert single.relations  # the note has relations, so ``relate`` was exercised
    key = lambda ex: (  # noqa: E731
        [(e.label, e.span) for e in ex.entities],
        [(m.label, m.span) for m in ex.modifiers],
        [(r.entity_id, r.modifier_id) for r in ex.relations],
    )
    assert key(double) == key(single)
    assert np.allclose(
        [r.confidence for r in double.relations], [r.confidence for r in single.relations]
    )
