"""CRF transitions on the entity layer: the training loss and the model config."""

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from kiwi_fhir.errors import ModelError
from kiwi_fhir.extractors.decode import MAIN_TAGS
from kiwi_fhir.extractors.onnx import default_model_dir, pipeline_for, read_model_config


def _model_copy(tmp_path: Path, transitions: object) -> Path:
    src = default_model_dir()
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["main_transitions"] = transitions
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_model_config_transitions_reach_the_pipeline(tmp_path: Path) -> None:
    n = len(MAIN_TAGS)
    rows = [[0.1 * (r - c) for c in range(n)] for r in range(n)]
    model = _model_copy(tmp_path, rows)
    pc = pipeline_for(model, read_model_config(model), 4).cfg
    assert np.allclose(np.asarray(pc.main_transitions), rows)
    for k, bad in enumerate(([[1.0] * n] * (n - 1), [["x"] * n] * n)):
        model = _model_copy(tmp_path / f"bad{k}", bad)
        with pytest.raises(ModelError, match="main_transitions"):
            pipeline_for(model, read_model_config(model), 4)


def test_word_grid_lays_each_window_out_in_order() -> None:
    torch = pytest.importorskip("torch", reason="needs the train extra")
    from kiwi_fhir.training.crf import word_grid

    rows = torch.tensor([0, 0, 0, 2, 2])
    flat = torch.tensor([1, 2, 3, 4, 5])
    grid, mask = word_grid(flat, rows, 3)
    assert grid.tolist() == [[1, 2, 3], [0, 0, 0], [4, 5, 0]]
    assert mask.tolist() == [[True] * 3, [False] * 3, [True, True, False]]


def test_crf_nll_matches_brute_force_over_all_paths() -> None:
    torch = pytest.importorskip("torch", reason="needs the train extra")
    from kiwi_fhir.training.crf import crf_nll

    torch.manual_seed(0)
    n_tags, width = 3, 4
    em = torch.randn(2, width, n_tags)
    trans = torch.randn(n_tags, n_tags)
    tags = torch.tensor([[2, 0, 1, 1], [1, 2, 0, 0]])
    mask = torch.tensor([[True] * 4, [True, True, True, False]])

    def score(row: int, path: tuple[int, ...]) -> float:
        s = float(em[row, 0, path[0]])
        for k in range(1, len(path)):
            s += float(trans[path[k - 1], path[k]] + em[row, k, path[k]])
        return s

    want = 0.0
    for row, n in ((0, 4), (1, 3)):
        gold = tuple(int(t) for t in tags[row, :n])
        log_z = math.log(
            sum(math.exp(score(row, p)) for p in itertools.product(range(n_tags), repeat=n))
        )
        want += log_z - score(row, gold)
    got = crf_nll(em, tags, mask, trans)
    assert got.item() == pytest.approx(want / 7, rel=1e-5)
    # gradients reach the transitions, and an empty batch is a zero loss
    trans.requires_grad_(True)
    crf_nll(em, tags, mask, trans).backward()
    assert trans.grad is not None and trans.grad.abs().sum() > 0
    assert crf_nll(em[:0], tags[:0], mask[:0], trans).item() == 0.0
