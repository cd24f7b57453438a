"""torchvision ResNet-50, MobileNetV3-Large and a ViT (random weights; see
``real_models.vision_model``) exported with ``torch.onnx.export``, batch and image size
dynamic (ViT: batch only, its position embeddings fix the image), imported by rlx, compiled
for cpu and run against ONNX Runtime at three sizes from one import. Tolerance: f32,
max |rlx - onnxruntime| <= 1e-4 * max(1, max |ref|).

Every convolution must run fused with its activation or its residual add, and with
``torchscript-bn`` (batch norms left in the graph) rlx folds every batch norm into its
convolution's weights at bind."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import rlx  # noqa: E402
from rlx.frontends.onnx import load  # noqa: E402
from real_models import assert_matches_onnxruntime, export, image_size  # noqa: E402

CONV = {"conv_bias_act", "conv_residual_act"}
EXPECTED = {  # fused ops each export must show
    "resnet50": CONV | {"matmul_bias_act"},
    "mobilenet_v3": {"conv_bias_act", "matmul_bias_act"},
    "vit": {"sdpa", "matmul_bias_act"},
}
CASES = [(m, e) for m in EXPECTED for e in ("dynamo", "torchscript")] + [("resnet50", "torchscript-bn")]


def _sizes(name: str) -> list[tuple[int, int]]:
    s = image_size(name)
    return [(1, s), (2, s), (3, s)] if name == "vit" else [(1, 64), (2, 96), (3, 80)]


@pytest.mark.slow
@pytest.mark.parametrize("name,exporter", CASES)
def test_vision_model_imports_and_matches_onnxruntime(name, exporter, tmp_path):
    path = tmp_path / f"{name}.onnx"
    export(name, path, exporter)
    graph = load(path)
    result = rlx.compile(graph, target="cpu")
    report = result.report
    missing = EXPECTED[name] - set(report.fused)
    assert not missing, f"{name} ({exporter}): {sorted(missing)} did not fuse; fused {report.fused}"
    assert not report.missed, report.missed
    if name == "resnet50":  # a ResNet's convolutions all end in an activation or a residual add
        assert report.ops_after.get("conv", 0) <= 4, report.ops_after  # the 4 downsampling shortcuts
        assert "mul" not in report.ops_after and "add" not in report.ops_after, report.ops_after
    if exporter == "torchscript-bn":
        assert report.ops_before["mul"] >= 53 and report.folded > 0, report  # 53 batch norms, folded at bind
    rng = np.random.default_rng()
    for batch, size in _sizes(name):
        feeds = {n.name: rng.standard_normal((batch, 3, size, size)).astype(np.float32) for n in graph.inputs}
        assert_matches_onnxruntime(result, path, feeds, f"{name} ({exporter}), B={batch} {size}x{size}")
