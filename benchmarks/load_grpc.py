"""gRPC load test: N concurrent clients on loopback against a fresh ``kiwi-fhir serve``.

Each client has its own channel and sends notes from the shared corpus (or
``examples/note.txt``) one after another until the fixed total is reached.
Every request carries a unique ``document_id``, so none is answered from
the idempotency cache: each one is a real job. Prints throughput, p50/p99
latency, and lost / duplicated results, counted twice: from the answers
(non-DONE, missing, or a job id answering two requests) and from the
server's database afterwards (rows != requests, or completions != 1).

    python benchmarks/load_grpc.py [--clients 1 8 32] [--count 96] [--model DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kiwi_fhir.service._generated import extraction_pb2 as pb  # noqa: E402
from kiwi_fhir.service._generated import extraction_pb2_grpc as pb_grpc  # noqa: E402


def _notes(limit: int) -> list[str]:
    from kiwi_fhir.corpus import default_data_dir

    d = default_data_dir()
    paths = sorted(d.glob("*.txt"))[:limit] if d else []
    return [p.read_text(encoding="utf-8") for p in paths] or [
        (REPO / "examples" / "note.txt").read_text(encoding="utf-8")
    ]


def _start(tmp: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], int, str]:
    ready, db = tmp / "ready.json", f"sqlite:///{tmp / 'bench.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "KIWI_FHIR_LOG_LEVEL": "WARNING",
           "KIWI_FHIR_BATCH_MAX_SIZE": str(args.batch_max_size),
           "KIWI_FHIR_BATCH_MAX_WAIT_MS": str(args.batch_max_wait_ms),
           "KIWI_FHIR_THREADS": str(args.threads)}  # fmt: skip
    cmd = [sys.executable, "-m", "kiwi_fhir.cli", "serve", "--grpc-port", "0", "--db", db,
           "--ready-file", str(ready)]  # fmt: skip
    if args.model:
        cmd += ["--model", args.model]
    proc = subprocess.Popen([*cmd, "--mllp-port", "0", "--http-port", "0"], env=env)
    for _ in range(1200):
        if ready.is_file():
            return proc, int(json.loads(ready.read_text())["grpc"]), db
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


async def _client(target: str, jobs: asyncio.Queue[tuple[int, str]],
                  out: dict[int, tuple[float, Any]]) -> None:  # fmt: skip
    async with grpc.aio.insecure_channel(target) as ch:
        stub = pb_grpc.ExtractionServiceStub(ch)  # type: ignore[no-untyped-call]
        while not jobs.empty():
            i, note = jobs.get_nowait()
            t0 = time.perf_counter()
            try:
                resp = await stub.ExtractText(
                    pb.ExtractTextRequest(text=note, document_id=f"bench-{i}"), timeout=600
                )
            except grpc.aio.AioRpcError as exc:
                resp = exc.code().name
            out[i] = (time.perf_counter() - t0, resp)


async def _run(target: str, clients: int, notes: list[str], count: int,
               first: int = 0) -> dict[str, Any]:  # fmt: skip
    q: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for i in range(count):
        q.put_nowait((first + i, notes[i % len(notes)]))
    out: dict[int, tuple[float, Any]] = {}
    t0 = time.perf_counter()
    await asyncio.gather(*(_client(target, q, out) for _ in range(clients)))
    wall = time.perf_counter() - t0
    ok = {i: r for i, (_, r) in out.items()
          if isinstance(r, pb.ExtractResponse) and r.status == pb.JOB_STATUS_DONE
          and r.documents and r.documents[0].document_id == f"bench-{i}"}  # fmt: skip
    job_ids = [r.job_id for r in ok.values()]
    lat = sorted(t for t, _ in out.values())
    return {
        "clients": clients,
        "requests": count,
        "wall_s": wall,
        "docs_per_s": count / wall,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "lost": count - len(ok),
        "duplicated": len(job_ids) - len(set(job_ids)),
    }


def _db_check(db: str, count: int) -> tuple[int, int]:
    eng = create_engine(db)
    with eng.connect() as c:
        rows = c.execute(text("SELECT status, completions FROM jobs")).all()
    eng.dispose()
    done_once = sum(1 for s, n in rows if s == "done" and n == 1)
    return count - done_once, sum(1 for _, n in rows if n > 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--count", type=int, default=96, help="requests per run (all clients)")
    p.add_argument("--notes", type=int, default=24, help="distinct shared notes to cycle")
    p.add_argument("--model", help="model directory (default: packaged / $KIWI_FHIR_MODEL)")
    p.add_argument("--batch-max-size", type=int, default=16)
    p.add_argument("--batch-max-wait-ms", type=float, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    notes = _notes(args.notes)
    print(f"{len(notes)} distinct notes, {args.count} requests per run, "
          f"batch<= {args.batch_max_size}, wait {args.batch_max_wait_ms} ms")  # fmt: skip
    print(f"{'clients':>7} {'docs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'lost':>5} {'dup':>4} "
          f"{'db lost':>7} {'db dup':>6}")  # fmt: skip
    bad = 0
    for clients in args.clients:
        with tempfile.TemporaryDirectory() as tmp:
            proc, port, db = _start(Path(tmp), args)
            try:
                target = f"127.0.0.1:{port}"
                asyncio.run(_run(target, 1, notes[:1], 1, first=-1))  # warm-up, not counted
                r = asyncio.run(_run(target, clients, notes, args.count))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(120)
            db_lost, db_dup = _db_check(db, args.count + 1)
        bad += r["lost"] + r["duplicated"] + db_lost + db_dup
        print(
            f"{clients:>7} {r['docs_per_s']:>8.2f} {r['p50_ms']:>8.0f} {r['p99_ms']:>8.0f} "
            f"{r['lost']:>5} {r['duplicated']:>4} {db_lost:>7} {db_dup:>6}",
            flush=True,
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
