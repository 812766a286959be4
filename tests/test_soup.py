"""``scripts/soup.py``: weight averaging of ONNX models with one graph."""

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _linear(path: Path, w: np.ndarray, shape_const: np.ndarray) -> None:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["y0"]),
            helper.make_node("Reshape", ["y0", "shape"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(shape_const, "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_average_onnx_means_float_weights_and_keeps_integer_ones(
    tmp_path: Path, load_script: Callable[[str], ModuleType]
) -> None:
    soup = load_script("soup")
    shape = np.asarray([2], dtype=np.int64)
    w1 = np.asarray([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    w2 = np.asarray([[3.0, 0.0], [1.0, 2.0]], dtype=np.float32)
    _linear(tmp_path / "a.onnx", w1, shape)
    _linear(tmp_path / "b.onnx", w2, shape)
    soup.average_onnx([tmp_path / "a.onnx", tmp_path / "b.onnx"], tmp_path / "avg.onnx")
    sess = ort.InferenceSession(str(tmp_path / "avg.onnx"), providers=["CPUExecutionProvider"])
    x = np.asarray([[1.0, 2.0]], dtype=np.float32)
    (y,) = sess.run(None, {"x": x})
    assert np.allclose(y, (x @ ((w1 + w2) / 2)).ravel())  # [6, 7]
    assert np.allclose(y, [6.0, 7.0])


def test_average_onnx_refuses_different_graphs(
    tmp_path: Path, load_script: Callable[[str], ModuleType]
) -> None:
    soup = load_script("soup")
    w = np.eye(2, dtype=np.float32)
    _linear(tmp_path / "a.onnx", w, np.asarray([2], dtype=np.int64))
    _linear(tmp_path / "b.onnx", w, np.asarray([1, 2], dtype=np.int64))
    with pytest.raises(SystemExit, match="differs"):
        soup.average_onnx([tmp_path / "a.onnx", tmp_path / "b.onnx"], tmp_path / "avg.onnx")
