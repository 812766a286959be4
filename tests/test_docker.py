"""docker/: what can be checked without a Docker engine.

The compose file parses and wires the four services with health checks and
volumes; the service's environment is valid kiwi-fhir settings; every path
the Dockerfiles COPY exists and survives their .dockerignore; the
entrypoint runs on the host (help, dry run, waiting, the health probe
against a real gRPC health server).
"""

from __future__ import annotations

import fnmatch
import os
import re
import socket
import subprocess
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kiwi_fhir.service.settings import ServiceSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
ENTRY = DOCKER / "entrypoint.sh"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    return data


def test_compose_services_have_healthchecks_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kiwi", "triton", "vllm", "postgres"}
    for name, svc in services.items():
        assert svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert "image" in svc, name
    declared = set(compose["volumes"])
    used = {v.split(":")[0] for svc in services.values() for v in svc.get("volumes", [])}
    assert used <= declared and {"pgdata", "kiwi-data"} <= used
    kiwi = services["kiwi"]
    assert kiwi["depends_on"]["postgres"]["condition"] == "service_healthy"
    for gpu in ("triton", "vllm"):  # the merge key put the GPU reservation there
        devices = services[gpu]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
    assert services["triton"]["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert kiwi["build"]["dockerfile"] == "docker/Dockerfile.cpu"


def _interpolate(value: str, given: dict[str, str] | None = None) -> str:
    """Compose's ${VAR:-default} with nothing set: the default; ${VAR:?msg}: ``given``."""
    value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{([A-Z_]+):\?[^}]*\}", lambda m: (given or {})[m.group(1)], value)


def test_service_environment_is_valid_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = compose["services"]["kiwi"]["environment"]
    assert "${KIWI_FHIR_AUTH_TOKEN:?" in raw["KIWI_FHIR_AUTH_TOKEN"]  # compose refuses without
    given = {"KIWI_FHIR_AUTH_TOKEN": "t0ken"}
    env = {k: _interpolate(str(v), given) for k, v in raw.items()}
    fields = {f"KIWI_FHIR_{n.upper()}" for n in ServiceSettings.model_fields}
    assert {k for k in env if k.startswith("KIWI_FHIR_")} <= fields
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings(None)
    assert (s.backend, s.triton_url, s.host) == ("triton", "triton:8001", "0.0.0.0")
    assert s.demo is False and s.auth_token is not None
    assert s.db.startswith("postgresql+psycopg://kiwi:")
    ports = {int(p.split(":")[1]) for p in compose["services"]["kiwi"]["ports"]}
    assert ports == {s.grpc_port, s.mllp_port, s.http_port}


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics, as far as these files use them (last match wins)."""
    out = False
    for p in patterns:
        neg = p.startswith("!")
        pat = p[1:] if neg else p
        if fnmatch.fnmatch(path, pat) or (pat.endswith("/**") and path.startswith(pat[:-2])):
            out = not neg
    return out


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfile_copies_exist_and_are_not_ignored(name: str) -> None:
    text = (DOCKER / name).read_text(encoding="utf-8")
    patterns = [
        ln.strip()
        for ln in (DOCKER / f"{name}.dockerignore").read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    copies = re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", text, re.M)
    assert copies
    for line in copies:
        for src in line.split():
            src = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], src)
            if src == "kiwi_fhir/models/default":  # built by `make model`, checked in the RUN
                continue
            assert (ROOT / src).exists(), f"{name}: COPY {src} missing"
            probe = src if (ROOT / src).is_file() else f"{src}/__init__.py"
            if src == "mappings":
                probe = "mappings/codes.yaml"
            assert not _ignored(probe, patterns), f"{name}: {src} excluded by .dockerignore"
    assert not _ignored("pyproject.toml", patterns) and _ignored(".venv/bin/python", patterns)
    assert "HEALTHCHECK" in text


def _sh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(
        ["bash", str(ENTRY), *args], capture_output=True, text=True, timeout=60, env=full
    )


def test_entrypoint_help_and_dry_run() -> None:
    assert os.access(ENTRY, os.X_OK)
    h = _sh("--help")
    assert h.returncode == 0 and "healthcheck" in h.stdout
    d = _sh("--dry-run", "serve", "--grpc-port", "5", env={"KIWI_WAIT_FOR": "db:5432 t:8001"})
    assert d.returncode == 0
    assert d.stdout.splitlines() == [
        "would wait up to 120s for db:5432",
        "would wait up to 120s for t:8001",
        "would run: kiwi-fhir serve --grpc-port 5",
    ]
    r = _sh("--dry-run", "triton-repo", "/models", "--variant", "onnx")
    assert r.stdout.endswith("-m kiwi_fhir.extractors.triton_repo --out /models --variant onnx\n")


def test_entrypoint_waits_for_a_port_and_gives_up_on_a_dead_one(tmp_path: Path) -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        ok = _sh("serve", env={"KIWI_WAIT_FOR": f"127.0.0.1:{port}", "PATH": _fake_path(tmp_path)})
    assert ok.returncode == 0, ok.stderr
    assert f"127.0.0.1:{port} is up" in ok.stdout and "fake kiwi-fhir serve" in ok.stdout
    dead = _sh("serve", env={"KIWI_WAIT_FOR": "127.0.0.1:1", "KIWI_WAIT_TIMEOUT": "1"})
    assert dead.returncode == 1 and "not reachable after 1s" in dead.stderr
    bad = _sh("serve", env={"KIWI_WAIT_FOR": "no-port"})
    assert bad.returncode == 2


def _fake_path(tmp: Path) -> str:
    """PATH with a stand-in ``kiwi-fhir`` first: proves the exec without a service."""
    (tmp / "kiwi-fhir").write_text('#!/bin/sh\necho "fake kiwi-fhir $*"\n', encoding="utf-8")
    (tmp / "kiwi-fhir").chmod(0o755)
    return f"{tmp}{os.pathsep}{os.environ['PATH']}"


def test_entrypoint_healthcheck_against_a_real_health_server() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        env = {"KIWI_FHIR_GRPC_PORT": str(port)}
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert _sh("healthcheck", env=env).returncode == 0
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        down = _sh("healthcheck", env=env)
        assert down.returncode == 1 and "not serving" in down.stderr
    finally:
        server.stop(None)
    gone = _sh("healthcheck", env={"KIWI_FHIR_GRPC_PORT": str(port)})
    assert gone.returncode == 1 and "UNAVAILABLE" in gone.stderr
