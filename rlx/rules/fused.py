"""Fused ops declared in rule files, registered from their definitions.

A ``fused`` declaration's body (in registry ops) is the op's whole meaning: its type rule,
its NumPy reference and its FLOP count all come from instantiating the body in a scratch
MIR graph, so a user-declared op needs no Python.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from rlx.errors import RlxError
from rlx.ir.dtypes import DType
from rlx.ir.graph import Graph, Value
from rlx.ir.dtypes import as_dtype
from rlx.ir.registry import REGISTRY, REQUIRED, AttrSpec, OpDef, TensorType
from rlx.rules.ast import AttrRef, Bind, Call, Expr, FusedDecl, Num, Var

FUSED_ATTR_KINDS = ("int", "float", "bool", "str", "dtype", "ints", "op")


def emit(expr: Expr, g: Graph, env: Mapping[str, Value], attrs: Mapping[str, Any],
         op_vars: Mapping[str, str] | None = None) -> Value:
    """Build ``expr`` into ``g``: variables from ``env``, attribute references from ``attrs``,
    op variables (``act(...)``) from ``op_vars`` or ``attrs`` ("none" is the identity)."""
    if isinstance(expr, Var):
        return env[expr.name]
    if isinstance(expr, Bind):
        value = emit(expr.expr, g, env, attrs, op_vars)
        if isinstance(env, dict):
            env[expr.name] = value  # a sub-pattern's name, for multi-output rules
        return value
    if isinstance(expr, Num):
        raise RlxError(f"{expr.span}: a number needs a tensor operand beside it")
    if expr.op == "scalar":  # scalar(c): the value of attribute c, lifted like any Python scalar
        return float(attrs[expr.args[0].name])
    op = expr.op
    if op not in REGISTRY or (op_vars and op in op_vars) or op in attrs:
        op = (op_vars or {}).get(op) or attrs[op]
        if op == "none":
            return emit(expr.args[0], g, env, attrs, op_vars)
    args = [a.value if isinstance(a, Num) else attrs[a.name] if isinstance(a, Var) and a.name not in env
            else emit(a, g, env, attrs, op_vars) for a in expr.args]
    kwargs = {k: attrs[v.name] if isinstance(v, AttrRef) else v for k, v in expr.kwargs}
    return g.op(op, *args, **kwargs)


def instantiate(decl: FusedDecl, g: Graph, inputs: Sequence[Value], attrs: Mapping[str, Any]) -> list[Value]:
    """Emit the body of ``decl`` over ``inputs``; return one Value per result."""
    env: dict[str, Value] = dict(zip(decl.inputs, inputs))
    for name, expr in decl.bindings:
        env[name] = emit(expr, g, env, attrs)
    return [emit(r, g, env, attrs) for r in decl.results]


def _freeze(attrs: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items()))


def body_graph(decl: FusedDecl, types: Sequence[TensorType], attrs: Mapping[str, Any]) -> tuple[Graph, list[Value]]:
    """The definition instantiated over inputs of these types (cached; do not modify)."""
    return _body_graph(decl, tuple(types), _freeze(attrs))


@lru_cache(maxsize=4096)
def _body_graph(decl: FusedDecl, types: tuple[TensorType, ...], attrs: tuple) -> tuple[Graph, list[Value]]:
    g = Graph(f"{decl.name}.body")
    ins = [g.input(n, t.shape, t.dtype) for n, t in zip(decl.inputs, types)]
    outs = instantiate(decl, g, ins, dict(attrs))
    g.output(*outs)
    return g, outs


def _types(decl: FusedDecl):
    def rule(in_types: Sequence[TensorType], attrs: dict) -> list[TensorType]:
        _, outs = _body_graph(decl, tuple(in_types), _freeze(attrs))
        return [v.type for v in outs]
    return rule


def _reference(decl: FusedDecl):
    def ref(ins: Sequence[np.ndarray], attrs: dict):
        types = tuple(TensorType(tuple(a.shape), as_dtype(a.dtype)) for a in ins)
        g, outs = _body_graph(decl, types, _freeze(attrs))
        env: dict[Value, np.ndarray] = {}
        for node in g.topo_order():
            if node.op == "input":
                env[node.value()] = ins[decl.inputs.index(node.name)]
                continue
            args = [env[v] for v in node.inputs]
            r = node.opdef.reference(args, node.attrs)
            for v, arr in zip(node.values, r if isinstance(r, tuple) else (r,)):
                env[v] = np.asarray(arr)
        res = tuple(env[v] for v in outs)
        return res if len(res) > 1 else res[0]
    return ref


def _flops(decl: FusedDecl):
    def flops(in_shapes, out_shapes, attrs) -> float:
        # Shapes are concrete here; dtype does not change FLOPs, so f32 stands in.
        types = tuple(TensorType(tuple(s), DType.f32) for s in in_shapes)
        try:
            g, _ = _body_graph(decl, types, _freeze(attrs))
        except RlxError:
            types = tuple(TensorType(tuple(s), _position_dtype(decl, i))
                          for i, s in enumerate(in_shapes))
            g, _ = _body_graph(decl, types, _freeze(attrs))
        return sum(n.cost()[0] for n in g.nodes if n.op != "input")
    return flops


# Operand positions whose dtype is fixed whatever the data's: (op, operand index) -> dtype.
_POSITION_DTYPES = {("gather", 1): DType.i64, ("gather_elements", 1): DType.i64, ("gather_nd", 1): DType.i64,
                    ("where", 0): DType.bool, ("logical_not", 0): DType.bool, ("logical_and", 0): DType.bool,
                    ("logical_and", 1): DType.bool, ("logical_or", 0): DType.bool, ("logical_or", 1): DType.bool,
                    ("logical_xor", 0): DType.bool, ("logical_xor", 1): DType.bool}


def _position_dtype(decl: FusedDecl, i: int) -> DType:
    """The dtype input i must have where the body uses it as an index or a condition (i64,
    bool), else f32: what FLOPs counting, which knows shapes only, types the body with."""
    name = decl.inputs[i]

    def walk(e) -> DType | None:
        if isinstance(e, Bind):
            return walk(e.expr)
        if not isinstance(e, Call):
            return None
        for j, a in enumerate(e.args):
            if isinstance(a, Var) and a.name == name and (e.op, j) in _POSITION_DTYPES:
                return _POSITION_DTYPES[e.op, j]
            found = walk(a)
            if found is not None:
                return found
        return None
    for e in [e for _, e in decl.bindings] + list(decl.results):
        found = walk(e)
        if found is not None:
            return found
    return DType.f32


def _spec(a) -> AttrSpec:
    """``strides: ints = none`` is an optional attribute (None passes through, as to conv's)."""
    if a.kind != "op" and a.has_default and a.default == "none":
        return AttrSpec(a.name, a.kind, None, optional=True)
    return AttrSpec(a.name, a.kind, a.default if a.has_default else REQUIRED)


def opdef_for(decl: FusedDecl) -> OpDef:
    """The registry entry of a fused declaration."""
    types = _types(decl)

    def shape(shapes, attrs):
        return [t.shape for t in types([TensorType(tuple(s), DType.f32) for s in shapes], attrs)]

    def dtype(dtypes, attrs):
        return [t.dtype for t in types([TensorType((), d) for d in dtypes], attrs)]

    specs = tuple(_spec(a) for a in decl.attrs)
    return OpDef(name=decl.name, inputs=decl.inputs, shape=shape, dtype=dtype, reference=_reference(decl),
                 flops=_flops(decl), attrs=specs, category="fused", doc=decl.doc or f"fused op {decl.name}",
                 definition=decl, types=types)
