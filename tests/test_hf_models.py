"""Hugging Face ``transformers`` models (small configs, random weights) exported with
``torch.onnx.export``, batch and sequence dynamic, imported by rlx, compiled for cpu and run
against ONNX Runtime at two sizes from one symbolic import. Tolerance: f32,
max |rlx - onnxruntime| <= 1e-4 * max(1, max |ref|).

Both exporters are tried: the dynamo one (torch's default) and the TorchScript one; where an
exporter cannot export a model (the TorchScript one lacks ``aten::diff``, which transformers'
mask code uses for GPT-2 and Llama), the test says so and skips: that is torch's limit, not an
import failure."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import rlx  # noqa: E402
from rlx.frontends.onnx import load, run_onnxruntime  # noqa: E402
from rlx.pipeline import max_error  # noqa: E402

VOCAB = 100


def _gpt2():
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=64))


def _bert():
    return transformers.BertModel(transformers.BertConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128, vocab_size=VOCAB,
        max_position_embeddings=64))


def _llama():  # grouped-query attention: 4 query heads share 2 key/value heads
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
        vocab_size=VOCAB, max_position_embeddings=64))


MODELS = {"gpt2": _gpt2, "bert": _bert, "llama": _llama}
EXPECTED = {  # fused ops each export must show (the dynamo exporter's attention zeroes NaN rows)
    ("gpt2", "dynamo"): {"sdpa_nan_zero", "gelu_tanh"},
    ("bert", "dynamo"): {"sdpa_nan_zero", "matmul_bias_act"},
    ("llama", "dynamo"): {"sdpa_nan_zero", "swiglu", "rms_norm", "add_rms_norm"},
    ("bert", "torchscript"): {"matmul_bias_act"},
}


class _Logits(torch.nn.Module):
    """input_ids -> the model's main output tensor (logits, or the last hidden state)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids):
        if hasattr(self.model, "lm_head"):
            return self.model(input_ids=ids, use_cache=False).logits
        return self.model(input_ids=ids).last_hidden_state


def _export(name: str, dynamo: bool, path) -> None:
    torch.manual_seed(0)
    module = _Logits(MODELS[name]().eval())
    ids = torch.randint(0, VOCAB, (2, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {0: torch.export.Dim("B"), 1: torch.export.Dim("S")}
            torch.onnx.export(module, (ids,), str(path), input_names=["ids"], dynamic_shapes={"ids": dims},
                              dynamo=True, verbose=False)
        else:
            try:
                torch.onnx.export(module, (ids,), str(path), input_names=["ids"], output_names=["out"],
                                  dynamic_axes={"ids": {0: "B", 1: "S"}}, dynamo=False, opset_version=17)
            except torch.onnx.errors.UnsupportedOperatorError as e:
                pytest.skip(f"the TorchScript exporter cannot export {name}: {e}")


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_hf_model_imports_and_matches_onnxruntime(name, exporter, tmp_path):
    path = tmp_path / f"{name}.onnx"
    _export(name, exporter == "dynamo", path)
    graph = load(path)
    result = rlx.compile(graph, target="cpu")
    missing = EXPECTED[name, exporter] - set(result.report.fused)
    assert not missing, f"{name} ({exporter}): {sorted(missing)} did not fuse; fused {result.report.fused}"
    rng = np.random.default_rng()
    for batch, seq in ((1, 5), (3, 11)):
        feeds = {n.name: rng.integers(0, VOCAB, (batch, seq)) for n in graph.inputs}
        want = run_onnxruntime(path, feeds)
        got = result.run(feeds)
        for out, ref in want.items():
            assert got[out].shape == ref.shape, out
            err, tol = max_error(got[out], ref.astype(np.float64), "f32")
            assert err <= tol, f"{name} ({exporter}), B={batch} S={seq}: {out} off by {err:.3g} (tolerance {tol:.3g})"
