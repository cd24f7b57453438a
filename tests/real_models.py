"""Real models for the import tests and ``bench/models_cpu.py``: Hugging Face ``transformers``
(small configs) and torchvision classification networks, random weights, exported with
``torch.onnx.export`` by the dynamo or the TorchScript exporter with dynamic batch and
sequence (or image) size.

torchvision's wheel on the package registry is a CUDA build whose compiled ops (nms,
roi_align) do not load beside the CPU torch: ``torchvision()`` imports it without their meta
registrations. The model classes are plain PyTorch and need none of them. This module does
that as it is imported, before ``transformers`` (which imports torchvision when it is
installed) can fail on it.
"""
from __future__ import annotations

import importlib
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import torch

VOCAB = 100
TEXT = ("gpt2", "bert", "llama")
VISION = ("resnet50", "mobilenet_v3", "vit")


def torchvision():
    """torchvision, importable beside a CPU torch (see the module docstring)."""
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as e:  # "operator torchvision::nms does not exist": its C++ ops did not load
        if "torchvision::" not in str(e):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    return importlib.import_module("torchvision")


try:
    torchvision()
except ImportError:
    pass  # not installed: the vision tests skip


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every float parameter and buffer drawn at random, scaled so activations stay O(1):
    torchvision zero-initializes some (ViT's head), which would make a comparison vacuous."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in list(module.named_parameters()) + list(module.named_buffers()):
            if not p.is_floating_point():
                continue
            if name.endswith("running_var"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * p[0].numel() ** -0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return module.eval()


def text_model(name: str, full: bool = False) -> torch.nn.Module:
    """input_ids -> logits (or the last hidden state). ``full``: the base sizes the benchmark
    runs (12 layers of 768, Llama with grouped-query attention), else a 2-layer model of 64."""
    import transformers as t
    d, layers, heads, ff, pos = (768, 12, 12, 3072, 512) if full else (64, 2, 4, 128, 64)
    if name == "gpt2":
        model = t.GPT2LMHeadModel(t.GPT2Config(n_layer=layers, n_embd=d, n_head=heads, vocab_size=VOCAB,
                                               n_positions=pos))
    elif name == "bert":
        model = t.BertModel(t.BertConfig(num_hidden_layers=layers, hidden_size=d, num_attention_heads=heads,
                                         intermediate_size=ff, vocab_size=VOCAB, max_position_embeddings=pos))
    elif name == "llama":  # grouped-query attention: each key/value head serves two query heads
        model = t.LlamaForCausalLM(t.LlamaConfig(num_hidden_layers=layers, hidden_size=d, num_attention_heads=heads,
                                                 num_key_value_heads=heads // 2, intermediate_size=ff,
                                                 vocab_size=VOCAB, max_position_embeddings=pos))
    else:
        raise KeyError(name)
    return _Logits(randomize(model))


class _Logits(torch.nn.Module):
    """input_ids -> the model's main output tensor (logits, or the last hidden state)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids):
        if hasattr(self.model, "lm_head"):
            return self.model(input_ids=ids, use_cache=False).logits
        return self.model(input_ids=ids).last_hidden_state


def vision_model(name: str, full: bool = False) -> torch.nn.Module:
    """ResNet-50 and MobileNetV3-Large as torchvision defines them; ViT-B/16 (``full``) or a
    2-layer ViT of width 64 on 32x32 images, patches of 8 (the same class, for test time)."""
    tv = torchvision()
    if name == "resnet50":
        model = tv.models.resnet50()
    elif name == "mobilenet_v3":
        model = tv.models.mobilenet_v3_large()
    elif name == "vit":
        model = tv.models.vit_b_16() if full else tv.models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128)
    else:
        raise KeyError(name)
    return randomize(model)


def image_size(name: str, full: bool = False) -> int:
    """The size a model is exported at (ViT's is fixed by its position embeddings)."""
    return 224 if full or name != "vit" else 32


def export(name: str, path: str | Path, exporter: str = "dynamo", full: bool = False) -> torch.nn.Module:
    """Export model ``name`` to ``path``; returns the module. ``exporter``: "dynamo",
    "torchscript", or "torchscript-bn" (TorchScript without constant folding: batch norms stay
    in the graph, for rlx to fold). Batch and sequence (or image height and width; ViT: batch
    only) are dynamic."""
    text = name in TEXT
    module = text_model(name, full) if text else vision_model(name, full)
    if text:
        example = (torch.randint(0, VOCAB, (2, 8)),)
        axes = {0: "B", 1: "S"}
    else:
        size = image_size(name, full)
        example = (torch.randn(2, 3, size, size),)
        axes = {0: "B"} if name == "vit" else {0: "B", 2: "H", 3: "W"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dims = {k: torch.export.Dim(v, min=32) if v in "HW" else torch.export.Dim(v) for k, v in axes.items()}
            torch.onnx.export(module, example, str(path), input_names=["x"], dynamic_shapes=(dims,),
                              dynamo=True, verbose=False)
        else:
            torch.onnx.export(module, example, str(path), input_names=["x"], output_names=["out"],
                              dynamic_axes={"x": axes}, dynamo=False, opset_version=17,
                              do_constant_folding=exporter != "torchscript-bn")
    return module


def assert_matches_onnxruntime(result, path, feeds: dict, what: str) -> None:
    """The compiled model's outputs against ONNX Runtime's on ``feeds``, shape and value at f32
    tolerance: max |rlx - ort| <= 1e-4 * max(1, max |ref|)."""
    from rlx.frontends.onnx import run_onnxruntime
    from rlx.pipeline import max_error
    want = run_onnxruntime(path, feeds)
    got = result.run(feeds)
    for out, ref in want.items():
        assert got[out].shape == ref.shape, f"{what}: {out} has shape {got[out].shape}, expected {ref.shape}"
        err, tol = max_error(got[out], ref.astype(np.float64), "f32")
        assert err <= tol, f"{what}: {out} off by {err:.3g} (tolerance {tol:.3g})"
