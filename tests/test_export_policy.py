"""Which MatMuls the int8 export keeps in fp32 (pure graph inspection)."""

from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")

from kiwi_fhir.training.export import fp32_nodes  # noqa: E402


def _graph(path: Path, n_layers: int) -> None:
    from onnx import TensorProto, helper

    names = ["/main/MatMul", "/mod/MatMul", "/relation/MatMul"]
    for i in range(n_layers):
        p = f"/encoder/encoder/layer.{i}"
        names += [
            f"{p}/attention/self/query/MatMul",
            f"{p}/attention/output/dense/MatMul",
            f"{p}/intermediate/dense/MatMul",
            f"{p}/output/dense/MatMul",
        ]
    nodes = [helper.make_node("MatMul", ["x", "x"], [f"y{k}"], name=n) for k, n in enumerate(names)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
    outs = [
        helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, [2, 2]) for k in range(len(names))
    ]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], outs)), str(path))


def test_six_layers_keep_heads_and_early_ffn(tmp_path: Path) -> None:
    _graph(tmp_path / "m.onnx", 6)
    kept = set(fp32_nodes(tmp_path / "m.onnx"))
    layer = "/encoder/encoder/layer.{}/{}/dense/MatMul"
    assert kept == {
        "/main/MatMul",
        "/mod/MatMul",
        layer.format(0, "intermediate"),
        layer.format(0, "output"),
        layer.format(1, "intermediate"),
        layer.format(1, "output"),
        layer.format(2, "output"),
        layer.format(3, "output"),
    }
    assert not any("/attention/" in n for n in kept)


def test_policy_scales_with_depth(tmp_path: Path) -> None:
    _graph(tmp_path / "m.onnx", 12)
    kept = fp32_nodes(tmp_path / "m.onnx")
    assert sum("/intermediate/" in n for n in kept) == 4  # first third: layers 0-3
    assert sum("/output/dense/" in n for n in kept) == 8  # first two thirds
