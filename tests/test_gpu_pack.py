"""``scripts/gpu_pack.py`` and ``scripts/gpu_distill.sh``: the GPU trip.

The device script is run here for real, on the CPU, with a one-layer encoder
and a few notes: the same commands a lent GPU runs, minus the GPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KIWI_FHIR_SHARED", ROOT.parent / "shared"))


@pytest.fixture
def gp(load_script: Callable[[str], ModuleType]) -> ModuleType:
    return load_script("gpu_pack")


def test_fp16_encoder_still_trains_in_fp32(
    gp: ModuleType, tiny_encoder: Path, tmp_path: Path
) -> None:
    """Regression: transformers 5 keeps a checkpoint's dtype, so an fp16 encoder
    gave an fp16 tagger (and fp16 masked-LM pretraining) until model.py and
    tapt.py cast to fp32."""
    import torch
    from safetensors.torch import load_file

    from kiwi_fhir.extractors.encoding import load_tokenizer
    from kiwi_fhir.training.model import Tagger
    from kiwi_fhir.training.tapt import mlm_setup

    half = tmp_path / "half"
    gp.fp16_encoder(tiny_encoder, half)
    cfg = json.loads((half / "config.json").read_text(encoding="utf-8"))
    cfg.pop("dtype", None)  # as in all-MiniLM-L6-v2's config: the weights' dtype decides
    (half / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    stored = load_file(str(half / "model.safetensors"))
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    assert (half / "tokenizer.json").read_bytes() == (tiny_encoder / "tokenizer.json").read_bytes()

    tagger = Tagger(half, 3, 3, 2)
    assert {p.dtype for p in tagger.parameters()} == {torch.float32}
    emb = tagger.encoder.embeddings.word_embeddings.weight
    full = load_file(str(tiny_encoder / "model.safetensors"))
    key = next(k for k in full if k.endswith("word_embeddings.weight"))
    assert torch.equal(emb, full[key].half().float())  # the fp16 rounding, nothing else
    mlm = mlm_setup(half, load_tokenizer(half / "tokenizer.json"), 1e-4, 1e-3)
    assert {p.dtype for p in mlm.model.parameters()} == {torch.float32}


def _repo_with_bulky(gp: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = tmp_path / "repo"
    for rel in (*gp.BULKY, "README.md"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(b"x" * 1000)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    monkeypatch.setattr(gp, "ROOT", repo)
    monkeypatch.setattr(gp, "PACK", repo / ".gpu")
    monkeypatch.setattr(gp, "ASIDE", repo / ".gpu-aside")
    return repo


def test_aside_and_restore_move_the_bulky_files_and_count_what_travels(
    gp: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = _repo_with_bulky(gp, tmp_path, monkeypatch)
    (repo / ".gitignore").write_text("/.gpu-aside/\n")
    assert gp.travelling_bytes(repo / "none") == 3000 + len("/.gpu-aside/\n")
    gp.main(["aside"])
    assert not any((repo / b).exists() for b in gp.BULKY)
    assert gp.travelling_bytes(repo / "none") == 1000 + len("/.gpu-aside/\n")
    assert "a call now sends" in capsys.readouterr().out
    gp.main(["restore"])
    assert all((repo / b).read_bytes() == b"x" * 1000 for b in gp.BULKY)
    (repo / gp.BULKY[0]).unlink()
    with pytest.raises(SystemExit, match="git checkout"):
        gp.main(["restore"])  # a file neither aside nor in place is named


def test_unpack_refuses_a_folder_without_the_run_files(gp: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no tagger\.int8\.onnx\.part"):
        gp.main(["unpack", str(tmp_path), str(tmp_path / "m")])


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "data" / "mtsamples" / "train").is_dir(), reason="no shared data")
def test_device_script_runs_end_to_end_and_unpacks_to_a_working_model(
    gp: ModuleType, tiny_encoder: Path, tmp_path: Path
) -> None:
    pack = tmp_path / "pack"
    gp.fp16_encoder(tiny_encoder, pack / "encoder")
    gp.notes_archive(SHARED, pack / "notes.tar.gz")
    (pack / "whl").mkdir()
    _copy_wheel(gp, pack / "whl")
    out = tmp_path / "out"
    env = os.environ | {
        "OUT": str(out),
        "KIWI_GPU_PACK": str(pack),
        "KIWI_GPU_WORK": str(tmp_path / "work"),
        "TEACHER_SEEDS": "13 14",
        "EPOCHS": "1",
        "KIWI_GPU_ARGS": "--max-notes 3",
        "KIWI_GPU_PSEUDO_NOTES": "2",
        "STUDENT_ARGS": "--soft-relations",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # python3 = this one
    }
    run = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_distill.sh")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    back = sorted(p.name for p in out.iterdir())
    assert back == ["gpu_distill.log", "model.tar.gz", "tagger.int8.onnx.part00", "teachers.tar.gz"]
    assert len(back) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in out.iterdir())

    model = tmp_path / "model"
    gp.main(["unpack", str(out), str(model)])
    for name in (
        "config.json",
        "model_card.json",
        "relation.onnx",
        "ensemble.json",
        "teachers/teacher-s13.json",
        "teachers/teacher-s14.json",
        "gpu_distill.log",
    ):
        assert (model / name).is_file(), name  # fmt: skip
    from kiwi_fhir.core import Document
    from kiwi_fhir.extractors.onnx import OnnxExtractor

    note = "Patient denies chest pain. Started aspirin 81 mg daily."
    card = json.loads((model / "model_card.json").read_text(encoding="utf-8"))
    assert card["distill_teachers"] == ["teacher-s13", "teacher-s14"]
    assert card["soft_relations"]  # STUDENT_ARGS reached the student
    assert "int8" in card["dev_metrics"]  # scored where it was trained
    assert "ner" in json.loads((model / "ensemble.json").read_text(encoding="utf-8"))["dev_f1_ci"]
    [ex] = OnnxExtractor(model, precision="int8").extract([Document("n1", note)])
    for e in ex.entities:
        assert note[e.start : e.end] == e.text


def _copy_wheel(gp: ModuleType, dest: Path) -> None:
    """The wheel ``gpu_pack.py pack`` downloaded, else the same download."""
    cached = ROOT / ".gpu" / "whl"
    wheels = sorted(cached.glob("drug_named_entity_recognition-*.whl")) if cached.is_dir() else []
    if wheels:
        shutil.copy(wheels[0], dest / wheels[0].name)
        return
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "-d", str(dest), *gp.WHEELS],
        check=True,
    )  # fmt: skip
