"""An op's kernel, derived from its definition: which skeleton it fits, with which
expressions.

A region is pointwise; an elementwise op is its scalar body; ``sdpa`` is attention. Any
other op with a definition (a registry composite such as softmax or rms_norm, or a fused op
declared in a rule file) is instantiated over its input types and read node by node:
elementwise ops become expression nodes, last-axis reductions become row reductions,
matmuls of inputs become GEMMs, a convolution of inputs a convolution with an epilogue,
``softmax(q·kᵀ …)·v`` becomes attention, and ops with
definitions of their own are read through. What fits none of the skeletons has no kernel:
it runs (and is priced) as its definition, and ``why_not`` says why.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from rlx.errors import RlxError
from rlx.ir.dtypes import DType
from rlx.ir.expr import Expr, arg, call, const, red
from rlx.ir.graph import Graph, Node, Value
from rlx.ir.registry import REGISTRY, TensorType
from rlx.ir.shapes import normalize_axis
from rlx.kernels.scalar import HALF, finish
from rlx.kernels.skeletons import Attention, Conv, Gemm, Kernel, Pointwise, RowReduce
from rlx.rules.definitions import applies, decl_of
from rlx.rules.fused import body_graph

REDUCTIONS = ("sum", "mean", "max")


class NoFit(Exception):
    """The definition fits no skeleton; the message says where."""


def kernel_for(op: str, in_types: Sequence[TensorType], attrs: dict[str, Any],
               half_in_f32: bool = True) -> Kernel | None:
    """The kernel of one application of ``op``, or None when no skeleton fits."""
    k = _cached(op, _definition(op), tuple(in_types), _freeze(attrs), half_in_f32)
    return k if isinstance(k, Kernel) else None


def why_not(op: str, in_types: Sequence[TensorType], attrs: dict[str, Any]) -> str | None:
    """None when ``op`` has a kernel here, else the reason it does not."""
    k = _cached(op, _definition(op), tuple(in_types), _freeze(attrs), True)
    return None if isinstance(k, Kernel) else k


def _definition(op: str) -> Any:
    """Part of the cache key: rule sets may define an op of one name differently."""
    return REGISTRY.get(op).definition if op in REGISTRY else None


def _freeze(attrs: dict[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items()))


@lru_cache(maxsize=16384)
def _cached(op: str, definition: Any, in_types: tuple[TensorType, ...], attrs: tuple, half: bool) -> Kernel | str:
    try:
        return _lower(op, in_types, dict(attrs), half)
    except NoFit as e:
        return f"no kernel skeleton fits ({e}): runs as its definition"
    except RlxError as e:
        return f"no kernel skeleton fits ({e})"


def _lower(op: str, in_types: tuple[TensorType, ...], attrs: dict[str, Any], half: bool) -> Kernel:
    opdef = REGISTRY.get(op)
    out_types = tuple(opdef.infer(list(in_types), attrs))
    dts = tuple(t.dtype for t in in_types)
    if op == "region":  # its nodes are the program's ops: each rounds to its dtype
        return Kernel(Pointwise((finish(attrs["body"], dts, (), half, round_each_op=True),)), in_types, out_types)
    if opdef.elementwise:
        body = call(op, *[arg(i) for i in range(len(in_types))], **attrs)
        return Kernel(Pointwise((finish(body, dts, (), half),)), in_types, out_types)
    if op == "sdpa":
        return Kernel(_sdpa(in_types, attrs, half), in_types, out_types)
    if op == "conv":
        n = len(in_types)
        cdts = dts + (out_types[0].dtype,)
        return Kernel(_conv(0, 1, 2 if n > 2 else None, attrs, len(in_types[0].shape) - 2,
                            (finish(arg(n), cdts, (), half, frozenset({n})),)), in_types, out_types)
    decl = decl_of(opdef)
    if decl is None or not applies(opdef, attrs):
        raise NoFit(f"{op} has no definition for these attributes")
    g, outs = body_graph(decl, in_types, attrs)
    skeleton = _attention(g, outs, in_types, half) or _fit(g, outs, in_types, out_types, half)
    return Kernel(skeleton, in_types, out_types)


# ---------------------------------------------------------------------------- attention
def _sdpa(in_types: tuple[TensorType, ...], attrs: dict, half: bool) -> Attention:
    d = in_types[0].shape[-1]
    scale = attrs["scale"]
    if scale is None:
        if not isinstance(d, int):
            raise NoFit("the default scale needs a static head dim")
        scale = 1.0 / math.sqrt(d)
    score = arg(0) * float(scale)
    if len(in_types) > 3:
        score = score + arg(4)
    dts = (in_types[0].dtype,) + tuple(t.dtype for t in in_types)
    return Attention(0, 1, 2, finish(score, dts, (), half, frozenset({0})), bool(attrs["causal"]))


def _conv(x: int, w: int, bias: int | None, attrs: dict, n: int, outputs: tuple[Expr, ...]) -> Conv:
    """A Conv skeleton with every window attribute spelled out (None means the default)."""
    return Conv(x, w, bias, tuple(attrs["strides"] or (1,) * n), tuple(attrs["pads"] or (0,) * (2 * n)),
                tuple(attrs.get("dilations") or (1,) * n), int(attrs["group"]), outputs)


def _unrounded(e: Expr) -> Expr:
    """A reduction's operand keeps f32: drop the rounding to half at its root."""
    return e.args[0] if e.op == "cast" and e.dtype in HALF and e.args[0].dtype == DType.f32 else e


def _is_swap_last(node: Node) -> bool:
    if node.op != "transpose":
        return False
    rank = len(node.inputs[0].shape)
    perm = node.attrs["perm"] or tuple(reversed(range(rank)))
    return rank >= 2 and tuple(p % rank for p in perm) == tuple(range(rank - 2)) + (rank - 1, rank - 2)


def _attention(g: Graph, outs: list[Value], in_types, half: bool) -> Attention | None:
    """``matmul(probs(softmax(score(matmul(q, transpose(k))))), v)`` with q, k, v inputs,
    ``score`` and ``probs`` elementwise (``probs`` may be the identity)."""
    index = {n.name: i for i, n in enumerate(g.inputs)}
    if len(outs) != 1 or outs[0].node.op != "matmul":
        return None
    probs, v = outs[0].node.inputs
    softmaxes: list[Node] = []

    def softmax_leaf(val: Value) -> Expr | None:
        if val.node.op == "softmax":
            softmaxes.append(val.node)
            return arg(0)
        return None

    try:
        after = _expr_of(probs, softmax_leaf)
    except NoFit:
        return None
    if len({n.name for n in softmaxes}) != 1:
        return None
    sm = softmaxes[0]
    if v.node.op != "input" or normalize_axis(sm.attrs["axis"], probs.rank) != probs.rank - 1:
        return None
    top, causal = sm.inputs[0], False
    if top.node.op == "causal_mask":
        top, causal = top.node.inputs[0], True
    found: list[tuple[int, int]] = []

    def leaf(val: Value) -> Expr | None:
        n = val.node
        if n.op == "input":
            return arg(1 + index[n.name])
        if n.op == "matmul" and n.inputs[0].node.op == "input" and _is_swap_last(n.inputs[1].node) \
                and n.inputs[1].node.inputs[0].node.op == "input":
            found.append((index[n.inputs[0].node.name], index[n.inputs[1].node.inputs[0].node.name]))
            return arg(0)
        return None

    try:
        score = _expr_of(top, leaf)
    except NoFit:
        return None
    if len(found) != 1 or len(set(found)) != 1:
        return None
    q, k = found[0]
    dts = (in_types[q].dtype,) + tuple(t.dtype for t in in_types)
    post = None if after.op == "arg" else finish(after, (in_types[q].dtype,), (), half, frozenset({0}))
    return Attention(q, k, index[v.node.name], finish(score, dts, (), half, frozenset({0})), causal, post)


def _expr_of(val: Value, leaf) -> Expr:
    """The elementwise expression computing ``val`` down to the leaves ``leaf`` accepts."""
    memo: dict[Value, Expr] = {}
    stack = [val]
    while stack:
        v = stack[-1]
        if v in memo:
            stack.pop()
            continue
        e = leaf(v)
        if e is not None:
            memo[v] = e
            stack.pop()
            continue
        n = v.node
        if n.op == "constant" and n.attrs["value"].size == 1:
            memo[v] = const(n.attrs["value"].reshape(()).item(), n.outputs[0].dtype)
            stack.pop()
            continue
        if not n.opdef.elementwise or n.opdef.variadic:
            raise NoFit(f"{n.op} is not elementwise")
        todo = [x for x in n.inputs if x not in memo]
        if todo:
            stack.extend(todo)
            continue
        memo[v] = Expr(n.op, tuple(memo[x] for x in n.inputs), attrs=tuple(sorted(n.attrs.items())))
        stack.pop()
    return memo[val]


# ---------------------------------------------------------------------------- pointwise, rows, GEMM
class _Reader:
    """Reads a body graph into expressions, row reductions and GEMMs."""

    def __init__(self, n_inputs: int) -> None:
        self.n_inputs = n_inputs
        self.reductions: list[tuple[str, Expr, DType]] = []
        self.gemms: list[tuple[int, int, DType]] = []
        self.convs: list[tuple[tuple[int, ...], dict, int, DType]] = []  # (inputs, attrs, spatial rank, dtype)

    def read(self, g: Graph, outs: Sequence[Value], inputs: Sequence[Expr]) -> list[Expr]:
        rep: dict[Value, Expr] = {}
        for n, e in zip(g.inputs, inputs):
            rep[n.value()] = e
        for n in g.topo_order():
            if n.op == "input":
                continue
            args = [rep[v] for v in n.inputs]
            if n.op == "constant":
                if n.attrs["value"].size != 1:
                    raise NoFit("a tensor constant in the body")
                rep[n.value()] = const(n.attrs["value"].reshape(()).item(), n.outputs[0].dtype)
            elif n.opdef.elementwise and not n.opdef.variadic:
                rep[n.value()] = Expr(n.op, tuple(args), attrs=tuple(sorted(n.attrs.items())))
            elif n.op in REDUCTIONS:
                rank = len(n.inputs[0].shape)
                axes = n.attrs["axes"]
                if rank == 0 or not n.attrs["keepdims"] or axes is None and rank != 1 or \
                        axes is not None and {normalize_axis(a, rank) for a in axes} != {rank - 1}:
                    raise NoFit(f"{n.op} is not over the last axis with keepdims")
                self.reductions.append((n.op, args[0], n.outputs[0].dtype))
                rep[n.value()] = red(len(self.reductions) - 1)
            elif n.op == "matmul":
                a, b = args
                if a.op != "arg" or b.op != "arg" or a.value >= self.n_inputs or b.value >= self.n_inputs:
                    raise NoFit("a matmul operand is computed in the body")
                if n.inputs[1].rank != 2:
                    raise NoFit("a matmul's right operand is not a matrix")
                self.gemms.append((a.value, b.value, n.outputs[0].dtype))
                rep[n.value()] = arg(self.n_inputs + len(self.gemms) - 1)
            elif n.op == "conv":
                if any(a.op != "arg" or a.value >= self.n_inputs for a in args):
                    raise NoFit("a convolution operand is computed in the body")
                self.convs.append((tuple(a.value for a in args), dict(n.attrs), n.inputs[0].rank - 2,
                                   n.outputs[0].dtype))
                rep[n.value()] = arg(self.n_inputs)
            else:
                sub = decl_of(n.opdef)
                if sub is None or not applies(n.opdef, n.attrs):
                    raise NoFit(f"{n.op} in the body fits no skeleton")
                sg, souts = body_graph(sub, [v.type for v in n.inputs], n.attrs)
                for v, e in zip(n.values, self.read(sg, souts, args)):
                    rep[v] = e
        return [rep[v] for v in outs]


def _fit(g: Graph, outs: list[Value], in_types, out_types, half: bool):
    n = len(in_types)
    reader = _Reader(n)
    exprs = reader.read(g, outs, [arg(i) for i in range(n)])
    if len({t.shape for t in out_types}) != 1:
        raise NoFit("its results differ in shape")
    dts = tuple(t.dtype for t in in_types)
    if len(reader.convs) + bool(reader.gemms) + bool(reader.reductions) > 1:
        raise NoFit("it mixes convolutions, matrix products and row reductions")
    if reader.convs:
        (ins, attrs, rank, dt), = reader.convs
        cdts = dts + (dt,)
        return _conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, attrs, rank,
                     tuple(finish(e, cdts, (), half, frozenset({n})) for e in exprs))
    if reader.gemms:
        gdts = dts + tuple(d for _, _, d in reader.gemms)
        products = frozenset(range(n, len(gdts)))
        return Gemm(tuple((a, b) for a, b, _ in reader.gemms),
                    tuple(finish(e, gdts, (), half, products) for e in exprs))
    if reader.reductions:
        rdts = tuple(d for _, _, d in reader.reductions)
        reds = tuple((kind, _unrounded(finish(e, dts, rdts, half))) for kind, e, _ in reader.reductions)
        return RowReduce(reds, tuple(finish(e, dts, rdts, half) for e in exprs))
    return Pointwise(tuple(finish(e, dts, (), half) for e in exprs))
