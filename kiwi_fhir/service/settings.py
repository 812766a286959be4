"""One validated settings model for ``kiwi-fhir serve``.

Precedence, lowest first: defaults, the ``--config`` file (YAML or JSON),
``KIWI_FHIR_*`` environment variables, command-line flags. Validation
errors become ``ConfigError`` so a bad deployment fails at start-up with one
line instead of at the first request.
"""

from __future__ import annotations

import ipaddress
import json
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

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
    # The extractor (kiwi_fhir.extractors.registry; docs/backends.md). A remote
    # backend that is down does not stop the service: jobs answer UNAVAILABLE,
    # are retried, and health reports the extraction service NOT_SERVING.
    backend: Literal["onnx", "triton", "llm", "hybrid"] = "onnx"
    #: What the hybrid backend runs first (the LLM is its second opinion).
    hybrid_primary: Literal["onnx", "triton"] = "onnx"
    #: Triton's gRPC endpoint (host:port); its repository is built by ``make triton-repo``.
    triton_url: str = "127.0.0.1:8001"
    triton_timeout_s: float = Field(30.0, gt=0)
    #: Retries (exponential backoff) of one request before it counts as UNAVAILABLE.
    triton_retries: int = Field(3, ge=0)
    #: An OpenAI-compatible endpoint (vLLM) and the model name it serves.
    llm_url: str = "http://127.0.0.1:8000/v1"
    llm_model: str = "kiwi-llama"
    llm_timeout_s: float = Field(120.0, gt=0)
    #: Further keyword arguments for the chosen backend's constructor (override the above).
    backend_options: dict[str, Any] = Field(default_factory=dict)
    #: How often the backend's health is probed for the gRPC health service.
    backend_health_interval_s: float = Field(5.0, gt=0)
    #: Attach ICD-10-CM / UNII / DrugBank / LOINC codes to extracted entities
    #: (kiwi_fhir/terminology; docs/terminology.md).
    terminology: bool = True
    #: Also the MiniLM embedding match for mentions no table spells (off: it
    #: is right about half the time; docs/terminology.md). Scores are cosines.
    terminology_embedding: bool = False
    #: Ranked codes kept per system on each entity (JSON / gRPC); FHIR keeps the best.
    terminology_candidates: int = Field(1, ge=1, le=10)
    batch_max_size: int = Field(16, ge=1)
    batch_max_wait_ms: float = Field(10.0, ge=0)
    queue_max: int = Field(1024, ge=1)
    #: Jobs whose stored payload is larger than this run in a lane of their own
    #: (service/lanes.py), so they never hold up small ones; 0: one lane.
    large_job_bytes: int = Field(16 * 1024, ge=0)
    #: A claimed job's lease: past it, a job still ``processing`` is re-claimed
    #: (its worker died or lost the database); also how long a ``received`` job
    #: may wait unqueued before it is picked up again.
    job_lease_s: float = Field(120.0, gt=0)
    #: How often stale jobs are looked for (and a lost database retried).
    reclaim_interval_s: float = Field(5.0, gt=0)
    #: Claims per job before it is ``failed`` as poison (a document that kills
    #: the process would otherwise be re-run first on every restart).
    max_attempts: int = Field(3, ge=1)
    stream_max_in_flight: int = Field(32, ge=1)
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    #: Responses carry the Bundle and every span, so they outgrow their request:
    #: a large note's result must not be refused for the request's limit.
    max_response_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    mllp_max_frame_bytes: int = Field(1024 * 1024, ge=256)
    #: The longest note (decoded text, UTF-8 bytes) accepted on any channel. Long
    #: notes run segment by segment (bounded memory), but time still grows with
    #: length: the limit keeps one job within seconds on a 2-core replica.
    max_note_bytes: int = Field(64 * 1024, ge=1024)
    mllp_idle_timeout_s: float = Field(300.0, gt=0)
    #: A frame, once its start block arrived, must be complete within this
    #: (the idle timeout alone never ends a 1-byte-every-2-s drip).
    mllp_frame_timeout_s: float = Field(60.0, gt=0)
    #: Open connections per listener (MLLP, HTTP) and concurrent RPCs (gRPC);
    #: beyond it new ones are closed at once, so idle sockets cannot exhaust
    #: the process's file descriptors and starve the other listeners.
    max_connections: int = Field(128, ge=1)
    drain_timeout_s: float = Field(30.0, ge=0)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: With a CA, clients must present a certificate signed by it (mutual TLS).
    tls_client_ca: Path | None = None
    #: With TLS configured, MLLP speaks TLS too (same certificates and client
    #: check); true keeps MLLP in plaintext anyway (logged at start-up).
    mllp_plaintext: bool = False
    auth_token: SecretStr | None = None
    #: Written as JSON ``{"grpc": port, "mllp": port, "http": port}`` once listening.
    ready_file: Path | None = None
    log_level: str = "INFO"
    #: The web demo page (``/demo``) and ``POST /api/extract`` on the HTTP port: off
    #: unless enabled, since the demo echoes decoded note text to the browser.
    demo: bool = False
    #: ``/metrics``: ``open`` (Prometheus scrapes without credentials; counters
    #: only, never payload data), ``token`` (needs ``auth_token``) or ``off``.
    metrics: Literal["open", "token", "off"] = "open"
    # FHIR Subscriptions (docs/subscriptions.md). The notification endpoint is
    # ``/fhir/notify`` on the HTTP port; it answers 503 until a header value is set.
    fhir_base_url: str | None = None
    #: The Subscription's ``channel.header``, split: every notification must carry it.
    subscription_header_name: str = "Authorization"
    subscription_header_value: SecretStr | None = None
    #: What an ``empty`` notification (or an R4 core ping) makes us search for.
    subscription_criteria: str = "DocumentReference?_sort=-_lastUpdated&_count=50"
    #: Auth towards the FHIR server: a static bearer token, or SMART backend services
    #: (client credentials; ``fhir_private_key`` = asymmetric client auth, else the secret).
    fhir_token: SecretStr | None = None
    fhir_token_url: str | None = None
    fhir_client_id: str | None = None
    fhir_client_secret: SecretStr | None = None
    fhir_private_key: Path | None = None
    fhir_scope: str = "system/DocumentReference.read system/*.write"
    fhir_timeout_s: float = Field(10.0, gt=0)
    #: Tries within one fetch/write-back before the job waits for a later round.
    fhir_attempts: int = Field(3, ge=1)
    #: Backoff between rounds: base * 2**n, capped.
    fhir_retry_base_s: float = Field(1.0, gt=0)
    fhir_retry_max_s: float = Field(300.0, gt=0)
    #: 0 = the whole write-back in one transaction. Servers that cap transactions
    #: with conditional creates (medplum: 8 entries) get several, in order.
    fhir_transaction_max_entries: int = Field(0, ge=0)

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
        if self.fhir_base_url is not None and not self.fhir_base_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError("fhir_base_url must be an http(s) URL")
        if self.auth_token is None and not _loopback(self.host):
            raise ValueError(
                f"host {self.host[:64]!r} is not a loopback address: set auth_token "
                "(KIWI_FHIR_AUTH_TOKEN) before listening on the network"
            )
        if self.metrics == "token" and self.auth_token is None:
            raise ValueError("metrics=token needs auth_token")
        smart = (self.fhir_token_url, self.fhir_client_id)
        if any(smart) and not all(smart):
            raise ValueError("fhir_token_url and fhir_client_id go together")
        if self.fhir_client_id and not (self.fhir_client_secret or self.fhir_private_key):
            raise ValueError("fhir_client_id needs fhir_client_secret or fhir_private_key")
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


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


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
