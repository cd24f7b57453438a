"""Model builders sized by arguments, used by tests, the demo and the benchmarks.

Each returns a MIR ``Graph`` lowered under ``policy`` (or the HIR ``Module`` with
``hir=True``). Dims may be ints or symbols (``batch="B"``, ``seq="S"``). Only the graph is
built: weights are params, bound at run time.
"""
from __future__ import annotations

from rlx.errors import RlxError
from rlx.ir.dtypes import DType
from rlx.ir.graph import Graph
from rlx.ir.hir import Module, Policy
from rlx.ir.shapes import Dim


def _finish(m: Module, policy: Policy, hir: bool) -> Graph | Module:
    return m if hir else m.lower(policy)


def mlp(layers: int = 3, d_in: int = 256, d_hidden: int = 1024, d_out: int | None = None,
        batch: Dim = 32, activation: str = "gelu", dtype: str | DType = "f32",
        policy: Policy = "fusable", hir: bool = False) -> Graph | Module:
    """``layers`` linear layers with ``activation`` between them and biases."""
    if layers < 1:
        raise RlxError(f"mlp: layers must be >= 1, got {layers}")
    m = Module(f"mlp{layers}")
    h = m.input("x", (batch, d_in), dtype)
    for i in range(layers):
        last = i == layers - 1
        h = m.linear(h, (d_out or d_in) if last else d_hidden,
                     activation=None if last else activation, name=f"fc{i}")
    m.output(h)
    return _finish(m, policy, hir)


def _llama_d_ff(d_model: int) -> int:
    return -(-int(8 * d_model / 3) // 64) * 64


def llama(layers: int = 2, d_model: int = 256, n_heads: int = 4, d_ff: int | None = None,
          seq: Dim = 128, batch: Dim = 1, dtype: str | DType = "f32", vocab: int | None = None,
          policy: Policy = "fusable", hir: bool = False) -> Graph | Module:
    """A Llama-style decoder stack: pre-norm RMSNorm, causal rotary attention, SwiGLU.

    Inputs: hidden states ``x`` (batch, seq, d_model), or token ``ids`` (batch, seq) when
    ``vocab`` is set (then an embedding, a final norm and an LM head are added), plus the
    rotary tables ``rope_cos``/``rope_sin`` (seq, head_dim/2)."""
    if d_model % n_heads:
        raise RlxError(f"llama: d_model {d_model} is not divisible by n_heads {n_heads}")
    d_ff = d_ff or _llama_d_ff(d_model)
    m = Module(f"llama{layers}")
    if vocab:
        h = m.embedding(m.input("ids", (batch, seq), "i64"), vocab, d_model, dtype=dtype, name="embed")
    else:
        h = m.input("x", (batch, seq, d_model), dtype)
    m.rope_inputs(seq, d_model // n_heads, dtype)
    for i in range(layers):
        h = m.transformer_block(h, style="llama", n_heads=n_heads, d_ff=d_ff, name=f"layer{i}")
    if vocab:
        h = m.linear(m.rms_norm(h, name="norm"), vocab, bias=False, name="lm_head")
    m.output(h)
    return _finish(m, policy, hir)


def bert(layers: int = 2, d_model: int = 256, n_heads: int = 4, d_ff: int | None = None,
         seq: Dim = 128, batch: Dim = 1, dtype: str | DType = "f32", vocab: int | None = None,
         policy: Policy = "fusable", hir: bool = False) -> Graph | Module:
    """A BERT-style encoder stack: post-norm LayerNorm, bidirectional attention, GELU MLP."""
    if d_model % n_heads:
        raise RlxError(f"bert: d_model {d_model} is not divisible by n_heads {n_heads}")
    d_ff = d_ff or 4 * d_model
    m = Module(f"bert{layers}")
    if vocab:
        h = m.layer_norm(m.embedding(m.input("ids", (batch, seq), "i64"), vocab, d_model,
                                     dtype=dtype, name="embed"), eps=1e-12, name="embed_norm")
    else:
        h = m.input("x", (batch, seq, d_model), dtype)
    for i in range(layers):
        h = m.transformer_block(h, style="bert", n_heads=n_heads, d_ff=d_ff, name=f"layer{i}")
    m.output(h)
    return _finish(m, policy, hir)


def llama_decode(layers: int = 2, d_model: int = 256, n_heads: int = 4, d_ff: int | None = None,
                 cache: Dim = "T", batch: Dim = 1, dtype: str | DType = "f32",
                 policy: Policy = "fusable") -> Graph:
    """One decode step of the ``llama`` stack: one new token per sequence attends over a KV
    cache of ``cache`` earlier positions (symbolic by default).

    Inputs: the new token's hidden state ``x`` (batch, 1, d_model), its rotary tables
    ``rope_cos``/``rope_sin`` (1, head_dim/2), and per layer i the caches ``k_cache{i}`` and
    ``v_cache{i}`` (batch, n_heads, cache, head_dim). Outputs: ``y`` (batch, 1, d_model) and
    the updated caches ``k{i}``/``v{i}`` (batch, n_heads, cache + 1, head_dim). The new token
    sees every cached position (no mask is needed for one query)."""
    import math

    from rlx.ir.hir import _Lowering
    if d_model % n_heads:
        raise RlxError(f"llama_decode: d_model {d_model} is not divisible by n_heads {n_heads}")
    d_ff = d_ff or _llama_d_ff(d_model)
    dh = d_model // n_heads
    low = _Lowering(Module(f"llama{layers}_decode"), policy)
    g = low.g
    x = g.input("x", (batch, 1, d_model), dtype)
    cos, sin = g.input("rope_cos", (1, dh // 2), dtype), g.input("rope_sin", (1, dh // 2), dtype)
    caches = [(g.input(f"k_cache{i}", (batch, n_heads, cache, dh), dtype),
               g.input(f"v_cache{i}", (batch, n_heads, cache, dh), dtype)) for i in range(layers)]
    h, updated = x, {}
    for i, (k_cache, v_cache) in enumerate(caches):
        with g.scope(f"layer{i}"):
            with g.scope("attn"):
                n = low.norm("rms_norm", h, 1e-6, "norm")

                def heads(proj: str):
                    y = low.dense(n, d_model, False, scope=proj)
                    return g.transpose(g.reshape(y, (batch, 1, n_heads, dh)), (0, 2, 1, 3))

                q, k, v = heads("q_proj"), heads("k_proj"), heads("v_proj")
                q, k = low.rotary(q, cos, sin), low.rotary(k, cos, sin)
                kc, vc = g.concat(k_cache, k, axis=2), g.concat(v_cache, v, axis=2)
                scale = 1.0 / math.sqrt(dh)
                if low.direct:
                    o = g.sdpa(q, kc, vc, scale=scale)
                else:
                    scores = g.mul(g.matmul(q, g.transpose(kc, (0, 1, 3, 2))), scale)
                    o = g.matmul(g.softmax(scores, axis=-1), vc)
                o = g.reshape(g.transpose(o, (0, 2, 1, 3)), (batch, 1, d_model))
                h = g.add(h, low.dense(o, d_model, False, scope="o_proj"))
            with g.scope("ffn"):
                h = g.add(h, low.gated_ffn(low.norm("rms_norm", h, 1e-6, "norm"), d_ff, "silu"))
        updated[f"k{i}"], updated[f"v{i}"] = kc, vc
    g.output(y=h, **updated)
    return g


__all__ = ["mlp", "llama", "bert", "llama_decode"]
