"""Evaluate rule guards in Python on concrete bindings (types, attribute values, op names).

The e-graph decides guards itself; this evaluator explains near misses in reports and
draws valid shapes for fuzzing. Symbolic dims take part through their canonical
polynomials: equality and + - * are exact; an ordering or % on a symbol is undecided.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlx.errors import ShapeError
from rlx.ir.registry import TensorType
from rlx.ir.shapes import dim, dim_add, dim_div, dim_mul, dim_sub
from rlx.rules.ast import GArith, GFunc, GLit, GName, Guard

UNDECIDED = object()


def term(g: Any, tensors: Mapping[str, TensorType], attrs: Mapping[str, Any]) -> Any:
    if isinstance(g, GLit):
        return g.value
    if isinstance(g, GName):
        v = attrs.get(g.name, g.name)
        return tuple(v) if isinstance(v, list) else v
    if isinstance(g, GFunc):
        t = tensors[g.var]
        if g.fn == "rank":
            return len(t.shape)
        if g.fn == "dtype":
            return str(t.dtype)
        rank = len(t.shape)
        if not -rank <= g.axis < rank:
            return UNDECIDED
        return t.shape[g.axis]
    if isinstance(g, GArith):
        a, b = term(g.a, tensors, attrs), term(g.b, tensors, attrs)
        if a is UNDECIDED or b is UNDECIDED:
            return UNDECIDED
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            if g.op in ("//", "%") and b == 0:
                return UNDECIDED
            return {"+": a + b, "-": a - b, "*": a * b, "//": a // b if g.op == "//" else 0,
                    "%": a % b if g.op == "%" else 0}[g.op]
        try:
            if g.op == "+":
                return dim_add(a, b)
            if g.op == "-":
                return dim_sub(a, b)
            if g.op == "*":
                return dim_mul(a, b)
            if g.op == "//":
                q = dim_div(a, b)
                return UNDECIDED if q is None else q
        except ShapeError:  # a polynomial over the size bound: not decided here
            pass
        return UNDECIDED
    raise AssertionError(g)


def evaluate(guard: Guard, tensors: Mapping[str, TensorType], attrs: Mapping[str, Any]) -> bool | None:
    """True/False, or None when it depends on the value of a symbol."""
    if guard.kind == "member":
        v = attrs.get(guard.a)
        return v in guard.b or (isinstance(v, bool) and str(v).lower() in guard.b)
    a, b = term(guard.a, tensors, attrs), term(guard.b, tensors, attrs)
    if a is UNDECIDED or b is UNDECIDED:
        return None
    if isinstance(a, bool) or isinstance(b, bool):
        a, b = str(a).lower() if isinstance(a, bool) else a, str(b).lower() if isinstance(b, bool) else b
    # Dims compare by their canonical polynomial; any other string (a dtype, an op) as itself.
    symbolic = (isinstance(a, str) or isinstance(b, str)) and _is_dim(a) and _is_dim(b)
    if guard.op in ("==", "!="):
        if symbolic:
            eq = dim(a) == dim(b)
        else:
            eq = a == b
        return eq if guard.op == "==" else not eq
    if symbolic or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return None
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[guard.op]


def _is_dim(s: Any) -> bool:
    if isinstance(s, bool) or not isinstance(s, (int, str)):
        return False
    try:
        dim(s)
        return True
    except ShapeError:
        return False


def describe(guard: Guard, tensors: Mapping[str, TensorType], attrs: Mapping[str, Any]) -> str:
    """The guard's terms with their values, for messages: ``rank(b)=2, dim(w, -1)=16``."""
    parts = []
    for g in ([guard.a, guard.b] if guard.kind == "compare" else []):
        if isinstance(g, GFunc):
            ax = f", {g.axis}" if g.axis is not None else ""
            parts.append(f"{g.fn}({g.var}{ax})={term(g, tensors, attrs)}")
        elif isinstance(g, GName) and g.name in attrs:
            parts.append(f"{g.name}={attrs[g.name]}")
    if guard.kind == "member":
        parts.append(f"{guard.a}={attrs.get(guard.a)}")
    return ", ".join(parts)
