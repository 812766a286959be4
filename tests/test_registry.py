"""Choosing the extractor by configuration (kiwi_fhir.extractors.registry)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from kiwi_fhir.core import Document
from kiwi_fhir.errors import BackendUnavailableError, ConfigError, MissingExtraError
from kiwi_fhir.extractors.onnx import OnnxExtractor, default_model_dir
from kiwi_fhir.extractors.registry import available, create_extractor, extractor_from_settings
from kiwi_fhir.service.settings import load_settings
from kiwi_fhir.service.status import outcome


def test_onnx_is_the_default_backend(tmp_path: Path) -> None:
    s = load_settings(None, model_dir=tmp_path, threads=3)
    ex = extractor_from_settings(s)
    assert isinstance(ex, OnnxExtractor)
    assert (ex.model_dir, ex.threads) == (tmp_path, 3)


def test_every_kind_is_listed_and_unknown_ones_are_config_errors() -> None:
    assert set(available()) == {"onnx", "triton", "llm", "hybrid"}
    with pytest.raises(ConfigError, match="choose from"):
        create_extractor("tensorrt")
    with pytest.raises(ConfigError, match="onnx"):
        create_extractor("onnx", thread=2)  # misspelt option
    with pytest.raises(ConfigError):
        load_settings(None, backend="tensorrt")


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # import -> ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'kiwi-fhir\[triton\]'"):
        create_extractor("triton")
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(MissingExtraError, match=r"kiwi-fhir\[llm\]"):
        create_extractor("llm")


def test_settings_reach_the_triton_extractor(tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.grpc")
    from kiwi_fhir.extractors.triton import TritonExtractor

    s = load_settings(None, backend="triton", model_dir=tmp_path, triton_url="10.0.0.5:8001",
                      triton_retries=5, backend_options={"tagger_model": "t2"})  # fmt: skip
    ex = extractor_from_settings(s)
    assert isinstance(ex, TritonExtractor)
    assert (ex.url, ex.models, ex.model_dir) == ("10.0.0.5:8001", ("t2", "kiwi_relation"), tmp_path)
    assert ex._runner_args["retries"] == 5


def test_hybrid_composes_primary_and_llm() -> None:
    routing = pytest.importorskip("kiwi_fhir.extractors.routing")
    llm = pytest.importorskip("kiwi_fhir.extractors.llm")
    ex = create_extractor("hybrid", primary="onnx", primary_options={"threads": 1},
                          llm_options={"base_url": "http://127.0.0.1:9/v1"})  # fmt: skip
    assert isinstance(ex, routing.HybridExtractor)
    s = load_settings(None, backend="hybrid", llm_url="http://127.0.0.1:9/v1")
    assert isinstance(extractor_from_settings(s), routing.HybridExtractor)
    assert isinstance(create_extractor("llm", base_url="http://127.0.0.1:9/v1"), llm.LlmExtractor)
    with pytest.raises(ConfigError, match="hybrid primary"):
        create_extractor("hybrid", primary="llm")


def test_triton_down_at_start_keeps_loading_and_answers_unavailable() -> None:
    """No server on the port: load() succeeds (the service must start), requests fail fast."""
    pytest.importorskip("tritonclient.grpc")
    model = default_model_dir()
    if not (model / "config.json").is_file():
        pytest.skip(f"no model at {model}")
    ex = create_extractor("triton", model_dir=model, url="127.0.0.1:9", retries=2,
                          backoff_s=0.01, timeout_s=2.0)  # fmt: skip
    ex.load()
    assert not ex.health()
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=r"127\.0\.0\.1:9") as info:
        ex.extract([Document("n", "Denies chest pain.")])
    assert time.monotonic() - t0 < 10
    assert "chest" not in str(info.value)  # never the note text
    assert outcome(info.value).grpc_code.name == "UNAVAILABLE"
    ex.close()
