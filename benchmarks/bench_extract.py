"""End-to-end extraction speed and memory: int8 (shipped) vs fp32.

Read → segment → NER → RE → spans over the shared notes, in a fresh
process per precision so peak RSS is the model's own. A benchmark, not a
test: it prints one table and asserts nothing.

    python benchmarks/bench_extract.py [--model DIR] [--data DIR] [--threads 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _child(model: str | None, precision: str, data: str, threads: int, repeat: int) -> None:
    from kiwi_fhir.brat import iter_txt, read_text
    from kiwi_fhir.core import Document
    from kiwi_fhir.extractors.onnx import OnnxExtractor

    paths = iter_txt([Path(data)])
    t_load = time.perf_counter()
    ex = OnnxExtractor(Path(model) if model else None, threads=threads, precision=precision)
    ex.load()
    load_s = time.perf_counter() - t_load
    ex.extract([Document("warmup", read_text(paths[0]))])
    best = float("inf")
    n_spans = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        docs = [Document(p.stem, read_text(p)) for p in paths]  # reading is part of the job
        out = []
        for c in range(0, len(docs), 8):
            out.extend(ex.extract(docs[c : c + 8]))
        best = min(best, time.perf_counter() - t0)
        n_spans = sum(len(e.entities) + len(e.modifiers) for e in out)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "precision": precision,
                "notes": len(paths),
                "seconds": best,
                "notes_per_s": len(paths) / best,
                "peak_rss_mb": rss_mb,
                "load_s": load_s,
                "spans": n_spans,
            }
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model dir (default: packaged; fp32 needs a `make model` dir)")
    ap.add_argument("--data", default="../shared/data/mtsamples/train")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--precision", nargs="+", default=["int8", "fp32"])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child(a.model, a.child, a.data, a.threads, a.repeat)
        return 0
    rows = []
    for precision in a.precision:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            precision,
            "--data",
            a.data,
            "--threads",
            str(a.threads),
            "--repeat",
            str(a.repeat),
        ]
        if a.model:
            cmd += ["--model", a.model]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(f"{precision}: failed: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"{'model':<8}{'notes':>7}{'seconds':>10}{'notes/s':>10}{'peak RSS MB':>13}{'load s':>8}")
    for r in rows:
        print(
            f"{r['precision']:<8}{r['notes']:>7}{r['seconds']:>10.2f}{r['notes_per_s']:>10.2f}"
            f"{r['peak_rss_mb']:>13.0f}{r['load_s']:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
