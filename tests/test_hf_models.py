"""Hugging Face ``transformers`` models (small configs, random weights) exported with
``torch.onnx.export``, batch and sequence dynamic, imported by rlx, compiled for cpu and run
against ONNX Runtime at three sizes from one symbolic import. Tolerance: f32,
max |rlx - onnxruntime| <= 1e-4 * max(1, max |ref|).

Both exporters are tried: the dynamo one (torch's default) and the TorchScript one; where an
exporter cannot export a model (the TorchScript one lacks ``aten::diff``, which transformers'
mask code uses for GPT-2 and Llama), the test says so and skips: that is torch's limit, not an
import failure."""
from __future__ import annotations

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import rlx  # noqa: E402
from rlx.frontends.onnx import load  # noqa: E402
from real_models import TEXT, VOCAB, assert_matches_onnxruntime, export  # noqa: E402

EXPECTED = {  # fused ops each export must show (the dynamo exporter's attention zeroes NaN rows)
    ("gpt2", "dynamo"): {"sdpa_nan_zero", "gelu_tanh", "matmul_bias_act"},
    ("bert", "dynamo"): {"sdpa_nan_zero", "matmul_bias_act"},
    ("llama", "dynamo"): {"sdpa_nan_zero", "swiglu", "rms_norm", "add_rms_norm", "rotary_half"},
    ("bert", "torchscript"): {"sdpa", "matmul_bias_act"},
}
SIZES = ((1, 5), (3, 11), (2, 32))


def fused_kinds(result) -> set[str]:
    """The fused ops a compile made: its own kernels, and activations fused into a GEMM's
    epilogue (GPT-2's gelu_tanh runs inside the matmul_bias_act that feeds it)."""
    epilogues = {n.attrs.get("act") for n in result.graph.nodes if n.op.startswith("matmul_bias_act")}
    return set(result.report.fused) | (epilogues - {None, "none"})


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name", TEXT)
def test_hf_model_imports_and_matches_onnxruntime(name, exporter, tmp_path):
    path = tmp_path / f"{name}.onnx"
    try:
        export(name, path, exporter)
    except torch.onnx.errors.UnsupportedOperatorError as e:
        pytest.skip(f"the TorchScript exporter cannot export {name}: {e}")
    graph = load(path)
    result = rlx.compile(graph, target="cpu")
    missing = EXPECTED[name, exporter] - fused_kinds(result)
    assert not missing, f"{name} ({exporter}): {sorted(missing)} did not fuse; fused {result.report.fused}"
    assert not result.report.missed, result.report.missed
    rng = np.random.default_rng()
    for batch, seq in SIZES:
        feeds = {n.name: rng.integers(0, VOCAB, (batch, seq)) for n in graph.inputs}
        assert_matches_onnxruntime(result, path, feeds, f"{name} ({exporter}), B={batch} S={seq}")
