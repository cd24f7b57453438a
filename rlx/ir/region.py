"""The ``region`` op: a connected elementwise subgraph run as one kernel.

Its ``body`` attribute is a small expression over the region's inputs, e.g.
``mul($0, sigmoid($0))`` or ``add(mul($0, 0.5), cast[f16]($1))``: ``$i`` is input i, a
number is a scalar constant that takes the dtype of its operands, and every call is a
registry elementwise op (``op[dtype]`` for cast). Its reference, types and FLOPs are those of
the ops in the body, read from the registry.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Union

import numpy as np

from rlx.errors import RlxError, ShapeError
from rlx.ir.dtypes import DType
from rlx.ir.registry import REGISTRY, AttrSpec, OpDef, TensorType, dtype_peers, register
from rlx.ir.shapes import broadcast_shapes


@dataclass(frozen=True)
class RArg:
    index: int


@dataclass(frozen=True)
class RConst:
    value: float


@dataclass(frozen=True)
class RCall:
    op: str
    attr: str | None
    args: tuple["RExpr", ...]


RExpr = Union[RArg, RConst, RCall]
_TOKEN = re.compile(r"\s*(?:(\$\d+)|([A-Za-z_][A-Za-z0-9_]*)(?:\[([A-Za-z0-9_]+)\])?|"
                    r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan))|([(),]))")


@lru_cache(maxsize=65536)
def parse_body(text: str) -> RExpr:
    """Parse a body string (iteratively: bodies can be deep)."""
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise RlxError(f"region body {text!r}: cannot parse at {pos}")
        tokens.append(m.groups())
        pos = m.end()
    stack: list[list] = [[None, None, []]]
    for arg, name, attr, num, punct in tokens:
        if arg:
            stack[-1][2].append(RArg(int(arg[1:])))
        elif num is not None and not name:
            stack[-1][2].append(RConst(float(num)))
        elif name:
            stack.append([name, attr, []])
        elif punct == ")":
            name_, attr_, args = stack.pop()
            stack[-1][2].append(RCall(name_, attr_, tuple(args)))
    if len(stack) != 1 or len(stack[0][2]) != 1:
        raise RlxError(f"region body {text!r} is unbalanced")
    return stack[0][2][0]


def format_body(e: RExpr) -> str:
    if isinstance(e, RArg):
        return f"${e.index}"
    if isinstance(e, RConst):
        return repr(e.value)
    head = f"{e.op}[{e.attr}]" if e.attr else e.op
    return f"{head}({', '.join(format_body(a) for a in e.args)})"


def _attrs(call: RCall) -> dict:
    op = REGISTRY.get(call.op)
    if call.attr is None:
        return op.normalize_attrs({}, f"region op {call.op}")
    return op.normalize_attrs({op.attrs[0].name: call.attr}, f"region op {call.op}")


def _walk(e: RExpr, leaf, node):
    """Post-order evaluation without recursion."""
    out: list = []
    stack: list = [(e, False)]
    while stack:
        x, done = stack.pop()
        if not isinstance(x, RCall):
            out.append(leaf(x))
        elif done:
            n = len(x.args)
            args = out[len(out) - n:]
            del out[len(out) - n:]
            out.append(node(x, args))
        else:
            stack.append((x, True))
            stack.extend((a, False) for a in reversed(x.args))
    return out[0]


def body_ops(body: str) -> list[str]:
    ops: list[str] = []
    _walk(parse_body(body), lambda x: None, lambda c, a: ops.append(c.op))
    return ops


def _types(in_types, attrs):
    body = parse_body(attrs["body"])
    default = next((t for t in in_types if t.dtype.is_float), TensorType((), DType.f32))

    def leaf(x):
        if isinstance(x, RArg):
            if x.index >= len(in_types):
                raise ShapeError(f"region body uses ${x.index} but has {len(in_types)} inputs")
            return in_types[x.index]
        return None  # a weak scalar

    def node(c, args):
        op = REGISTRY.get(c.op)
        if not op.elementwise:
            raise RlxError(f"region body op {c.op!r} is not elementwise")
        like = next((args[i] for i in dtype_peers(c.op, len(args)) if args[i] is not None), None)
        if like is None and c.op == "where" and args[0] is not None:
            like = default  # where(cond, 1.0, 0.0): the values take the region's float dtype
        if like is None:
            raise RlxError("region body applies an op to constants only")
        args = [a if a is not None else TensorType((), like.dtype) for a in args]
        return op.infer(args, _attrs(c))[0]

    out = _walk(body, leaf, node)
    if out is None:
        raise RlxError("region body is a constant")
    return [TensorType(broadcast_shapes(*(t.shape for t in in_types), out.shape), out.dtype)]


def _reference(ins, attrs):
    body = parse_body(attrs["body"])

    def leaf(x):
        return ins[x.index] if isinstance(x, RArg) else x.value

    def node(c, args):
        return REGISTRY.get(c.op).reference(args, _attrs(c))

    out = np.asarray(_walk(body, leaf, node))
    shape = np.broadcast_shapes(*(np.shape(a) for a in ins), out.shape)
    return np.broadcast_to(out, shape) if out.shape != shape else out


def _flops(in_shapes, out_shapes, attrs) -> float:
    n = math.prod(out_shapes[0])
    total = 0.0
    for op in body_ops(attrs["body"]):
        total += REGISTRY.get(op).flops([(1,)], [(1,)], {}) if op != "cast" else 0.0
    return total * n


def _shape(shapes, attrs):
    return [t.shape for t in _types([TensorType(tuple(s), DType.f32) for s in shapes], attrs)]


def _dtype(dtypes, attrs):
    return [t.dtype for t in _types([TensorType((), d) for d in dtypes], attrs)]


register(OpDef(name="region", inputs=("xs",), shape=_shape, dtype=_dtype, reference=_reference,
               flops=_flops, attrs=(AttrSpec("body", "str"),), variadic=True, category="fused",
               types=_types, doc="An elementwise region: one kernel computing its body over its inputs."))


def remap_args(text: str, mapping: dict[int, int]) -> str:
    """The body with input ``$i`` renamed to ``$mapping[i]``."""
    def leaf(x):
        return RArg(mapping[x.index]) if isinstance(x, RArg) else x
    return format_body(_walk(parse_body(text), leaf, lambda c, args: RCall(c.op, c.attr, tuple(args))))
