"""The ``region`` op: a connected elementwise subgraph run as one kernel.

Its ``body`` attribute is an ``Expr`` over the region's inputs (``rlx.ir.expr``), e.g.
``mul(arg(0), sigmoid(arg(0)))``. Its types, reference and FLOPs are those of the ops in the
body, read from the registry; each body node computes in its own dtype.
"""
from __future__ import annotations

import math

import numpy as np

from rlx.errors import DTypeError
from rlx.ir.dtypes import DType, as_dtype
from rlx.ir.expr import Expr, fold, ops_of, typed
from rlx.ir.registry import REGISTRY, AttrSpec, OpDef, TensorType, register
from rlx.ir.shapes import broadcast_shapes


def _types(in_types, attrs):
    body = typed(attrs["body"], tuple(t.dtype for t in in_types))
    return [TensorType(broadcast_shapes(*(t.shape for t in in_types)), body.dtype)]


def _reference(ins, attrs):
    """The body's ops' references, node by node, each result in its node's dtype as the body
    types it over the inputs' dtypes: float64 inputs (the reference interpreter) compute in
    float64; half inputs (the interpreter's native mode) round after every op, as the program
    does. Literals are Python scalars, so they take the dtype of the arrays beside them."""
    try:
        body = typed(attrs["body"], tuple(_dtype_of(a) for a in ins))
    except DTypeError:  # the caller widened the floats (f64 reference): casts alone round
        body = attrs["body"]

    def fn(x: Expr, args):
        if x.op == "arg":
            return ins[x.value]
        if x.op == "const":
            return x.value
        out = REGISTRY.get(x.op).reference(args, x.attr_dict())
        return out if x.dtype is None else np.asarray(out).astype(x.dtype.np, copy=False)

    out = np.asarray(fold(body, fn))
    shape = np.broadcast_shapes(*(np.shape(a) for a in ins))
    return np.broadcast_to(out, shape) if out.shape != shape else out


def _dtype_of(a) -> DType:
    return as_dtype(np.asarray(a).dtype)


def _flops(in_shapes, out_shapes, attrs) -> float:
    per = sum(REGISTRY.get(op).flops([(1,)], [(1,)], {}) for op in ops_of(attrs["body"]))
    return per * math.prod(out_shapes[0])


def _shape(shapes, attrs):
    return [broadcast_shapes(*shapes)]


def _dtype(dtypes, attrs):
    return [typed(attrs["body"], tuple(dtypes)).dtype]


register(OpDef(name="region", inputs=("xs",), shape=_shape, dtype=_dtype, reference=_reference,
               flops=_flops, attrs=(AttrSpec("body", "expr"),), variadic=True, elementwise=True,
               category="fused", types=_types,
               doc="An elementwise region: one kernel computing its body over its inputs."))
