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

Models are untrusted input. Before any node runs, the graph is checked against the ONNX
schemas (input and output counts, attribute names, types and required ones), every value
must have exactly one producer, the nodes are sorted (a cycle is an error), names must be
writable to the e-graph's TSV files, and initializer data must match its dtype and dims.
Folding is bounded: no folded result has more than ``MAX_FOLD_ELEMENTS`` elements (or more
than its inputs), none costs more than ``MAX_FOLD_FLOPS``. Every failure is an
``OnnxImportError`` (or another ``RlxError``) naming the node, the value or the file.
"""
from __future__ import annotations

import heapq
import keyword
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from rlx.errors import RlxError
from rlx.ir.dtypes import DType
from rlx.ir.graph import Graph, Value
from rlx.ir.interpret import check_input
from rlx.ir.registry import REGISTRY, TensorType
from rlx.ir.shapes import Dim, dim, dim_add, dim_div, dim_mul, dim_sub, is_static, normalize_axis, numel

MIN_OPSET = 13
SMALL = 64  # known non-initializer tensors up to this size become constants, larger ones params
# Import-time folding is bounded, so a small model cannot make the importer compute or hold
# much: a folded result has at most MAX_FOLD_ELEMENTS elements (64 MiB of f32) unless its
# inputs already hold more (a transposed weight), and costs at most MAX_FOLD_FLOPS (the
# registry's count); shape data holding symbols has at most MAX_SHAPE_ELEMENTS elements
# (each is a Python object); shape targets have at most MAX_RANK dims.
MAX_FOLD_ELEMENTS = 2**24
MAX_FOLD_FLOPS = 2**32
MAX_SHAPE_ELEMENTS = 2**10
MAX_RANK = 32
_UNWRITABLE = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")  # breaks a line or a TSV cell


class OnnxImportError(RlxError):
    """The model cannot be imported: unsupported op, opset or dtype, a malformed graph, or a
    value rlx needs at compile time (a reshape target, slice bounds) that is only known at
    run time."""


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
    if isinstance(x, _Sym):
        return x.d
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise OnnxImportError(f"shape arithmetic over {x!r}: dims are integers")
    return int(x)


def _wrap(d: Dim) -> Any:
    return d if is_static(d) else _Sym(d)


def _normalize(arr: np.ndarray) -> np.ndarray:
    """Object arrays back to int64 (or bool) once no symbol is left in them; the ints in them
    must fit int64 (Python ints do not overflow: shape arithmetic could grow them forever)."""
    if arr.dtype != object:
        return arr
    flat = [_wrap(dim(x.d)) if isinstance(x, _Sym) else x for x in arr.ravel()]
    for x in flat:
        if isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)) \
                and not -2**63 <= int(x) < 2**63:
            raise OnnxImportError(f"shape arithmetic: {x} does not fit int64")
    if any(isinstance(x, _Sym) for x in flat):
        return np.array(flat, dtype=object).reshape(arr.shape)
    if flat and all(isinstance(x, (bool, np.bool_)) for x in flat):
        return np.array(flat, dtype=bool).reshape(arr.shape)
    if not all(isinstance(x, (int, np.integer)) for x in flat):
        raise OnnxImportError(f"shape arithmetic made non-integer values {_clip(flat)}")
    return np.array(flat, dtype=np.int64).reshape(arr.shape)


def _clip(x: Any, n: int = 80) -> str:
    text = repr(x)
    return text if len(text) <= n else text[:n] + "..."


@dataclass
class Known:
    """A value known at import time, with the ONNX name that names it if it becomes a
    param (initializers do; so do folded tensors larger than SMALL)."""
    value: np.ndarray
    name: str
    initializer: bool = False


Operand = Union[Value, Known]


def _dims(k: Known, what: str) -> tuple[Dim, ...]:
    """A known int tensor as dims (symbolic ones as strings): shape targets, slice bounds."""
    if k.value.dtype != object and k.value.dtype.kind not in "iu":
        raise OnnxImportError(f"{what} must be integers, got {k.value.dtype} {_clip(k.value.tolist())}")
    return tuple(_raw(x) for x in np.asarray(k.value).reshape(-1))


def _symbolic(attrs: dict) -> bool:
    return any(isinstance(v, (tuple, list)) and any(isinstance(x, str) for x in v) for v in attrs.values())


# ---------------------------------------------------------------------------- dtypes
def _dtype_table() -> dict[int, DType]:
    from onnx import TensorProto as T
    return {T.FLOAT: DType.f32, T.DOUBLE: DType.f64, T.FLOAT16: DType.f16, T.BFLOAT16: DType.bf16,
            T.INT64: DType.i64, T.INT32: DType.i32, T.INT16: DType.i16, T.INT8: DType.i8,
            T.UINT64: DType.u64, T.UINT32: DType.u32, T.UINT16: DType.u16, T.UINT8: DType.u8, T.BOOL: DType.bool}


def _dtype_name(elem_type: Any) -> str:
    from onnx import TensorProto
    try:
        return TensorProto.DataType.Name(elem_type)
    except (ValueError, TypeError):
        return f"#{elem_type!r}"


def _np_dtype(arr: np.ndarray) -> DType:
    if arr.dtype == object:
        return DType.i64
    for t in DType:
        if t.np == arr.dtype:
            return t
    raise OnnxImportError(f"dtype {arr.dtype} is not supported (rlx has {', '.join(t.value for t in DType)})")


def _array(t: Any, where: str) -> np.ndarray:
    """A TensorProto's data, checked: an rlx dtype, as many elements as its dims say, and no
    data left in an external file (a ModelProto has no directory to read it from)."""
    from onnx import TensorProto, numpy_helper
    if t.data_location == TensorProto.EXTERNAL or any(e.key == "location" for e in t.external_data):
        loc = next((e.value for e in t.external_data if e.key == "location"), "?")
        raise OnnxImportError(f"{where}: its data is in an external file {loc!r} that was not loaded; "
                              "load the model from its path (external data is read next to the model file)")
    if t.data_type not in _dtype_table():
        raise OnnxImportError(f"{where}: dtype {_dtype_name(t.data_type)} is not supported "
                              f"(rlx has {', '.join(map(str, _dtype_table().values()))})")
    dims = list(t.dims)
    if any(d < 0 for d in dims) or len(dims) > MAX_RANK:
        raise OnnxImportError(f"{where}: invalid dims {_clip(dims)}")
    try:
        arr = numpy_helper.to_array(t)
    except (ValueError, TypeError) as e:
        raise OnnxImportError(f"{where}: its data does not match dtype {_dtype_name(t.data_type)} "
                              f"and dims {dims} ({e})") from None
    if arr.shape != tuple(dims):
        raise OnnxImportError(f"{where}: {arr.size} elements of data for dims {dims}")
    return arr


# ---------------------------------------------------------------------------- the graph
def _label(node: Any) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _check_name(name: str, what: str) -> None:
    if _UNWRITABLE.search(name):
        raise OnnxImportError(f"{what} {name!r} contains a tab, newline or other control character; "
                              "rlx writes names into tab-separated files (rename it in the model)")


def _is_symbol(text: str) -> bool:
    return text.isascii() and text.isidentifier() and not keyword.iskeyword(text)


def _symbols(graph: Any) -> tuple[dict[str, str], dict[tuple[str, int], str]]:
    """rlx symbols for the graph inputs' dims: each distinct dim_param gets its own symbol
    (itself when it is an ASCII identifier, else a sanitized spelling no other dim_param
    has: "a b" and "a_b" stay two symbols), and each dim with neither value nor param a
    fresh one named after its input and axis."""
    params = list(dict.fromkeys(d.dim_param for vi in graph.input for d in vi.type.tensor_type.shape.dim
                                if d.WhichOneof("value") == "dim_param" and d.dim_param))
    taken = {p for p in params if _is_symbol(p)}
    named = {p: p for p in taken}

    def fresh(text: str) -> str:
        base = re.sub(r"\W", "_", text, flags=re.ASCII)
        if not _is_symbol(base):
            base = f"d_{base}"
        out, i = base, 1
        while out in taken:
            i += 1
            out = f"{base}_{i}"
        taken.add(out)
        return out

    for p in params:
        if p not in named:
            named[p] = fresh(p)
    unnamed = {(vi.name, ax): fresh(f"{vi.name}_{ax}") for vi in graph.input
               for ax, d in enumerate(vi.type.tensor_type.shape.dim)
               if d.WhichOneof("value") is None or (d.WhichOneof("value") == "dim_param" and not d.dim_param)}
    return named, unnamed


def _check_node(node: Any, opset: int, where: str) -> None:
    """The node against its ONNX schema: input and output counts, required inputs present,
    attributes known, of their declared type, and the required ones given."""
    from onnx import defs
    from onnx.defs import OpSchema
    try:
        schema = defs.get_schema(node.op_type, opset, "")
    except defs.SchemaError:
        raise OnnxImportError(f"{where}: {node.op_type} is not an op of ONNX opset {opset}") from None
    n_in, n_out = len(node.input), len(node.output)
    if not schema.min_input <= n_in <= schema.max_input:
        raise OnnxImportError(f"{where}: {node.op_type} takes {_count(schema.min_input, schema.max_input)} "
                              f"inputs, the node has {n_in}")
    if not schema.min_output <= n_out <= schema.max_output:
        raise OnnxImportError(f"{where}: {node.op_type} has {_count(schema.min_output, schema.max_output)} "
                              f"outputs, the node names {n_out}")
    for i, name in enumerate(node.input):
        formal = schema.inputs[min(i, len(schema.inputs) - 1)]
        if not name and formal.option != OpSchema.FormalParameterOption.Optional:
            raise OnnxImportError(f"{where}: input {i} ({formal.name}) is required but left out")
    seen: set[str] = set()
    for a in node.attribute:
        spec = schema.attributes.get(a.name)
        if spec is None:
            raise OnnxImportError(f"{where}: {node.op_type} has no attribute {a.name!r}; it takes "
                                  f"{', '.join(sorted(schema.attributes)) or 'none'}")
        if a.name in seen:
            raise OnnxImportError(f"{where}: attribute {a.name!r} is given twice")
        seen.add(a.name)
        if a.type != spec.type.value:
            raise OnnxImportError(f"{where}: attribute {a.name!r} must be {spec.type.name}, "
                                  f"got {_attr_type_name(a.type)}")
    for name, spec in schema.attributes.items():
        if spec.required and name not in seen:
            raise OnnxImportError(f"{where}: {node.op_type} requires attribute {name!r} ({spec.type.name})")


def _count(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else (f"at least {lo}" if hi >= 2**31 - 1 else f"{lo} to {hi}")


def _attr_type_name(t: int) -> str:
    from onnx import AttributeProto
    try:
        return AttributeProto.AttributeType.Name(t)
    except ValueError:
        return f"type #{t}"


def _sorted_nodes(graph: Any, defined: set[str], where: Callable[[Any], str]) -> list:
    """The nodes, each after the producers of its inputs. ONNX requires that order; an
    editor may not keep it, so any order of a DAG is accepted (stable: the file's order where
    it is valid). Errors: a value with two producers, an input nothing produces, a cycle."""
    producer: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for o in node.output:
            if not o:
                continue
            if o in defined:
                raise OnnxImportError(f"{where(node)}: writes {o!r}, which is already a graph input or initializer")
            if o in producer:
                raise OnnxImportError(f"{where(node)}: writes {o!r}, which "
                                      f"{where(graph.node[producer[o]])} writes too")
            producer[o] = i
    waiting = [0] * len(graph.node)
    users: dict[int, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            if name in producer:
                waiting[i] += 1
                users.setdefault(producer[name], []).append(i)
            elif name and name not in defined:
                raise OnnxImportError(f"{where(node)}: input {name!r} is produced by no node, initializer "
                                      "or graph input")
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in users.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) < len(graph.node):
        stuck = [where(graph.node[i]) for i in range(len(graph.node)) if waiting[i]]
        raise OnnxImportError(f"the graph has a cycle through {', '.join(stuck[:4])}"
                              + (f" and {len(stuck) - 4} more nodes" if len(stuck) > 4 else ""))
    for vo in graph.output:
        if vo.name not in producer and vo.name not in defined:
            raise OnnxImportError(f"graph output {vo.name!r} is produced by no node, initializer or graph input")
    return [graph.node[i] for i in order]


# ---------------------------------------------------------------------------- the importer
_SHAPE_OPS = {"add", "sub", "mul", "div", "equal", "where", "concat", "gather", "slice", "reshape",
              "expand", "transpose", "split", "sum"}  # ops folded over symbolic dims


class _Importer:
    def __init__(self, model: Any, name: str, given: Mapping[str, Any] | None = None) -> None:
        from onnx import defs
        self.model = model
        self.given = dict(given or {})
        self.g = Graph(name)
        self.opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if self.opset < MIN_OPSET:
            raise OnnxImportError(f"opset {self.opset} is not supported: rlx reads ONNX opset "
                                  f"{MIN_OPSET} and later (re-export with opset_version>={MIN_OPSET})")
        if self.opset > defs.onnx_opset_version():
            raise OnnxImportError(f"opset {self.opset} is newer than the onnx package knows "
                                  f"({defs.onnx_opset_version()}); upgrade onnx or re-export")
        self.dtypes = _dtype_table()
        self.env: dict[str, Operand] = {}
        self.current, self.node_outputs, self.consumed = "", [], set()
        self._made: dict[tuple[str, bool], Value] = {}
        self.dim_params, self.unnamed_dims = _symbols(model.graph)
        self.renamed = {s: p for p, s in self.dim_params.items() if s != p}

    def where(self, node: Any) -> str:
        return f"ONNX node {_label(node)!r} ({node.op_type}, opset {self.opset})"

    def explain(self, message: str) -> str:
        """The message, plus which dim_param each sanitized symbol it mentions stands for."""
        notes = [f"{s} is dim_param {p!r}" for s, p in self.renamed.items() if re.search(rf"\b{s}\b", message)]
        return message + (f" ({'; '.join(notes)})" if notes else "")

    # -------------------------------------------------------------- values
    def dtype(self, elem_type: int, where: str) -> DType:
        try:
            return self.dtypes[elem_type]
        except (KeyError, TypeError):
            raise OnnxImportError(f"{where}: dtype {_dtype_name(elem_type)} is not "
                                  f"supported (rlx has {', '.join(map(str, self.dtypes.values()))})") from None

    def tensor(self, x: Operand, scalar_ok: bool = False) -> Value:
        """A known value as a graph node: a scalar constant where broadcasting allows, a param
        for initializers and large tensors (its data goes to ``graph.weights``), else a constant."""
        if isinstance(x, Value):
            return x
        arr = x.value
        if arr.dtype == object:
            return self._dims_tensor(x)
        scalar = scalar_ok and arr.size == 1
        key = (x.name, scalar)
        if key not in self._made:
            if scalar:
                v = self.g.constant(arr.reshape(()), _np_dtype(arr))
            elif (x.initializer and arr.size > 1) or arr.size > SMALL:
                name, i = x.name, 1
                while name in self.g:
                    name, i = f"{x.name}.param{'' if i == 1 else i}", i + 1
                v = self.g.param(name, arr.shape, _np_dtype(arr))
                self.g.weights[name] = arr
            else:
                v = self.g.constant(arr, _np_dtype(arr))
            self._made[key] = v
        return self._made[key]

    def _dims_tensor(self, x: Known) -> Value:
        """Shape data holding symbols (``Size`` or ``Shape`` of a symbolic tensor) used as tensor
        data: computed at run time from the bound symbols, one ``arange`` of length 1 per element."""
        key = (x.name, "dims")
        if key not in self._made:
            arr = x.value
            parts = [self.g.op("arange", start=(_raw(e),), length=(1,), dtype=DType.i64) for e in arr.ravel()]
            flat = parts[0] if len(parts) == 1 else self.g.op("concat", *parts, axis=0)
            self._made[key] = self.g.op("reshape", flat, shape=tuple(arr.shape))
        return self._made[key]

    def emit(self, op: str, inputs: Sequence[Operand], **attrs: Any) -> list[Operand]:
        """Apply a registry op: folded when every input is known, else a graph node."""
        if all(isinstance(x, Known) for x in inputs) and not _symbolic(attrs):
            return self.fold(op, inputs, attrs)
        opdef = REGISTRY.get(op)
        peer = max((x.rank for x in inputs if isinstance(x, Value)), default=0)
        values = [self.tensor(x, opdef.elementwise and x.value.ndim <= peer) if isinstance(x, Known) else x
                  for x in inputs]
        out = self.g.op(op, *values, **attrs)
        return list(out) if isinstance(out, tuple) else [out]

    def fold(self, op: str, inputs: Sequence[Known], attrs: dict,
             compute: Callable | None = None) -> list[Operand]:
        """Run the op's reference (or ``compute``) at import time: typed as a graph node would
        be (the same shape and dtype errors), and refused beyond the bounds before any work."""
        opdef = REGISTRY.get(op)
        most = float("inf") if opdef.variadic else len(opdef.inputs)
        if not max(opdef.min_inputs, 1) <= len(inputs) <= most:
            raise OnnxImportError(f"{op} takes {len(opdef.inputs)} inputs, got {len(inputs)}")
        symbolic = any(x.value.dtype == object for x in inputs)
        if symbolic and op not in _SHAPE_OPS:
            raise OnnxImportError(f"{op} over symbolic dims {_clip([x.value.tolist() for x in inputs])} "
                                  "cannot be computed at import time")
        norm = opdef.normalize_attrs(attrs, f"folding {op}")
        in_shapes = [tuple(x.value.shape) for x in inputs]
        types = opdef.infer([TensorType(s, _np_dtype(x.value)) for s, x in zip(in_shapes, inputs)], norm)
        out_shapes = [tuple(t.shape) for t in types]
        size = sum(math.prod(s) for s in out_shapes)
        bound, name = ((MAX_SHAPE_ELEMENTS, "MAX_SHAPE_ELEMENTS = 2**10") if symbolic else
                       (max(MAX_FOLD_ELEMENTS, sum(x.value.size for x in inputs)), "MAX_FOLD_ELEMENTS = 2**24"))
        if size > bound:
            raise OnnxImportError(f"folding {op} at import time would make {size} elements (shape "
                                  f"{', '.join(map(str, out_shapes))}); rlx folds at most {bound} "
                                  f"({name}, or as many as the inputs hold)")
        flops = opdef.flops(in_shapes, out_shapes, norm)
        if flops > MAX_FOLD_FLOPS:
            raise OnnxImportError(f"folding {op} at import time would take {flops:.3g} flops; rlx folds at "
                                  f"most {MAX_FOLD_FLOPS:.3g} (MAX_FOLD_FLOPS = 2**32)")
        try:
            with np.errstate(all="ignore"):  # int wraparound and inf as ONNX Runtime computes them
                out = (compute or opdef.reference)([x.value for x in inputs], norm)
        except (ArithmeticError, ValueError, IndexError, TypeError) as e:
            raise OnnxImportError(f"folding {op} at import time: {e}") from None
        outs = out if isinstance(out, tuple) else (out,)
        return [Known(_normalize(np.asarray(o)), self.g._auto_name(op)) for o in outs]

    def known(self, x: Operand | None, what: str) -> Known:
        if isinstance(x, Known):
            return x
        raise OnnxImportError(f"{what} must be known at import time (a constant or shape arithmetic), "
                              f"but it is computed at run time")

    # -------------------------------------------------------------- the model
    def check(self) -> list:
        """The graph's nodes in order, once names, inputs, initializers and every node's
        schema are checked; loads the initializers."""
        graph = self.model.graph
        if not graph.output:
            raise OnnxImportError("the graph has no outputs")
        inits: dict[str, Any] = {}
        for t in graph.initializer:
            _check_name(t.name, "initializer")
            if not t.name or t.name in inits:
                raise OnnxImportError(f"initializer {t.name!r}: {'empty name' if not t.name else 'defined twice'}")
            inits[t.name] = t
        inputs: set[str] = set()
        for vi in graph.input:
            _check_name(vi.name, "graph input")
            if not vi.name or vi.name in inputs:
                raise OnnxImportError(f"graph input {vi.name!r}: {'empty name' if not vi.name else 'declared twice'}")
            inputs.add(vi.name)
            declared = vi.type.tensor_type.elem_type
            if vi.name in inits and declared and declared != inits[vi.name].data_type:
                raise OnnxImportError(f"initializer {vi.name!r} has dtype {_dtype_name(inits[vi.name].data_type)}, "
                                      f"its graph input declares {_dtype_name(declared)}")
        outputs: set[str] = set()
        for vo in graph.output:
            _check_name(vo.name, "graph output")
            if not vo.name or vo.name in outputs:
                raise OnnxImportError(f"graph output {vo.name!r}: {'empty name' if not vo.name else 'listed twice'}")
            outputs.add(vo.name)
        for node in graph.node:
            where = self.where(node)
            for n in list(node.input) + list(node.output):
                _check_name(n, f"{where}: value")
            handler = HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if handler is None:
                domain = f" of domain {node.domain!r}" if node.domain not in ("", "ai.onnx") else ""
                raise OnnxImportError(f"{where}: unsupported ONNX op {node.op_type!r}{domain}; rlx imports "
                                      f"{', '.join(sorted(HANDLERS))}")
            _check_node(node, self.opset, where)
        order = _sorted_nodes(graph, set(inits) | inputs, self.where)
        for name, t in inits.items():
            self.env[name] = Known(_normalize(_array(t, f"initializer {name!r}")), name, True)
        return order

    def run(self) -> Graph:
        from onnx import helper
        graph = self.model.graph
        nodes = self.check()
        self.consumed = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
        unknown = sorted(set(self.given) - {vi.name for vi in graph.input})
        if unknown:
            raise OnnxImportError(f"known= names {', '.join(map(repr, unknown))}, which the graph does not take "
                                  f"as inputs (it takes {', '.join(repr(vi.name) for vi in graph.input)})")
        for vi in graph.input:
            if vi.name in self.given:
                self.env[vi.name] = self._given(vi)
            elif vi.name not in self.env:
                self.env[vi.name] = self._input(vi)
        for node in nodes:
            where = self.where(node)
            ins = [self.env[n] if n else None for n in node.input]
            self.current, self.node_outputs = node.op_type, list(node.output)
            try:
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                with self.g.scope(node.output[0] if node.output and node.output[0] else _label(node)):
                    outs = HANDLERS[node.op_type](self, ins, attrs, len(node.output))
            except RlxError as e:
                raise type(e)(self.explain(f"{where}: {e}")) from None
            unmade = [name for name in node.output[len(outs):] if name in self.consumed]
            if unmade:
                raise OnnxImportError(f"{where}: output {unmade[0]!r} is used, but rlx computes only the "
                                      f"first {len(outs)} of this node's outputs")
            for name, v in zip(node.output, outs):
                if name:
                    self.env[name] = Known(v.value, name) if isinstance(v, Known) else v
        for vo in graph.output:
            try:
                v = self.tensor(self.env[vo.name])
                want = vo.type.tensor_type.elem_type
                if want and self.dtype(want, "declared dtype") != v.dtype:
                    raise OnnxImportError(f"rlx infers {v.dtype}, the model declares {self.dtype(want, '')}")
            except RlxError as e:
                raise type(e)(self.explain(f"graph output {vo.name!r}: {e}")) from None
            self.g.output(**{vo.name: v})
        self.g.dce()
        return self.g

    def _given(self, vi: Any) -> Known:
        """A graph input whose value the caller gives at import time: a constant from here on."""
        where = f"known input {vi.name!r}"
        t = vi.type.tensor_type
        dt = self.dtype(t.elem_type, where)
        arr = check_input(self.given[vi.name], dt, where)
        declared = [d.dim_value if d.WhichOneof("value") == "dim_value" else None for d in t.shape.dim] \
            if t.HasField("shape") else None
        if declared is not None and (len(declared) != arr.ndim or
                                     any(d is not None and d != n for d, n in zip(declared, arr.shape))):
            raise OnnxImportError(f"{where}: shape {arr.shape} does not match the declared "
                                  f"{tuple('?' if d is None else d for d in declared)}")
        if arr.size > MAX_FOLD_ELEMENTS:
            raise OnnxImportError(f"{where}: {arr.size} elements, more than MAX_FOLD_ELEMENTS = 2**24")
        return Known(arr.astype(dt.np, copy=False), vi.name, True)

    def _input(self, vi: Any) -> Value:
        where = f"graph input {vi.name!r}"
        if vi.type.WhichOneof("value") != "tensor_type":
            raise OnnxImportError(f"{where}: not a tensor (rlx imports tensor inputs only)")
        t = vi.type.tensor_type
        dt = self.dtype(t.elem_type, where)
        if not t.HasField("shape"):
            raise OnnxImportError(f"{where}: no shape; rlx needs every input's rank (give its dims, "
                                  "symbolic ones as dim_param)")
        if len(t.shape.dim) > MAX_RANK:
            raise OnnxImportError(f"{where}: rank {len(t.shape.dim)} is above MAX_RANK = {MAX_RANK}")
        shape: list[Dim] = []
        for ax, d in enumerate(t.shape.dim):
            if d.WhichOneof("value") == "dim_value":
                if d.dim_value < 0:
                    raise OnnxImportError(f"{where}: negative dim {d.dim_value} on axis {ax}")
                shape.append(int(d.dim_value))
            elif d.WhichOneof("value") == "dim_param" and d.dim_param:
                shape.append(self.dim_params[d.dim_param])
            else:
                shape.append(self.unnamed_dims[vi.name, ax])
        return self.g.input(vi.name, shape, dt)


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


def _axis(axis: int, rank: int) -> int:
    """``axis`` in range for ``rank`` (a scalar has none: the registry would take axis 0)."""
    if rank == 0:
        raise OnnxImportError(f"axis {axis} of a scalar: the op needs rank 1 or more")
    return normalize_axis(axis, rank)


def _neg_axis(axis: int, rank: int) -> int:
    return _axis(axis, rank) - rank


def _is_int(x: Operand) -> bool:
    return _dtype(x).is_int


def _axes_set(axes: Sequence[int], rank: int, what: str) -> set[int]:
    """Axes in range for ``rank``, each once (ONNX refuses repeated ones)."""
    out = {_axis(a, rank) for a in axes}
    if len(out) != len(axes):
        raise OnnxImportError(f"{what} {list(axes)} repeat an axis")
    return out


_UNARY = {"Sqrt": "sqrt", "Reciprocal": "reciprocal", "Neg": "neg", "Exp": "exp", "Log": "log",
          "Tanh": "tanh", "Erf": "erf", "Sigmoid": "sigmoid", "Relu": "relu", "Abs": "abs",
          "Floor": "floor", "Ceil": "ceil", "Sin": "sin", "Cos": "cos", "Sign": "sign", "IsNaN": "isnan",
          "Not": "logical_not", "Softplus": "softplus", "HardSwish": "hard_swish"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Equal": "equal", "Less": "less",
           "Greater": "greater", "Max": "maximum", "Min": "minimum", "And": "logical_and",
           "Or": "logical_or", "Xor": "logical_xor"}


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


@handles("LessOrEqual", "GreaterOrEqual")
def _or_equal(imp, ins, at, n):
    strict = imp.emit("greater" if imp.current == "LessOrEqual" else "less", ins[:2])
    return imp.emit("logical_not", strict)


@handles("Mod")
def _mod(imp, ins, at, n):
    fmod = at.get("fmod", 0)
    return imp.emit("fmod" if fmod else "mod", ins[:2])


@handles("IsInf")
def _isinf(imp, ins, at, n):
    x = ins[0]
    inf = imp.emit("isinf", [x])
    pos, neg = at.get("detect_positive", 1), at.get("detect_negative", 1)
    if pos and neg:
        return inf
    if not pos and not neg:
        return imp.emit("logical_and", inf + imp.emit("logical_not", inf))
    zero = Known(np.zeros((), _dtype(x).np), imp.g.scoped("zero"))
    return imp.emit("logical_and", inf + imp.emit("greater" if pos else "less", [x, zero]))


@handles("Clip")
def _clip_op(imp, ins, at, n):
    x = ins[0]
    dt = _dtype(x).np
    lo = ins[1] if len(ins) > 1 else (Known(np.asarray(at["min"], dt), imp.g.scoped("min")) if "min" in at else None)
    hi = ins[2] if len(ins) > 2 else (Known(np.asarray(at["max"], dt), imp.g.scoped("max")) if "max" in at else None)
    if lo is not None:
        x = imp.emit("maximum", [x, lo])[0]
    if hi is not None:
        x = imp.emit("minimum", [x, hi])[0]
    return [x]


@handles("HardSigmoid")
def _hard_sigmoid(imp, ins, at, n):
    return imp.emit("hard_sigmoid", ins[:1], alpha=at.get("alpha", 0.2), beta=at.get("beta", 0.5))


@handles("LeakyRelu")
def _leaky_relu(imp, ins, at, n):
    return imp.emit("leaky_relu", ins[:1], alpha=at.get("alpha", 0.01))


@handles("CumSum")
def _cumsum(imp, ins, at, n):
    (axis,) = _ints(imp, ins, 1, "the CumSum axis") or [0]
    _axis(axis, _rank(ins[0]))
    return imp.emit("cumsum", ins[:1], axis=axis, exclusive=bool(at.get("exclusive", 0)),
                    reverse=bool(at.get("reverse", 0)))


@handles("GatherElements")
def _gather_elements(imp, ins, at, n):
    _axis(at.get("axis", 0), _rank(ins[0]))
    return imp.emit("gather_elements", ins[:2], axis=at.get("axis", 0))


@handles("GatherND")
def _gather_nd(imp, ins, at, n):
    return imp.emit("gather_nd", ins[:2], batch_dims=at.get("batch_dims", 0))


@handles("ArgMax", "ArgMin")
def _argmax(imp, ins, at, n):
    _axis(at.get("axis", 0), _rank(ins[0]))
    return imp.emit(imp.current.lower(), ins[:1], axis=at.get("axis", 0), keepdims=bool(at.get("keepdims", 1)),
                    select_last_index=bool(at.get("select_last_index", 0)))


@handles("Flatten")
def _flatten(imp, ins, at, n):
    shape = _shape(ins[0])
    axis = at.get("axis", 1)
    if not -len(shape) <= axis <= len(shape):
        raise OnnxImportError(f"Flatten axis {axis} out of range for rank {len(shape)}")
    axis = axis + len(shape) if axis < 0 else axis
    return imp.emit("reshape", ins[:1], shape=(numel(shape[:axis]), numel(shape[axis:])))


@handles("Dropout")
def _dropout(imp, ins, at, n):
    """Inference: the identity (training_mode must be off), and a mask of ones."""
    if len(ins) > 2 and ins[2] is not None:
        mode = imp.known(ins[2], "the Dropout training_mode")
        if mode.value.dtype == object or np.any(mode.value):
            raise OnnxImportError("Dropout in training mode is not supported (rlx compiles inference)")
    outs = [ins[0]]
    if n > 1 and imp.node_outputs[1] in imp.consumed:
        shape = _shape(ins[0])
        outs += imp.emit("expand", [Known(np.ones((), bool), imp.g.scoped("mask"))], shape=shape)
    return outs


@handles("Size")
def _size_op(imp, ins, at, n):
    return [Known(_normalize(np.array(_wrap(numel(_shape(ins[0]))), dtype=object).reshape(())), "")]


def _window_attrs(x: Operand, at: dict, kernel: Sequence[int]) -> dict:
    """strides, pads and dilations of a Conv or pool node, with ``auto_pad`` worked out (SAME_*
    pads so that the output is ceil(input / stride), the odd one at the end for SAME_UPPER)."""
    n = len(kernel)
    spatial = _shape(x)[2:]
    if len(spatial) != n:
        raise OnnxImportError(f"a kernel of {n} dims for an input of shape {_shape(x)}")
    strides = list(at.get("strides") or [1] * n)
    dil = list(at.get("dilations") or [1] * n)
    auto = at.get("auto_pad", b"NOTSET")
    auto = auto.decode("utf-8", "replace") if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        pads = list(at.get("pads") or [0] * (2 * n))
    elif auto == "VALID":
        pads = [0] * (2 * n)
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        if not all(is_static(d) for d in spatial) or min(strides, default=1) < 1:
            raise OnnxImportError(f"auto_pad={auto} needs static spatial dims, got {spatial}")
        total = [max(0, (-(-d // s) - 1) * s + dl * (k - 1) + 1 - d)
                 for d, s, dl, k in zip(spatial, strides, dil, kernel)]
        small = [t // 2 for t in total]
        big = [t - h for t, h in zip(total, small)]
        pads = small + big if auto == "SAME_UPPER" else big + small
    else:
        raise OnnxImportError(f"auto_pad={auto!r}: ONNX has NOTSET, SAME_UPPER, SAME_LOWER and VALID")
    return {"strides": tuple(strides), "pads": tuple(pads), "dilations": tuple(dil)}


@handles("Conv")
def _conv(imp, ins, at, n):
    x, w = ins[:2]
    kernel = list(at.get("kernel_shape") or _shape(w)[2:])
    if list(_shape(w)[2:]) != kernel:
        raise OnnxImportError(f"kernel_shape {kernel} differs from the weight's {list(_shape(w)[2:])}")
    inputs = [x, w] + ([ins[2]] if len(ins) > 2 and ins[2] is not None else [])
    return imp.emit("conv", inputs, group=at.get("group", 1), **_window_attrs(x, at, kernel))


@handles("MaxPool", "AveragePool")
def _pool(imp, ins, at, n):
    x = ins[0]
    if n > 1 and imp.node_outputs[1] in imp.consumed:
        raise OnnxImportError("MaxPool's Indices output is not supported")
    kernel = list(at["kernel_shape"])
    attrs = _window_attrs(x, at, kernel)
    common = dict(kernel=tuple(kernel), ceil_mode=bool(at.get("ceil_mode", 0)), **attrs)
    if imp.current == "MaxPool":
        return imp.emit("max_pool", [x], **common)
    return imp.emit("avg_pool", [x], count_include_pad=bool(at.get("count_include_pad", 0)), **common)


@handles("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(imp, ins, at, n):
    x = ins[0]
    if _rank(x) < 3:
        raise OnnxImportError(f"{imp.current} needs (N, C, spatial...), got shape {_shape(x)}")
    axes = tuple(range(2 - _rank(x), 0))
    return imp.emit("mean" if imp.current == "GlobalAveragePool" else "max", [x], axes=axes, keepdims=True)


@handles("BatchNormalization")
def _batch_norm(imp, ins, at, n):
    """Inference: y = (x - mean) · scale / sqrt(var + eps) + bias per channel. With known
    statistics (the usual case) the factor and the shift fold at import time into one
    multiply-add."""
    if at.get("training_mode", 0):
        raise OnnxImportError("BatchNormalization in training mode is not supported (rlx compiles inference)")
    if n > 1 and any(o in imp.consumed for o in imp.node_outputs[1:]):
        raise OnnxImportError("BatchNormalization's running mean and variance outputs are not supported")
    x, scale, bias, mean, var = ins[:5]
    rank = _rank(x)
    if rank < 2:
        raise OnnxImportError(f"BatchNormalization needs (N, C, ...), got shape {_shape(x)}")
    c = _shape(x)[1]
    per_channel = (c,) + (1,) * (rank - 2)

    def channel(v: Operand) -> Operand:
        if _shape(v) != (c,):
            raise OnnxImportError(f"a BatchNormalization parameter of shape {_shape(v)}; expected ({c},)")
        return imp.emit("reshape", [v], shape=per_channel)[0]

    eps = Known(np.asarray(at.get("epsilon", 1e-5), _dtype(x).np), imp.g.scoped("epsilon"))
    factor = imp.emit("mul", [channel(scale)] + imp.emit("rsqrt", imp.emit("add", [channel(var), eps])))[0]
    shift = imp.emit("sub", [channel(bias), imp.emit("mul", [channel(mean), factor])[0]])[0]
    return imp.emit("add", [imp.emit("mul", [x, factor])[0], shift])


def _shape_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Division in shape arithmetic: exact for symbolic dims (as ``_Sym`` divides), the
    registry's ``div`` for two ints (truncating toward zero, as ONNX Runtime)."""
    div = REGISTRY.get("div").reference

    def one(x, y):
        if isinstance(x, _Sym) or isinstance(y, _Sym):
            return x / y
        return div([np.int64(x), np.int64(y)], {}).item()
    return np.frompyfunc(one, 2, 1)(a, b)


@handles("Div")
def _div(imp, ins, at, n):
    a, b = ins
    if isinstance(b, Known) and _is_int(b) and b.value.dtype != bool and any(
            not isinstance(v, _Sym) and v == 0 for v in b.value.ravel()):
        raise OnnxImportError(f"integer division by zero (divisor {b.name or 'constant'} "
                              f"{_clip(b.value.tolist())})")
    if isinstance(a, Known) and isinstance(b, Known) and object in (a.value.dtype, b.value.dtype):
        return imp.fold("div", [a, b], {}, lambda ins, _: _shape_div(*ins))
    if isinstance(a, Known) and a.value.dtype != object and a.value.size == 1 and a.value.reshape(()) == 1 \
            and isinstance(b, Value) and b.dtype.is_float and a.value.ndim <= b.rank:
        return imp.emit("reciprocal", [b])
    if isinstance(b, Known) and _dtype(b).is_float and isinstance(a, Value):
        recip = (np.ones((), b.value.dtype) / b.value).astype(b.value.dtype)
        return imp.emit("mul", [a, Known(recip, f"{b.name}.reciprocal")])
    return imp.emit("div", [a, b])


@handles("Pow")
def _pow(imp, ins, at, n):
    a, b = ins
    if isinstance(b, Known) and b.value.dtype == object:
        raise OnnxImportError("an exponent made of symbolic dims is not supported")
    ta, tb = _dtype(a), _dtype(b)
    if ta == tb:
        return imp.emit("pow", [a, b])
    if ta.is_float:  # ONNX lets the exponent's type differ; the result has the base's
        if isinstance(b, Known):
            return imp.emit("pow", [a, Known(b.value.astype(ta.np), f"{b.name}.{ta}")])
        return imp.emit("pow", [a, imp.emit("cast", [b], dtype=ta)[0]])
    # an integer base: computed in f64 and converted back, as ONNX Runtime does
    wide = [imp.emit("cast", [x], dtype=DType.f64)[0] for x in (a, b)]
    return imp.emit("cast", imp.emit("pow", wide), dtype=ta)


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
    approx = approx.decode("utf-8", "replace") if isinstance(approx, bytes) else approx
    ops = {"none": "gelu", "tanh": "gelu_tanh"}
    if approx not in ops:
        raise OnnxImportError(f"approximate={approx!r}: ONNX has 'none' and 'tanh'")
    return imp.emit(ops[approx], ins[:1])


@handles("Softmax")
def _softmax(imp, ins, at, n):
    return imp.emit("softmax", ins[:1], axis=_neg_axis(at.get("axis", -1), _rank(ins[0])))


@handles("LayerNormalization")
def _layer_norm(imp, ins, at, n):
    x, w = ins[:2]
    b = ins[2] if len(ins) > 2 and ins[2] is not None else None
    if b is None:
        shape = _shape(w)
        if not all(is_static(d) for d in shape) or math.prod(shape) > MAX_FOLD_ELEMENTS:
            raise OnnxImportError(f"a scale of shape {shape} without a bias is not supported (rlx makes a "
                                  f"zero bias of that shape: static, at most MAX_FOLD_ELEMENTS elements)")
        b = Known(np.zeros(shape, _dtype(w).np), f"{imp.node_outputs[0]}.bias", True)
    axis = _neg_axis(at.get("axis", -1), _rank(x))
    eps = at.get("epsilon", 1e-5)
    y = imp.emit("layer_norm", [x, w, b], axis=axis, eps=eps)
    if n == 1 or not any(o in imp.consumed for o in imp.node_outputs[1:]):
        return y
    # the statistics, for graphs that use them (training exports): in primitives, which the
    # layer_norm rules see through; kept in the stash type (f32 unless the model says else)
    stash = imp.dtype(at.get("stash_type", 1), "stash_type")
    xs = imp.emit("cast", [x], dtype=stash)[0] if _dtype(x) != stash else x
    axes = tuple(range(axis, 0))
    mean = imp.emit("mean", [xs], axes=axes, keepdims=True)[0]
    d = imp.emit("sub", [xs, mean])[0]
    var = imp.emit("mean", [imp.emit("mul", [d, d])[0]], axes=axes, keepdims=True)[0]
    eps_k = Known(np.asarray(eps, stash.np), imp.g.scoped("epsilon"))
    inv = imp.emit("reciprocal", imp.emit("sqrt", imp.emit("add", [var, eps_k])))[0]
    return y + [mean, inv]


_REDUCE = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max"}


@handles(*_REDUCE)
def _reduce(imp, ins, at, n):
    x = ins[0]
    axes = _axes_of(imp, ins, at, "the reduction axes")
    if not axes:
        if at.get("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(_rank(x)))
    axes = sorted(_neg_axis(a, _rank(x)) for a in axes)
    return imp.emit(_REDUCE[imp.current], [x], axes=tuple(axes), keepdims=bool(at.get("keepdims", 1)))


def _target(imp: _Importer, x: Operand | None, what: str) -> list[Dim]:
    """A shape target known at import time: at most MAX_RANK dims."""
    dims = list(_dims(imp.known(x, what), what))
    if len(dims) > MAX_RANK:
        raise OnnxImportError(f"{what} has {len(dims)} dims, more than MAX_RANK = {MAX_RANK}")
    return dims


@handles("Reshape")
def _reshape(imp, ins, at, n):
    x, target = ins[0], _target(imp, ins[1], "the Reshape target")
    if not at.get("allowzero", 0):
        src = _shape(x)
        if any(d == 0 and i >= len(src) for i, d in enumerate(target)):
            raise OnnxImportError(f"the Reshape target {target} copies (0) a dim the input {src} does not have")
        target = [src[i] if d == 0 else d for i, d in enumerate(target)]
    return imp.emit("reshape", [x], shape=tuple(target))


@handles("Transpose")
def _transpose(imp, ins, at, n):
    perm = at.get("perm")
    return imp.emit("transpose", ins[:1], perm=tuple(perm) if perm is not None else None)


def _ints(imp: _Importer, ins: list, i: int, what: str) -> list[int] | None:
    """Optional input ``i`` as ints known at import time (None when it is left out)."""
    if len(ins) > i and ins[i] is not None:
        dims = _dims(imp.known(ins[i], what), what)
        if not all(is_static(d) for d in dims):
            raise OnnxImportError(f"{what} must be constants, got symbolic {list(dims)}")
        return [int(a) for a in dims]
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
    if rank > MAX_RANK:
        raise OnnxImportError(f"unsqueezing to rank {rank}, more than MAX_RANK = {MAX_RANK}")
    where = _axes_set(axes, rank, "the Unsqueeze axes")
    src = iter(_shape(x))
    return imp.emit("reshape", [x], shape=tuple(1 if i in where else next(src) for i in range(rank)))


@handles("Squeeze")
def _squeeze(imp, ins, at, n):
    x = ins[0]
    shape = _shape(x)
    axes = _axes_of(imp, ins, at, "the Squeeze axes")
    drop = (_axes_set(axes, len(shape), "the Squeeze axes") if axes is not None
            else {i for i, d in enumerate(shape) if d == 1})
    for i in drop:
        if shape[i] != 1:
            raise OnnxImportError(f"cannot squeeze axis {i} of size {shape[i]}")
    return imp.emit("reshape", [x], shape=tuple(d for i, d in enumerate(shape) if i not in drop))


@handles("Concat")
def _concat(imp, ins, at, n):
    xs = [x for x in ins if x is not None]
    if xs:
        _axis(at["axis"], _rank(xs[0]))
    return imp.emit("concat", xs, axis=at["axis"])


@handles("Split")
def _split(imp, ins, at, n):
    x = ins[0]
    axis = _axis(at.get("axis", 0), _rank(x))
    sizes = _ints(imp, ins, 1, "the Split sizes")
    if sizes is None and "split" in at:
        sizes = list(at["split"])
    if sizes is None:
        parts = at.get("num_outputs", n)
        if parts != n:
            raise OnnxImportError(f"num_outputs={parts}, but the node names {n} outputs")
        d = _shape(x)[axis]
        if is_static(d):
            each = -(-d // parts)  # as ONNX: equal pieces, the last one smaller
            sizes = [min(each, d - i * each) for i in range(parts)]
        else:
            each = dim_div(d, parts)
            if each is None:
                raise OnnxImportError(f"cannot split symbolic dim {d} into {parts} equal pieces")
            sizes = [each] * parts
    if len(sizes) != n or any(is_static(s) and s < 0 for s in sizes):
        raise OnnxImportError(f"split sizes {sizes} for {n} outputs")
    return imp.emit("split", [x], axis=axis, sizes=tuple(sizes))


@handles("Slice")
def _slice(imp, ins, at, n):
    x = ins[0]
    starts = _dims(imp.known(ins[1], "the Slice starts"), "the Slice starts")
    ends = _dims(imp.known(ins[2], "the Slice ends"), "the Slice ends")
    axes, steps = _ints(imp, ins, 3, "the Slice axes"), _ints(imp, ins, 4, "the Slice steps")
    _axis(0, _rank(x))
    return imp.emit("slice", [x], starts=starts, ends=ends, axes=axes, steps=steps)


@handles("Gather")
def _gather(imp, ins, at, n):
    data, idx = ins[:2]
    axis = at.get("axis", 0)
    pos = _axis(axis, _rank(data))
    if isinstance(idx, Known) and idx.value.dtype.kind in "iu" and idx.value.size:
        size = _shape(data)[pos]
        lo, hi = int(idx.value.min()), int(idx.value.max())
        if is_static(size) and not (-size <= lo and hi < size):
            raise OnnxImportError(f"indices {_clip(idx.value.tolist())} out of range for axis {axis} of size {size}")
        if idx.value.ndim == 0 and not isinstance(data, Known) and (lo >= 0 or is_static(size)):
            # one constant index (a select, as q/k/v from a stacked projection): a slice and
            # a reshape, which the planner makes views, where a gather would copy
            i = lo % size if lo < 0 else lo
            shape = _shape(data)
            row = imp.emit("slice", [data], starts=(i,), ends=(i + 1,), axes=(pos,), steps=None)[0]
            return imp.emit("reshape", [row], shape=tuple(d for k, d in enumerate(shape) if k != pos))
    return imp.emit("gather", [data, idx], axis=axis)


@handles("Cast")
def _cast(imp, ins, at, n):
    to = imp.dtype(at["to"], "Cast")
    x = ins[0]
    if isinstance(x, Known) and x.value.dtype == object:
        if to.is_int:
            return [x]  # still shape data
        x = imp.tensor(x)  # a value computed from the symbols at run time
    return imp.emit("cast", [x], dtype=to)


@handles("Constant")
def _constant(imp, ins, at, n):
    if "value" in at:
        return [Known(_array(at["value"], "attribute 'value'"), "")]
    for key, dt in (("value_float", np.float32), ("value_floats", np.float32),
                    ("value_int", np.int64), ("value_ints", np.int64)):
        if key in at:
            return [Known(np.asarray(at[key], dt), "")]
    raise OnnxImportError(f"Constant with {', '.join(at) or 'no value'} is not supported "
                          "(value, value_float(s), value_int(s))")


@handles("Identity")
def _identity(imp, ins, at, n):
    return [ins[0]]


@handles("Shape")
def _shape_op(imp, ins, at, n):
    dims = _shape(ins[0])
    start, end = at.get("start", 0), at.get("end", None)
    sel = dims[start:end]
    return [Known(_normalize(np.array([_wrap(d) for d in sel], dtype=object).reshape(len(sel))), "")]


def _sizes(dims: list[Dim], what: str) -> tuple[Dim, ...]:
    if any(is_static(d) and d < 0 for d in dims):
        raise OnnxImportError(f"{what} {dims} has a negative dim")
    return tuple(dims)


@handles("Expand")
def _expand(imp, ins, at, n):
    shape = _sizes(_target(imp, ins[1], "the Expand shape"), "the Expand shape")
    return imp.emit("expand", ins[:1], shape=shape)


@handles("ConstantOfShape")
def _constant_of_shape(imp, ins, at, n):
    dims = _sizes(_target(imp, ins[0], "the ConstantOfShape shape"), "the ConstantOfShape shape")
    fill = _array(at["value"], "attribute 'value'") if "value" in at else np.zeros(1, np.float32)
    if fill.size != 1:
        raise OnnxImportError(f"attribute 'value' must hold one element, it has {fill.size}")
    return imp.emit("expand", [Known(fill.reshape(()), imp.g.scoped("fill"))], shape=dims)


@handles("Where")
def _where(imp, ins, at, n):
    return imp.emit("where", ins[:3])


@handles("Range")
def _range(imp, ins, at, n):
    start, limit, delta = (imp.known(x, f"the Range {w}") for x, w in zip(ins, ("start", "limit", "delta")))
    if any(x.value.size != 1 for x in (start, limit, delta)):
        raise OnnxImportError("Range takes scalar start, limit and delta")
    vals = [x.value.reshape(())[()] for x in (start, limit, delta)]
    if any(isinstance(v, _Sym) for v in vals):
        return _symbolic_range(imp, vals)
    dt = start.value.dtype
    if any(x.value.dtype != dt for x in (limit, delta)) or dt.kind not in "if":
        raise OnnxImportError(f"Range bounds must share one int or float dtype, got "
                              f"{', '.join(str(x.value.dtype) for x in (start, limit, delta))}")
    if dt.kind == "i":
        a, b, d = (int(v) for v in vals)
        count = max(0, -((a - b) // d)) if d else None
    else:
        a, b, d = (float(v) for v in vals)
        count = max(0, math.ceil((b - a) / d)) if d and all(map(math.isfinite, (a, b, d))) else None
    if count is None:
        raise OnnxImportError(f"Range({vals[0]}, {vals[1]}, {vals[2]}) has no finite length "
                              "(delta 0 or a non-finite bound)")
    if count > MAX_FOLD_ELEMENTS:
        raise OnnxImportError(f"Range({vals[0]}, {vals[1]}, {vals[2]}) has {count} elements; rlx folds at "
                              f"most {MAX_FOLD_ELEMENTS} (MAX_FOLD_ELEMENTS = 2**24)")
    return [Known(np.arange(vals[0], vals[1], vals[2], dtype=dt), "")]


def _symbolic_range(imp: _Importer, vals: list) -> list[Operand]:
    """Range with a symbolic bound (positions ``arange(S)``): an ``arange`` of symbolic length,
    for an integer step that divides the span (the length must be a dim)."""
    start, limit, delta = vals
    if isinstance(delta, _Sym) or not isinstance(delta, (int, np.integer)) or delta == 0:
        raise OnnxImportError(f"Range({start}, {limit}, {delta}): a symbolic range needs a constant, nonzero "
                              "integer delta")
    span = _raw(limit - start) if isinstance(limit, _Sym) or isinstance(start, _Sym) else int(limit - start)
    length = dim_div(span, int(delta)) if int(delta) != 1 else span
    if length is None:
        raise OnnxImportError(f"Range({start}, {limit}, {delta}): the length {span}/{delta} is not a dim "
                              "rlx can compute (the step must divide the span)")
    return imp.emit("arange", [], start=(_raw(start),), length=(length,), step=int(delta), dtype=DType.i64)


@handles("Trilu")
def _trilu(imp, ins, at, n):
    k = _ints(imp, ins, 1, "the Trilu diagonal k")
    if k is not None and len(k) != 1:
        raise OnnxImportError(f"the Trilu diagonal k must be one value, got {k}")
    return imp.emit("trilu", ins[:1], upper=bool(at.get("upper", 1)), k=(k or [0])[0])


@handles("Resize")
def _resize(imp, ins, at, n):
    """Sizes or scales (known at import) for all axes or those ``axes`` names; ``stretch``
    only (keep_aspect_ratio_policy), no antialias, no tf_crop_and_resize."""
    x = ins[0]
    shape = _shape(x)
    text = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in at.items()}
    if text.get("antialias", 0):
        raise OnnxImportError("Resize with antialias is not supported")
    coords = text.get("coordinate_transformation_mode", "half_pixel")
    if coords == "tf_crop_and_resize":
        raise OnnxImportError("Resize with coordinate_transformation_mode=tf_crop_and_resize is not supported")
    policy = text.get("keep_aspect_ratio_policy", "stretch")
    if policy not in ("stretch", "not_larger", "not_smaller"):
        raise OnnxImportError(f"Resize keep_aspect_ratio_policy={policy!r}: expected stretch, not_larger or not_smaller")
    axes = [normalize_axis(a, len(shape)) for a in text.get("axes", range(len(shape)))]
    scales = sizes = None
    if len(ins) > 2 and ins[2] is not None and imp.known(ins[2], "Resize scales").value.size:
        scales = [float(v) for v in imp.known(ins[2], "Resize scales").value.reshape(-1)]
    if len(ins) > 3 and ins[3] is not None:
        sizes = _ints(imp, ins, 3, "Resize sizes")
    if (scales is None) == (sizes is None) or len(scales or sizes) != len(axes):
        raise OnnxImportError(f"Resize needs scales or sizes (one of them) for each of the axes {axes}")
    if sizes is not None and policy != "stretch":  # one scale for every axis named, sizes rounded
        if not all(is_static(shape[a]) for a in axes):
            raise OnnxImportError(f"Resize keep_aspect_ratio_policy={policy} needs static dims, got {shape}")
        pick = min if policy == "not_larger" else max
        one = pick(size / shape[a] for size, a in zip(sizes, axes))
        scales, sizes = [one] * len(axes), None
        rounded = {a: int(math.floor(shape[a] * one + 0.5)) for a in axes}
    else:
        rounded = {}
    full_scales: list[float] | None = [1.0] * len(shape)
    out = list(shape)
    for i, axis in enumerate(axes):
        d = shape[axis]
        if sizes is not None:
            out[axis] = sizes[i]
            if is_static(d):
                full_scales[axis] = sizes[i] / d
            elif sizes[i] != d:
                full_scales = None  # a symbolic dim: the ratio is taken when the sizes are known
            continue
        scale = scales[i]
        full_scales[axis] = scale
        if is_static(d):
            out[axis] = rounded.get(axis, int(math.floor(d * scale)))
        elif float(scale).is_integer():
            out[axis] = dim_mul(d, int(scale))
        else:
            raise OnnxImportError(f"Resize of the symbolic dim {d} by the non-integer scale {scale}")
    mode = text.get("mode", "nearest")
    return imp.emit("resize", [x], sizes=tuple(out), scales=None if full_scales is None else tuple(full_scales),
                    mode={"bilinear": "linear", "trilinear": "linear", "bicubic": "cubic"}.get(mode, mode),
                    coordinates=coords, nearest_mode=text.get("nearest_mode", "round_prefer_floor"),
                    cubic_coeff_a=float(at.get("cubic_coeff_a", -0.75)),
                    exclude_outside=bool(at.get("exclude_outside", 0)))


# ---------------------------------------------------------------------------- entry point
def load(model: str | Path | Any, name: str | None = None, known: Mapping[str, Any] | None = None) -> Graph:
    """An ONNX model (a path or a ``ModelProto``) as a MIR graph.

    ``known`` gives graph inputs their values at import time (as TVM's ``freeze_params`` or
    onnx-simplifier's input data): they become constants or params, so an axes, shape or
    bounds input that rlx needs at compile time can be fed as data.

    Graph inputs become ``input`` nodes with ``dim_param`` dims as symbols; initializers
    become params whose data is in ``graph.weights`` (one-element ones are constants, scalars
    where broadcasting allows: exporters hoist literals there); shape arithmetic folds at
    import time. External data is read next to the model file, so a model that keeps its
    weights in external files must be loaded from its path."""
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
    elif isinstance(model, onnx.ModelProto):
        proto = model
    else:
        raise OnnxImportError(f"load takes a path or an onnx.ModelProto, got {type(model).__name__}")
    try:
        return _Importer(_upgraded(proto), name or proto.graph.name or "onnx", known).run()
    except RecursionError:
        raise OnnxImportError("the model nests too deeply to import") from None


def _upgraded(proto: Any) -> Any:
    """A model of an opset below ``MIN_OPSET`` converted up by ONNX's own version converter
    (whose adapters know each op's changes between opsets); others as they are."""
    from onnx import version_converter
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset >= MIN_OPSET or opset == 0:
        return proto
    try:
        return version_converter.convert_version(proto, MIN_OPSET)
    except Exception as e:  # the converter raises its own errors (and RuntimeErrors from C++)
        raise OnnxImportError(f"opset {opset} is below {MIN_OPSET} and ONNX's version converter could not "
                              f"convert it: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


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
