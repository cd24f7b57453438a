"""HIR: the blocks a model author thinks in, lowered to MIR under a policy.

A ``Module`` records blocks (linear, mlp, swiglu_ffn, attention, layer_norm, rms_norm,
transformer_block, embedding, add) with their configuration; ``lower(policy)`` turns them
into a MIR ``Graph``:

- ``fusable`` emits primitive ops in the shapes exporters produce (the erf form of gelu,
  ``x * sigmoid(x)`` for silu, mean/pow/sqrt/div norms, matmul/softmax attention), so the
  fusion rules have real work;
- ``direct`` emits the highest-level ops the registry has (gelu, silu, rms_norm, layer_norm,
  rotary, sdpa).

Both policies name parameters identically, so one set of weights runs both lowerings.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from rlx.errors import RlxError, ShapeError
from rlx.ir.dtypes import DType, as_dtype
from rlx.ir.graph import Graph, Value
from rlx.ir.shapes import Shape, fmt_shape, shape as canonical_shape

Policy = Literal["fusable", "direct"]
POLICIES = ("fusable", "direct")
ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh", "silu")


@dataclass(frozen=True, eq=False)
class HValue:
    """A tensor in an HIR module."""
    module: "Module"
    name: str
    shape: Shape
    dtype: DType


@dataclass
class Block:
    kind: str
    name: str
    inputs: tuple[HValue, ...]
    config: dict[str, Any]
    output: HValue | None = None


@dataclass
class Module:
    """An HIR program: inputs, a list of blocks, outputs."""
    name: str = "module"
    inputs: list[HValue] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    outputs: list[HValue] = field(default_factory=list)

    def input(self, name: str, shape, dtype: str | DType = "f32") -> HValue:
        v = HValue(self, name, canonical_shape(shape), as_dtype(dtype))
        self.inputs.append(v)
        return v

    def output(self, *values: HValue) -> None:
        self.outputs.extend(values)

    def _block(self, kind: str, inputs: tuple[HValue, ...], out_shape: Shape, name: str | None,
               dtype: DType | None = None, **config: Any) -> HValue:
        for v in inputs:
            if not isinstance(v, HValue) or v.module is not self:
                raise RlxError(f"{kind} block: input {v!r} is not a value of module {self.name!r}")
        label = name or f"{kind}{sum(b.kind == kind for b in self.blocks)}"
        if any(b.name == label for b in self.blocks):
            raise RlxError(f"{kind} block: a block named {label!r} already exists")
        out = HValue(self, label, canonical_shape(out_shape), dtype or inputs[0].dtype)
        self.blocks.append(Block(kind, label, inputs, config, out))
        return out

    # -------------------------------------------------------------------- blocks
    def linear(self, x: HValue, out_features: int, *, bias: bool = True,
               activation: str | None = None, name: str | None = None) -> HValue:
        _check_act(activation)
        return self._block("linear", (x,), x.shape[:-1] + (out_features,), name,
                           out_features=out_features, bias=bias, activation=activation)

    def mlp(self, x: HValue, hidden: int, out_features: int | None = None, *,
            activation: str = "gelu", bias: bool = True, name: str | None = None) -> HValue:
        _check_act(activation)
        out = out_features or x.shape[-1]
        return self._block("mlp", (x,), x.shape[:-1] + (out,), name, hidden=hidden,
                           out_features=out, activation=activation, bias=bias)

    def swiglu_ffn(self, x: HValue, hidden: int, *, activation: str = "silu",
                   name: str | None = None) -> HValue:
        """Gated FFN: down(act(x·Wg) * (x·Wu)); silu gives SwiGLU, gelu gives GeGLU."""
        _check_act(activation)
        return self._block("swiglu_ffn", (x,), x.shape, name, hidden=hidden, activation=activation)

    def attention(self, x: HValue, n_heads: int, *, causal: bool = False, rotary: bool = False,
                  bias: bool = False, name: str | None = None) -> HValue:
        if len(x.shape) < 2:
            raise ShapeError(f"attention input must be (..., S, D), got {fmt_shape(x.shape)}")
        d = x.shape[-1]
        if not isinstance(d, int) or d % n_heads:
            raise ShapeError(f"attention: model dim {d} is not divisible by {n_heads} heads")
        if rotary and (d // n_heads) % 2:
            raise ShapeError(f"attention: rotary needs an even head dim, got {d // n_heads}")
        tables = self._rope_tables() if rotary else ()
        return self._block("attention", (x,) + tables, x.shape, name,
                           n_heads=n_heads, causal=causal, rotary=rotary, bias=bias)

    def _rope_tables(self) -> tuple[HValue, HValue]:
        """Rotary cos/sin tables are module inputs of shape (S, head_dim/2), shared by layers."""
        found = {v.name: v for v in self.inputs}
        if "rope_cos" in found and "rope_sin" in found:
            return found["rope_cos"], found["rope_sin"]
        raise RlxError("rotary attention needs rope tables: call module.rope_inputs(seq, head_dim) first")

    def rope_inputs(self, seq, head_dim: int, dtype: str | DType = "f32") -> tuple[HValue, HValue]:
        """Declare the rotary tables (S, head_dim/2) every rotary attention block reads."""
        if head_dim % 2:
            raise ShapeError(f"rotary head dim {head_dim} must be even")
        return (self.input("rope_cos", (seq, head_dim // 2), dtype),
                self.input("rope_sin", (seq, head_dim // 2), dtype))

    def layer_norm(self, x: HValue, *, eps: float = 1e-5, name: str | None = None) -> HValue:
        return self._block("layer_norm", (x,), x.shape, name, eps=eps)

    def rms_norm(self, x: HValue, *, eps: float = 1e-6, name: str | None = None) -> HValue:
        return self._block("rms_norm", (x,), x.shape, name, eps=eps)

    def add(self, a: HValue, b: HValue, *, name: str | None = None) -> HValue:
        if a.shape != b.shape:
            raise ShapeError(f"add block: shapes differ {fmt_shape(a.shape)} vs {fmt_shape(b.shape)}")
        return self._block("add", (a, b), a.shape, name)

    def embedding(self, ids: HValue, vocab: int, dim: int, *, dtype: str | DType = "f32",
                  name: str | None = None) -> HValue:
        if not ids.dtype.is_int:
            raise RlxError(f"embedding: ids must be integer, got {ids.dtype}")
        return self._block("embedding", (ids,), ids.shape + (dim,), name, as_dtype(dtype),
                           vocab=vocab, dim=dim)

    def transformer_block(self, x: HValue, *, style: Literal["llama", "bert"] = "llama",
                          n_heads: int, d_ff: int, causal: bool | None = None,
                          eps: float | None = None, name: str | None = None) -> HValue:
        """Llama style: pre-norm rms_norm, causal rotary attention, SwiGLU.
        BERT style: post-norm layer_norm, bidirectional attention with biases, gelu MLP."""
        if style not in ("llama", "bert"):
            raise RlxError(f"transformer_block: style must be 'llama' or 'bert', got {style!r}")
        llama = style == "llama"
        tables = self._rope_tables() if llama else ()
        return self._block("transformer_block", (x,) + tables, x.shape, name, style=style,
                           n_heads=n_heads, d_ff=d_ff,
                           causal=llama if causal is None else causal,
                           eps=(1e-6 if llama else 1e-12) if eps is None else eps)

    # -------------------------------------------------------------------- lowering
    def lower(self, policy: Policy = "fusable") -> Graph:
        """Lower to MIR under ``policy`` ("fusable" or "direct")."""
        if policy not in POLICIES:
            raise RlxError(f"unknown lowering policy {policy!r}; expected one of {POLICIES}")
        return _Lowering(self, policy).run()


def _check_act(act: str | None) -> None:
    if act not in ACTIVATIONS:
        raise RlxError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")


class _Lowering:
    """Emits MIR for one module under one policy."""

    def __init__(self, module: Module, policy: Policy) -> None:
        self.m, self.policy, self.g = module, policy, Graph(module.name)
        self.env: dict[int, Value] = {}

    @property
    def direct(self) -> bool:
        return self.policy == "direct"

    def run(self) -> Graph:
        g = self.g
        for v in self.m.inputs:
            self.env[id(v)] = g.input(v.name, v.shape, v.dtype)
        for b in self.m.blocks:
            ins = [self.env[id(v)] for v in b.inputs]
            with g.scope(b.name):
                self.env[id(b.output)] = getattr(self, f"_{b.kind}")(ins, b.output, **b.config)
        g.output(**{v.name: self.env[id(v)] for v in self.m.outputs})
        return g

    def scope(self, name: str | None):
        return self.g.scope(name) if name else contextlib.nullcontext()

    def param(self, name: str, shape, dtype: DType) -> Value:
        return self.g.param(self.g.scoped(name), shape, dtype)

    # ---------------------------------------------------------------- pieces
    def act(self, x: Value, act: str | None) -> Value:
        g = self.g
        if act is None:
            return x
        if self.direct or act == "relu":
            return g.op(act, x)
        if act == "silu":
            return g.mul(x, g.sigmoid(x))
        if act == "gelu":  # torch.onnx's form: x * (1 + erf(x / sqrt(2))) * 0.5
            return g.mul(g.mul(x, g.add(g.erf(g.div(x, math.sqrt(2.0))), 1.0)), 0.5)
        inner = g.mul(g.add(x, g.mul(g.pow(x, 3.0), 0.044715)), math.sqrt(2.0 / math.pi))
        return g.mul(g.mul(x, 0.5), g.add(g.tanh(inner), 1.0))

    def dense(self, x: Value, out: int, bias: bool, act: str | None = None,
              scope: str | None = None) -> Value:
        g = self.g
        with self.scope(scope):
            y = g.matmul(x, self.param("weight", (x.shape[-1], out), x.dtype))
            if bias:
                y = g.add(y, self.param("bias", (out,), x.dtype))
            return self.act(y, act)

    def norm(self, kind: str, x: Value, eps: float, scope: str | None = None) -> Value:
        g = self.g
        with self.scope(scope):
            w = self.param("weight", x.shape[-1:], x.dtype)
            b = self.param("bias", x.shape[-1:], x.dtype) if kind == "layer_norm" else None
            if self.direct:
                return g.layer_norm(x, w, b, eps=eps) if b is not None else g.rms_norm(x, w, eps=eps)
            if b is not None:
                d = g.sub(x, g.mean(x, (-1,), True))
                var = g.mean(g.pow(d, 2.0), (-1,), True)
                return g.add(g.mul(g.div(d, g.sqrt(g.add(var, eps))), w), b)
            var = g.mean(g.pow(x, 2.0), (-1,), True)
            return g.mul(g.mul(x, g.reciprocal(g.sqrt(g.add(var, eps)))), w)

    def rotary(self, x: Value, cos: Value, sin: Value) -> Value:
        g = self.g
        if self.direct:
            return g.rotary(x, cos, sin)
        half = cos.shape[-1]
        x1 = g.slice(x, (0,), (half,), (-1,))
        x2 = g.slice(x, (half,), (2**63 - 1,), (-1,))
        return g.concat(g.sub(g.mul(x1, cos), g.mul(x2, sin)),
                        g.add(g.mul(x2, cos), g.mul(x1, sin)), axis=-1)

    def attention(self, x: Value, tables: list[Value], n_heads: int, causal: bool, bias: bool) -> Value:
        g = self.g
        *lead, s, d = x.shape
        lead, dh, r = tuple(lead), d // n_heads, len(lead)
        to_heads = tuple(range(r)) + (r + 1, r, r + 2)  # (..., S, H, Dh) <-> (..., H, S, Dh)

        def heads(proj: str) -> Value:
            y = self.dense(x, d, bias, scope=proj)
            return g.transpose(g.reshape(y, lead + (s, n_heads, dh)), to_heads)

        q, k, v = heads("q_proj"), heads("k_proj"), heads("v_proj")
        if tables:
            q, k = self.rotary(q, *tables), self.rotary(k, *tables)
        scale = 1.0 / math.sqrt(dh)
        if self.direct:
            o = g.sdpa(q, k, v, causal=causal, scale=scale)
        else:
            scores = g.mul(g.matmul(q, g.transpose(k, tuple(range(r + 1)) + (r + 2, r + 1))), scale)
            if causal:
                scores = g.causal_mask(scores)
            o = g.matmul(g.softmax(scores, axis=-1), v)
        o = g.reshape(g.transpose(o, to_heads), lead + (s, d))
        return self.dense(o, d, bias, scope="o_proj")

    def gated_ffn(self, x: Value, hidden: int, act: str) -> Value:
        up = self.dense(x, hidden, False, scope="up")
        gate = self.dense(x, hidden, False, act, scope="gate")
        return self.dense(self.g.mul(gate, up), x.shape[-1], False, scope="down")

    def mlp(self, x: Value, hidden: int, out: int, act: str | None, bias: bool) -> Value:
        return self.dense(self.dense(x, hidden, bias, act, scope="fc1"), out, bias, scope="fc2")

    # ---------------------------------------------------------------- blocks
    def _linear(self, ins, out, out_features, bias, activation):
        return self.dense(ins[0], out_features, bias, activation)

    def _mlp(self, ins, out, hidden, out_features, activation, bias):
        return self.mlp(ins[0], hidden, out_features, activation, bias)

    def _swiglu_ffn(self, ins, out, hidden, activation):
        return self.gated_ffn(ins[0], hidden, activation)

    def _attention(self, ins, out, n_heads, causal, rotary, bias):
        return self.attention(ins[0], ins[1:], n_heads, causal, bias)

    def _layer_norm(self, ins, out, eps):
        return self.norm("layer_norm", ins[0], eps)

    def _rms_norm(self, ins, out, eps):
        return self.norm("rms_norm", ins[0], eps)

    def _add(self, ins, out):
        return self.g.add(ins[0], ins[1])

    def _embedding(self, ins, out, vocab, dim):
        return self.g.gather(self.param("weight", (vocab, dim), out.dtype), ins[0], axis=0)

    def _transformer_block(self, ins, out, style, n_heads, d_ff, causal, eps):
        g, x = self.g, ins[0]
        if style == "llama":
            with self.scope("attn"):
                a = self.attention(self.norm("rms_norm", x, eps, "norm"), ins[1:], n_heads, causal, False)
            h = g.add(x, a)
            with self.scope("ffn"):
                f = self.gated_ffn(self.norm("rms_norm", h, eps, "norm"), d_ff, "silu")
            return g.add(h, f)
        with self.scope("attn"):
            h = self.norm("layer_norm", g.add(x, self.attention(x, [], n_heads, causal, True)), eps, "norm")
        with self.scope("ffn"):
            return self.norm("layer_norm", g.add(h, self.mlp(h, d_ff, x.shape[-1], "gelu", True)), eps, "norm")
