"""The committed protobuf code must be exactly what ``make protos`` generates."""

from __future__ import annotations

import importlib.metadata

import pytest

from kiwi_fhir.service import protogen

PINNED_TOOLS = "1.85.1"  # keep equal to the grpcio-tools pin in pyproject's dev extra


def test_generated_code_is_fresh() -> None:
    pytest.importorskip("grpc_tools")
    version = importlib.metadata.version("grpcio-tools")
    if version != PINNED_TOOLS:
        pytest.skip(f"grpcio-tools {version} installed, generated with {PINNED_TOOLS}")
    for name, text in protogen.generate().items():
        committed = (protogen.OUT / name).read_text(encoding="utf-8")
        assert committed == text, f"{name} is stale: run 'make protos'"
    assert "kiwi_fhir.v1 import" not in (protogen.OUT / "extraction_pb2_grpc.py").read_text()
