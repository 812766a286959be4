"""The Triton extractor against a real Triton server on 127.0.0.1.

The server is the ``tritonserver`` binary bundled with nvidia-pytriton 0.7.0
(``make triton-server`` installs it into build/pytriton), serving the CPU
(Python-backend + onnxruntime) variant of the repository that
``kiwi_fhir.extractors.triton_repo`` assembles into tmp_path from the
packaged model. Outputs must equal the in-process extractor's: same spans,
same confidences, same relations.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiwi_fhir.core import Document, Extraction
from kiwi_fhir.corpus import default_data_dir, dev_ids
from kiwi_fhir.errors import BackendUnavailableError, ConfigError, ModelError
from kiwi_fhir.extractors.onnx import OnnxExtractor, default_model_dir
from kiwi_fhir.service.status import outcome

pytest.importorskip("tritonclient.grpc", reason="needs the triton extra")
from kiwi_fhir.extractors.triton import TritonExtractor
from kiwi_fhir.extractors.triton_local import LocalTritonServer, find_tritonserver
from kiwi_fhir.extractors.triton_repo import MODELS, assemble

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TEXTS = [
    "Patient denies chest pain or shortness of breath. No fever.",
    "Started metformin 500 mg PO twice daily for type 2 diabetes.",
    "CT of the abdomen showed a 2 cm mass in the left kidney; biopsy planned.",
    "Mother had breast cancer. Possible mild pneumonia, improving on amoxicillin.",
    "",
    # Long enough for several overlapping windows (max_len 256, stride 192).
    " ".join(["BP 142/90, HR 88. Hypertension, on lisinopril 10 mg daily."] * 60),
]


def _view(ex: Extraction) -> dict[str, Any]:
    """Everything that must match; ``source``/``backend`` name the backend by design."""
    return {
        "entities": [(e.id, e.label, e.start, e.end, e.text, e.confidence) for e in ex.entities],
        "modifiers": [(m.id, m.label, m.start, m.end, m.text, m.confidence) for m in ex.modifiers],
        "relations": [(r.id, r.entity_id, r.modifier_id, r.confidence) for r in ex.relations],
        "model": ex.model,
    }


@pytest.fixture(scope="module")
def model_dir() -> Path:
    d = default_model_dir()
    if not (d / "config.json").is_file():
        pytest.skip(f"no model at {d}")
    return d


@pytest.fixture(scope="module")
def triton(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gRPC url of a Triton server with the CPU repository; stopped at module end."""
    try:
        find_tritonserver()
    except ConfigError as exc:
        pytest.skip(str(exc))
    repo = assemble(tmp_path_factory.mktemp("triton") / "repo", model_dir=model_dir, threads=2)
    server = LocalTritonServer(repo, models=MODELS)
    server.start()
    try:
        yield server.grpc_url
    finally:
        server.stop()
    assert not server.running


@pytest.fixture(scope="module")
def local(model_dir: Path) -> Iterator[OnnxExtractor]:
    ex = OnnxExtractor(model_dir, threads=2)
    ex.load()
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def remote(model_dir: Path, triton: str) -> Iterator[TritonExtractor]:
    ex = TritonExtractor(model_dir, url=triton)
    ex.load()
    yield ex
    ex.close()


@pytest.mark.slow
def test_examples_equal_in_process(local: OnnxExtractor, remote: TritonExtractor) -> None:
    docs = [Document("note", (EXAMPLES / "note.txt").read_text(encoding="utf-8"))]
    docs += [Document(f"t{i}", t) for i, t in enumerate(TEXTS)]
    want = local.extract(docs)
    got = remote.extract(docs)
    assert [_view(g) for g in got] == [_view(w) for w in want]
    assert any(g.entities for g in got) and any(g.relations for g in got)
    assert {e.source for g in got for e in g.entities} == {"triton"}
    assert remote.health()


@pytest.mark.slow
def test_dev_notes_equal_in_process(local: OnnxExtractor, remote: TritonExtractor) -> None:
    data = default_data_dir()
    if data is None:
        pytest.skip("shared corpus not found (set KIWI_FHIR_DATA)")
    ids = [i for i in dev_ids() if (data / f"{i}.txt").is_file()]
    assert ids, "dev split ids not in the corpus"
    docs = [Document(i, (data / f"{i}.txt").read_text(encoding="utf-8")) for i in ids]
    want, got = local.extract(docs), remote.extract(docs)
    for w, g in zip(want, got, strict=True):
        assert _view(g) == _view(w), g.document.id


@pytest.mark.slow
def test_given_entities_equal_in_process(local: OnnxExtractor, remote: TritonExtractor) -> None:
    doc = Document("note", (EXAMPLES / "note.txt").read_text(encoding="utf-8"))
    (pred,) = local.extract([doc])
    given = [list(pred.entities)]
    assert _view(remote.extract([doc], given)[0]) == _view(local.extract([doc], given)[0])


@pytest.mark.slow
def test_padded_batches_when_asked(model_dir: Path, triton: str, local: OnnxExtractor) -> None:
    """per_window=False (fp32 on GPU) sends the padded batch as one request.

    One single-window note has no padding, so it must still match exactly;
    a batch of notes runs (its int8 numbers may differ, by design).
    """
    ex = TritonExtractor(model_dir, url=triton, per_window=False)
    ex.load()
    doc = Document("a", TEXTS[0])
    assert _view(ex.extract([doc])[0]) == _view(local.extract([doc])[0])
    assert len(ex.extract([Document(f"t{i}", t) for i, t in enumerate(TEXTS)])) == len(TEXTS)
    ex.close()


@pytest.mark.slow
def test_other_model_on_server_is_refused(model_dir: Path, triton: str, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    cfg["model_id"] = "some-other-model"
    (other / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    # The client-side files: tokenizer and the word-feature lexicon.
    for name in (cfg["tokenizer"], cfg["word_features"]["lexicon"]):
        shutil.copy(model_dir / name, other / name)
    with pytest.raises(ModelError, match="some-other-model"):
        TritonExtractor(other, url=triton).load()


@pytest.mark.slow
def test_server_down_is_unavailable_and_unhealthy(model_dir: Path, tmp_path: Path) -> None:
    """Its own server: stopping the shared one would break the other tests."""
    try:
        find_tritonserver()
    except ConfigError as exc:
        pytest.skip(str(exc))
    server = LocalTritonServer(assemble(tmp_path / "repo", model_dir=model_dir), models=MODELS)
    server.start()
    ex = TritonExtractor(model_dir, url=server.grpc_url, retries=1, backoff_s=0.05)
    try:
        ex.load()
        assert ex.health()
        assert ex.extract([Document("a", "No fever.")])[0].document.id == "a"
    finally:
        server.stop()
    assert not ex.health()
    with pytest.raises(BackendUnavailableError) as info:
        ex.extract([Document("a", "No fever.")])
    assert server.grpc_url in str(info.value) and "fever" not in str(info.value)
    assert outcome(info.value).grpc_code.name == "UNAVAILABLE" and outcome(info.value).ack == "AR"
    ex.close()
