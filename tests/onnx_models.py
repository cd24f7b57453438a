"""PyTorch models the ONNX tests export: the blocks users bring, written as their authors
write them (nn.Linear, F.gelu, a hand-written RMSNorm, rotate-half rotary, F.sdpa)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, d: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.rand(d) + 0.5), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class LlamaBlock(nn.Module):
    """RMSNorm, rotary, causal attention (F.scaled_dot_product_attention), SwiGLU."""

    def __init__(self, d: int = 64, heads: int = 4, ff: int = 160, max_seq: int = 64) -> None:
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.norm1, self.norm2 = RMSNorm(d), RMSNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.gate, self.up = nn.Linear(d, ff, bias=False), nn.Linear(d, ff, bias=False)
        self.down = nn.Linear(ff, d, bias=False)
        inv = 1.0 / (10000 ** (torch.arange(0, self.hd, 2).float() / self.hd))
        angles = torch.arange(max_seq).float()[:, None] * inv[None]
        emb = torch.cat([angles, angles], -1)
        self.register_buffer("cos", emb.cos())
        self.register_buffer("sin", emb.sin())

    def _heads(self, t, b, s):
        return t.view(b, s, self.heads, self.hd).transpose(1, 2)

    def forward(self, x):
        b, s, d = x.shape
        h = self.norm1(x)
        q, k, v = (self._heads(p(h), b, s) for p in (self.q, self.k, self.v))
        cos, sin = self.cos[:s], self.sin[:s]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, s, d))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class BertLayer(nn.Module):
    """Post-norm encoder layer: fused QKV projection, additive padding mask, GELU MLP."""

    def __init__(self, d: int = 64, heads: int = 4, ff: int = 128) -> None:
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, ff), nn.Linear(ff, d)
        with torch.no_grad():  # distinct norm params, so no exporter merges them
            for ln in (self.ln1, self.ln2):
                ln.weight.uniform_(0.5, 1.5)
                ln.bias.uniform_(-0.1, 0.1)

    def forward(self, x, mask):
        b, s, d = x.shape
        q, k, v = (t.view(b, s, self.heads, self.hd).transpose(1, 2) for t in self.qkv(x).split(d, dim=-1))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.hd) + mask
        a = torch.softmax(scores, -1) @ v
        x = self.ln1(x + self.o(a.transpose(1, 2).reshape(b, s, d)))
        return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))


class Stack(nn.Module):
    """``layers`` blocks in sequence; a mask, if given, goes to every block."""

    def __init__(self, blocks) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x, mask=None):
        for block in self.blocks:
            x = block(x) if mask is None else block(x, mask)
        return x


def export(name: str, path: str, dynamo: bool = True, layers: int = 1, seq: int = 8, opset: int = 17,
           **cfg) -> None:
    """Export ``layers`` blocks of one of the models (``cfg`` sizes them) with batch B and
    sequence S symbolic; ``opset`` is for the TorchScript exporter (below 17 it writes
    LayerNorm as primitives)."""
    torch.manual_seed(0)
    block = {"mlp": MLP, "llama": LlamaBlock, "bert": BertLayer}[name]
    model = Stack([block(**cfg) for _ in range(layers)])
    d = cfg.get("d", 32 if name == "mlp" else 64)
    args: tuple = (torch.randn(2, seq, d),)
    dims = {"x": {0: "B", 1: "S"}}
    if name == "bert":
        args += (torch.randn(2, 1, 1, seq),)
        dims["mask"] = {0: "B", 3: "S"}
    kw = {} if dynamo else {"opset_version": opset}
    torch.onnx.export(model.eval(), args, path, input_names=list(dims), output_names=["y"],
                      dynamic_axes=dims, dynamo=dynamo, **kw)
