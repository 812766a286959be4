"""Get the distillation recipe onto a lent GPU and its model back (docs/model.md).

A lent GPU machine gets one copy of the working tree plus at most 8 carried
paths, 64 MiB in all, has no network and no ``../shared``, and returns at most
8 files of 16 MiB from ``$OUT``. So the trip is packed here:

    python scripts/gpu_pack.py pack     # .gpu/: fp16 encoder, notes, wheels
    python scripts/gpu_pack.py aside    # the two 23 MB int8 ONNX files out of the tree
    (device run: carry [".gpu"], command "bash scripts/gpu_distill.sh")
    python scripts/gpu_pack.py restore  # put them back: always, even if the run failed
    python scripts/gpu_pack.py unpack FILES_AT build/model-gpu

``.gpu/`` and ``.gpu-aside/`` are git-ignored. The encoder travels as fp16
(45 MB instead of 90): fine-tuning loads it back into fp32, so training
starts from weights rounded to fp16, a difference far inside the seed spread.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACK, ASIDE = ROOT / ".gpu", ROOT / ".gpu-aside"
LIMIT = 64 * 2**20  # what one device call may send
#: Tracked files the GPU run never reads (the shipped tagger, the terminology
#: embedder), about 46 MB of the 55 MB tree.
BULKY = ("kiwi_fhir/models/default/tagger.int8.onnx", "kiwi_fhir/terminology/data/minilm.int8.onnx")
ENCODER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json")  # fmt: skip
#: Pure-Python wheels the GPU image lacks (training's drug lexicon).
WHEELS = ("drug-named-entity-recognition==2.0.9",)


def fp16_encoder(src: Path, dest: Path) -> None:
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(src / "model.safetensors"))
    half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    save_file(half, str(dest / "model.safetensors"), metadata={"format": "pt"})
    for name in ENCODER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, dest / name)


def notes_archive(shared: Path, dest: Path) -> None:
    with tarfile.open(dest, "w:gz") as tar:
        for part in ("train", "unlabeled"):
            where = shared / "data" / "mtsamples" / part
            if not where.is_dir():
                raise SystemExit(f"{where}: missing (pass --shared)")
            tar.add(where, arcname=part)


def travelling_bytes(extra: Path) -> int:
    """Tracked files present, untracked files not ignored, plus ``extra``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.split(b"\0")  # fmt: skip
    files = [ROOT / p.decode() for p in listed if p]
    total = sum(f.stat().st_size for f in files if f.is_file())
    return total + sum(f.stat().st_size for f in extra.rglob("*") if f.is_file())


def pack(shared: Path, encoder: Path | None) -> None:
    if encoder is None:
        from kiwi_fhir.training.train import default_encoder

        encoder = default_encoder()
    shutil.rmtree(PACK, ignore_errors=True)
    fp16_encoder(encoder, PACK / "encoder")
    notes_archive(shared, PACK / "notes.tar.gz")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "-d", str(PACK / "whl"), *WHEELS],
        check=True,
    )  # fmt: skip
    size = travelling_bytes(PACK)
    present = [b for b in BULKY if (ROOT / b).exists()]
    bulky = sum((ROOT / b).stat().st_size for b in present)
    print(f"{PACK}: written; one call would send {size / 2**20:.1f} MiB "
          f"({(size - bulky) / 2**20:.1f} MiB after 'aside'); limit 64 MiB")  # fmt: skip


def aside() -> None:
    for rel in BULKY:
        src, dest = ROOT / rel, ASIDE / rel
        if src.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dest)
    size = travelling_bytes(PACK) if PACK.is_dir() else travelling_bytes(ROOT / "nonexistent")
    print(f"moved to {ASIDE}; a call now sends {size / 2**20:.1f} MiB; run 'restore' after it")
    if size > LIMIT:
        raise SystemExit("still over the 64 MiB limit")


def restore() -> None:
    for rel in BULKY:
        src, dest = ASIDE / rel, ROOT / rel
        if src.exists():
            shutil.move(src, dest)
        if not dest.exists():
            raise SystemExit(f"{dest}: missing; 'git checkout -- {rel}' restores it")
    print("restored")


def unpack(files_at: Path, out: Path) -> None:
    """Reassemble what scripts/gpu_distill.sh returned: the student's model
    directory, with the teachers' cards, ``ensemble.json`` and the log beside."""
    parts = sorted(files_at.glob("tagger.int8.onnx.part*"))
    archive = files_at / "model.tar.gz"
    if not parts or not archive.is_file():
        raise SystemExit(
            f"{files_at}: no tagger.int8.onnx.part* or model.tar.gz "
            "(the call ended early: see gpu_distill.log, teachers.tar.gz)"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in ("model.tar.gz", "teachers.tar.gz"):
        if (files_at / name).is_file():
            with tarfile.open(files_at / name) as tar:
                tar.extractall(out, filter="data")
    if (files_at / "gpu_distill.log").is_file():
        shutil.copy(files_at / "gpu_distill.log", out / "gpu_distill.log")
    with open(out / "tagger.int8.onnx", "wb") as whole:
        for p in parts:
            whole.write(p.read_bytes())
    print(f"model written to {out}; its model_card.json holds the dev scores the GPU "
          f"machine's onnxruntime gave; 'python -m kiwi_fhir.training.distill {out}' "
          "scores it here")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="write .gpu/ (encoder fp16, notes, wheels)")
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    p.add_argument("--encoder", type=Path, default=None)
    sub.add_parser("aside", help="move the bulky ONNX files out of the tree")
    sub.add_parser("restore", help="move them back")
    u = sub.add_parser("unpack", help="rebuild a model directory from a run's files")
    u.add_argument("files_at", type=Path)
    u.add_argument("out", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "pack":
        pack(a.shared, a.encoder)
    elif a.cmd == "aside":
        aside()
    elif a.cmd == "restore":
        restore()
    else:
        unpack(a.files_at, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
