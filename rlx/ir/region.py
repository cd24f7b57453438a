"""The ``region`` op: a connected elementwise subgraph run as one kernel.

Its ``body`` attribute is an ``Expr`` over the region's inputs (``rlx.ir.expr``), e.g.
``mul(arg(0), sigmoid(arg(0)))``. Its types, reference and FLOPs are those of the ops in the
body, read from the registry; each body node computes in its own dtype.
"""
from __future__ import annotations

import math

import numpy as np

from rlx.ir.expr import Expr, fold, ops_of, typed
from rlx.ir.registry import REGISTRY, AttrSpec, OpDef, TensorType, register
from rlx.ir.shapes import broadcast_shapes


def _types(in_types, attrs):
    body = typed(attrs["body"], tuple(t.dtype for t in in_types))
    return [TensorType(broadcast_shapes(*(t.shape for t in in_types)), body.dtype)]


def _reference(ins, attrs):
    """The body's ops' references, node by node. Literals are Python scalars, so they take
    the dtype of the arrays beside them (NumPy's weak scalars); inputs keep whatever dtype the
    caller computes in (float64 in the reference interpreter), and casts round as written."""
    def fn(x: Expr, args):
        if x.op == "arg":
            return ins[x.value]
        if x.op == "const":
            return x.value
        return REGISTRY.get(x.op).reference(args, x.attr_dict())

    out = np.asarray(fold(attrs["body"], fn))
    shape = np.broadcast_shapes(*(np.shape(a) for a in ins))
    return np.broadcast_to(out, shape) if out.shape != shape else out


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
