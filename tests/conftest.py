"""Fixtures shared by the test modules."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from test_service_helpers import db_url_for

from kiwi_fhir.corpus import default_data_dir
from kiwi_fhir.service import store


@pytest.fixture
def shared_corpus() -> Path:
    """The shared annotated notes (read-only); the test is skipped without them."""
    d = default_data_dir()
    if d is None:
        pytest.skip("shared corpus not found (set KIWI_FHIR_DATA)")
    return d


SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.fixture
def load_script() -> Callable[[str], ModuleType]:
    """Import ``scripts/NAME.py`` (not a package) as a module."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture(params=["sqlite", "postgresql"])
def st(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[store.IntakeStore]:
    """A migrated intake store on each database (test_service_store has its own)."""
    s = store.IntakeStore(db_url_for(request.param, tmp_path))
    s.migrate()
    yield s
    s.close()


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer BERT with random weights and the shipped model's
    tokenizer: the training loop runs on it in seconds (needs the train
    extra)."""
    import json

    import torch
    from transformers import BertConfig, BertModel

    from kiwi_fhir.extractors.onnx import default_model_dir

    torch.manual_seed(0)
    tok = default_model_dir() / "tokenizer.json"
    vocab = json.loads(tok.read_text(encoding="utf-8"))["model"]["vocab"]
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=512,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("enc")
    BertModel(cfg).save_pretrained(out)
    (out / "tokenizer.json").write_bytes(tok.read_bytes())
    return out
