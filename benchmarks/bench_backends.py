"""Backend comparison: in-process ONNX vs Triton (CPU) vs the vLLM path, one run.

Every backend gets the same notes (the fixed dev split, or the bundled
examples without the shared corpus), one note per ``extract`` call as the
service's unary path does, from ``--clients`` concurrent callers. Triton is
a real server on loopback (the CPU repository, ``make triton-server``) with
the same total onnxruntime threads as the in-process extractor, so the ratio
is the cost of the hop (serialization, gRPC, the Python backend), not of
more cores. The LLM path runs only with ``--llm-url`` (a running vLLM).
A benchmark, not a test: it prints a table, asserts nothing, and reports
whether Triton's outputs equal the in-process ones.

    python benchmarks/bench_backends.py [--clients 1 4] [--repeat 2] [--llm-url URL]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from kiwi_fhir.core import Document, Extraction
from kiwi_fhir.corpus import default_data_dir, dev_ids
from kiwi_fhir.extractors.base import Extractor
from kiwi_fhir.extractors.registry import create_extractor

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "note.txt"


def load_notes(data: Path | None) -> tuple[str, list[Document]]:
    if data is not None:
        ids = [i for i in dev_ids() if (data / f"{i}.txt").is_file()]
        if ids:
            docs = [Document(i, (data / f"{i}.txt").read_text(encoding="utf-8")) for i in ids]
            return f"dev split ({len(docs)} notes)", docs
    return "bundled example", [Document("example", EXAMPLE.read_text(encoding="utf-8"))]


def measure(ex: Extractor, docs: Sequence[Document], clients: int, repeat: int) -> dict[str, Any]:
    """Best-of-``repeat`` notes/s; latency percentiles over every call of every pass."""
    ex.extract([docs[0]])  # warm-up: first-call allocations, connections
    lat: list[float] = []
    best = 0.0

    def one(d: Document) -> float:
        t0 = time.perf_counter()
        ex.extract([d])
        return time.perf_counter() - t0

    with ThreadPoolExecutor(clients) as pool:
        for _ in range(repeat):
            t0 = time.perf_counter()
            got = list(pool.map(one, docs))
            best = max(best, len(docs) / (time.perf_counter() - t0))
            lat.extend(got)
    ms = np.array(lat) * 1000
    return {
        "notes_per_s": best,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "calls": len(lat),
    }


def _view(ex: Extraction) -> tuple[Any, ...]:
    return (
        [(e.label, e.start, e.end, e.confidence) for e in ex.entities],
        [(m.label, m.start, m.end, m.confidence) for m in ex.modifiers],
        [(r.entity_id, r.modifier_id, r.confidence) for r in ex.relations],
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from kiwi_fhir.extractors.triton_local import LocalTritonServer
    from kiwi_fhir.extractors.triton_repo import MODELS, assemble

    label, docs = load_notes(args.data or default_data_dir())
    report: dict[str, Any] = {
        "notes": label,
        "threads": args.threads,
        "rows": [],
        "triton_instances": args.triton_instances,
    }
    backends: list[tuple[str, Callable[[], Extractor]]] = []
    onnx = create_extractor("onnx", model_dir=args.model, threads=args.threads)
    onnx.load()
    backends.append(("onnx (in-process)", lambda: onnx))
    work = Path(tempfile.mkdtemp(prefix="kiwi-bench-"))
    repo = assemble(
        work / "repo",
        model_dir=args.model,
        instances=args.triton_instances,
        threads=args.triton_threads or args.threads,
    )
    server = LocalTritonServer(repo, models=MODELS).start()
    try:
        url = server.grpc_url
        backends.append(
            (
                "triton (CPU, python backend)",
                lambda: create_extractor("triton", model_dir=args.model, url=url),
            )
        )
        if args.llm_url:
            backends.append(
                (
                    "vllm (LLM)",
                    lambda: create_extractor("llm", base_url=args.llm_url, model=args.llm_model),
                )
            )
        reference = [_view(e) for e in onnx.extract(docs)]
        for name, make in backends:
            ex = make()
            ex.load()
            if name.startswith("triton"):
                same = sum(_view(e) == r for e, r in zip(ex.extract(docs), reference, strict=True))
                report["triton_identical"] = f"{same}/{len(docs)}"
            for clients in args.clients:
                row = {"backend": name, "clients": clients}
                row.update(measure(ex, docs, clients, args.repeat))
                report["rows"].append(row)
                print(json.dumps(row), file=sys.stderr)
            if ex is not onnx:
                ex.close()
    finally:
        server.stop()
        onnx.close()
        shutil.rmtree(work, ignore_errors=True)
    base = {r["clients"]: r for r in report["rows"] if r["backend"].startswith("onnx")}
    for r in report["rows"]:
        b = base[r["clients"]]
        r["x_notes_per_s"] = r["notes_per_s"] / b["notes_per_s"]
        r["x_p99"] = r["p99_ms"] / b["p99_ms"]
    return report


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="model dir (default: packaged)")
    ap.add_argument("--data", type=Path, default=None, help="annotated notes (default: shared)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads, both sides")
    ap.add_argument("--triton-instances", type=int, default=1, help="model instances")
    ap.add_argument("--triton-threads", type=int, default=0, help="per instance (0: --threads)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--llm-url", default=None, help="OpenAI-compatible vLLM base URL (…/v1)")
    ap.add_argument("--llm-model", default="kiwi-llama")
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args(argv)
    report = run(args)
    print(
        f"notes: {report['notes']}; onnxruntime threads: {report['threads']}; "
        f"triton outputs identical to in-process: {report.get('triton_identical')}"
    )
    print(
        f"{'backend':32} {'clients':>7} {'notes/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'x notes/s':>9} {'x p99':>6}"
    )
    for r in report["rows"]:
        print(
            f"{r['backend']:32} {r['clients']:>7} {r['notes_per_s']:>8.2f} {r['p50_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['x_notes_per_s']:>9.2f} {r['x_p99']:>6.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
