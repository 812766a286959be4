"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiwi_fhir.corpus import default_data_dir


@pytest.fixture
def shared_corpus() -> Path:
    """The shared annotated notes (read-only); the test is skipped without them."""
    d = default_data_dir()
    if d is None:
        pytest.skip("shared corpus not found (set KIWI_FHIR_DATA)")
    return d
