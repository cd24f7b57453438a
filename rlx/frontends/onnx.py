"""ONNX models into MIR (opset 13 and later).

Every ONNX node becomes registry ops through ``_Importer.emit``. When all inputs of an op are
known at import time (initializers, Constant nodes, the Shape of a typed value), ``emit`` runs
the op's NumPy reference instead of adding a node, so the shape arithmetic exporters write
(Shape → Slice/Gather → Concat → Reshape) folds away, symbolic dims included: the Shape of a
tensor with dim ``S`` is an object array holding a ``_Sym``, on which the same references
compute. What is left is the tensor program, with reshape targets such as ``(B, S, 4, 16)``.

Canonical forms, so the shipped rules see one spelling whatever the exporter wrote: reduction
and softmax axes are negative; division by a constant is multiplication by its reciprocal
(as XLA's algebraic simplifier does; at most one rounding apart) and 1/x is reciprocal(x);
one-element constants next to a tensor of at least their rank are scalars.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from rlx.errors import RlxError
from rlx.ir.dtypes import DType
from rlx.ir.graph import Graph, Value
from rlx.ir.registry import REGISTRY
from rlx.ir.shapes import Dim, dim, dim_add, dim_div, dim_mul, dim_sub, is_static, normalize_axis

MIN_OPSET = 13
SMALL = 64  # known non-initializer tensors up to this size become constants, larger ones params


class OnnxImportError(RlxError):
    """The model cannot be imported: unsupported op, opset or dtype, or a value rlx needs at
    compile time (a reshape target, slice bounds) that is only known at run time."""


# ---------------------------------------------------------------------------- folded values
class _Sym:
    """A symbolic dim inside a folded shape tensor; NumPy object arrays compute with it.
    Symbolic dims are taken to be at least 1 (batch and sequence are never empty)."""
    __slots__ = ("d",)

    def __init__(self, d: Dim) -> None:
        self.d = d

    def __repr__(self) -> str:
        return str(self.d)

    def _apply(self, fn: Callable, a: Any, b: Any) -> Any:
        out = fn(_raw(a), _raw(b))
        if out is None:
            raise OnnxImportError(f"shape arithmetic: {_raw(a)} is not a multiple of {_raw(b)}")
        return _wrap(out)

    def __add__(self, o): return self._apply(dim_add, self, o)
    def __radd__(self, o): return self._apply(dim_add, o, self)
    def __sub__(self, o): return self._apply(dim_sub, self, o)
    def __rsub__(self, o): return self._apply(dim_sub, o, self)
    def __mul__(self, o): return self._apply(dim_mul, self, o)
    def __rmul__(self, o): return self._apply(dim_mul, o, self)
    def __floordiv__(self, o): return self._apply(dim_div, self, o)
    def __rfloordiv__(self, o): return self._apply(dim_div, o, self)
    __truediv__, __rtruediv__ = __floordiv__, __rfloordiv__

    def __eq__(self, o: object) -> bool:  # type: ignore[override]
        a, b = dim(self.d), dim(_raw(o))
        if a == b:
            return True
        if is_static(b) and b < 1:
            return False
        raise OnnxImportError(f"cannot decide at import time whether dim {a} equals {b}")

    def __ne__(self, o: object) -> bool:  # type: ignore[override]
        return not self == o

    __hash__ = None  # type: ignore[assignment]


def _raw(x: Any) -> Dim:
    return x.d if isinstance(x, _Sym) else int(x)


def _wrap(d: Dim) -> Any:
    return d if is_static(d) else _Sym(d)


def _normalize(arr: np.ndarray) -> np.ndarray:
    """Object arrays back to int64 (or bool) once no symbol is left in them."""
    if arr.dtype != object:
        return arr
    flat = [_wrap(dim(x.d)) if isinstance(x, _Sym) else x for x in arr.ravel()]
    if any(isinstance(x, _Sym) for x in flat):
        return np.array(flat, dtype=object).reshape(arr.shape)
    if all(isinstance(x, (bool, np.bool_)) for x in flat):
        return np.array(flat, dtype=bool).reshape(arr.shape)
    return np.array(flat, dtype=np.int64).reshape(arr.shape)


@dataclass
class Known:
    """A value known at import time, with the ONNX name that names it if it becomes a
    param (initializers do; so do folded tensors larger than SMALL)."""
    value: np.ndarray
    name: str
    initializer: bool = False


Operand = Union[Value, Known]


def _dims(k: Known) -> tuple[Dim, ...]:
    return tuple(_raw(x) for x in np.asarray(k.value).reshape(-1))


def _symbolic(attrs: dict) -> bool:
    return any(isinstance(v, (tuple, list)) and any(isinstance(x, str) for x in v) for v in attrs.values())


# ---------------------------------------------------------------------------- dtypes
def _dtype_table() -> dict[int, DType]:
    from onnx import TensorProto as T
    return {T.FLOAT: DType.f32, T.DOUBLE: DType.f64, T.FLOAT16: DType.f16, T.BFLOAT16: DType.bf16,
            T.INT64: DType.i64, T.INT32: DType.i32, T.BOOL: DType.bool}


def _np_dtype(arr: np.ndarray) -> DType:
    if arr.dtype == object:
        return DType.i64
    return {np.dtype(t.np): t for t in DType}[arr.dtype]


# ---------------------------------------------------------------------------- the importer
class _Importer:
    def __init__(self, model: Any, name: str) -> None:
        from onnx import numpy_helper
        self.model = model
        self.g = Graph(name)
        self.opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if self.opset < MIN_OPSET:
            raise OnnxImportError(f"opset {self.opset} is not supported: rlx reads ONNX opset "
                                  f"{MIN_OPSET} and later (re-export with opset_version>={MIN_OPSET})")
        self.dtypes = _dtype_table()
        self.env: dict[str, Operand] = {}
        self.current, self.node_outputs, self.consumed = "", [], set()
        self._made: dict[tuple[str, bool], Value] = {}
        for init in model.graph.initializer:
            self.env[init.name] = Known(_normalize(np.asarray(numpy_helper.to_array(init))), init.name, True)

    # -------------------------------------------------------------- values
    def dtype(self, elem_type: int, where: str) -> DType:
        try:
            return self.dtypes[elem_type]
        except KeyError:
            from onnx import TensorProto
            raise OnnxImportError(f"{where}: dtype {TensorProto.DataType.Name(elem_type)} is not "
                                  f"supported (rlx has {', '.join(map(str, self.dtypes.values()))})") from None

    def tensor(self, x: Operand, scalar_ok: bool = False) -> Value:
        """A known value as a graph node: a scalar constant where broadcasting allows, a param
        for initializers and large tensors (its data goes to ``graph.weights``), else a constant."""
        if isinstance(x, Value):
            return x
        arr = x.value
        if arr.dtype == object:
            raise OnnxImportError(f"value {x.name!r} holds symbolic dims {arr.tolist()} and is used as "
                                  f"tensor data; rlx needs those at compile time only")
        scalar = scalar_ok and arr.size == 1
        key = (x.name, scalar)
        if key not in self._made:
            if scalar:
                v = self.g.constant(arr.reshape(()), _np_dtype(arr))
            elif (x.initializer and arr.size > 1) or arr.size > SMALL:
                name = x.name if x.name not in self.g else f"{x.name}.param"
                v = self.g.param(name, arr.shape, _np_dtype(arr))
                self.g.weights[name] = arr
            else:
                v = self.g.constant(arr, _np_dtype(arr))
            self._made[key] = v
        return self._made[key]

    def emit(self, op: str, inputs: Sequence[Operand], **attrs: Any) -> list[Operand]:
        """Apply a registry op: folded when every input is known, else a graph node."""
        opdef = REGISTRY.get(op)
        if all(isinstance(x, Known) for x in inputs) and not _symbolic(attrs):
            norm = opdef.normalize_attrs(attrs, f"folding {op}")
            out = opdef.reference([x.value for x in inputs], norm)
            outs = out if isinstance(out, tuple) else (out,)
            return [Known(_normalize(np.asarray(o)), self.g._auto_name(op)) for o in outs]
        peer = max((x.rank for x in inputs if isinstance(x, Value)), default=0)
        values = [self.tensor(x, opdef.elementwise and x.value.ndim <= peer) if isinstance(x, Known) else x
                  for x in inputs]
        out = self.g.op(op, *values, **attrs)
        return list(out) if isinstance(out, tuple) else [out]

    def known(self, x: Operand | None, what: str) -> Known:
        if isinstance(x, Known):
            return x
        raise OnnxImportError(f"{what} must be known at import time (a constant or shape arithmetic), "
                              f"but it is computed at run time")

    # -------------------------------------------------------------- the model
    def run(self) -> Graph:
        from onnx import helper
        graph = self.model.graph
        inits = {i.name for i in graph.initializer}
        self.consumed = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
        for vi in graph.input:
            if vi.name not in inits:
                self.env[vi.name] = self._input(vi)
        for node in graph.node:
            label = node.name or (node.output[0] if node.output else node.op_type)
            where = f"ONNX node {label!r} ({node.op_type}, opset {self.opset})"
            handler = HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if handler is None:
                domain = f" of domain {node.domain!r}" if node.domain not in ("", "ai.onnx") else ""
                raise OnnxImportError(f"{where}: unsupported ONNX op {node.op_type!r}{domain}; rlx imports "
                                      f"{', '.join(sorted(HANDLERS))}")
            ins = [self.env[n] if n else None for n in node.input]
            self.current, self.node_outputs = node.op_type, list(node.output)
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            try:
                with self.g.scope(node.output[0] if node.output else label):
                    outs = handler(self, ins, attrs, len(node.output))
            except OnnxImportError as e:
                raise OnnxImportError(f"{where}: {e}") from None
            except RlxError as e:
                raise type(e)(f"{where}: {e}") from None
            for name, v in zip(node.output, outs):
                if name:
                    self.env[name] = Known(v.value, name) if isinstance(v, Known) else v
        for vo in graph.output:
            v = self.tensor(self.env[vo.name])
            want = vo.type.tensor_type.elem_type
            if want and self.dtype(want, f"output {vo.name!r}") != v.dtype:
                raise OnnxImportError(f"output {vo.name!r}: rlx infers {v.dtype}, the model declares "
                                      f"{self.dtype(want, vo.name)}")
            self.g.output(**{vo.name: v})
        self.g.dce()
        return self.g

    def _input(self, vi: Any) -> Value:
        t = vi.type.tensor_type
        shape: list[Dim] = []
        for ax, d in enumerate(t.shape.dim):
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            else:
                shape.append(_symbol(d.dim_param or f"{vi.name}_{ax}"))
        return self.g.input(vi.name, shape, self.dtype(t.elem_type, f"input {vi.name!r}"))


def _symbol(text: str) -> str:
    """A dim_param as an rlx symbol: kept when it is an identifier, else made one."""
    if text.isidentifier():
        return text
    name = re.sub(r"\W", "_", text)
    return name if name.isidentifier() else f"d_{name}"


# ---------------------------------------------------------------------------- handlers
Handler = Callable[[_Importer, list, dict, int], list]
HANDLERS: dict[str, Handler] = {}


def handles(*op_types: str):
    def deco(fn: Handler) -> Handler:
        for t in op_types:
            HANDLERS[t] = fn
        return fn
    return deco


def _shape(x: Operand) -> tuple[Dim, ...]:
    return tuple(x.shape) if isinstance(x, Value) else tuple(x.value.shape)


def _rank(x: Operand) -> int:
    return len(_shape(x))


def _dtype(x: Operand) -> DType:
    return x.dtype if isinstance(x, Value) else _np_dtype(x.value)


def _neg_axis(axis: int, rank: int) -> int:
    return normalize_axis(axis, rank) - rank


def _is_int(x: Operand) -> bool:
    return _dtype(x).is_int


_UNARY = {"Sqrt": "sqrt", "Reciprocal": "reciprocal", "Neg": "neg", "Exp": "exp", "Log": "log",
          "Tanh": "tanh", "Erf": "erf", "Sigmoid": "sigmoid", "Relu": "relu", "Abs": "abs"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Equal": "equal", "Less": "less",
           "Greater": "greater", "Max": "maximum", "Min": "minimum"}


@handles(*_UNARY)
def _unary(imp, ins, at, n):
    return imp.emit(_UNARY[imp.current], ins[:1])


@handles(*_BINARY)
def _binary(imp, ins, at, n):
    op = _BINARY[imp.current]
    acc = ins[0]
    for x in ins[1:]:  # Max and Min take any number of inputs
        acc = imp.emit(op, [acc, x])[0]
    return [acc]


@handles("Div")
def _div(imp, ins, at, n):
    a, b = ins
    if isinstance(a, Known) and isinstance(b, Known) and _is_int(a) and _is_int(b):
        return [Known(_normalize(np.floor_divide(a.value, b.value)), imp.g.scoped("div"))]
    if isinstance(a, Known) and a.value.size == 1 and a.value.reshape(()) == 1 and isinstance(b, Value) \
            and b.dtype.is_float and a.value.ndim <= b.rank:
        return imp.emit("reciprocal", [b])
    if isinstance(b, Known) and not _is_int(b) and isinstance(a, Value):
        recip = (np.ones((), b.value.dtype) / b.value).astype(b.value.dtype)
        return imp.emit("mul", [a, Known(recip, f"{b.name}.reciprocal")])
    return imp.emit("div", [a, b])


@handles("Pow")
def _pow(imp, ins, at, n):
    a, b = ins
    if isinstance(b, Known) and _dtype(b) != _dtype(a):  # ONNX lets the exponent's type differ
        b = Known(b.value.astype(_dtype(a).np), f"{b.name}.{_dtype(a)}")
    return imp.emit("pow", [a, b])


@handles("MatMul")
def _matmul(imp, ins, at, n):
    return imp.emit("matmul", ins)


@handles("Gemm")
def _gemm(imp, ins, at, n):
    a, b = ins[:2]
    c = ins[2] if len(ins) > 2 else None
    if at.get("transA", 0):
        a = imp.emit("transpose", [a], perm=(1, 0))[0]
    if at.get("transB", 0):
        b = imp.emit("transpose", [b], perm=(1, 0))[0]
    y = imp.emit("matmul", [a, b])[0]
    dt = _dtype(y).np
    if at.get("alpha", 1.0) != 1.0:
        y = imp.emit("mul", [y, Known(np.asarray(at["alpha"], dt), imp.g.scoped("alpha"))])[0]
    if c is not None:
        if at.get("beta", 1.0) != 1.0:
            c = imp.emit("mul", [c, Known(np.asarray(at["beta"], dt), imp.g.scoped("beta"))])[0]
        y = imp.emit("add", [y, c])[0]
    return [y]


@handles("Gelu")
def _gelu(imp, ins, at, n):
    approx = at.get("approximate", b"none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    return imp.emit({"none": "gelu", "tanh": "gelu_tanh"}[approx], ins[:1])


@handles("Softmax")
def _softmax(imp, ins, at, n):
    return imp.emit("softmax", ins[:1], axis=_neg_axis(at.get("axis", -1), _rank(ins[0])))


@handles("LayerNormalization")
def _layer_norm(imp, ins, at, n):
    x, w = ins[:2]
    b = ins[2] if len(ins) > 2 and ins[2] is not None else None
    if n > 1 and any(o in imp.consumed for o in imp.node_outputs[1:]):
        raise OnnxImportError("the Mean and InvStdDev outputs are not supported (inference graphs use Y only)")
    if b is None:
        b = Known(np.zeros(_shape(w), _dtype(w).np), f"{imp.node_outputs[0]}.bias", True)
    axis = _neg_axis(at.get("axis", -1), _rank(x))
    return imp.emit("layer_norm", [x, w, b], axis=axis, eps=at.get("epsilon", 1e-5))


_REDUCE = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max"}


@handles(*_REDUCE)
def _reduce(imp, ins, at, n):
    x = ins[0]
    axes = _axes_of(imp, ins, at, "the reduction axes")
    if not axes:
        if at.get("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(_rank(x)))
    axes = sorted(_neg_axis(int(a), _rank(x)) for a in axes)
    return imp.emit(_REDUCE[imp.current], [x], axes=tuple(axes), keepdims=bool(at.get("keepdims", 1)))


@handles("Reshape")
def _reshape(imp, ins, at, n):
    x, target = ins[0], list(_dims(imp.known(ins[1], "the Reshape target")))
    if not at.get("allowzero", 0):
        src = _shape(x)
        target = [src[i] if d == 0 else d for i, d in enumerate(target)]
    return imp.emit("reshape", [x], shape=tuple(target))


@handles("Transpose")
def _transpose(imp, ins, at, n):
    perm = at.get("perm")
    return imp.emit("transpose", ins[:1], perm=tuple(perm) if perm is not None else None)


def _ints(imp: _Importer, ins: list, i: int, what: str) -> list[int] | None:
    """Optional input ``i`` as ints known at import time (None when it is left out)."""
    if len(ins) > i and ins[i] is not None:
        return [int(a) for a in _dims(imp.known(ins[i], what))]
    return None


def _axes_of(imp: _Importer, ins: list, at: dict, what: str) -> list[int] | None:
    """Axes from the second input (newer opsets) or the ``axes`` attribute (older ones)."""
    axes = _ints(imp, ins, 1, what)
    if axes is None and "axes" in at:
        axes = list(at["axes"])
    return axes


@handles("Unsqueeze")
def _unsqueeze(imp, ins, at, n):
    x = ins[0]
    axes = _axes_of(imp, ins, at, "the Unsqueeze axes") or []
    rank = _rank(x) + len(axes)
    where = {a % rank for a in axes}
    src = iter(_shape(x))
    return imp.emit("reshape", [x], shape=tuple(1 if i in where else next(src) for i in range(rank)))


@handles("Squeeze")
def _squeeze(imp, ins, at, n):
    x = ins[0]
    shape = _shape(x)
    axes = _axes_of(imp, ins, at, "the Squeeze axes")
    drop = ({a % len(shape) for a in axes} if axes is not None
            else {i for i, d in enumerate(shape) if d == 1})
    for i in drop:
        if shape[i] != 1:
            raise OnnxImportError(f"cannot squeeze axis {i} of size {shape[i]}")
    return imp.emit("reshape", [x], shape=tuple(d for i, d in enumerate(shape) if i not in drop))


@handles("Concat")
def _concat(imp, ins, at, n):
    return imp.emit("concat", [x for x in ins if x is not None], axis=at["axis"])


@handles("Split")
def _split(imp, ins, at, n):
    x = ins[0]
    axis = at.get("axis", 0)
    sizes = _ints(imp, ins, 1, "the Split sizes")
    if sizes is None and "split" in at:
        sizes = list(at["split"])
    if sizes is None:
        parts = at.get("num_outputs", n)
        d = _shape(x)[axis]
        if is_static(d):
            each = -(-d // parts)  # as ONNX: equal pieces, the last one smaller
            sizes = [min(each, d - i * each) for i in range(parts)]
        else:
            each = dim_div(d, parts)
            if each is None:
                raise OnnxImportError(f"cannot split symbolic dim {d} into {parts} equal pieces")
            sizes = [each] * parts
    return imp.emit("split", [x], axis=axis, sizes=tuple(sizes))


@handles("Slice")
def _slice(imp, ins, at, n):
    x = ins[0]
    starts = _dims(imp.known(ins[1], "the Slice starts"))
    ends = _dims(imp.known(ins[2], "the Slice ends"))
    axes, steps = _ints(imp, ins, 3, "the Slice axes"), _ints(imp, ins, 4, "the Slice steps")
    return imp.emit("slice", [x], starts=starts, ends=ends, axes=axes, steps=steps)


@handles("Gather")
def _gather(imp, ins, at, n):
    return imp.emit("gather", ins[:2], axis=at.get("axis", 0))


@handles("Cast")
def _cast(imp, ins, at, n):
    to = imp.dtype(at["to"], "Cast")
    x = ins[0]
    if isinstance(x, Known) and x.value.dtype == object:
        if not to.is_int:
            raise OnnxImportError(f"cannot cast symbolic dims {x.value.tolist()} to {to}")
        return [x]
    return imp.emit("cast", [x], dtype=to)


@handles("Constant")
def _constant(imp, ins, at, n):
    from onnx import numpy_helper
    if "value" in at:
        return [Known(_normalize(np.asarray(numpy_helper.to_array(at["value"]))), "")]
    for key, dt in (("value_float", np.float32), ("value_floats", np.float32),
                    ("value_int", np.int64), ("value_ints", np.int64)):
        if key in at:
            return [Known(np.asarray(at[key], dt), "")]
    raise OnnxImportError(f"Constant with {', '.join(at)} is not supported (value, value_float(s), value_int(s))")


@handles("Identity")
def _identity(imp, ins, at, n):
    return [ins[0]]


@handles("Shape")
def _shape_op(imp, ins, at, n):
    dims = _shape(ins[0])
    start, end = at.get("start", 0), at.get("end", None)
    sel = dims[start:end]
    return [Known(_normalize(np.array([_wrap(d) for d in sel], dtype=object).reshape(len(sel))), "")]


@handles("Expand")
def _expand(imp, ins, at, n):
    return imp.emit("expand", ins[:1], shape=_dims(imp.known(ins[1], "the Expand shape")))


@handles("ConstantOfShape")
def _constant_of_shape(imp, ins, at, n):
    from onnx import numpy_helper
    dims = _dims(imp.known(ins[0], "the ConstantOfShape shape"))
    fill = numpy_helper.to_array(at["value"]).reshape(()) if "value" in at else np.zeros((), np.float32)
    return imp.emit("expand", [Known(fill, imp.g.scoped("fill"))], shape=dims)


@handles("Where")
def _where(imp, ins, at, n):
    return imp.emit("where", ins[:3])


@handles("Range")
def _range(imp, ins, at, n):
    start, limit, delta = (imp.known(x, f"the Range {w}") for x, w in zip(ins, ("start", "limit", "delta")))
    vals = [x.value.reshape(()) for x in (start, limit, delta)]
    if any(v.dtype == object for v in vals):
        raise OnnxImportError(f"Range over symbolic bounds {[v[()] for v in vals]} is not supported")
    return [Known(np.arange(vals[0], vals[1], vals[2], dtype=start.value.dtype), "")]


@handles("Trilu")
def _trilu(imp, ins, at, n):
    k = (_ints(imp, ins, 1, "the Trilu diagonal k") or [0])[0]
    return imp.emit("trilu", ins[:1], upper=bool(at.get("upper", 1)), k=k)


# ---------------------------------------------------------------------------- entry point
def load(model: str | Path | Any, name: str | None = None) -> Graph:
    """An ONNX model (a path or a ``ModelProto``) as a MIR graph.

    Graph inputs become ``input`` nodes with ``dim_param`` dims as symbols; initializers
    become params whose data is in ``graph.weights`` (one-element ones are constants, scalars
    where broadcasting allows: exporters hoist literals there); shape arithmetic folds at
    import time."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - the extra is part of the test install
        raise RlxError("the ONNX frontend needs the onnx package: pip install 'rlx[onnx]'") from None
    if isinstance(model, (str, Path)):
        path = Path(model)
        try:
            proto = onnx.load(str(path))
        except Exception as e:
            raise OnnxImportError(f"{path}: cannot read an ONNX model: {e}") from None
        name = name or path.stem
    else:
        proto = model
    return _Importer(proto, name or proto.graph.name or "onnx").run()


def run_onnxruntime(model: str | Path | Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs by name under ONNX Runtime's CPU provider: the reference rlx is
    checked against for ONNX files (graph optimizations off, so it runs the model as written)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    feeds = {i.name: np.asarray(inputs[i.name]) for i in sess.get_inputs()}
    return dict(zip(names, sess.run(names, feeds)))
