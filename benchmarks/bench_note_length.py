"""Time and peak RSS of one extraction against note length (service-hardening item 10).

Each size runs in a fresh process (the packaged int8 model, 2 threads), so
the peak RSS is that note's own. The note is ``examples/note.txt`` repeated to
the target size (cut at a sentence end). A benchmark, not a test: it prints
one table and asserts nothing.

    python benchmarks/bench_note_length.py [--kb 1 4 16 64 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _note(kb: int) -> str:
    base = (REPO / "examples" / "note.txt").read_text(encoding="utf-8").strip() + "\n\n"
    text = base * (kb * 1024 // len(base.encode()) + 1)
    cut = text[: kb * 1024]
    return cut[: cut.rfind(".") + 1] or cut


def _child(kb: int, threads: int) -> None:
    from kiwi_fhir.core import Document
    from kiwi_fhir.extractors.onnx import OnnxExtractor

    ex = OnnxExtractor(None, threads=threads)
    ex.load()
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = _note(kb)
    t0 = time.perf_counter()
    out = ex.extract([Document("long", text)])[0]
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"kb": kb, "chars": len(text), "seconds": round(secs, 2),
                      "rss_loaded_mb": round(rss_loaded), "peak_rss_mb": round(peak),
                      "entities": len(out.entities)}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kb", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        _child(args.child, args.threads)
        return
    print(f"{'KB':>5} {'chars':>8} {'seconds':>8} {'s/KB':>6} {'RSS loaded':>11} {'peak RSS':>9}")
    for kb in args.kb:
        r = subprocess.run([sys.executable, __file__, "--child", str(kb), "--threads",
                            str(args.threads)], capture_output=True, text=True)  # fmt: skip
        if r.returncode != 0:
            print(f"{kb:>5} failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
            continue
        d = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{kb:>5} {d['chars']:>8} {d['seconds']:>8.2f} {d['seconds'] / kb:>6.2f} "
              f"{d['rss_loaded_mb']:>8} MB {d['peak_rss_mb']:>6} MB")


if __name__ == "__main__":
    main()
