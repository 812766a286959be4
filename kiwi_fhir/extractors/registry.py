"""Choose an extractor by name: the one place that knows every backend.

Backends are imported lazily, so the core install never imports tritonclient
or httpx, and a backend whose extra is absent fails when it is *chosen*
(service start-up) with the ``pip install 'kiwi-fhir[extra]'`` to run, not
at the first request. Options are the backend class's keyword arguments;
unknown ones are a ``ConfigError`` naming the backend.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kiwi_fhir.errors import ConfigError, MissingExtraError
from kiwi_fhir.extractors.base import Extractor


@dataclass(frozen=True)
class Backend:
    module: str
    cls: str
    #: Modules the backend needs beyond the core install, and the extra providing them.
    requires: tuple[str, ...] = ()
    extra: str = ""


BACKENDS: dict[str, Backend] = {
    "onnx": Backend("kiwi_fhir.extractors.onnx", "OnnxExtractor"),
    "triton": Backend(
        "kiwi_fhir.extractors.triton", "TritonExtractor", ("tritonclient.grpc",), "triton"
    ),
    "llm": Backend("kiwi_fhir.extractors.llm", "LlmExtractor", ("httpx",), "llm"),
    "hybrid": Backend("kiwi_fhir.extractors.routing", "HybridExtractor", ("httpx",), "llm"),
}
#: What a hybrid extractor may put first (the LLM is always its second opinion).
HYBRID_PRIMARIES = ("onnx", "triton")


def available() -> tuple[str, ...]:
    return tuple(BACKENDS)


def _class(kind: str) -> type[Extractor]:
    spec = BACKENDS.get(kind)
    if spec is None:
        raise ConfigError(f"unknown extractor backend {kind!r}; choose from {available()}")
    for mod in spec.requires:
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise MissingExtraError(f"the {kind} backend", spec.extra) from exc
    cls: type[Extractor] = getattr(importlib.import_module(spec.module), spec.cls)
    return cls


def create_extractor(kind: str, **options: Any) -> Extractor:
    """A new, not yet loaded extractor of backend ``kind``.

    ``hybrid`` takes ``primary`` (``onnx`` or ``triton``), ``primary_options``
    and ``llm_options`` (each passed to that backend), plus the hybrid's own
    keyword arguments.
    """
    cls = _class(kind)
    if kind == "hybrid":
        primary = str(options.pop("primary", "onnx"))
        if primary not in HYBRID_PRIMARIES:
            raise ConfigError(f"hybrid primary must be one of {HYBRID_PRIMARIES}, not {primary!r}")
        options["primary"] = create_extractor(primary, **options.pop("primary_options", {}))
        options["llm"] = create_extractor("llm", **options.pop("llm_options", {}))
    try:
        return cls(**options)
    except TypeError as exc:  # a misspelt or foreign option in the configuration
        raise ConfigError(f"backend {kind!r}: {exc}") from exc


class BackendSettings(Protocol):
    """The settings the service picks its extractor by (read-only: frozen settings)."""

    @property
    def backend(self) -> str: ...

    @property
    def hybrid_primary(self) -> str: ...

    @property
    def model_dir(self) -> Path | None: ...

    @property
    def threads(self) -> int: ...

    @property
    def triton_url(self) -> str: ...

    @property
    def triton_timeout_s(self) -> float: ...

    @property
    def triton_retries(self) -> int: ...

    @property
    def llm_url(self) -> str: ...

    @property
    def llm_model(self) -> str: ...

    @property
    def llm_timeout_s(self) -> float: ...

    @property
    def backend_options(self) -> dict[str, Any]: ...


def options_for(kind: str, s: BackendSettings) -> dict[str, Any]:
    """Constructor options of backend ``kind`` from service settings."""
    if kind == "onnx":
        return {"model_dir": s.model_dir, "threads": s.threads}
    if kind == "triton":
        return {
            "model_dir": s.model_dir,
            "url": s.triton_url,
            "timeout_s": s.triton_timeout_s,
            "retries": s.triton_retries,
        }
    if kind == "llm":
        return {"base_url": s.llm_url, "model": s.llm_model, "timeout_s": s.llm_timeout_s}
    if kind == "hybrid":
        return {
            "primary": s.hybrid_primary,
            "primary_options": options_for(s.hybrid_primary, s),
            "llm_options": options_for("llm", s),
        }
    raise ConfigError(f"unknown extractor backend {kind!r}; choose from {available()}")


def extractor_from_settings(s: BackendSettings) -> Extractor:
    """The service's extractor; ``backend_options`` override the derived options."""
    return create_extractor(s.backend, **{**options_for(s.backend, s), **s.backend_options})
