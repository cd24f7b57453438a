"""Scalar expression trees: the one form of an elementwise computation.

A region's body, an op's scalar body and every kernel skeleton's epilogue are ``Expr``
trees: leaves are inputs (``arg``), literals (``const``) and, inside a row-reduction
kernel, per-row reduction results (``red``); inner nodes apply a registry elementwise op.
``typed`` gives every node its own dtype from the registry's dtype rules, so a cast in the
middle of a body is a real cast and a comparison is bool. The same tree goes from the
e-graph through MIR and LIR to the backends' printers; JSON is its only other spelling.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rlx.errors import DTypeError, RlxError
from rlx.ir.dtypes import DType, as_dtype
from rlx.ir.registry import REGISTRY

LEAVES = ("arg", "const", "red")
NAN = float("nan")


@dataclass(frozen=True)
class Expr:
    """``op`` is "arg" (input ``value``), "const" (literal ``value``), "red" (reduction
    ``value`` of a row kernel), or a registry elementwise op applied to ``args`` with
    ``attrs`` (sorted name/value pairs). ``dtype`` is None until ``typed`` fills it in."""
    op: str
    args: tuple["Expr", ...] = ()
    value: Any = None
    attrs: tuple[tuple[str, Any], ...] = ()
    dtype: DType | None = field(default=None, compare=True)
    _hash: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:  # trees are dict keys everywhere: hash once, not per lookup
        object.__setattr__(self, "_hash", hash((self.op, self.args, self.value, self.attrs, self.dtype)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def is_leaf(self) -> bool:
        return self.op in LEAVES

    def attr_dict(self) -> dict[str, Any]:
        return dict(self.attrs)

    def __str__(self) -> str:
        return to_text(self)

    # Operators build trees, so a body can be written as Python: (arg(0).exp() * arg(1)) + 1.0
    def _bin(self, op: str, other: Any, swap: bool = False) -> "Expr":
        o = other if isinstance(other, Expr) else const(other)
        return call(op, o, self) if swap else call(op, self, o)

    def __add__(self, o): return self._bin("add", o)
    def __radd__(self, o): return self._bin("add", o, True)
    def __sub__(self, o): return self._bin("sub", o)
    def __rsub__(self, o): return self._bin("sub", o, True)
    def __mul__(self, o): return self._bin("mul", o)
    def __rmul__(self, o): return self._bin("mul", o, True)
    def __truediv__(self, o): return self._bin("div", o)
    def __rtruediv__(self, o): return self._bin("div", o, True)
    def __neg__(self): return call("neg", self)

    def __getattr__(self, op: str) -> Callable[..., "Expr"]:
        if op.startswith("_") or op not in REGISTRY:
            raise AttributeError(op)
        return lambda *args, **attrs: call(op, self, *args, **attrs)


def arg(index: int, dtype: DType | str | None = None) -> Expr:
    return Expr("arg", value=int(index), dtype=as_dtype(dtype) if dtype is not None else None)


def const(value: Any, dtype: DType | str | None = None) -> Expr:
    """A literal. Without a dtype it is weak: it takes the dtype of the operands beside it."""
    if isinstance(value, (bool,)) or type(value).__name__ == "bool_":
        v: Any = bool(value)
    elif isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        v = int(value)
    else:
        v = float(value)
        if v != v:
            v = NAN  # one NaN object, so equal bodies compare equal (tuples compare by identity first)
    return Expr("const", value=v, dtype=as_dtype(dtype) if dtype is not None else None)


def red(index: int) -> Expr:
    return Expr("red", value=int(index))


def call(op: str, *args: Any, **attrs: Any) -> Expr:
    """Apply a registry elementwise op; Python numbers among ``args`` become weak literals."""
    opdef = REGISTRY.get(op, "expression")
    if not opdef.elementwise:
        raise RlxError(f"expression op {op!r} is not elementwise")
    norm = opdef.normalize_attrs(attrs, f"expression op {op}")
    exprs = tuple(a if isinstance(a, Expr) else const(a) for a in args)
    if len(exprs) != len(opdef.inputs):
        raise RlxError(f"expression op {op!r} takes {len(opdef.inputs)} operands, got {len(exprs)}")
    return Expr(op, exprs, attrs=tuple(sorted(norm.items())))


# ---------------------------------------------------------------------------- traversal
def nodes(e: Expr) -> list[Expr]:
    """Every distinct node, children before parents (iterative: bodies can be deep)."""
    out: list[Expr] = []
    seen: set[int] = set()
    stack: list[tuple[Expr, bool]] = [(e, False)]
    while stack:
        x, done = stack.pop()
        if done:
            out.append(x)
            continue
        if id(x) in seen:
            continue
        seen.add(id(x))
        stack.append((x, True))
        stack.extend((a, False) for a in reversed(x.args))
    return out


def fold(e: Expr, fn: Callable[[Expr, list[Any]], Any]) -> Any:
    """Evaluate bottom-up: ``fn(node, results of its args)``; shared subtrees run once."""
    memo: dict[int, Any] = {}
    for x in nodes(e):
        memo[id(x)] = fn(x, [memo[id(a)] for a in x.args])
    return memo[id(e)]


def rebuild(e: Expr, leaf: Callable[[Expr], Expr]) -> Expr:
    """The tree with each leaf replaced by ``leaf(x)`` (inner nodes rebuilt, types dropped)."""
    return fold(e, lambda x, args: leaf(x) if x.is_leaf else Expr(x.op, tuple(args), x.value, x.attrs))


def ops_of(e: Expr) -> Iterator[str]:
    """The op of every inner node, with repeats (what a kernel computes per element)."""
    stack = [e]
    while stack:
        x = stack.pop()
        if not x.is_leaf:
            yield x.op
            stack.extend(x.args)


def remap(e: Expr, mapping: dict[int, int]) -> Expr:
    """Input ``i`` renamed to ``mapping[i]``."""
    return rebuild(e, lambda x: Expr("arg", value=mapping[x.value]) if x.op == "arg" else x)


# ---------------------------------------------------------------------------- types
@lru_cache(maxsize=65536)
def typed(e: Expr, arg_dtypes: tuple[DType, ...], red_dtypes: tuple[DType, ...] = ()) -> Expr:
    """``e`` with every node's dtype: inputs and reductions from the given dtypes, op nodes
    from the registry's dtype rules, a weak literal from the operands that share its dtype
    (``where``'s values, not its condition), as a Python scalar beside a tensor would."""
    default = next((d for d in arg_dtypes if d.is_float), DType.f32)

    def fn(x: Expr, args: list[Expr]) -> Expr:
        if x.op == "arg":
            if x.value >= len(arg_dtypes):
                raise RlxError(f"expression uses input ${x.value} but has {len(arg_dtypes)} inputs")
            return Expr("arg", value=x.value, dtype=arg_dtypes[x.value])
        if x.op == "red":
            return Expr("red", value=x.value, dtype=red_dtypes[x.value])
        if x.op == "const":
            return x  # weak until its consumer types it
        opdef = REGISTRY.get(x.op)
        peers = [args[i] for i in opdef.dtype_peers(len(args)) if args[i].dtype is not None]
        # where(cond, 1.0, 0.0): no typed value beside the literals; they take the float dtype
        like = peers[0].dtype if peers else default if any(a.dtype for a in args) else None
        if like is None and any(a.dtype is None for a in args):
            raise RlxError(f"expression applies {x.op} to literals only")
        args = [a if a.dtype is not None else _typed_const(a, like) for a in args]
        try:
            (out,) = opdef.dtype([a.dtype for a in args], x.attr_dict())
        except DTypeError as err:
            raise DTypeError(f"expression op {x.op}: {err}") from None
        return Expr(x.op, tuple(args), x.value, x.attrs, out)

    out = fold(e, fn)
    if out.dtype is None:
        raise RlxError("expression is a literal only")
    return out


def _typed_const(c: Expr, dtype: DType) -> Expr:
    v = c.value
    if dtype == DType.bool:
        v = bool(v)
    elif dtype.is_int:
        if isinstance(v, float) and not v.is_integer():
            raise DTypeError(f"literal {v!r} beside an {dtype} operand is not an integer")
        v = int(v)
    else:
        v = float(v) if v == v else NAN
    return Expr("const", value=v, dtype=dtype)



# ---------------------------------------------------------------------------- spellings
def to_text(e: Expr) -> str:
    """A readable spelling for reports and listings: ``add(mul(exp($0), $1), 1.0)``."""
    def fn(x: Expr, args: list[str]) -> str:
        if x.op == "arg":
            return f"${x.value}"
        if x.op == "red":
            return f"%r{x.value}"
        if x.op == "const":
            return repr(x.value)
        attrs = "".join(f"[{v}]" for _, v in x.attrs)
        return f"{x.op}{attrs}({', '.join(args)})"
    return fold(e, fn)


def to_json(e: Expr) -> Any:
    """Nested lists: ``["$", i]``, ``["#", value]``, ``[op, {attrs}, *args]`` (dtypes are
    derived, so they are not stored)."""
    def fn(x: Expr, args: list[Any]) -> Any:
        if x.op == "arg":
            return ["$", x.value]
        if x.op == "red":
            return ["%", x.value]
        if x.op == "const":
            v = x.value
            return ["#", v if not isinstance(v, float) or math.isfinite(v) else repr(v)]
        return [x.op, {k: str(v) if isinstance(v, DType) else v for k, v in x.attrs}, *args]
    return fold(e, fn)


def from_json(data: Any, where: str = "expression") -> Expr:
    """The inverse of ``to_json``; malformed data is an RlxError naming ``where``."""
    def bad(msg: str) -> RlxError:
        return RlxError(f"{where}: {msg}")

    out: list[Expr] = []
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        x, done = stack.pop()
        if not isinstance(x, list) or not x or not isinstance(x[0], str):
            raise bad(f"expected a list starting with an op name, got {str(x)[:60]!r}")
        head = x[0]
        if head in ("$", "%"):
            if len(x) != 2 or not isinstance(x[1], int) or isinstance(x[1], bool) or x[1] < 0:
                raise bad(f"bad leaf {x!r}")
            out.append(arg(x[1]) if head == "$" else red(x[1]))
        elif head == "#":
            v = x[1] if len(x) == 2 else None
            if isinstance(v, str) and v in ("inf", "-inf", "nan"):
                v = float(v)
            if not isinstance(v, (int, float, bool)):
                raise bad(f"bad literal {x!r}")
            out.append(const(v))
        elif not done:
            if len(x) < 2 or not isinstance(x[1], dict):
                raise bad(f"op {head!r} needs an attribute object")
            stack.append((x, True))
            stack.extend((a, False) for a in reversed(x[2:]))
        else:
            n = len(x) - 2
            args = out[len(out) - n:] if n else []
            del out[len(out) - n:]
            try:
                out.append(call(head, *args, **x[1]))
            except RlxError as e:
                raise bad(str(e)) from None
    return out[0]
