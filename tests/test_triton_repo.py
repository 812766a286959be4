"""The Triton model repository assembled from triton_models/ (no server needed).

The GPU (onnxruntime_onnx) variant cannot be served here (the bundled
tritonserver has no onnxruntime backend), so its configs are checked the
way Triton would read them: parsed as ``ModelConfig`` text protos, and
every declared tensor matched against the ONNX graph's names, types and
ranks.
"""

from __future__ import annotations

import re
from pathlib import Path

import onnxruntime as ort
import pytest

from kiwi_fhir.errors import ConfigError, ModelError
from kiwi_fhir.extractors.onnx import default_model_dir, read_model_config
from kiwi_fhir.extractors.triton_repo import MODELS, assemble, main

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")

_ORT_TYPES = {"tensor(int64)": "TYPE_INT64", "tensor(float)": "TYPE_FP32"}


@pytest.fixture(scope="module")
def model_dir() -> Path:
    d = default_model_dir()
    if not (d / "config.json").is_file():
        pytest.skip(f"no model at {d}")
    return d


def _config(path: Path) -> object:
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("variant", ["python", "onnx"])
def test_configs_match_the_onnx_graphs(variant: str, model_dir: Path, tmp_path: Path) -> None:
    repo = assemble(tmp_path / "repo", model_dir=model_dir, variant=variant, instances=2)
    model_id = read_model_config(model_dir)["model_id"]
    for name in MODELS:
        cfg = _config(repo / name / "config.pbtxt")
        assert cfg.name == name
        assert cfg.parameters["kiwi_model_id"].string_value == model_id
        assert cfg.instance_group[0].count == 2
        assert not re.search(r"@[A-Z_]+@", (repo / name / "config.pbtxt").read_text("utf-8"))
        batched = cfg.max_batch_size > 0
        if variant == "onnx":
            assert cfg.platform == "onnxruntime_onnx" and batched
            assert cfg.HasField("dynamic_batching")
            assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        else:
            assert cfg.backend == "python" and not batched
            assert (repo / name / "1" / "model.py").is_file()
        sess = ort.InferenceSession(
            str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        graph = {t.name: t for t in [*sess.get_inputs(), *sess.get_outputs()]}
        declared = [*cfg.input, *cfg.output]
        assert {t.name for t in declared} == set(graph)
        for t in declared:
            g = graph[t.name]
            assert model_config_pb2.DataType.Name(t.data_type) == _ORT_TYPES[g.type], t.name
            dims = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
            assert len(dims) + int(batched) == len(g.shape), t.name
            for want, have in zip(dims, g.shape[int(batched) :], strict=True):
                assert want == -1 or not isinstance(have, int) or want == have, t.name


def test_repository_is_replaced_not_merged(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    (out / "stale_model").mkdir(parents=True)
    assemble(out, model_dir=model_dir)
    assert sorted(p.name for p in out.iterdir()) == sorted(MODELS)


def test_bad_requests_are_typed_errors(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="variant"):
        assemble(tmp_path / "r", model_dir=model_dir, variant="tensorrt")
    with pytest.raises(ModelError, match="no model installed"):
        assemble(tmp_path / "r", model_dir=tmp_path)
    fp32 = read_model_config(model_dir).get("tagger_fp32")
    if not fp32 or not (model_dir / fp32).is_file():
        with pytest.raises(ModelError, match="fp32"):
            assemble(tmp_path / "r", model_dir=model_dir, precision="fp32")
    assert main(["--out", str(tmp_path / "r"), "--model", str(tmp_path)]) == 2
