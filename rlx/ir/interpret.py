"""The reference interpreter: ground truth for every later stage.

It runs each node's NumPy reference in topological order. By default it computes in
float64 (every floating value is held as f64, so the result is what the program means,
free of rounding); ``dtype="native"`` keeps the graph's dtypes instead, computing half
types in f32 and rounding each result, as frameworks do.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from rlx.errors import BindingError, DTypeError, GraphError, RlxError
from rlx.ir.dtypes import DType
from rlx.ir.graph import Graph, Node, Value
from rlx.ir.shapes import DimBinding, fmt_shape

Mode = Literal["f64", "native"]


def bind_dims(graph: Graph, arrays: Mapping[str, np.ndarray], binding: Mapping[str, int] | None = None) -> DimBinding:
    """Infer symbol values from the shapes of the given inputs and params."""
    b = DimBinding(binding or {})
    for n in graph.inputs + graph.params:
        if n.name in arrays:
            b = b.unify(n.outputs[0].shape, tuple(np.shape(arrays[n.name])), f"{n.op} {n.name!r}")
    return b


_KINDS = {"b": "bools", "i": "integers", "u": "integers", "f": "floats", "c": "complex numbers",
          "U": "strings", "S": "bytes", "O": "Python objects"}


def as_array(value: Any, where: str) -> np.ndarray:
    """``value`` as a NumPy array; a ragged nested list is an error naming ``where``."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as e:
        raise BindingError(f"{where}: not a rectangular array ({e})") from None


def check_input(value: Any, dtype: DType, where: str) -> np.ndarray:
    """A run-time input or param as an array of the declared kind: any float type for a
    float, integers that fit for an integer type, bools for bool (no strings, objects or
    silent conversions between kinds)."""
    arr = as_array(value, where)
    is_float = arr.dtype.kind == "f" or arr.dtype == DType.bf16.np
    kind = "floats" if is_float else _KINDS.get(arr.dtype.kind, str(arr.dtype))
    ok = is_float if dtype.is_float else arr.dtype.kind in "iu" if dtype.is_int else arr.dtype.kind == "b"
    if not ok:
        raise DTypeError(f"{where}: expected {dtype} data, got {kind} ({arr.dtype})")
    if dtype.is_int and arr.size and arr.dtype != dtype.np:
        info = np.iinfo(dtype.np)
        if int(arr.min()) < info.min or int(arr.max()) > info.max:
            raise DTypeError(f"{where}: values {arr.min()} to {arr.max()} do not fit {dtype}")
    return arr


def _compute_dtype(dt: DType, mode: Mode) -> np.dtype:
    if not dt.is_float:
        return dt.np
    if mode == "f64":
        return np.dtype(np.float64)
    return np.dtype(np.float32) if dt in (DType.f16, DType.bf16) else dt.np


def interpret(graph: Graph, inputs: Mapping[str, Any], params: Mapping[str, Any] | None = None,
              *, dtype: Mode = "f64", binding: Mapping[str, int] | None = None,
              return_all: bool = False) -> dict[str, np.ndarray]:
    """Run ``graph`` on NumPy arrays; return outputs by name (every value with ``return_all``)."""
    if dtype not in ("f64", "native"):
        raise RlxError(f"interpret: dtype must be 'f64' or 'native', got {dtype!r}")
    params = params or {}
    ps = {k: as_array(v, f"param {k!r}") for k, v in params.items()}
    ins = {k: as_array(v, f"input {k!r}") for k, v in inputs.items()}
    arrays = {**ps, **ins}
    b = bind_dims(graph, arrays, binding)
    env: dict[Value, np.ndarray] = {}
    for node in graph.topo_order():
        try:
            outs = _run_node(node, env, ins if node.op == "input" else ps, b, dtype)
        except (ValueError, IndexError, ZeroDivisionError) as e:  # a max over nothing, an index out of range
            empty = [f"{k!r} {a.shape}" for k, a in arrays.items() if a.size == 0]
            raise RlxError(f"node {node.name!r} ({node.op}) cannot run on these inputs: {e}"
                           + (f" (empty: {', '.join(empty)})" if empty else "")) from None
        for v, arr in zip(node.values, outs):
            want = b.resolve_shape(v.shape, f"node {node.name!r}")
            if tuple(arr.shape) != want:
                raise GraphError(f"node {node.name!r} ({node.op}) produced shape {arr.shape}, "
                                 f"expected {fmt_shape(v.shape)} = {want}")
            env[v] = arr
    if return_all:
        return {v.name: arr for v, arr in env.items()}
    return {name: env[v] for name, v in graph.outputs}


def _run_node(node: Node, env: dict, source: Mapping, b: DimBinding, mode: Mode) -> list[np.ndarray]:
    compute = [_compute_dtype(t.dtype, mode) for t in node.outputs]
    if node.op in ("input", "param"):
        if node.name not in source:
            raise BindingError(f"missing {node.op} {node.name!r} {node.outputs[0]}")
        declared = node.outputs[0].dtype
        arr = check_input(source[node.name], declared, f"{node.op} {node.name!r}")
        # Round to the declared dtype first so f64 mode sees the values the program sees.
        return [arr.astype(declared.np, copy=False).astype(compute[0], copy=False)]
    opdef = node.opdef
    where = f"node {node.name!r}"
    attrs = {k: (b.resolve_shape(v, where) if opdef.attrs and _kind(opdef, k) == "dims" else v)
             for k, v in node.attrs.items()}
    args = [env[v] for v in node.inputs]
    if mode == "native":  # a region gets its declared dtypes: its body rounds after each op
        args = [a.astype(v.dtype.np if node.op == "region" else _compute_dtype(v.dtype, mode), copy=False)
                for a, v in zip(args, node.inputs)]
    with np.errstate(all="ignore"):
        result = opdef.reference(args, attrs)
    results = list(result) if isinstance(result, (tuple, list)) else [result]
    out = []
    for arr, t, c in zip(results, node.outputs, compute):
        arr = np.asarray(arr)
        if mode == "native" and t.dtype.is_float:
            arr = arr.astype(t.dtype.np).astype(c, copy=False)  # round to the program's dtype
        out.append(arr.astype(c, copy=False))
    return out


def _kind(opdef, name: str) -> str | None:
    for a in opdef.attrs:
        if a.name == name:
            return a.kind
    return None


def random_arrays(graph: Graph, binding: Mapping[str, int] | None = None, seed: int = 0,
                  which: tuple[str, ...] = ("input", "param")) -> dict[str, np.ndarray]:
    """Random inputs/params for a graph: floats ~ N(0, 1)/sqrt(fan-in) for params and
    N(0, 1) for inputs (never zeros), integer inputs in [0, dim) of the tensor they index
    (``vocab``-bounded via the smallest static dim of a gather table), bools at random."""
    rng = np.random.default_rng(seed)
    b = DimBinding(binding or {})
    out: dict[str, np.ndarray] = {}
    gather_bound = _gather_bounds(graph)
    for n in graph.nodes:
        if n.op not in which:
            continue
        t = n.outputs[0]
        shape = b.resolve_shape(t.shape, f"{n.op} {n.name!r}")
        if t.dtype.is_float:
            scale = 1.0 / np.sqrt(shape[0]) if n.op == "param" and len(shape) >= 2 else 1.0
            arr = rng.standard_normal(shape) * scale
            if n.op == "param" and len(shape) == 1:
                arr = 1.0 + 0.1 * arr  # norm scales and biases near 1
        elif t.dtype.is_int:
            arr = rng.integers(0, gather_bound.get(n.name, 16), size=shape)
        else:
            arr = rng.random(shape) < 0.5
        out[n.name] = np.asarray(arr).astype(t.dtype.np)
    return out


def _gather_bounds(graph: Graph) -> dict[str, int]:
    bounds: dict[str, int] = {}
    for n in graph.nodes:
        if n.op == "gather" and n.inputs[1].node.op == "input":
            d = n.inputs[0].shape[n.attrs["axis"]]
            if isinstance(d, int):
                bounds[n.inputs[1].node.name] = min(d, bounds.get(n.inputs[1].node.name, d))
    return bounds
