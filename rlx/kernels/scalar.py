"""Scalar bodies: elementwise expressions lowered to the primitives every backend prints.

An elementwise registry op is a primitive when it has no definition (add, mul, exp, erf,
where, cast...); any other (gelu, silu, sigmoid, rsqrt, relu, a user's op) is its
definition, inlined here. A backend therefore prints the primitives and nothing else, and
adding an elementwise op with a definition to the registry needs no backend change.
``finish`` types a body and canonicalizes what every backend wants anyway (``x ** 2`` as
``x * x``, division by a literal as multiplication by its reciprocal), optionally computing
half-precision values in f32 and rounding once at the end, as fused kernels do.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from rlx.errors import RlxError
from rlx.ir.dtypes import DType
from rlx.ir.expr import Expr, call, const, fold, typed
from rlx.ir.registry import REGISTRY
from rlx.rules.ast import AttrRef, Bind, Call, Num, Var
from rlx.rules.definitions import applies, decl_of

HALF = (DType.f16, DType.bf16)


def primitives() -> list[str]:
    """The elementwise ops a backend must print (those with no definition)."""
    return [op.name for op in REGISTRY if op.is_primitive_elementwise]


@lru_cache(maxsize=65536)
def lower(e: Expr) -> Expr:
    """``e`` over primitives only: every non-primitive op replaced by its definition."""
    def fn(x: Expr, args: list[Expr]) -> Expr:
        if x.is_leaf:
            return x
        opdef = REGISTRY.get(x.op)
        if opdef.is_primitive_elementwise:
            return Expr(x.op, tuple(args), x.value, x.attrs)
        attrs = x.attr_dict()
        decl = decl_of(opdef)
        if decl is None or not applies(opdef, attrs) or len(decl.results) != 1:
            raise RlxError(f"elementwise op {x.op!r} has no scalar body (no definition over primitives)")
        return lower(inline(decl, list(args), attrs))
    return fold(e, fn)


def inline(decl, args: Sequence[Expr], attrs: dict[str, Any]) -> Expr:
    """The single result of ``decl``'s body over ``args`` as an expression (elementwise ops
    only; a numeric attribute used as an operand becomes a literal)."""
    env: dict[str, Expr] = dict(zip(decl.inputs, args))

    def build(node) -> Expr:
        if isinstance(node, Var):
            if node.name in env:
                return env[node.name]
            return const(attrs[node.name])
        if isinstance(node, Num):
            return const(node.value)
        if isinstance(node, Bind):
            value = build(node.expr)
            env[node.name] = value
            return value
        assert isinstance(node, Call)
        op = node.op if node.op in REGISTRY else attrs.get(node.op, node.op)
        if op == "none":
            return build(node.args[0])
        if op == "scalar":
            return const(attrs[node.args[0].name])
        kw = {k: attrs[v.name] if isinstance(v, AttrRef) else v for k, v in node.kwargs}
        return call(op, *[build(a) for a in node.args], **kw)

    for name, body in decl.bindings:
        env[name] = build(body)
    (result,) = decl.results
    return build(result)


@lru_cache(maxsize=65536)
def finish(e: Expr, arg_dtypes: tuple[DType, ...], red_dtypes: tuple[DType, ...] = (),
           half_in_f32: bool = True, held: frozenset[int] = frozenset(), round_each_op: bool = False) -> Expr:
    """Lower, type and canonicalize an elementwise expression for a backend. With
    ``half_in_f32``, half-precision values are computed in f32 and rounded at the root;
    reductions and the inputs in ``held`` (a kernel's own products) are already f32 then.
    With ``round_each_op`` (a region, whose nodes are ops of the program), every half
    value an op of ``e`` makes is rounded to its dtype, as the program says; only the
    inside of an op (its definition) runs unrounded."""
    if half_in_f32 and round_each_op:
        e = _mark_rounding(typed(e, arg_dtypes, red_dtypes))
    t = typed(lower(e), arg_dtypes, red_dtypes)
    if half_in_f32:
        t = _compute_half_in_f32(t, held)
    return _canonical(t)


def _mark_rounding(t: Expr) -> Expr:
    """A cast to its own dtype around every half op node: after widening, a rounding."""
    def fn(x: Expr, args: list[Expr]) -> Expr:
        if x.is_leaf:
            return Expr(x.op, value=x.value)
        node = Expr(x.op, tuple(args), x.value, x.attrs)
        return Expr("cast", (node,), attrs=(("dtype", x.dtype),)) if x.dtype in HALF else node
    return fold(t, fn)


def _compute_half_in_f32(e: Expr, held: frozenset[int]) -> Expr:
    """Every f16/bf16 node computed in f32; half inputs are widened where they are read and
    the result is rounded back once (a cast at the root)."""
    def fn(x: Expr, args: list[Expr]) -> Expr:
        if x.op == "red" or x.op == "arg" and x.value in held:
            return Expr(x.op, value=x.value, dtype=DType.f32) if x.dtype in HALF else x
        if x.op == "arg":
            return Expr("cast", (x,), attrs=(("dtype", DType.f32),), dtype=DType.f32) if x.dtype in HALF else x
        if x.op == "const":
            return Expr("const", value=x.value, dtype=DType.f32) if x.dtype in HALF else x
        if x.op == "cast" and x.dtype in HALF:  # a cast to half inside the body: round, then widen
            inner = Expr("cast", tuple(args), attrs=x.attrs, dtype=x.dtype)
            return Expr("cast", (inner,), attrs=(("dtype", DType.f32),), dtype=DType.f32)
        return Expr(x.op, tuple(args), x.value, x.attrs, DType.f32 if x.dtype in HALF else x.dtype)
    out = fold(e, fn)
    if e.dtype in HALF:
        out = Expr("cast", (out,), attrs=(("dtype", e.dtype),), dtype=e.dtype)
    return out


def _canonical(e: Expr) -> Expr:
    def fn(x: Expr, args: list[Expr]) -> Expr:
        if x.is_leaf:
            return x
        if x.op == "pow" and args[1].op == "const" and x.dtype.is_float:
            p, base = args[1].value, args[0]
            if p == 1.0:
                return base
            if p == 2.0:
                return Expr("mul", (base, base), dtype=x.dtype)
            if p == 3.0:
                return Expr("mul", (Expr("mul", (base, base), dtype=x.dtype), base), dtype=x.dtype)
            if p == 0.5:
                return Expr("sqrt", (base,), dtype=x.dtype)
        if x.op == "div" and args[1].op == "const" and x.dtype.is_float and args[1].value not in (0.0,):
            return Expr("mul", (args[0], Expr("const", value=1.0 / float(args[1].value), dtype=x.dtype)),
                        dtype=x.dtype)
        if x.op == "cast" and args[0].dtype == x.dtype:
            return args[0]
        return Expr(x.op, tuple(args), x.value, x.attrs, x.dtype)
    return fold(e, fn)
