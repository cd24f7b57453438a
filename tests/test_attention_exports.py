"""Attention as PyTorch code writes it and torch.onnx.export exports it: a boolean padding
mask through F.scaled_dot_product_attention, is_causal=True, a causal mask built with
torch.triu and applied with masked_fill, and nn.MultiheadAttention with a key padding mask.
Each, from both exporters where the exporter keeps the sequence dynamic, must fuse into one
attention kernel and match ONNX Runtime (f32: max |rlx - ort| <= 1e-4 * max(1, max |ref|))."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
F = torch.nn.functional

import rlx  # noqa: E402
from rlx.frontends.onnx import load  # noqa: E402
from real_models import assert_matches_onnxruntime  # noqa: E402

ATTENTION = {"sdpa", "sdpa_nan_zero", "sdpa_bool_mask"}


class Block(torch.nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.qkv = torch.nn.Linear(32, 96)
        self.mha = torch.nn.MultiheadAttention(32, 4, batch_first=True)

    def forward(self, x, keep):
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, 4, 8).permute(2, 0, 3, 1, 4)
        if self.kind == "bool_mask":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        if self.kind == "is_causal":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if self.kind == "triu_masked_fill":
            future = torch.triu(torch.ones(s, s, dtype=torch.bool), 1)
            scores = (q @ k.transpose(-1, -2)) / 8 ** 0.5
            return torch.softmax(scores.masked_fill(future, float("-inf")), -1) @ v
        return self.mha(x, x, x, key_padding_mask=~keep, need_weights=False)[0]


KINDS = ("bool_mask", "is_causal", "triu_masked_fill", "multihead_attention")


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("kind", KINDS)
def test_attention_as_exported_fuses_and_matches_onnxruntime(kind, dynamo, tmp_path):
    if kind == "multihead_attention" and not dynamo:
        pytest.skip("the TorchScript exporter writes nn.MultiheadAttention's reshapes with the example's "
                    "sequence length as a constant: the model it writes is not dynamic in S")
    torch.manual_seed(0)
    model = Block(kind).eval()
    x, keep = torch.randn(2, 8, 32), torch.ones(2, 8, dtype=torch.bool)
    path = str(tmp_path / f"{kind}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {0: torch.export.Dim("B"), 1: torch.export.Dim("S")}
            torch.onnx.export(model, (x, keep), path, input_names=["x", "keep"], dynamic_shapes=(dims, dims),
                              dynamo=True, verbose=False)
        else:
            axes = {0: "B", 1: "S"}
            torch.onnx.export(model, (x, keep), path, input_names=["x", "keep"], dynamic_axes={"x": axes, "keep": axes},
                              dynamo=False, opset_version=17)
    graph = load(path)
    result = rlx.compile(graph, target="cpu")
    fused = set(result.report.fused) & ATTENTION
    assert fused, f"{kind}: no attention fused ({result.report.fused}; missed {result.report.missed})"
    assert not result.report.missed, result.report.missed
    rng = np.random.default_rng()
    for batch, seq in ((1, 5), (3, 12), (2, 8)):
        keep_np = rng.random((batch, seq)) < 0.8
        keep_np[:, 0] = True  # every query keeps one key: no fully masked row
        feeds = {"x": rng.standard_normal((batch, seq, 32)).astype(np.float32), "keep": keep_np}
        feeds = {n.name: feeds[n.name] for n in graph.inputs}
        assert_matches_onnxruntime(result, path, feeds, f"{kind}, B={batch} S={seq}")
