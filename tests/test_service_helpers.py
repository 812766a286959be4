"""Shared helpers for the service tests: a real ``kiwi-fhir serve`` process on loopback.

(Named ``test_service_*`` to sit with the service tests; it holds no tests.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
HL7_DIR = REPO / "tests" / "data" / "hl7"
SB, EB = b"\x0b", b"\x1c\x0d"
PG_ENV = "KIWI_FHIR_TEST_PG_URL"


def model_dir_or_skip() -> str:
    from kiwi_fhir.extractors.onnx import default_model_dir

    d = default_model_dir()
    if not (d / "config.json").is_file():
        pytest.skip(f"no model at {d} (set KIWI_FHIR_MODEL or run 'make model')")
    return str(d)


def reset_pg(url: str) -> None:
    """Drop the intake tables so each test starts from an empty, unmigrated DB."""
    from sqlalchemy import create_engine, text

    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with eng.begin() as c:
        c.execute(text("DROP TABLE IF EXISTS jobs"))
        c.execute(text("DROP TABLE IF EXISTS alembic_version"))
    eng.dispose()


def db_url_for(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'intake.db'}"
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} not set (CI sets it)")
    reset_pg(url)
    return url


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    ports: dict[str, int]
    log: Path
    db: str

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def start_server(tmp_path: Path, db: str | None = None, *, tag: str = "srv",
                 env: dict[str, str] | None = None, timeout: float = 90) -> Server:  # fmt: skip
    model = model_dir_or_skip()
    ready = tmp_path / f"{tag}.ready.json"
    ready.unlink(missing_ok=True)
    log = tmp_path / f"{tag}.log"
    db = db or f"sqlite:///{tmp_path / 'intake.db'}"
    full_env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "KIWI_FHIR_MODEL": model,
        "KIWI_FHIR_THREADS": "1",
        "KIWI_FHIR_LOG_LEVEL": "DEBUG",
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "kiwi_fhir.cli", "serve", "--grpc-port", "0", "--mllp-port",
           "0", "--http-port", "0", "--db", db, "--ready-file", str(ready)]  # fmt: skip
    with log.open("ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=full_env, cwd=REPO)
    deadline = time.monotonic() + timeout
    while not ready.is_file():
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server not ready:\n{log.read_text()}")
        time.sleep(0.1)
    return Server(proc, json.loads(ready.read_text()), log, db)


def oru(control_id: str, text: str = "Patient reports fever and cough. No chest pain.") -> bytes:
    return ("MSH|^~\\&|KIWITEST|WARD7|KIWI|HOSP|20261130101500||ORU^R01^ORU_R01|"
            f"{control_id}|P|2.5.1\rPID|1||MRN{control_id}^^^HOSP^MR||Test^Pat\r"
            "OBR|1|ORD1|FIL1|11506-3^Progress note^LN\r"
            f"OBX|1|TX|11506-3^Progress note^LN||{text}||||||F\r").encode()  # fmt: skip


def frame(msg: bytes) -> bytes:
    return SB + msg + EB


def read_acks(sock: socket.socket, n: int, timeout: float = 30) -> list[bytes]:
    """Read ``n`` whole MLLP frames from ``sock``."""
    sock.settimeout(timeout)
    buf = b""
    acks: list[bytes] = []
    while len(acks) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        while EB in buf:
            one, buf = buf.split(EB, 1)
            acks.append(one.lstrip(SB))
    return acks


def ack_fields(ack: bytes) -> dict[str, Any]:
    segs = {s.split("|")[0]: s.split("|") for s in ack.decode().strip("\r").split("\r")}
    return {"code": segs["MSA"][1], "control_id": segs["MSA"][2],
            "err": segs.get("ERR"), "msh": segs["MSH"]}  # fmt: skip


def jobs(db: str) -> list[dict[str, Any]]:
    from sqlalchemy import create_engine, text

    eng = create_engine(db.replace("postgresql://", "postgresql+psycopg://", 1))
    with eng.connect() as c:
        rows = c.execute(text("SELECT id, source, dedup_key, status, completions, error "
                              "FROM jobs")).mappings().all()  # fmt: skip
    eng.dispose()
    return [dict(r) for r in rows]
