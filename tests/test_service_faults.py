"""Stuck jobs and poison messages (service-hardening items 6 and 7).

Store-level checks on SQLite and PostgreSQL, then real ``kiwi-fhir serve``
processes: a database outage under MLLP load (PostgreSQL stopped, or SQLite
locked past its busy timeout) must leave no acknowledged job stuck once the
database is back, and a job that every earlier run died on is failed with a
reason instead of being re-run first on each restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from test_service_helpers import (
    ack_fields,
    db_url_for,
    frame,
    jobs,
    oru,
    read_acks,
    start_server,
)  # fmt: skip

from kiwi_fhir.service import store


def _new(payload: bytes) -> store.NewJob:
    return store.NewJob("mllp", "text", payload, hashlib.sha256(payload).hexdigest())


def _age(st: store.IntakeStore, job_id: str, **cols: object) -> None:
    with st.engine.begin() as c:
        sets = ", ".join(f"{k} = :{k}" for k in cols)
        c.execute(text(f"UPDATE jobs SET {sets} WHERE id = :id"), {"id": job_id, **cols})


def test_reclaim_finds_expired_leases_and_orphaned_received_jobs(st: store.IntakeStore) -> None:
    a, _ = st.submit(_new(b"a"))
    b, _ = st.submit(_new(b"b"))
    c, _ = st.submit(_new(b"c"))
    st.mark_processing([a.id, b.id], lease_s=60)
    assert st.reclaim(older_than_s=30, exclude=set()) == []  # leases live, c is fresh
    past = datetime.now(UTC) - timedelta(seconds=5)
    _age(st, a.id, lease_until=past)
    _age(st, c.id, received_at=datetime.now(UTC) - timedelta(seconds=120))
    got = st.reclaim(older_than_s=30, exclude=set(), hold_s=60)
    assert sorted(j.id for j in got) == sorted([a.id, c.id])
    assert st.reclaim(older_than_s=30, exclude=set()) == []  # held now: not claimed twice
    _age(st, a.id, lease_until=past)
    assert st.reclaim(older_than_s=30, exclude={a.id}) == []  # in this process's queue
    st.give_up(a.id, "gave up after 3 attempts")
    assert (st.get(a.id).status, st.get(a.id).error) == ("failed", "gave up after 3 attempts")
    st.release([b.id])  # a backend outage: the claim is undone and not counted
    assert (st.get(b.id).status, st.get(b.id).attempts) == ("received", 0)


def _send_load(port: int, ids: list[str], acked: list[str], stop: threading.Event) -> None:
    for cid in ids:
        if stop.is_set():
            return
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                s.sendall(frame(oru(cid)))
                ack = ack_fields(read_acks(s, 1, timeout=60)[0])
            if ack["code"] == "AA":
                acked.append(cid)
        except (OSError, IndexError):
            pass  # refused while the database is down: the sender resends later
        time.sleep(0.05)


def _pg_cluster() -> tuple[str, str] | None:
    if shutil.which("pg_lsclusters") is None or os.geteuid() != 0:
        return None
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout.split()
    return (out[0], out[1]) if len(out) >= 2 else None


@pytest.mark.slow
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_database_outage_under_load_leaves_no_job_stuck(db: str, tmp_path: Path) -> None:
    """Regression: after a 6 s PostgreSQL outage, 18 AA'd jobs stayed stuck until a restart."""
    url = db_url_for(db, tmp_path)
    cluster = _pg_cluster() if db == "postgresql" else None
    if db == "postgresql" and cluster is None:
        pytest.skip("needs root and pg_ctlcluster to stop the database")
    srv = start_server(tmp_path, url, env={"KIWI_FHIR_JOB_LEASE_S": "3",
                                           "KIWI_FHIR_RECLAIM_INTERVAL_S": "0.5",
                                           "KIWI_FHIR_BATCH_MAX_WAIT_MS": "50"})  # fmt: skip
    acked: list[str] = []
    stop = threading.Event()
    load = threading.Thread(target=_send_load, daemon=True, args=(
        srv.ports["mllp"], [f"OUT{i:03d}" for i in range(40)], acked, stop))  # fmt: skip
    try:
        load.start()
        time.sleep(2)
        if cluster is not None:
            subprocess.run(["pg_ctlcluster", *cluster, "stop", "-m", "immediate"], check=True)
            time.sleep(6)
            subprocess.run(["pg_ctlcluster", *cluster, "start"], check=True)
        else:  # SQLite: an exclusive lock held past the 10 s busy timeout
            lock = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
            lock.execute("BEGIN EXCLUSIVE")
            time.sleep(12)
            lock.rollback()
            lock.close()
        load.join(120)
        assert acked, "no message was acknowledged"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = jobs(srv.db)
            if all(r["status"] == "done" for r in rows):
                break
            time.sleep(0.5)
        rows = jobs(srv.db)
        stuck = [r for r in rows if r["status"] != "done"]
        assert not stuck, f"{len(stuck)} job(s) stuck 60 s after the outage: {stuck[:3]}"
        keys = [str(r["dedup_key"]).rsplit("|", 1)[-1] for r in rows]
        assert all(keys.count(cid) == 1 for cid in acked)  # none lost, none twice
        assert all(r["completions"] == 1 for r in rows)
    finally:
        stop.set()
        srv.kill()


@pytest.mark.slow
def test_a_job_every_run_died_on_is_failed_as_poison_and_others_still_run(
    tmp_path: Path,
) -> None:
    """Regression: nothing capped retries; a killer document ran first on every restart."""
    url = f"sqlite:///{tmp_path / 'intake.db'}"
    first = start_server(tmp_path, url, tag="a", env={"KIWI_FHIR_MAX_ATTEMPTS": "2"})
    with socket.create_connection(("127.0.0.1", first.ports["mllp"]), timeout=30) as s:
        for cid in ("POISON1", "FINE1"):
            s.sendall(frame(oru(cid)))
        assert [ack_fields(a)["code"] for a in read_acks(s, 2)] == ["AA", "AA"]
    first.kill()
    # As if the process had died twice while extracting POISON1 (and once in FINE1's
    # batch): attempts are what the claims counted; both rows are mid-processing.
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(text("UPDATE jobs SET status = 'processing', attempts = CASE WHEN "
                       "dedup_key LIKE '%POISON1' THEN 2 ELSE 1 END"))  # fmt: skip
    eng.dispose()
    again = start_server(tmp_path, url, tag="b", env={"KIWI_FHIR_MAX_ATTEMPTS": "2"})
    try:
        deadline = time.monotonic() + 60
        while any(r["status"] in ("received", "processing") for r in jobs(url)):
            assert time.monotonic() < deadline, jobs(url)
            time.sleep(0.2)
        by = {str(r["dedup_key"]).rsplit("|", 1)[-1]: r for r in jobs(url)}
        assert by["POISON1"]["status"] == "failed"
        assert "gave up after 2 attempts" in str(by["POISON1"]["error"])
        assert by["FINE1"]["status"] == "done"
        status = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{again.ports['http']}/jobs/{by['POISON1']['id']}",
            timeout=10).read())  # fmt: skip
        assert status["status"] == "failed" and status["attempts"] == 2
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{again.ports['http']}/metrics",
                                         timeout=10).read().decode()  # fmt: skip
        assert "kiwi_fhir_jobs_given_up_total 1.0" in metrics
    finally:
        assert again.stop() == 0


def test_connection_cap_and_whole_frame_deadline(tmp_path: Path) -> None:
    """Regression: idle connections exhausted every listener; a 1-byte drip was never cut."""
    srv = start_server(tmp_path, env={"KIWI_FHIR_MAX_CONNECTIONS": "4",
                                      "KIWI_FHIR_MLLP_FRAME_TIMEOUT_S": "1.5"})  # fmt: skip
    port = srv.ports["mllp"]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            extra.settimeout(10)
            assert extra.recv(1024) == b""  # closed at once, not left hanging
        # The other listeners still answer.
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{srv.ports['http']}/metrics",
                                         timeout=10).read().decode()  # fmt: skip
        assert 'kiwi_fhir_connections_refused_total{listener="mllp"} 1.0' in metrics
        idle.pop().close()
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as ok:
            ok.sendall(frame(oru("CAP1")))
            assert ack_fields(read_acks(ok, 1)[0])["code"] == "AA"
        # Slow drip: a byte every 0.4 s is never idle, but the frame deadline ends it.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as drip:
            msg = frame(oru("DRIP1"))
            t0 = time.monotonic()
            closed = False
            for b in msg[:-2]:
                try:
                    drip.sendall(bytes([b]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.4)
                if time.monotonic() - t0 > 8:
                    break
            if not closed:
                drip.settimeout(5)
                try:
                    closed = drip.recv(1024) == b""
                except OSError:
                    closed = True
            assert closed and time.monotonic() - t0 < 8
        assert not any(str(r["dedup_key"]).endswith("DRIP1") for r in jobs(srv.db))
    finally:
        for s in idle:
            s.close()
        assert srv.stop() == 0
