"""One validated settings model for ``kiwi-fhir serve``.

Precedence, lowest first: defaults, the ``--config`` file (YAML or JSON),
``KIWI_FHIR_*`` environment variables, command-line flags. Validation
errors become ``ConfigError`` so a bad deployment fails at start-up with one
line instead of at the first request.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from kiwi_fhir.errors import ConfigError

_config_file: ContextVar[dict[str, Any] | None] = ContextVar("kiwi_fhir_config", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """Values read from the ``--config`` file by :func:`load_settings`."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_config_file.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_config_file.get() or {})


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KIWI_FHIR_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    #: None disables a listener; 0 picks a free port (see ``ready_file``).
    grpc_port: int | None = Field(50051, ge=0, le=65535)
    mllp_port: int | None = Field(2575, ge=0, le=65535)
    http_port: int | None = Field(9464, ge=0, le=65535)
    #: SQLAlchemy URL; ``postgresql://`` is served by psycopg 3.
    db: str = "sqlite:///kiwi-fhir-intake.db"
    model_dir: Path | None = None
    threads: int = Field(2, ge=1)
    batch_max_size: int = Field(16, ge=1)
    batch_max_wait_ms: float = Field(10.0, ge=0)
    queue_max: int = Field(1024, ge=1)
    stream_max_in_flight: int = Field(32, ge=1)
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    mllp_max_frame_bytes: int = Field(1024 * 1024, ge=256)
    mllp_idle_timeout_s: float = Field(300.0, gt=0)
    drain_timeout_s: float = Field(30.0, ge=0)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: With a CA, clients must present a certificate signed by it (mutual TLS).
    tls_client_ca: Path | None = None
    auth_token: SecretStr | None = None
    #: Written as JSON ``{"grpc": port, "mllp": port, "http": port}`` once listening.
    ready_file: Path | None = None
    log_level: str = "INFO"

    @field_validator("db")
    @classmethod
    def _driver(cls, v: str) -> str:
        for plain in ("postgresql://", "postgres://"):
            if v.startswith(plain):
                return "postgresql+psycopg://" + v[len(plain) :]
        if not v.startswith(("sqlite:", "postgresql+psycopg:")):
            raise ValueError("db must be a sqlite:/// or postgresql:// URL")
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> ServiceSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))


def _read_config(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from exc
    try:
        data = json.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def load_settings(config_file: Path | None = None, **overrides: Any) -> ServiceSettings:
    """Settings from file, environment and explicit overrides (None = not given)."""
    token = _config_file.set(_read_config(config_file) if config_file else {})
    try:
        return ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
    finally:
        _config_file.reset(token)
