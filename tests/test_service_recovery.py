"""Crash recovery: kill -9 the server mid-batch; every ACKed message ends done exactly once."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from test_service_helpers import ack_fields, db_url_for, frame, jobs, oru, read_acks, start_server

N = 60


@pytest.mark.slow
@pytest.mark.parametrize("db_kind", ["sqlite", "postgresql"])
def test_kill_mid_batch_then_restart_completes_each_acked_message_once(
    db_kind: str, tmp_path: Path
) -> None:
    db = db_url_for(db_kind, tmp_path)
    env = {"KIWI_FHIR_BATCH_MAX_SIZE": "3", "KIWI_FHIR_BATCH_MAX_WAIT_MS": "5"}
    srv = start_server(tmp_path, db, tag="first", env=env)
    acked: list[str] = []

    def send() -> None:
        try:
            with socket.create_connection(("127.0.0.1", srv.ports["mllp"]), timeout=30) as s:
                for i in range(N):
                    s.sendall(frame(oru(f"CRASH{i:03d}", f"Note {i}: fever, cough, wheeze.")))
                    for ack in read_acks(s, 1):
                        if ack_fields(ack)["code"] == "AA":
                            acked.append(ack_fields(ack)["control_id"])
        except OSError:
            pass  # the server died under us: unACKed messages are the sender's to resend

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = jobs(db)
        statuses = [r["status"] for r in rows]
        if statuses.count("done") >= 3 and "processing" in statuses:
            break
        time.sleep(0.01)
    srv.kill()
    sender.join(60)
    left = [r for r in jobs(db) if r["status"] != "done"]
    assert left, "nothing was in flight at the kill: the test proved nothing"
    assert acked, "no message was acknowledged before the kill"
    print(f"killed with {len(left)} unfinished, {len(acked)} ACKed")

    again = start_server(tmp_path, db, tag="second", env=env)
    try:
        deadline = time.monotonic() + 120
        while any(r["status"] != "done" for r in jobs(db)) and time.monotonic() < deadline:
            time.sleep(0.2)
        rows = jobs(db)
        by_key: dict[str, list[dict[str, object]]] = {}
        for r in rows:
            by_key.setdefault(str(r["dedup_key"]), []).append(r)
        for cid in acked:
            (row,) = by_key[f"mllp:anonymous|hl7:KIWITEST|WARD7|{cid}"]  # stored once
            assert row["status"] == "done" and row["completions"] == 1, (cid, row)
        assert all(r["completions"] == 1 for r in rows)
        assert "re-queued" in again.logs()
    finally:
        assert again.stop() == 0
