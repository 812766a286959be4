"""Epoch checkpoints of fine-tuning: a killed ``fit`` resumes exactly."""

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="needs the train extra")
pytest.importorskip("transformers", reason="needs the train extra")

import torch

from kiwi_fhir.core import Document, Entity, Extraction, Modifier, Relation
from kiwi_fhir.errors import InputError
from kiwi_fhir.extractors.encoding import load_tokenizer
from kiwi_fhir.extractors.pipeline import BertPipeline
from kiwi_fhir.training import checkpoint as ckmod
from kiwi_fhir.training import loop
from kiwi_fhir.training.checkpoint import Checkpoint, fit_key

TEXTS = [
    "HISTORY: Hypertension, on lisinopril 10 mg daily. No chest pain.\n",
    "ASSESSMENT: Hypertension again. No chest pain today, on lisinopril 10 mg daily.\n",
    "Hypertension. No chest pain. Lisinopril 10 mg daily. Hypertension controlled.\n",
]


def _gold(doc_id: str, text: str) -> Extraction:
    a, m, b = text.index("ypertension") - 1, text.index("No"), text.index("chest pain")
    return Extraction(
        document=Document(doc_id, text),
        entities=(
            Entity("T1", "problem", a, a + 12, text[a : a + 12]),
            Entity("T2", "problem", b, b + 10, "chest pain"),
        ),
        modifiers=(Modifier("T3", "negation", m, m + 2, "No"),),
        relations=(Relation("T2", "T3"),),
    )


DOCS = [_gold(f"g{i}", t) for i, t in enumerate(TEXTS)]


# Every random stream in play: dropout (the encoder's default 0.1), batch
# order, [MASK] draws (masking stops after 70% of the steps) and the EMA.
OPTIONS: dict[str, Any] = {"epochs": 3, "seed": 5, "batch_size": 2, "ema": 0.9,
                           "mask_prob": 0.3, "mask_until": 0.7}  # fmt: skip


def _fit(enc: Path, ck: Checkpoint | None) -> tuple[Any, Any]:
    pipe = BertPipeline(load_tokenizer(enc / "tokenizer.json"))
    torch.manual_seed(5)  # as train.py seeds before fit: the heads' initial weights
    return loop.fit(pipe, enc, DOCS, [], checkpoint=ck, **OPTIONS)


def _weights(nets: tuple[Any, Any]) -> list[torch.Tensor]:
    return [p.detach().clone() for n in nets for p in n.state_dict().values()]


def test_a_killed_fit_resumes_after_its_last_epoch_with_the_same_weights(
    tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    whole = _weights(_fit(tiny_encoder, None))
    key = fit_key(OPTIONS, tiny_encoder, DOCS)
    ck = Checkpoint(tmp_path / "fit-checkpoint.pt", key)
    real_save, saved = ckmod.save_checkpoint, []

    def save_then_die(*a: Any) -> None:
        real_save(*a)
        saved.append(a[2])
        if len(saved) == 1:
            raise KeyboardInterrupt  # killed right after epoch 1's checkpoint

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _fit(tiny_encoder, ck)
    assert saved == [1] and ck.path.is_file()
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    capsys.readouterr()
    resumed = _weights(_fit(tiny_encoder, ck))
    assert "resuming after epoch 1/3" in capsys.readouterr().err
    assert len(resumed) == len(whole)
    assert all(torch.equal(a, b) for a, b in zip(resumed, whole, strict=True))

    # a finished checkpoint (epoch 3 of 3) gives back its networks without a step
    monkeypatch.setattr(loop, "_collate", lambda *a: pytest.fail("trained again"))
    again = _weights(_fit(tiny_encoder, ck))
    assert all(torch.equal(a, b) for a, b in zip(again, whole, strict=True))


def test_a_checkpoint_of_other_settings_or_data_is_refused_not_overwritten(
    tiny_encoder: Path, tmp_path: Path
) -> None:
    path = tmp_path / "fit-checkpoint.pt"
    pipe = BertPipeline(load_tokenizer(tiny_encoder / "tokenizer.json"))
    ck = Checkpoint(path, fit_key({"epochs": 1}, tiny_encoder, DOCS[:1]))
    loop.fit(pipe, tiny_encoder, DOCS[:1], [], epochs=1, seed=0, checkpoint=ck)
    before = path.read_bytes()
    for other in (
        fit_key({"epochs": 2}, tiny_encoder, DOCS[:1]),  # settings
        fit_key({"epochs": 1}, tiny_encoder, DOCS[:2]),  # notes
    ):
        with pytest.raises(InputError, match=r"fit-checkpoint\.pt: a fine-tuning checkpoint"):
            loop.fit(pipe, tiny_encoder, DOCS[:1], [], epochs=1, seed=0,
                     checkpoint=Checkpoint(path, other))  # fmt: skip
    assert path.read_bytes() == before


def test_the_key_follows_the_encoder_weights_and_the_labels(
    tiny_encoder: Path, tmp_path: Path
) -> None:
    base = fit_key({"a": 1}, tiny_encoder, DOCS)
    assert base == fit_key({"a": 1}, tiny_encoder, list(DOCS))
    relabelled = [DOCS[0], *DOCS[1:2], Extraction(DOCS[2].document, DOCS[2].entities[:1])]
    assert fit_key({"a": 1}, tiny_encoder, relabelled) != base
    other = tmp_path / "enc"
    other.mkdir()
    for f in tiny_encoder.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    assert fit_key({"a": 1}, other, DOCS) == base  # same weights, another directory
    w = other / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    assert fit_key({"a": 1}, other, DOCS) != base
