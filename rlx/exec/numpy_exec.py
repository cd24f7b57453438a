"""The NumPy executor: runs an LIR with one allocation per region.

The input, param, output and arena regions are allocated once; every value is a NumPy view
at its offset (views of views are views); parameters are copied in once at bind time; each
step writes into its slot. A step runs a hand-written override where one is registered
against its op (BLAS matmul, reductions, gathers), else the kernel the kernel layer derives
from the op's definition, printed by ``numpy_print`` (regions, activations, norms, softmax,
GEMM epilogues, attention, users' fused ops), else the op's definition or reference.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rlx.errors import BindingError
from rlx.exec.base import StepTiming, override, overrides, register_executor
from rlx.exec.numpy_print import (ChunkedKernel, build, matmul_kernel, native_max_pool, native_reduce, native_rows,
                                  printable, window)
from rlx.exec.native_runs import fused
from rlx.exec.parallel import blas_single_threaded
from rlx.ir.dtypes import DType, as_dtype
from rlx.ir.expr import arg, call, typed
from rlx.ir.interpret import check_input
from rlx.ir.ops import window_params
from rlx.ir.lir import LIR, Step, ValueLayout
from rlx.ir.registry import REGISTRY, OpDef, TensorType
from rlx.kernels.lower import kernel_for

NAME = "numpy"


class NumpyProgram:
    """Bound to one planned LIR and one set of params; ``run`` reuses every buffer."""

    def __init__(self, lir: LIR, params: Mapping[str, Any]) -> None:
        if not lir.planned:
            raise BindingError(f"LIR {lir.name!r} has unbound symbols {', '.join(lir.symbols)}: specialize it first")
        self.lir = lir
        self.regions = {r: np.zeros(max(lir.region_bytes(r), 1), dtype=np.uint8)
                        for r in ("input", "param", "output", "arena")}
        self.arrays: dict[str, np.ndarray] = {name: self._array(lay) for name, lay in lir.values.items()}
        for entry in lir.manifest["params"]:
            if entry["name"] not in params:
                raise BindingError(f"missing param {entry['name']!r} {entry['dtype']}{entry['shape']}")
            self._store(entry["name"], params[entry["name"]], "param")
        self.dispatch: dict[str, str] = {}
        self.steps: list[tuple[Step, Callable[[], None]]] = []
        for step in lir.steps:  # in order: a folded step's operands are ready before it runs
            if step.view:
                self.dispatch[step.node] = "view"
            elif step.phase == "prologue" and step.op == "constant":
                node = lir.source.node(step.node)
                np.copyto(self.arrays[step.outputs[0]], node.attrs["value"].astype(node.outputs[0].dtype.np))
            elif step.phase == "prologue" and step.op not in ("input", "param"):
                kind, fn = self._step(step)  # constant folding: once, now
                self.dispatch[step.node] = kind
                with np.errstate(all="ignore"):
                    fn()
            elif step.phase == "body":
                kind, fn = self._step(step)
                self.dispatch[step.node] = kind
                self.steps.append((step, fn))
        self._program = fused([fn for _, fn in self.steps])  # the steps as ``run`` calls them (``native_runs``)

    def _array(self, lay: ValueLayout) -> np.ndarray:
        buf = self.regions[self.lir.buffers[lay.buffer].region]
        dt = DType(lay.dtype).np
        strides = tuple(s * dt.itemsize for s in lay.strides)
        return np.ndarray(lay.shape, dtype=dt, buffer=buf, offset=self.lir.buffers[lay.buffer].offset + lay.byte_offset,
                          strides=strides)

    def _store(self, name: str, value, kind: str) -> None:
        dst = self.arrays[name]
        where = f"{kind} {name!r}"
        arr = check_input(value, DType(self.lir.values[name].dtype), where)
        if arr.shape != dst.shape:
            raise BindingError(f"{where}: expected shape {dst.shape}, got {arr.shape}")
        if arr.size == 0:
            raise BindingError(f"{where}: shape {arr.shape} has no elements: the executor runs non-empty "
                               "tensors only (is a symbolic dim bound to 0?)")
        np.copyto(dst, arr, casting="unsafe")  # the kind is checked; within it, the program's precision

    def _step(self, step: Step) -> tuple[str, Callable[[], None]]:
        ins = [self.arrays[n] for n in step.inputs]
        outs = [self.arrays[n] for n in step.outputs]
        attrs, op = step.attrs, step.op
        params = frozenset(i for i, n in enumerate(step.inputs)  # constant for as long as the program lives
                           if self.lir.buffers[self.lir.values[n].buffer].region == "param")
        native = overrides(NAME).get(op)
        if native is not None:  # a prepared kernel is built now, once; others are called per run
            return "native", (native(ins, outs, attrs, params) if getattr(native, "prepared", False)
                              else lambda: native(ins, outs, attrs))
        types = [TensorType(self.lir.values[n].shape, DType(self.lir.values[n].dtype)) for n in step.inputs]
        kernel = kernel_for(op, types, attrs)
        if kernel is not None:
            return "generated", build(kernel, ins, outs, params)
        opdef = REGISTRY.get(op)
        ref = opdef.reference

        def run() -> None:
            res = ref(ins, attrs)
            for o, r in zip(outs, res if isinstance(res, tuple) else (res,)):
                np.copyto(o, r, casting="unsafe")
        return ("definition" if opdef.category == "fused" else "reference"), run

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run once; returns fresh arrays (the output region is reused by the next run)."""
        self._bind_inputs(inputs)
        with np.errstate(all="ignore"), blas_single_threaded():
            for fn in self._program:
                fn()
        return self._outputs()

    def profile(self, inputs: Mapping[str, Any]) -> list[StepTiming]:
        """Run once, timing every step."""
        self._bind_inputs(inputs)
        out = []
        with np.errstate(all="ignore"), blas_single_threaded():
            for step, fn in self.steps:
                t = time.perf_counter()
                fn()
                out.append(StepTiming(step.index, step.node, step.op, self.dispatch[step.node],
                                      time.perf_counter() - t))
        return out

    def read(self, value: str) -> np.ndarray:
        return self.arrays[value].copy()

    def _bind_inputs(self, inputs: Mapping[str, Any]) -> None:
        for entry in self.lir.manifest["inputs"]:
            if entry["name"] not in inputs:
                raise BindingError(f"missing input {entry['name']!r} {entry['dtype']}{entry['shape']}")
            self._store(entry["name"], inputs[entry["name"]], "input")
        if not hasattr(self, "_indices"):  # (node, index input, table) of each gather of an input
            self._indices = [(n.name, n.inputs[1].name, self.arrays[n.inputs[0].name].shape[n.attrs["axis"]])
                             for n in self.lir.source.nodes
                             if n.op == "gather" and n.inputs[1].node.op == "input"]
        for node, index, size in self._indices:
            ids = self.arrays[index]
            if ids.size and not -size <= ids.min() <= ids.max() < size:
                raise BindingError(f"input {index!r}: indices {ids.min()} to {ids.max()} are out of range "
                                   f"for a table of {size} rows (node {node!r})")

    def _outputs(self) -> dict[str, np.ndarray]:
        return {s.node: self.arrays[s.inputs[0]].copy() for s in self.lir.steps if s.phase == "epilogue"}


class NumpyExecutor:
    """Runs on any machine: every op has at least its NumPy reference."""
    name = NAME

    def available(self) -> str | None:
        return None

    def supports(self, op: OpDef) -> bool:
        return op.reference is not None and (not op.is_primitive_elementwise or op.name in printable())

    def prepare(self, lir: LIR, params: Mapping[str, Any]) -> NumpyProgram:
        return NumpyProgram(lir, params)


register_executor(NAME, NumpyExecutor)


# ---------------------------------------------------------------------------- native kernels
def prepared(*ops: str) -> Callable[[Callable], Callable]:
    """Register a native kernel that is built once per step: called with the step's arrays,
    attrs and which inputs are constant (params), it returns the callable that runs the step."""
    def deco(fn: Callable) -> Callable:
        fn.prepared = True
        return override(NAME, *ops)(fn)
    return deco


@prepared("matmul")
def _matmul(ins, outs, attrs, constant) -> Callable[[], None]:
    return matmul_kernel(ins[0], ins[1], outs[0], constant_b=1 in constant)


def _reduce(kind: str, fn):
    def kernel(ins, outs, attrs, constant) -> Callable[[], None]:
        """The compiled pass over trailing axes where it applies (``native_reduce``), else NumPy's."""
        x, out, axes = ins[0], outs[0], attrs["axes"]
        axes = tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in axes)
        native = native_reduce(kind, x, out, axes)
        return native if native is not None else (lambda: fn(x, axis=axes, keepdims=attrs["keepdims"], out=out))
    return kernel


for _op, _fn in (("sum", np.sum), ("mean", np.mean), ("max", np.max)):
    prepared(_op)(_reduce(_op, _fn))


@override(NAME, "gather")
def _gather(ins, outs, attrs) -> None:
    np.take(ins[0], ins[1], axis=attrs["axis"], out=outs[0])


@override(NAME, "concat")
def _concat(ins, outs, attrs) -> None:
    np.concatenate(ins, axis=attrs["axis"], out=outs[0])


@override(NAME, "reshape")
def _reshape_copy(ins, outs, attrs) -> None:
    """A reshape that is not a view (its input is strided): copy through a view of the slot."""
    np.copyto(outs[0].reshape(ins[0].shape), ins[0])


__all__ = ["NumpyExecutor", "NumpyProgram"]


def _pool(ins, outs, attrs, is_max: bool) -> None:
    """Window by window is a loop; tap by tap is a few passes: each tap of the kernel is one
    strided view of the (padded) input, reduced into the output with maximum or add."""
    x, out = ins[0], outs[0]
    kernel = tuple(attrs["kernel"])
    strides, dil, lo, hi = window_params(x.ndim, attrs, kernel)
    spatial, osp = x.shape[2:], out.shape[2:]
    ends = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(osp, strides, dil, kernel)]
    size = [max(e, n + a + b) for e, n, a, b in zip(ends, spatial, lo, hi)]
    src = x
    if any(lo) or any(s != n for s, n in zip(size, spatial)):
        fill = (np.iinfo(x.dtype).min if x.dtype.kind in "iu" else -np.inf) if is_max else 0
        src = np.full(x.shape[:2] + tuple(size), fill, dtype=x.dtype)
        src[(slice(None), slice(None)) + tuple(slice(a, a + n) for a, n in zip(lo, spatial))] = x
    taps = list(np.ndindex(*kernel))
    acc = out if is_max or out.dtype == np.float64 else np.empty(out.shape, np.float32)

    def view(a: np.ndarray, tap: tuple[int, ...]) -> np.ndarray:
        return a[(Ellipsis,) + window(tap, dil, strides, osp)]
    np.copyto(acc, view(src, taps[0]), casting="unsafe")
    for tap in taps[1:]:
        (np.maximum if is_max else np.add)(acc, view(src, tap), out=acc, casting="unsafe")
    if is_max:
        return
    inside = np.zeros(tuple(size))  # which padded positions count toward an average
    inside[tuple(slice(0, n + a + b) if attrs["count_include_pad"] else slice(a, a + n)
                 for n, a, b in zip(spatial, lo, hi))] = 1
    count = sum(view(inside, tap) for tap in taps)
    np.divide(acc, np.maximum(count, 1), out=out, casting="unsafe")


@prepared("max_pool")
def _max_pool(ins, outs, attrs, constant) -> Callable[[], None]:
    """The compiled max pool where it applies (``native_max_pool``), else tap by tap."""
    kernel = tuple(attrs["kernel"])
    strides, dil, lo, hi = window_params(ins[0].ndim, attrs, kernel)
    native = native_max_pool(ins[0], outs[0], kernel, strides, dil, lo)
    return native if native is not None else (lambda: _pool(ins, outs, attrs, True))



override(NAME, "avg_pool")(lambda ins, outs, attrs: _pool(ins, outs, attrs, False))


@prepared("rotary_half")
def _rotary_half(ins, outs, attrs, constant) -> Callable[[], None]:
    """x·cos + concat(-x[h:], x[:h])·sin as two compiled pointwise kernels, one per half of
    the output (x·cos minus, then plus, the other half of x times sin: no negated copy, no
    concatenation); without a compiler, the same in NumPy. Another split than the last
    axis, or an output that overlaps x, runs the definition."""
    x, c, s = ins
    out = outs[0]
    d = x.shape[-1]
    h = attrs["half"][0] + (d if attrs["half"][0] < 0 else 0)
    axes = attrs["dim"] if attrs["dim"] is not None else [0]  # slice's default: the first axis
    if [a % x.ndim for a in axes] != [x.ndim - 1] or not 0 < h < d or attrs["end"][0] < d \
            or np.may_share_memory(out, x):
        return lambda: np.copyto(out, REGISTRY.get("rotary_half").reference(ins, attrs), casting="unsafe")
    cb, sb = np.broadcast_to(c, out.shape), np.broadcast_to(s, out.shape)
    halves = (("sub", slice(None, d - h), slice(h, None)), ("add", slice(d - h, None), slice(None, h)))
    dtypes = (as_dtype(x.dtype), as_dtype(c.dtype), as_dtype(x.dtype), as_dtype(s.dtype))
    kernels = [native_rows([typed(call(op, call("mul", arg(0), arg(1)), call("mul", arg(2), arg(3))), dtypes)], (),
                           [x[..., cols], cb[..., cols], x[..., other], sb[..., cols]], [out[..., cols]])
               for op, cols, other in halves]  # (x·cos ∓ the other half of x·sin) over these columns
    if all(k is not None for k in kernels):
        return ChunkedKernel("\n".join(k.source for k in kernels), [p for k in kernels for p in k.phases])

    def numpy() -> None:
        np.multiply(x, c, out=out)
        out[..., :d - h] -= x[..., h:] * sb[..., :d - h]
        out[..., d - h:] += x[..., :h] * sb[..., d - h:]
    return numpy
