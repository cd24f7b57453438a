"""The primitive and composite ops rlx ships, registered into ``REGISTRY`` on import.

Each op is a few declarative lines: inputs, attributes, a shape rule, a dtype rule, a NumPy
reference and a FLOP count. Fused ops are not here: rule files declare them with their
definitions (``rlx/rules``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import special

from rlx.errors import AttrError, BindingError, DTypeError, ShapeError
from rlx.ir.dtypes import DType
from rlx.ir.registry import AttrSpec, OpDef, register
from rlx.ir.shapes import (Dim, broadcast_shapes, dim, dim_add, dim_div, dim_floordiv, dim_sub, fmt_shape,
                           is_static, normalize_axis, numel, shape as canonical)

A = AttrSpec
FLOAT_TYPES = (DType.f64, DType.f32, DType.f16, DType.bf16)
END = 2**63 - 1  # "to the end" in slice ends, as ONNX exporters write it


# ---------------------------------------------------------------------------- rule helpers
def _size(s: Sequence[int]) -> int:
    return math.prod(s)


def _out_size(_i, o, _a) -> float:
    return sum(_size(s) for s in o)


def _per_elem(k: float):
    return lambda i, o, a: k * _size(o[0])


def _no_flops(i, o, a) -> float:
    return 0.0


def _same_shape(shapes, a):
    return [shapes[0]]


def _same_dtype(dtypes, a):
    return [dtypes[0]]


def _float_dtype(dtypes, a):
    if dtypes[0] not in FLOAT_TYPES:
        raise DTypeError(f"expects a floating dtype, got {dtypes[0]}")
    return [dtypes[0]]


def _all_same_dtype(dtypes, a):
    if len(set(dtypes)) > 1:
        raise DTypeError(f"dtypes differ: {', '.join(map(str, dtypes))} (insert a cast)")
    return [dtypes[0]]


def _broadcast(shapes, a):
    return [broadcast_shapes(*shapes)]


def _axes(axes, rank: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(rank))
    out = tuple(sorted({normalize_axis(x, rank) for x in axes}))
    if len(out) != len(axes):
        raise ShapeError(f"repeated axis in {axes}")
    return out


def _op(name: str, inputs: Sequence[str], shape, dtype, reference, flops, *attrs: AttrSpec, **kw) -> OpDef:
    return register(OpDef(name=name, inputs=tuple(inputs), shape=shape, dtype=dtype,
                          reference=reference, flops=flops, attrs=attrs, **kw))


# ---------------------------------------------------------------------------- sources
def _source_shape(shapes, a):
    return [canonical(a["shape"])]


def _constant_ref(ins, a):
    return a["value"].astype(a["dtype"].np)


_op("input", [], _source_shape, lambda d, a: [a["dtype"]], None, _no_flops,
    A("name", "str"), A("shape", "dims"), A("dtype", "dtype"), category="source",
    doc="A graph input, fed at run time.")
_op("param", [], _source_shape, lambda d, a: [a["dtype"]], None, _no_flops,
    A("name", "str"), A("shape", "dims"), A("dtype", "dtype"), category="source",
    doc="A weight, bound once.")
_op("constant", [], lambda s, a: [tuple(a["value"].shape)], lambda d, a: [a["dtype"]],
    _constant_ref, _no_flops, A("value", "tensor"), A("dtype", "dtype"), category="source",
    doc="A literal tensor (small: scalars, masks, shape data).")


# ---------------------------------------------------------------------------- unary
def _erf(x):
    return special.erf(x)


def _gelu(x):
    return 0.5 * x * (1.0 + special.erf(x / math.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


_UNARY: dict[str, tuple[Callable, float, bool]] = {
    # name: (numpy function, approximate arithmetic ops per element, float-only)
    "neg": (np.negative, 1, False),
    "abs": (np.abs, 1, False),
    "exp": (np.exp, 4, True),
    "log": (np.log, 4, True),
    "sqrt": (np.sqrt, 2, True),
    "rsqrt": (lambda x: 1.0 / np.sqrt(x), 3, True),
    "reciprocal": (lambda x: 1.0 / x, 1, True),
    "tanh": (np.tanh, 6, True),
    "erf": (_erf, 6, True),
    "sigmoid": (special.expit, 5, True),
    "relu": (lambda x: np.maximum(x, 0), 1, False),
    "gelu": (_gelu, 10, True),
    "gelu_tanh": (_gelu_tanh, 12, True),
    "silu": (lambda x: x * special.expit(x), 6, True),
}
# Non-primitive elementwise ops are defined over the primitives (the rule language): their
# scalar bodies in every kernel and their decompositions in the e-graph follow from these.
_UNARY_DEFINITIONS = {
    "rsqrt": "reciprocal(sqrt(x))",
    "sigmoid": "reciprocal(add(exp(neg(x)), 1.0))",
    "relu": "maximum(x, 0.0)",
    "gelu": "mul(mul(x, add(erf(div(x, 1.4142135623730951)), 1.0)), 0.5)",
    "gelu_tanh": "mul(mul(x, 0.5), add(tanh(mul(add(x, mul(pow(x, 3.0), 0.044715)), 0.7978845608028654)), 1.0))",
    "silu": "mul(x, sigmoid(x))",
}
for _name, (_fn, _k, _float) in _UNARY.items():
    _op(_name, ["x"], _same_shape, _float_dtype if _float else _same_dtype,
        (lambda f: lambda ins, a: f(ins[0]))(_fn), _per_elem(_k), elementwise=True,
        definition=_UNARY_DEFINITIONS.get(_name), doc=f"Elementwise {_name}.")

# Primitives beyond arithmetic: rounding, trigonometry, float classes and logic.
for _name, _fn in {"floor": np.floor, "ceil": np.ceil, "sin": np.sin, "cos": np.cos}.items():
    _op(_name, ["x"], _same_shape, _float_dtype, (lambda f: lambda ins, a: f(ins[0]))(_fn), _per_elem(1 if
        _name in ("floor", "ceil") else 8), elementwise=True, doc=f"Elementwise {_name}.")
_op("sign", ["x"], _same_shape, _same_dtype, lambda ins, a: np.sign(ins[0]), _per_elem(1), elementwise=True,
    doc="Elementwise sign: -1, 0 or 1 in x's dtype.")


def _bool_of_float(d, a):
    _float_dtype(d, a)
    return [DType.bool]


def _bools(d, a):
    if any(t != DType.bool for t in d):
        raise DTypeError(f"expects bool operands, got {', '.join(map(str, d))}")
    return [DType.bool]


for _name, _fn in {"isnan": np.isnan, "isinf": np.isinf}.items():
    _op(_name, ["x"], _same_shape, _bool_of_float, (lambda f: lambda ins, a: f(ins[0]))(_fn), _per_elem(1),
        elementwise=True, doc=f"Elementwise {_name[2:]} test, bool result.")
_op("logical_not", ["x"], _same_shape, _bools, lambda ins, a: np.logical_not(ins[0]), _per_elem(1),
    elementwise=True, doc="Elementwise logical not of a bool tensor.")
for _name, _fn in {"logical_and": np.logical_and, "logical_or": np.logical_or,
                   "logical_xor": np.logical_xor}.items():
    _op(_name, ["a", "b"], _broadcast, _bools, (lambda f: lambda ins, a: f(ins[0], ins[1]))(_fn), _per_elem(1),
        elementwise=True, commutative=True, doc=f"Elementwise {_name[8:]} of bool tensors, with broadcasting.")


def _int_mod(fn):
    def ref(ins, a):
        with np.errstate(divide="ignore", invalid="ignore"):
            return fn(ins[0], ins[1])
    return ref


_op("mod", ["a", "b"], _broadcast, _all_same_dtype, _int_mod(np.mod), _per_elem(2), elementwise=True,
    doc="Elementwise remainder with the sign of the divisor (Python's %, ONNX Mod fmod=0).")
_op("fmod", ["a", "b"], _broadcast, _all_same_dtype, _int_mod(np.fmod), _per_elem(2), elementwise=True,
    doc="Elementwise remainder with the sign of the dividend (C's fmod, ONNX Mod fmod=1).")

# Activations defined over the primitives: every executor gets their scalar bodies.
_op("hard_sigmoid", ["x"], _same_shape, _float_dtype,
    lambda ins, a: np.clip(ins[0] * a["alpha"] + a["beta"], 0, 1).astype(ins[0].dtype, copy=False), _per_elem(4),
    A("alpha", "float", 0.2), A("beta", "float", 0.5), elementwise=True, category="composite",
    definition="minimum(maximum(add(mul(x, alpha), beta), 0.0), 1.0)",
    doc="max(0, min(1, alpha·x + beta)).")
_op("hard_swish", ["x"], _same_shape, _float_dtype,
    lambda ins, a: ins[0] * np.clip(ins[0] / 6 + 0.5, 0, 1), _per_elem(5), elementwise=True, category="composite",
    definition="mul(x, minimum(maximum(add(mul(x, 0.16666666666666666), 0.5), 0.0), 1.0))",
    doc="x · hard_sigmoid(x) with alpha 1/6, beta 1/2 (MobileNetV3).")
_op("leaky_relu", ["x"], _same_shape, _float_dtype,
    lambda ins, a: np.where(ins[0] < 0, ins[0] * a["alpha"], ins[0]), _per_elem(2), A("alpha", "float", 0.01),
    elementwise=True, category="composite", definition="where(less(x, 0.0), mul(x, alpha), x)",
    doc="x where x >= 0, else alpha·x.")
_op("softplus", ["x"], _same_shape, _float_dtype, lambda ins, a: np.logaddexp(ins[0], 0), _per_elem(10),
    elementwise=True, category="composite", definition="log(add(exp(x), 1.0))", doc="log(1 + exp(x)).")

_op("cast", ["x"], _same_shape, lambda d, a: [a["dtype"]],
    lambda ins, a: ins[0].astype(a["dtype"].np), _no_flops, A("dtype", "dtype"),
    elementwise=True, doc="Elementwise conversion to another dtype.")


# ---------------------------------------------------------------------------- binary
def divide(a, b):
    """True division for floats; for integers the quotient truncated toward zero (C, ONNX),
    in the operands' dtype. Division by zero gives 0 (NumPy's integer convention)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "iub" and b.dtype.kind in "iub":
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            q = np.floor_divide(a, b)
            fix = (q < 0) & (q * b != a)  # floor went one below the truncated quotient
            return np.where(fix, q + 1, q).astype(np.result_type(a, b))
    return np.divide(a, b)


_BINARY: dict[str, Callable] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": divide,
    "pow": np.power, "maximum": np.maximum, "minimum": np.minimum,
}
for _name, _fn in _BINARY.items():
    _op(_name, ["a", "b"], _broadcast, _all_same_dtype,
        (lambda f: lambda ins, a: f(ins[0], ins[1]))(_fn),
        _per_elem(4 if _name == "pow" else 1), elementwise=True,
        commutative=_name in ("add", "mul", "maximum", "minimum"),
        doc=f"Elementwise {_name} with NumPy broadcasting.")

def _compare_dtype(d, a):
    _all_same_dtype(d, a)
    return [DType.bool]


for _name, _fn in {"equal": np.equal, "less": np.less, "greater": np.greater}.items():
    _op(_name, ["a", "b"], _broadcast, _compare_dtype,
        (lambda f: lambda ins, a: f(ins[0], ins[1]))(_fn), _per_elem(1), elementwise=True,
        doc=f"Elementwise comparison ({_name}), bool result.")


def _where_dtype(d, a):
    if d[0] != DType.bool:
        raise DTypeError(f"condition must be bool, got {d[0]}")
    return _all_same_dtype(d[1:], a)


_op("where", ["cond", "a", "b"], _broadcast, _where_dtype,
    lambda ins, a: np.where(ins[0], ins[1], ins[2]), _per_elem(1), elementwise=True, value_inputs=(1, 2),
    doc="Select a where cond else b, broadcasting all three.")


# ---------------------------------------------------------------------------- matmul
def _matmul_shape(shapes, a):
    x, w = shapes
    if not x or not w:
        raise ShapeError("matmul operands must have rank >= 1")
    xs = (1,) + tuple(x) if len(x) == 1 else tuple(x)
    ws = tuple(w) + (1,) if len(w) == 1 else tuple(w)
    if xs[-1] != ws[-2]:
        raise ShapeError(f"contraction dims differ: {xs[-1]} vs {ws[-2]}")
    batch = broadcast_shapes(xs[:-2], ws[:-2])
    out = batch + ((xs[-2],) if len(x) > 1 else ()) + ((ws[-1],) if len(w) > 1 else ())
    return [out]


def _matmul_flops(i, o, a):
    k = i[0][-1]
    return 2.0 * _size(o[0]) * k


_op("matmul", ["a", "b"], _matmul_shape, _all_same_dtype,
    lambda ins, a: np.matmul(ins[0], ins[1]), _matmul_flops,
    doc="Matrix product; batch dims broadcast (NumPy matmul semantics).")


# ---------------------------------------------------------------------------- layout
def _transpose_perm(rank, perm):
    perm = tuple(reversed(range(rank))) if perm is None else tuple(normalize_axis(p, rank) for p in perm)
    if sorted(perm) != list(range(rank)):
        raise ShapeError(f"perm {perm} is not a permutation of {rank} axes")
    return perm


def _transpose_shape(shapes, a):
    x = shapes[0]
    return [tuple(x[p] for p in _transpose_perm(len(x), a["perm"]))]


def _contiguous(shape) -> tuple:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


# View layouts: (attrs, input shape, input strides, output shape) -> (element offset,
# strides) of the output aliasing its input, or None where it needs a copy.
def _transpose_view(a, shape, strides, out_shape):
    return 0, tuple(strides[p] for p in _transpose_perm(len(shape), a["perm"]))


def _reshape_view(a, shape, strides, out_shape):
    """A view wherever NumPy's reshape is one: each run of output axes spans a run of input
    axes (size-1 axes aside) that steps as one axis; else None (a copy)."""
    if tuple(strides) == _contiguous(shape) or 0 in shape:
        return 0, _contiguous(out_shape)
    old = [(d, s) for d, s in zip(shape, strides) if d != 1]
    new = [i for i, d in enumerate(out_shape) if d != 1]
    out = [0] * len(out_shape)
    o = n = 0
    while o < len(old):
        o_end, n_end, size_in, size_out = o + 1, n + 1, old[o][0], out_shape[new[n]]
        while size_in != size_out:
            if size_in < size_out:
                size_in *= old[o_end][0]
                o_end += 1
            else:
                size_out *= out_shape[new[n_end]]
                n_end += 1
        if any(old[k][1] != old[k + 1][1] * old[k + 1][0] for k in range(o, o_end - 1)):
            return None  # these input axes do not step as one
        step = old[o_end - 1][1]
        for k in reversed(new[n:n_end]):
            out[k] = step
            step *= out_shape[k]
        o, n = o_end, n_end
    for k in reversed(range(len(out_shape))):  # a size-1 axis: the stride it would have if dense
        if out_shape[k] == 1:
            out[k] = out[k + 1] * out_shape[k + 1] if k + 1 < len(out_shape) else 1
    return 0, tuple(out)


def _expand_view(a, shape, strides, out_shape):
    lead = len(out_shape) - len(shape)
    return 0, (0,) * lead + tuple(0 if d == 1 and o != 1 else s
                                  for d, o, s in zip(shape, out_shape[lead:], strides))


def _slice_view(a, shape, strides, out_shape):
    strides, offset = list(strides), 0
    for ax, start, end, step in _slice_params(len(shape), a):
        if step <= 0 or not is_static(start):
            return None  # negative strides are a copy: not every executor has them
        offset += range(*slice(start, None, step).indices(shape[ax])).start * strides[ax]
        strides[ax] *= step
    return offset, tuple(strides)


_op("transpose", ["x"], _transpose_shape, _same_dtype,
    lambda ins, a: np.transpose(ins[0], _transpose_perm(ins[0].ndim, a["perm"])), _no_flops,
    A("perm", "ints", None, optional=True), view=True, view_layout=_transpose_view,
    doc="Permute axes (reverse them when perm is None).")


def _reshape_shape(shapes, a):
    x, target = shapes[0], list(a["shape"])
    holes = [i for i, d in enumerate(target) if d == -1]
    if len(holes) > 1:
        raise ShapeError(f"reshape target {tuple(target)} has more than one -1")
    total = numel(x)
    if holes:
        known = numel(d for d in target if d != -1)
        fill = dim_div(total, known) if known != 0 else None
        if fill is None:
            raise ShapeError(f"cannot infer -1 in {tuple(target)}: {total} is not a multiple of {known}")
        target[holes[0]] = fill
    out = canonical(target)
    if numel(out) != total:
        raise ShapeError(f"cannot reshape {fmt_shape(x)} ({total} elements) to {fmt_shape(out)} "
                         f"({numel(out)} elements)")
    return [out]


_op("reshape", ["x"], _reshape_shape, _same_dtype,
    lambda ins, a: np.reshape(ins[0], a["shape"]), _no_flops,
    A("shape", "dims"), view=True, view_layout=_reshape_view,
    doc="Reshape; one dim may be -1; symbolic dims must multiply out to the same size.")


def _expand_shape(shapes, a):
    target = canonical(a["shape"])
    out = broadcast_shapes(shapes[0], target)
    return [out]


_op("expand", ["x"], _expand_shape, _same_dtype,
    lambda ins, a: np.broadcast_to(ins[0], np.broadcast_shapes(ins[0].shape, a["shape"])),
    _no_flops, A("shape", "dims"), view=True, view_layout=_expand_view,
    doc="Broadcast to a shape (bidirectional, as ONNX Expand).")


def _slice_params(rank, a):
    starts, ends = a["starts"], a["ends"]
    axes = a["axes"] if a["axes"] is not None else tuple(range(len(starts)))
    steps = a["steps"] if a["steps"] is not None else (1,) * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ShapeError("slice starts, ends, axes and steps differ in length")
    if any(s == 0 for s in steps):
        raise ShapeError("slice step 0")
    if rank == 0 and axes:
        raise ShapeError("slice of a 0-d tensor")
    return [(normalize_axis(ax, rank), s, e, st) for ax, s, e, st in zip(axes, starts, ends, steps)]


def _slice_dim(d: Dim, start: Dim, end: Dim, step: int) -> Dim:
    if is_static(d) and is_static(start) and is_static(end):
        return len(range(*slice(start, end, step).indices(d)))
    if step != 1:
        raise ShapeError(f"slice of symbolic dim {d} needs step 1, got {step}")
    # symbolic bounds are taken to lie inside the dim (as exporters write x[:S] of a table)
    lo: Dim = start if not is_static(start) or start >= 0 else dim_add(d, start)
    hi: Dim = end if not is_static(end) else (d if end >= 2**31 - 1 else (end if end >= 0 else dim_add(d, end)))
    return dim(dim_sub(hi, lo))


def _slice_shape(shapes, a):
    x = list(shapes[0])
    for ax, s, e, st in _slice_params(len(x), a):
        x[ax] = _slice_dim(x[ax], s, e, st)
    return [tuple(x)]


def _slice_ref(ins, a):
    idx = [slice(None)] * ins[0].ndim
    for ax, s, e, st in _slice_params(ins[0].ndim, a):
        idx[ax] = slice(s, e, st)
    return ins[0][tuple(idx)]


_op("slice", ["x"], _slice_shape, _same_dtype, _slice_ref, _no_flops,
    A("starts", "dims"), A("ends", "dims"), A("axes", "ints", None, optional=True),
    A("steps", "ints", None, optional=True), view=True, view_layout=_slice_view,
    doc="Python-style slicing along axes (ends clamp; 2**63-1 means to the end; starts and "
        "ends may be symbolic, as x[:S])")


def _concat_shape(shapes, a):
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        raise ShapeError(f"concat operands differ in rank: {', '.join(map(fmt_shape, shapes))}")
    ax = normalize_axis(a["axis"], rank)
    out = list(shapes[0])
    for s in shapes[1:]:
        for i in range(rank):
            if i != ax and s[i] != out[i]:
                raise ShapeError(f"concat operands differ off axis {ax}: "
                                 f"{', '.join(map(fmt_shape, shapes))}")
        out[ax] = dim_add(out[ax], s[ax])
    return [tuple(out)]


_op("concat", ["xs"], _concat_shape, _all_same_dtype,
    lambda ins, a: np.concatenate(ins, axis=a["axis"]), _no_flops, A("axis", "int"),
    variadic=True, doc="Join tensors along an axis.")


def _split_shape(shapes, a):
    x = shapes[0]
    ax = normalize_axis(a["axis"], len(x))
    if any(n < 0 for n in a["sizes"]):
        raise ShapeError(f"split sizes {a['sizes']} must not be negative")
    if sum(a["sizes"]) != x[ax]:
        raise ShapeError(f"split sizes {a['sizes']} do not sum to dim {x[ax]} of axis {ax}")
    return [tuple(x[:ax]) + (n,) + tuple(x[ax + 1:]) for n in a["sizes"]]


def _split_view(a, shape, strides, out_shape, output=0):
    axis = a["axis"] % len(shape)
    return sum(a["sizes"][:output]) * strides[axis], tuple(strides)


_op("split", ["x"], _split_shape, lambda d, a: [d[0]] * len(a["sizes"]),
    lambda ins, a: tuple(np.split(ins[0], np.cumsum(a["sizes"])[:-1], axis=a["axis"])),
    _no_flops, A("axis", "int"), A("sizes", "ints"), view=True, view_layout=_split_view,
    doc="Split along an axis into pieces of the given sizes (one output each).")


# ---------------------------------------------------------------------------- reductions
def _reduce_shape(shapes, a):
    x = shapes[0]
    axes = _axes(a["axes"], len(x))
    if a["keepdims"]:
        return [tuple(1 if i in axes else d for i, d in enumerate(x))]
    return [tuple(d for i, d in enumerate(x) if i not in axes)]


def _reducer(fn):
    return lambda ins, a: fn(ins[0], axis=_axes(a["axes"], ins[0].ndim), keepdims=a["keepdims"])


for _name, _fn in {"sum": np.sum, "mean": np.mean, "max": np.max}.items():
    _op(_name, ["x"], _reduce_shape, _same_dtype, _reducer(_fn),
        lambda i, o, a: float(_size(i[0])),
        A("axes", "ints", None, optional=True), A("keepdims", "bool", False), axis_attrs=("axes",),
        doc=f"Reduce with {_name} over axes (all when None).")


# ---------------------------------------------------------------------------- composites
def _softmax_ref(ins, a):
    x = ins[0]
    e = np.exp(x - np.max(x, axis=a["axis"], keepdims=True))
    return e / np.sum(e, axis=a["axis"], keepdims=True)


def _softmax_shape(shapes, a):
    normalize_axis(a["axis"], len(shapes[0]))
    return [shapes[0]]


_op("softmax", ["x"], _softmax_shape, _float_dtype, _softmax_ref, _per_elem(8), A("axis", "int", -1),
    category="composite", axis_attrs=("axis",), doc="Numerically stable softmax along an axis.",
    definition="""e = exp(sub(x, max(x; axes=[-1], keepdims=true)))
                  div(e, sum(e; axes=[-1], keepdims=true))""", defined_for=(("axis", -1),))


def _norm_axes(rank, axis):
    ax = normalize_axis(axis, rank)
    return tuple(range(ax, rank))


def _layer_norm_shape(shapes, a):
    x, w, b = shapes
    axes = _norm_axes(len(x), a["axis"])
    tail = tuple(x[i] for i in axes)
    for name, s in (("weight", w), ("bias", b)):
        if tuple(s) != tail:
            raise ShapeError(f"layer_norm {name} shape {fmt_shape(s)} must equal the normalized "
                             f"dims {fmt_shape(tail)}")
    return [x]


def _layer_norm_ref(ins, a):
    x, w, b = ins
    axes = _norm_axes(x.ndim, a["axis"])
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + a["eps"]) * w + b


def _float_all_same(d, a):
    return _float_dtype(_all_same_dtype(d, a), a)


_op("layer_norm", ["x", "weight", "bias"], _layer_norm_shape, _float_all_same, _layer_norm_ref,
    _per_elem(8), A("axis", "int", -1), A("eps", "float", 1e-5), category="composite", axis_attrs=("axis",),
    doc="Layer normalization over the dims from axis on, with affine weight and bias.",
    definition="""d = sub(x, mean(x; axes=[-1], keepdims=true))
                  add(mul(div(d, sqrt(add(mean(pow(d, 2.0); axes=[-1], keepdims=true), eps))), weight), bias)""",
    defined_for=(("axis", -1),))


def _rms_norm_shape(shapes, a):
    x, w = shapes
    if not x:
        raise ShapeError("rms_norm input must have rank >= 1")
    if tuple(w) != tuple(x[-1:]):
        raise ShapeError(f"rms_norm weight shape {fmt_shape(w)} must equal the last dim "
                         f"{fmt_shape(tuple(x[-1:]))}")
    return [x]


def _rms_norm_ref(ins, a):
    x, w = ins
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + a["eps"]) * w


_op("rms_norm", ["x", "weight"], _rms_norm_shape, _float_all_same, _rms_norm_ref, _per_elem(5),
    A("eps", "float", 1e-6), category="composite",
    doc="RMS normalization over the last dim, scaled by weight.",
    definition="mul(mul(x, reciprocal(sqrt(add(mean(pow(x, 2.0); axes=[-1], keepdims=true), eps)))), weight)")


def _gather_shape(shapes, a):
    data, idx = shapes
    ax = normalize_axis(a["axis"], len(data))
    return [tuple(data[:ax]) + tuple(idx) + tuple(data[ax + 1:])]


def _gather_dtype(d, a):
    if not d[1].is_int:
        raise DTypeError(f"gather indices must be integer, got {d[1]}")
    return [d[0]]


_op("gather", ["data", "indices"], _gather_shape, _gather_dtype,
    lambda ins, a: np.take(ins[0], ins[1], axis=a["axis"]), _no_flops,
    A("axis", "int", 0), doc="Take slices of data at integer indices (embedding lookup).")


def _rotary_shape(shapes, a):
    x, cos, sin = shapes
    if len(x) < 2:
        raise ShapeError(f"rotary input must have rank >= 2, got {fmt_shape(x)}")
    half = dim_div(x[-1], 2)
    if half is None or (is_static(x[-1]) and x[-1] % 2):
        raise ShapeError(f"rotary head dim {x[-1]} must be even")
    if tuple(cos) != tuple(sin):
        raise ShapeError(f"rotary cos {fmt_shape(cos)} and sin {fmt_shape(sin)} differ")
    want = tuple(x[:-1]) + (half,)
    if broadcast_shapes(want, cos) != want:
        raise ShapeError(f"rotary tables {fmt_shape(cos)} do not broadcast to {fmt_shape(want)}")
    return [x]


def _rotary_ref(ins, a):
    x, cos, sin = ins
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


_op("rotary", ["x", "cos", "sin"], _rotary_shape, _float_all_same, _rotary_ref, _per_elem(3),
    category="composite",
    doc="Rotary position embedding, rotate-half form: x (..., S, D), cos/sin (S, D/2).")


def _causal_mask_shape(shapes, a):
    if len(shapes[0]) < 2:
        raise ShapeError(f"causal_mask input must have rank >= 2, got {fmt_shape(shapes[0])}")
    return [shapes[0]]


def _causal_fill(x):
    sq, sk = x.shape[-2:]
    keep = np.tril(np.ones((sq, sk), dtype=bool))
    return np.where(keep, x, -np.inf).astype(x.dtype, copy=False)


_op("causal_mask", ["x"], _causal_mask_shape, _float_dtype, lambda ins, a: _causal_fill(ins[0]),
    _per_elem(1), doc="Set x[..., i, j] to -inf where j > i (top-left aligned causal mask).")


def _trilu_shape(shapes, a):
    if len(shapes[0]) < 2:
        raise ShapeError(f"trilu input must have rank >= 2, got {fmt_shape(shapes[0])}")
    return [shapes[0]]


_op("trilu", ["x"], _trilu_shape, _same_dtype,
    lambda ins, a: (np.triu if a["upper"] else np.tril)(ins[0], a["k"]), _no_flops,
    A("upper", "bool", True), A("k", "int", 0),
    doc="Keep the upper (or lower) triangle of the last two dims from diagonal k on; zero the rest.")


def _sdpa_shape(shapes, a):
    q, k, v = shapes[:3]
    if min(len(q), len(k), len(v)) < 2:
        raise ShapeError("sdpa operands must have rank >= 2")
    if q[-1] != k[-1]:
        raise ShapeError(f"query dim {q[-1]} differs from key dim {k[-1]}")
    if k[-2] != v[-2]:
        raise ShapeError(f"key length {k[-2]} differs from value length {v[-2]}")
    batch = broadcast_shapes(tuple(q[:-2]), tuple(k[:-2]), tuple(v[:-2]))
    scores = batch + (q[-2], k[-2])
    if len(shapes) > 3 and broadcast_shapes(scores, shapes[3]) != scores:
        raise ShapeError(f"mask {fmt_shape(shapes[3])} does not broadcast to scores {fmt_shape(scores)}")
    return [batch + (q[-2], v[-1])]


def _sdpa_ref(ins, a):
    q, k, v = ins[:3]
    scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if len(ins) > 3:
        s = s + ins[3]
    if a["causal"]:
        s = _causal_fill(s)
    return np.matmul(_softmax_ref([s], {"axis": -1}), v)


def _sdpa_flops(i, o, a):
    q, k, v = i[:3]
    batch = _size(o[0][:-2])
    sq, sk, d, dv = q[-2], k[-2], q[-1], v[-1]
    return batch * (2.0 * sq * sk * d + 2.0 * sq * sk * dv + 10.0 * sq * sk)


_op("sdpa", ["q", "k", "v", "mask"], _sdpa_shape, _float_all_same, _sdpa_ref, _sdpa_flops,
    A("causal", "bool", False), A("scale", "float", None, optional=True), optional_inputs=1,
    category="composite",
    doc="Scaled dot-product attention softmax(q·kᵀ·scale [+ mask]) · v; scale defaults to 1/sqrt(d).")


# ---------------------------------------------------------------------------- scans, indexing
def _cumsum_ref(ins, a):
    x = ins[0]
    ax = normalize_axis(a["axis"], x.ndim)
    y = np.flip(x, ax) if a["reverse"] else x
    out = np.cumsum(y, axis=ax, dtype=x.dtype)
    if a["exclusive"]:
        out = out - y
    return np.flip(out, ax) if a["reverse"] else out


def _axis_shape(shapes, a):
    if not shapes[0]:
        raise ShapeError("needs rank >= 1")
    normalize_axis(a["axis"], len(shapes[0]))
    return [shapes[0]]


def _numeric_dtype(d, a):
    if d[0] == DType.bool:
        raise DTypeError("expects a numeric dtype, got bool")
    return [d[0]]


_op("cumsum", ["x"], _axis_shape, _numeric_dtype, _cumsum_ref, _per_elem(1), A("axis", "int"),
    A("exclusive", "bool", False), A("reverse", "bool", False), axis_attrs=("axis",),
    doc="Running sum along an axis (exclusive: the element itself left out; reverse: from the end).")


def _gather_elements_shape(shapes, a):
    data, idx = shapes
    if len(data) != len(idx) or not data:
        raise ShapeError(f"gather_elements data {fmt_shape(data)} and indices {fmt_shape(idx)} must have one "
                         "rank, at least 1")
    ax = normalize_axis(a["axis"], len(data))
    for i, (d, n) in enumerate(zip(data, idx)):
        if i != ax and is_static(d) and is_static(n) and n > d:
            raise ShapeError(f"gather_elements indices {fmt_shape(idx)} are larger than data {fmt_shape(data)} "
                             f"on axis {i}")
    return [tuple(idx)]


def _gather_elements_ref(ins, a):
    data, idx = ins
    ax = normalize_axis(a["axis"], data.ndim)
    size = data.shape[ax]
    if idx.size and not -size <= idx.min() <= idx.max() < size:
        raise BindingError(f"gather_elements: indices {idx.min()} to {idx.max()} are out of range for axis {ax} "
                           f"of size {size}")
    idx = np.where(idx < 0, idx + size, idx)
    data = data[tuple(slice(None) if i == ax else slice(0, n) for i, n in enumerate(idx.shape))]
    return np.take_along_axis(data, idx.astype(np.int64), axis=ax)


_op("gather_elements", ["data", "indices"], _gather_elements_shape, _gather_dtype, _gather_elements_ref,
    _no_flops, A("axis", "int", 0), axis_attrs=("axis",),
    doc="out[i][j][k] = data[idx[i][j][k]][j][k] along axis (ONNX GatherElements, torch.gather).")


def _arg_shape(shapes, a):
    x = shapes[0]
    if not x:
        raise ShapeError("needs rank >= 1")
    ax = normalize_axis(a["axis"], len(x))
    return [tuple(1 if i == ax else d for i, d in enumerate(x)) if a["keepdims"]
            else tuple(d for i, d in enumerate(x) if i != ax)]


def _arg_ref(fn):
    def ref(ins, a):
        x = ins[0]
        ax = normalize_axis(a["axis"], x.ndim)
        if a["select_last_index"]:
            out = x.shape[ax] - 1 - fn(np.flip(x, ax), axis=ax, keepdims=True)
        else:
            out = fn(x, axis=ax, keepdims=True)
        out = out.astype(np.int64)
        return out if a["keepdims"] else np.squeeze(out, ax)
    return ref


for _name, _fn in {"argmax": np.argmax, "argmin": np.argmin}.items():
    _op(_name, ["x"], _arg_shape, lambda d, a: [DType.i64], _arg_ref(_fn), lambda i, o, a: float(_size(i[0])),
        A("axis", "int", 0), A("keepdims", "bool", True), A("select_last_index", "bool", False),
        axis_attrs=("axis",), doc=f"Index of the {_name[3:]} along an axis (the first, or the last).")


def _arange_shape(shapes, a):
    n = a["length"][0]
    if is_static(n) and n < 0:
        raise ShapeError(f"arange length {n} is negative")
    return [(n,)]


def _arange_ref(ins, a):
    start, n = a["start"][0], a["length"][0]
    return (start + np.arange(n, dtype=np.int64) * a["step"]).astype(a["dtype"].np)


_op("arange", [], _arange_shape, lambda d, a: [a["dtype"]], _arange_ref, _no_flops,
    A("start", "dims"), A("length", "dims"), A("step", "int", 1), A("dtype", "dtype", DType.i64),
    doc="start, start + step, ... (length values): ONNX Range over a symbolic bound, such as "
        "positions arange(S); start and length may be symbolic.")


# ---------------------------------------------------------------------------- convolution, pooling
# Layout NC + spatial (ONNX, PyTorch). Any dim may be symbolic: a strided window's output size
# is then a floor division (``rlx.ir.shapes.dim_floordiv``).
# ``pads`` lists the begin pads of every spatial axis, then the end pads (ONNX's order).
def window_params(rank: int, a, kernel) -> tuple[list[int], list[int], list[int], list[int]]:
    n = len(kernel)
    if n < 1 or rank != n + 2:
        raise ShapeError(f"expects (N, C, {max(n, 1)} or more spatial dims) with a kernel dim each, got rank {rank} "
                         f"and kernel {list(kernel)}")
    strides = list(a["strides"] or (1,) * n)
    dil = list(a.get("dilations") or (1,) * n)
    pads = list(a["pads"] or (0,) * (2 * n))
    if len(strides) != n or len(dil) != n or len(pads) != 2 * n:
        raise ShapeError(f"strides {strides}, dilations {dil} and pads {pads} do not fit {n} spatial dims")
    if min(strides + dil + list(kernel)) < 1 or min(pads) < 0:
        raise ShapeError(f"strides {strides}, dilations {dil}, kernel {list(kernel)} must be >= 1 and pads "
                         f"{pads} >= 0")
    return strides, dil, pads[:n], pads[n:]


def _window_out(spatial, kernel, strides, dil, lo, hi, ceil_mode=False) -> tuple[int, ...]:
    out = []
    for i, d in enumerate(spatial):
        ext = dil[i] * (kernel[i] - 1) + 1
        if not is_static(d):
            if ceil_mode:
                raise ShapeError(f"ceil_mode needs static spatial dims, got {d}")
            out.append(dim_add(dim_floordiv(dim_add(d, lo[i] + hi[i] - ext), strides[i]), 1))
            continue
        span = d + lo[i] + hi[i] - ext
        if span < 0:
            raise ShapeError(f"window {ext} is larger than the padded input {d + lo[i] + hi[i]}")
        n = (-(-span // strides[i]) if ceil_mode else span // strides[i]) + 1
        if ceil_mode and (n - 1) * strides[i] >= d + lo[i]:
            n -= 1  # the last window would start in the end padding
        out.append(n)
    return tuple(out)


def _windows(x: np.ndarray, kernel, strides, dil, lo, hi, out, fill) -> np.ndarray:
    """(N, C, *out, *kernel): every window of the padded input, as a strided view."""
    n = len(kernel)
    ends = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(out, strides, dil, kernel)]
    extra = [max(0, e - (size + lo_ + hi_)) for e, size, lo_, hi_ in zip(ends, x.shape[2:], lo, hi)]
    width = [(0, 0), (0, 0)] + [(lo[i], hi[i] + extra[i]) for i in range(n)]
    xp = np.pad(x, width, constant_values=fill) if any(map(any, width)) else x
    ext = [d * (k - 1) + 1 for d, k in zip(dil, kernel)]
    win = np.lib.stride_tricks.sliding_window_view(xp, ext, axis=tuple(range(2, 2 + n)))
    idx = (slice(None), slice(None)) + tuple(slice(0, o * s, s) for o, s in zip(out, strides)) \
        + tuple(slice(None, None, d) for d in dil)
    return win[idx]


def _conv_shape(shapes, a):
    x, w = shapes[:2]
    kernel = tuple(w[2:])
    if len(w) != len(x) or not all(is_static(d) for d in w):
        raise ShapeError(f"weight {fmt_shape(w)} must be static, (M, C/group, *kernel) of rank {len(x)}")
    strides, dil, lo, hi = window_params(len(x), a, kernel)
    g = a["group"]
    if g < 1 or not is_static(x[1]) or x[1] % g or w[0] % g or x[1] // g != w[1]:
        raise ShapeError(f"input channels {x[1]} and weight {fmt_shape(w)} do not fit group={g}")
    if len(shapes) > 2 and tuple(shapes[2]) != (w[0],):
        raise ShapeError(f"bias {fmt_shape(shapes[2])} must be ({w[0]},)")
    return [(x[0], w[0]) + _window_out(x[2:], kernel, strides, dil, lo, hi)]


def _conv_ref(ins, a):
    x, w = ins[:2]
    n, g = x.ndim - 2, a["group"]
    kernel = w.shape[2:]
    strides, dil, lo, hi = window_params(x.ndim, a, kernel)
    out = _window_out(x.shape[2:], kernel, strides, dil, lo, hi)
    acc = np.float64 if x.dtype == np.float64 else np.float32  # einsum has no f16 accumulation, no bf16
    win = _windows(x.astype(acc, copy=False), kernel, strides, dil, lo, hi, out, 0)  # (N, C, *out, *k)
    win = win.reshape((x.shape[0], g, x.shape[1] // g) + win.shape[2:])
    wg = w.astype(acc, copy=False).reshape((g, w.shape[0] // g) + w.shape[1:])  # (g, M/g, C/g, *k)
    sp, ks = "hijl"[:n], "pqrs"[:n]
    y = np.einsum(f"ngc{sp}{ks},gmc{ks}->ngm{sp}", win, wg, optimize=True)
    y = y.reshape((x.shape[0], w.shape[0]) + out)
    if len(ins) > 2:
        y = y + ins[2].astype(acc, copy=False).reshape((-1,) + (1,) * n)
    return y.astype(x.dtype, copy=False)


def _conv_flops(i, o, a):
    w = i[1]
    return 2.0 * _size(o[0]) * _size(w[1:]) + (_size(o[0]) if len(i) > 2 else 0)


_op("conv", ["x", "w", "bias"], _conv_shape, _float_all_same, _conv_ref, _conv_flops,
    A("strides", "ints", None, optional=True), A("pads", "ints", None, optional=True),
    A("dilations", "ints", None, optional=True), A("group", "int", 1), optional_inputs=1,
    doc="N-d convolution (cross-correlation) of x (N, C, *spatial) with w (M, C/group, *kernel), plus an "
        "optional bias (M,); pads are all begin pads, then all end pads.")


def _pool_shape(shapes, a):
    x = shapes[0]
    kernel = tuple(a["kernel"])
    strides, dil, lo, hi = window_params(len(x), a, kernel)
    return [tuple(x[:2]) + _window_out(x[2:], kernel, strides, dil, lo, hi, a["ceil_mode"])]


def _pool_geometry(x, a):
    kernel = tuple(a["kernel"])
    strides, dil, lo, hi = window_params(x.ndim, a, kernel)
    return kernel, strides, dil, lo, hi, _window_out(x.shape[2:], kernel, strides, dil, lo, hi, a["ceil_mode"])


def _max_pool_ref(ins, a):
    x = ins[0]
    kernel, strides, dil, lo, hi, out = _pool_geometry(x, a)
    low = np.iinfo(x.dtype).min if x.dtype.kind in "iu" else -np.inf  # bf16 is kind 'V' in NumPy
    win = _windows(x, kernel, strides, dil, lo, hi, out, low)
    return win.max(axis=tuple(range(-len(kernel), 0)))


def _avg_pool_ref(ins, a):
    x = ins[0]
    kernel, strides, dil, lo, hi, out = _pool_geometry(x, a)
    n = len(kernel)
    total = _windows(x, kernel, strides, dil, lo, hi, out, 0).sum(axis=tuple(range(-n, 0)), dtype=np.float64)
    # the divisor: window elements inside the input (or inside input + pads with count_include_pad)
    ones = np.zeros((1, 1) + tuple(s + l + h for s, l, h in zip(x.shape[2:], lo, hi)))
    inner = tuple(slice(l, l + s) for s, l in zip(x.shape[2:], lo)) if not a["count_include_pad"] \
        else tuple(slice(None) for _ in x.shape[2:])
    ones[(0, 0) + inner] = 1
    count = _windows(ones, kernel, strides, dil, [0] * n, [0] * n, out, 0).sum(axis=tuple(range(-n, 0)))
    return (total / np.maximum(count, 1)).astype(x.dtype)


def _pool_flops(i, o, a):
    return float(_size(o[0]) * _size(a["kernel"]))


for _name, _ref, _extra in (("max_pool", _max_pool_ref, ()),
                            ("avg_pool", _avg_pool_ref, (A("count_include_pad", "bool", False),))):
    _op(_name, ["x"], _pool_shape, _numeric_dtype if _name == "max_pool" else _float_dtype, _ref, _pool_flops,
        A("kernel", "ints"), A("strides", "ints", None, optional=True), A("pads", "ints", None, optional=True),
        A("dilations", "ints", None, optional=True), A("ceil_mode", "bool", False), *_extra,
        doc=f"N-d {_name[:3]} pooling of x (N, C, *spatial) over windows of ``kernel``.")


# ---------------------------------------------------------------------------- resize
RESIZE_MODES = ("nearest", "linear", "cubic")
RESIZE_COORDS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                 "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _resize_shape(shapes, a):
    x, out = shapes[0], tuple(a["sizes"])
    if len(out) != len(x) or a["scales"] is not None and len(a["scales"]) != len(x):
        raise ShapeError(f"sizes {list(out)} and scales {a['scales']} must give every axis of {fmt_shape(x)}")
    if a["scales"] is not None and min(a["scales"]) <= 0:
        raise ShapeError(f"scales {list(a['scales'])} must be positive")
    for name, value, allowed in (("mode", a["mode"], RESIZE_MODES), ("coordinates", a["coordinates"], RESIZE_COORDS),
                                 ("nearest_mode", a["nearest_mode"], NEAREST_MODES)):
        if value not in allowed:
            raise AttrError(f"resize {name} {value!r}: expected one of {', '.join(allowed)}")
    return [out]


def _resize_source(n_in: int, n_out: int, scale: float, a) -> np.ndarray:
    """Where each output index samples the input axis (ONNX's coordinate transformations)."""
    o = np.arange(n_out, dtype=np.float64)
    mode = a["coordinates"]
    if mode == "asymmetric":
        return o / scale
    if mode == "align_corners":  # the resized length is the unrounded n_in * scale
        return o * (n_in - 1) / (n_in * scale - 1) if n_out > 1 else np.zeros(n_out)
    if mode == "tf_half_pixel_for_nn":
        return (o + 0.5) / scale
    if mode == "pytorch_half_pixel" and n_out == 1:
        return np.zeros(n_out)
    x = (o + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        x += n_in / 2 * (1 - n_out / (scale * n_in))
    return x


def _cubic(d: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with coefficient a (ONNX's cubic_coeff_a)."""
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d < 1, near, np.where(d < 2, far, 0.0))


def resize_matrix(n_in: int, n_out: int, scale: float, a) -> np.ndarray:
    """The (n_out, n_in) interpolation matrix of one axis: samples beyond the edge take the
    edge value (for cubic with ``exclude_outside`` they get no weight instead)."""
    x = _resize_source(n_in, n_out, scale, a)
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if a["mode"] == "nearest":
        pick = {"round_prefer_floor": np.ceil(x - 0.5), "round_prefer_ceil": np.floor(x + 0.5),
                "floor": np.floor(x), "ceil": np.ceil(x)}[a["nearest_mode"]]
        m[rows, np.clip(pick, 0, n_in - 1).astype(np.int64)] = 1.0
        return m
    base = np.floor(x)
    offsets = (0, 1) if a["mode"] == "linear" else (-1, 0, 1, 2)
    for off in offsets:
        idx = base + off
        w = 1 - np.abs(x - idx) if a["mode"] == "linear" else _cubic(x - idx, a["cubic_coeff_a"])
        inside = (idx >= 0) & (idx <= n_in - 1)
        if a["mode"] == "cubic" and a["exclude_outside"]:
            w = np.where(inside, w, 0.0)
        np.add.at(m, (rows, np.clip(idx, 0, n_in - 1).astype(np.int64)), w)
    if a["mode"] == "cubic" and a["exclude_outside"]:
        m /= m.sum(axis=1, keepdims=True)
    return m


def _resize_ref(ins, a):
    x = ins[0]
    y = x.astype(np.float64)
    for axis, (n_in, n_out) in enumerate(zip(x.shape, a["sizes"])):  # dims resolved by the caller
        scale = a["scales"][axis] if a["scales"] is not None else n_out / n_in
        if n_in == n_out and scale == 1.0:
            continue
        y = np.moveaxis(np.tensordot(resize_matrix(n_in, n_out, scale, a), y, axes=(1, axis)), 0, axis)
    return np.rint(y).astype(x.dtype) if x.dtype.kind in "iu" else y.astype(x.dtype)  # bf16 is kind 'V'


_op("resize", ["x"], _resize_shape, _numeric_dtype, _resize_ref,
    lambda i, o, a: float(_size(o[0]) * {"nearest": 0, "linear": 2, "cubic": 4}[a["mode"]] ** max(1, len(o[0]) - 2)),
    A("sizes", "dims"), A("scales", "floats", None, optional=True), A("mode", "str", "nearest"),
    A("coordinates", "str", "half_pixel"), A("nearest_mode", "str", "round_prefer_floor"),
    A("cubic_coeff_a", "float", -0.75), A("exclude_outside", "bool", False),
    doc="ONNX Resize (nearest, linear, cubic) to ``sizes``: each axis sampled through its coordinate "
        "transformation with ``scales`` (None: output size / input size).")


def _gather_nd_shape(shapes, a):
    data, idx = shapes
    b = a["batch_dims"]
    if not idx or not is_static(idx[-1]):
        raise ShapeError(f"gather_nd indices {fmt_shape(idx)} need a static last dim")
    k = idx[-1]
    if b < 0 or b >= len(idx) or b + k > len(data) or tuple(data[:b]) != tuple(idx[:b]):
        raise ShapeError(f"gather_nd data {fmt_shape(data)} and indices {fmt_shape(idx)} do not fit batch_dims={b}")
    return [tuple(idx[:-1]) + tuple(data[b + k:])]


def _gather_nd_ref(ins, a):
    data, idx = ins
    b, k = a["batch_dims"], idx.shape[-1]
    lead = math.prod(data.shape[:b])
    dims = np.array(data.shape[b:b + k], dtype=np.int64)
    idx = idx.astype(np.int64).reshape((lead, -1, k))
    if idx.size and (np.any(idx < -dims) or np.any(idx >= dims)):
        raise BindingError(f"gather_nd: indices out of range for dims {tuple(dims)}")
    idx = np.where(idx < 0, idx + dims, idx)
    flat = data.reshape((lead,) + data.shape[b:])
    out = np.stack([flat[i][tuple(np.moveaxis(idx[i], -1, 0))] for i in range(lead)])
    return out.reshape(tuple(ins[1].shape[:-1]) + data.shape[b + k:])


_op("gather_nd", ["data", "indices"], _gather_nd_shape, _gather_dtype, _gather_nd_ref, _no_flops,
    A("batch_dims", "int", 0), doc="Slices of data at index tuples (ONNX GatherND): the last dim of indices "
                                   "indexes the leading dims of data after batch_dims.")
