"""The CuPy executor: runs an LIR on an NVIDIA GPU.

One device allocation holds the input, param, output and arena regions; every value is a
CuPy view at its planned offset (bf16 values as 16-bit words: CuPy has no bf16). Params are
uploaded once when the program is made, and prologue steps (constant folding) run then too;
a run copies the inputs in, launches the body and copies the outputs out: those are its
only host transfers.

A step runs, in order of preference: a native kernel of this executor (cuBLAS for matmul,
printed kernels for reductions over any axes, gather, rotary, pooling, triangles (causal
mask, trilu), copies), the kernel the kernel
layer derives from the op's definition, printed by ``cuda_print`` (regions, activations,
norms, softmax, GEMM + epilogue with the products on cuBLAS, attention as a flash kernel or
two cuBLAS products around a printed softmax, convolution as an im2col kernel, a cuBLAS
GEMM and the epilogue, or one direct kernel for depthwise and thin ones), a view op's copy (the reference applied to CuPy views
once, at bind: a strided copy at run time), else the op's reference (on CuPy arrays through
NumPy's dispatch, or on the host where CuPy cannot run it). All printed kernels of a
program are one NVRTC module, compiled once and kept in CuPy's on-disk kernel cache
(``CUPY_CACHE_DIR``), so a second process does not recompile.

The body is captured as CUDA graphs on the first run (one program per specialization of the
symbolic dims, so one set of graphs per shape) and replayed after; a step that must
allocate or touch the host (a reference) runs between graphs.
"""
from __future__ import annotations

import ctypes
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rlx.errors import BindingError, RlxError
from rlx.exec import cuda_print as cp_print
from rlx.exec.base import StepTiming, register_executor
from rlx.ir.dtypes import DType
from rlx.ir.expr import Expr, nodes
from rlx.ir.interpret import check_input
from rlx.ir.lir import LIR, Step
from rlx.ir.registry import REGISTRY, OpDef, TensorType
from rlx.kernels.lower import kernel_for
from rlx.kernels.skeletons import Attention, Conv, Gemm, Pointwise, RowReduce

NAME = "cupy"
F32 = DType.f32

# cuBLAS enums (cublas_api.h, library_types.h)
_CUDA_R = {DType.f32: 0, DType.f64: 1, DType.f16: 2, DType.bf16: 14}
_COMPUTE_32F, _COMPUTE_32F_TF32, _COMPUTE_64F = 68, 77, 70
_GEMM_DEFAULT = -1
_OP_N, _OP_T = 0, 1


def _cupy():
    import cupy
    return cupy


def tf32_default() -> bool:
    """f32 GEMMs on TF32 tensor cores when ``RLX_CUDA_TF32=1`` (the cuda target's f32 is exact
    f32 unless asked)."""
    return os.environ.get("RLX_CUDA_TF32", "0") not in ("", "0", "false", "no")


_CUBLAS_LIB = None
WORKSPACE = 32 << 20  # cuBLAS workspace per program (its own: graph capture must not allocate)


def _cublas_lib():
    """The cuBLAS library CuPy loaded (found in this process's maps), through ctypes: CuPy's
    wrappers set the stream on every call, which stream capture does not allow."""
    global _CUBLAS_LIB
    if _CUBLAS_LIB is None:
        cp = _cupy()
        cp.cuda.device.get_cublas_handle()  # makes CuPy load it
        path = None
        try:
            with open("/proc/self/maps") as f:
                for line in f:
                    name = line.rsplit(None, 1)[-1] if "/" in line else ""
                    if "/libcublas.so" in name:
                        path = name
                        break
        except OSError:
            pass
        names = [path] if path else []
        names += ["libcublas.so.13", "libcublas.so.12", "libcublas.so"]
        for n in names:
            try:
                lib = ctypes.CDLL(n)
                break
            except OSError:
                continue
        else:
            raise RlxError("cuBLAS library not found")
        i, p, ll = ctypes.c_int, ctypes.c_void_p, ctypes.c_longlong
        lib.cublasGemmEx.argtypes = [p, i, i, i, i, i, p, p, i, i, p, i, i, p, p, i, i, i, i]
        lib.cublasGemmStridedBatchedEx.argtypes = [p, i, i, i, i, i, p, p, i, i, ll, p, i, i, ll, p, p, i, i, ll,
                                                   i, i, i]
        for fn in ("cublasGemmEx", "cublasGemmStridedBatchedEx", "cublasCreate_v2", "cublasDestroy_v2",
                   "cublasSetStream_v2", "cublasSetPointerMode_v2", "cublasSetWorkspace_v2"):
            getattr(lib, fn).restype = ctypes.c_int
        _CUBLAS_LIB = lib
    return _CUBLAS_LIB


def _ok(status: int, what: str) -> None:
    if status != 0:
        raise RlxError(f"cuBLAS {what} failed with status {status}")


class Cublas:
    """One cuBLAS handle bound to one stream, host scalars, and its own workspace."""

    def __init__(self, stream, workspace) -> None:
        self.lib = lib = _cublas_lib()
        h = ctypes.c_void_p()
        _ok(lib.cublasCreate_v2(ctypes.byref(h)), "create")
        self.handle = h
        self.workspace = workspace
        _ok(lib.cublasSetStream_v2(h, ctypes.c_void_p(stream.ptr)), "set stream")
        _ok(lib.cublasSetPointerMode_v2(h, 0), "set pointer mode")
        _ok(lib.cublasSetWorkspace_v2(h, ctypes.c_void_p(workspace.data.ptr), ctypes.c_size_t(workspace.nbytes)),
            "set workspace")

    def __del__(self) -> None:
        try:
            self.lib.cublasDestroy_v2(self.handle)
        except Exception:
            pass


class _Call:
    """One launch of a printed kernel (resolved in the program's module at first use)."""
    __slots__ = ("program", "source", "args", "fn")

    def __init__(self, program: "CupyProgram", source: cp_print.Source, args: Sequence[Any]) -> None:
        self.program, self.source, self.args, self.fn = program, source, tuple(args), None
        program._sources.append(source)

    def __call__(self) -> None:
        if self.fn is None:
            self.fn = self.program._function(self.source.name)
        grid = self.source.grid
        self.fn(grid if isinstance(grid, tuple) else (grid,), (self.source.block,), self.args)


class _StepRun:
    """A step's calls; ``capturable`` when they neither allocate nor touch the host."""

    def __init__(self, step: Step, kind: str, calls: list[Callable[[], None]], capturable: bool) -> None:
        self.step, self.kind, self.calls, self.capturable = step, kind, calls, capturable

    def __call__(self) -> None:
        for c in self.calls:
            c()


class CupyProgram:
    """Bound to one planned LIR and one set of params on the current GPU."""

    def __init__(self, lir: LIR, params: Mapping[str, Any], graphs: bool = True, tf32: bool | None = None) -> None:
        if not lir.planned:
            raise BindingError(f"LIR {lir.name!r} has unbound symbols {', '.join(lir.symbols)}: specialize it first")
        cp = _cupy()
        self.cp = cp
        self.lir = lir
        self.graphs_enabled = graphs
        self.tf32 = tf32_default() if tf32 is None else tf32
        self.device = cp.cuda.Device()
        self.sms = self.device.attributes["MultiProcessorCount"]
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.cublas = Cublas(self.stream, cp.empty(WORKSPACE, dtype=cp.uint8))
        self._sources: list[cp_print.Source] = []
        self._module = None
        self._functions: dict[str, Any] = {}
        self._scratch: list[Any] = []
        self._keep: list[Any] = []
        self.graphs: list[tuple[str, Any]] | None = None
        self.graph_error: str | None = None
        self.host_steps: list[str] = []
        self._packed: dict[tuple, Any] = {}
        self._after_prologue: list[Callable[[], None]] = []
        # one allocation: input, param, output and arena regions at aligned offsets
        align = max(256, lir.alignment)
        self.region_offset: dict[str, int] = {}
        total = 0
        for r in ("input", "param", "output", "arena"):
            self.region_offset[r] = total
            total += -(-max(lir.region_bytes(r), 1) // align) * align
        self.memory = cp.empty(total, dtype=cp.uint8)
        self.dtypes = {name: DType(lay.dtype) for name, lay in lir.values.items()}
        self.arrays = {name: self._array(lay) for name, lay in lir.values.items()}
        with self.stream:
            for entry in lir.manifest["params"]:
                if entry["name"] not in params:
                    raise BindingError(f"missing param {entry['name']!r} {entry['dtype']}{entry['shape']}")
                self._store(entry["name"], params[entry["name"]], "param")
            self.dispatch: dict[str, str] = {}
            self.body: list[_StepRun] = []
            prologue: list[_StepRun] = []
            for step in lir.steps:
                if step.view:
                    self.dispatch[step.node] = "view"
                elif step.phase == "prologue" and step.op == "constant":
                    node = lir.source.node(step.node)
                    self._upload(step.outputs[0], node.attrs["value"].astype(node.outputs[0].dtype.np))
                elif step.phase == "prologue" and step.op not in ("input", "param"):
                    run = self._step(step)  # constant folding: once, now
                    self.dispatch[step.node] = run.kind
                    prologue.append(run)
                elif step.phase == "body":
                    run = self._step(step)
                    self.dispatch[step.node] = run.kind
                    self.body.append(run)
            self._compile()
            for run in prologue:
                run()
            for fn in self._after_prologue:  # e.g. packing weights that constant folding made
                fn()
        self.stream.synchronize()
        self._indices = [(n.name, n.inputs[1].name, self.arrays[n.inputs[0].name].shape[n.attrs["axis"]])
                         for n in lir.source.nodes if n.op == "gather" and n.inputs[1].node.op == "input"]

    # ------------------------------------------------------------------ memory
    def _array(self, lay):
        cp = self.cp
        dt = DType(lay.dtype)
        storage = np.dtype(np.uint16) if dt == DType.bf16 else dt.np
        region = self.lir.buffers[lay.buffer].region
        offset = self.region_offset[region] + self.lir.buffers[lay.buffer].offset + lay.byte_offset
        strides = tuple(s * storage.itemsize for s in lay.strides)
        return cp.ndarray(tuple(lay.shape), dtype=storage, memptr=self.memory.data + offset, strides=strides)

    def _upload(self, name: str, arr: np.ndarray) -> None:
        dst = self.arrays[name]
        host = np.require(arr.astype(self.dtypes[name].np, copy=False), requirements="C")  # keeps 0-d
        if self.dtypes[name] == DType.bf16:
            host = host.view(np.uint16)
        if dst.flags.c_contiguous:
            dst.set(host, stream=self.stream)
        else:
            dst[...] = self.cp.asarray(host)

    def _store(self, name: str, value, kind: str) -> None:
        where = f"{kind} {name!r}"
        arr = check_input(value, self.dtypes[name], where)
        dst = self.arrays[name]
        if arr.shape != dst.shape:
            raise BindingError(f"{where}: expected shape {dst.shape}, got {arr.shape}")
        if arr.size == 0:
            raise BindingError(f"{where}: shape {arr.shape} has no elements: the executor runs non-empty "
                               "tensors only (is a symbolic dim bound to 0?)")
        self._upload(name, arr)

    def _host(self, arr, dtype: DType) -> np.ndarray:
        self.stream.synchronize()
        out = arr.get()
        return out.view(DType.bf16.np) if dtype == DType.bf16 else out

    def scratch(self, sizes: Sequence[int]) -> list[int]:
        """Byte offsets into one scratch buffer (shared by every step: they run in order)
        of at least ``sum(sizes)`` bytes; ``self._scratch[-1]`` is that buffer."""
        offs, total = [], 0
        for s in sizes:
            offs.append(total)
            total += -(-s // 256) * 256
        if not self._scratch or self._scratch[-1].nbytes < total:
            self._scratch.append(self.cp.empty(max(total, 256), dtype=self.cp.uint8))
        return offs

    def scratch_array(self, offset: int, shape: Sequence[int], dtype: DType):
        storage = np.dtype(np.uint16) if dtype == DType.bf16 else dtype.np
        return self.cp.ndarray(tuple(shape), dtype=storage, memptr=self._scratch[-1].data + offset)

    # ------------------------------------------------------------------ compilation
    def _compile(self) -> None:
        if not self._sources:
            return
        code = cp_print.module(self._sources)
        self._module = self.cp.RawModule(code=code, options=("--std=c++17",))
        self._module.compile()
        self.module_source = code

    def _function(self, name: str):
        fn = self._functions.get(name)
        if fn is None:
            if self._module is None:
                self._compile()
            fn = self._functions[name] = self._module.get_function(name)
        return fn

    def kernel(self, source: cp_print.Source, args: Sequence[Any]) -> _Call:
        return _Call(self, source, args)

    # ------------------------------------------------------------------ steps
    def _step(self, step: Step) -> _StepRun:
        ins = [self.arrays[n] for n in step.inputs]
        outs = [self.arrays[n] for n in step.outputs]
        in_dt = [self.dtypes[n] for n in step.inputs]
        out_dt = [self.dtypes[n] for n in step.outputs]
        native = _NATIVE.get(step.op)
        if native is not None:
            calls = native(self, ins, outs, in_dt, out_dt, step.attrs)
            if calls is not None:
                return _StepRun(step, "native", calls, True)
        types = [TensorType(tuple(self.lir.values[n].shape), DType(self.lir.values[n].dtype)) for n in step.inputs]
        kernel = kernel_for(step.op, types, step.attrs)
        if kernel is not None:
            consts = frozenset(i for i, n in enumerate(step.inputs)
                               if self.lir.buffers[self.lir.values[n].buffer].region == "param")
            calls = build(self, kernel.skeleton, ins, outs, in_dt, out_dt, consts)
            if calls is not None:
                return _StepRun(step, "generated", calls, True)
        opdef = REGISTRY.get(step.op)
        kind = "definition" if opdef.category == "fused" else "reference"
        if opdef.view or step.op == "split":
            calls = self._view_copy(opdef, ins, outs, step.attrs)
            if calls is not None:
                return _StepRun(step, "native", calls, True)
        return _StepRun(step, kind, [self._reference(step, opdef, ins, outs, in_dt, out_dt)], False)

    def _view_copy(self, opdef: OpDef, ins, outs, attrs) -> list | None:
        """A view op the planner could not alias: its reference on CuPy views gives the views
        (no device work), copied into the outputs by a strided copy kernel per run."""
        try:
            res = opdef.reference(list(ins), attrs)
        except Exception:
            return None
        res = res if isinstance(res, tuple) else (res,)
        if len(res) != len(outs) or not all(isinstance(r, self.cp.ndarray) and r.data.mem is self.memory.data.mem
                                            and r.shape == o.shape for r, o in zip(res, outs)):
            return None
        return [copy_call(self, r, o) for r, o in zip(res, outs)]

    def _reference(self, step: Step, opdef: OpDef, ins, outs, in_dt, out_dt) -> Callable[[], None]:
        """The op's reference: on CuPy arrays where CuPy runs it (not bf16: CuPy has none),
        else on the host (a transfer each way)."""
        cp = self.cp
        state = {"device": DType.bf16 not in in_dt + out_dt}

        def on_host() -> None:
            host = [self._host(a, d) for a, d in zip(ins, in_dt)]
            with np.errstate(all="ignore"):
                res = opdef.reference(host, step.attrs)
            for o, r, d in zip(outs, res if isinstance(res, tuple) else (res,), out_dt):
                r = np.require(np.asarray(r).astype(d.np), requirements="C")
                if d == DType.bf16:
                    r = r.view(np.uint16)
                o[...] = cp.asarray(r)

        def run() -> None:
            if state["device"]:
                try:
                    res = opdef.reference(list(ins), step.attrs)
                    res = res if isinstance(res, tuple) else (res,)
                    if not all(isinstance(r, cp.ndarray) for r in res):
                        raise TypeError("not a CuPy result")
                    for o, r in zip(outs, res):
                        cp.copyto(o, r.astype(o.dtype, copy=False), casting="unsafe")
                    return
                except Exception:
                    state["device"] = False
            if step.node not in self.host_steps:
                self.host_steps.append(step.node)
            on_host()
        return run

    # ------------------------------------------------------------------ running
    def _bind_inputs(self, inputs: Mapping[str, Any]) -> None:
        for entry in self.lir.manifest["inputs"]:
            if entry["name"] not in inputs:
                raise BindingError(f"missing input {entry['name']!r} {entry['dtype']}{entry['shape']}")
        for node, index, size in self._indices:
            ids = np.asarray(inputs[index])
            if ids.size and not -size <= ids.min() <= ids.max() < size:
                raise BindingError(f"input {index!r}: indices {ids.min()} to {ids.max()} are out of range "
                                   f"for a table of {size} rows (node {node!r})")
        for entry in self.lir.manifest["inputs"]:
            self._store(entry["name"], inputs[entry["name"]], "input")

    def _capture(self) -> list[tuple[str, Any]]:
        """The body as CUDA graphs: each run of capturable steps one graph; the others eager."""
        parts: list[tuple[str, Any]] = []
        group: list[_StepRun] = []
        mode = getattr(self.cp.cuda.runtime, "streamCaptureModeRelaxed", None)

        def flush() -> None:
            if group:
                self.stream.begin_capture(mode) if mode is not None else self.stream.begin_capture()
                error, at = None, None
                for r in group:
                    try:
                        r()
                    except Exception as e:
                        error, at = e, r.step
                        break
                try:
                    graph = self.stream.end_capture()
                except Exception as e:
                    error = error or e
                if error is not None:
                    where = f" at step {at.index} ({at.op}, node {at.node!r})" if at is not None else ""
                    raise RlxError(f"CUDA graph capture failed{where}: {type(error).__name__}: {error}") from error
                parts.append(("graph", graph))
                group.clear()
        for r in self.body:
            if r.capturable:
                group.append(r)
            else:
                flush()
                parts.append(("eager", r))
        flush()
        return parts

    def launch(self) -> None:
        """Enqueue the body on this program's stream (graphs after the first run)."""
        with self.stream:
            if not self.graphs_enabled:
                for r in self.body:
                    r()
                return
            if self.graphs is None:
                # the first run is eager (it loads the module and warms cuBLAS up), then the
                # body is captured: later runs replay it
                for r in self.body:
                    r()
                try:
                    self.graphs = self._capture()
                except RlxError as e:  # runs eagerly from now on; the reason is kept
                    self.graph_error = str(e)
                    self.graphs_enabled = False
                    self.stream.synchronize()
                return
            for kind, part in self.graphs:
                if kind == "graph":
                    part.launch(self.stream)
                else:
                    part()

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run once; returns fresh host arrays."""
        with self.stream:
            self._bind_inputs(inputs)
        self.launch()
        return self._outputs()

    def profile(self, inputs: Mapping[str, Any]) -> list[StepTiming]:
        """Run once step by step (no graphs), timing every step with CUDA events."""
        cp = self.cp
        with self.stream:
            self._bind_inputs(inputs)
            marks = []
            for r in self.body:
                a, b = cp.cuda.Event(), cp.cuda.Event()
                a.record(self.stream)
                r()
                b.record(self.stream)
                marks.append((r, a, b))
        self.stream.synchronize()
        return [StepTiming(r.step.index, r.step.node, r.step.op, r.kind, cp.cuda.get_elapsed_time(a, b) * 1e-3)
                for r, a, b in marks]

    def read(self, value: str) -> np.ndarray:
        return self._host(self.arrays[value], self.dtypes[value]).copy()

    def _outputs(self) -> dict[str, np.ndarray]:
        return {s.node: self._host(self.arrays[s.inputs[0]], self.dtypes[s.inputs[0]])
                for s in self.lir.steps if s.phase == "epilogue"}


# ---------------------------------------------------------------------------- operands
def _span(a) -> tuple[int, int]:
    lo = hi = a.data.ptr
    for d, s in zip(a.shape, a.strides):
        if d > 1:
            if s > 0:
                hi += (d - 1) * s
            else:
                lo += (d - 1) * s
    return lo, hi + a.itemsize


def overlaps(xs, ys) -> bool:
    for x in xs:
        a = _span(x)
        for y in ys:
            b = _span(y)
            if a[0] < b[1] and b[0] < a[1]:
                return True
    return False


def copy_call(prog: CupyProgram, src, dst) -> _Call:
    """dst = src elementwise (same dtype; any strides; src may be a broadcast view)."""
    dt = _storage_dtype(src.dtype)  # bf16 values travel as their 16-bit words
    e = Expr("arg", value=0, dtype=dt)
    shape = dst.shape
    src_b = src if src.shape == shape else prog.cp.broadcast_to(src, shape)
    source = cp_print.pointwise([e], [cp_print.Operand(dt, cp_print.aligned_strides(src_b, shape))],
                                [cp_print.Operand(dt, cp_print.elem_strides(dst))], shape,
                                restrict=not overlaps([src], [dst]), sms=prog.sms, align=aligns([src, dst]))
    return prog.kernel(source, [src, dst])


def aligns(arrays) -> list[int]:
    """The byte alignment of each array's pointer (1 for a missing one)."""
    return [min(256, (a.data.ptr & -a.data.ptr) or 256) if a is not None else 1 for a in arrays]


def _storage_dtype(np_dtype) -> DType:
    """The DType of a CuPy storage dtype (bf16 values are copied as their u16 words)."""
    from rlx.ir.dtypes import as_dtype
    return as_dtype(np.dtype(np_dtype).name if np.dtype(np_dtype).name != "bool" else "bool")


# ---------------------------------------------------------------------------- cuBLAS
def _matrix(a, rows: int, cols: int) -> tuple[int, int] | None:
    """(op, ld) of the last two axes of ``a`` for the row-major trick: rows contiguous
    (op N, ld the row stride) or columns contiguous (op T, ld the column stride); None when
    neither (it needs a copy)."""
    s_r, s_c = (s // a.itemsize for s in a.strides[-2:])
    if (cols == 1 or s_c == 1) and (rows == 1 or s_r >= cols):
        return _OP_N, s_r if rows > 1 else max(cols, 1)
    if (rows == 1 or s_r == 1) and (cols == 1 or s_c >= rows):
        return _OP_T, s_c if cols > 1 else max(rows, 1)
    return None


def _batch_strides(x, batch: Sequence[int]) -> tuple[int, ...]:
    """Element strides of ``x``'s batch axes over ``batch`` (0 where broadcast)."""
    nb = x.ndim - 2
    pad = len(batch) - nb
    return (0,) * pad + tuple(0 if x.shape[j] == 1 else x.strides[j] // x.itemsize for j in range(nb))


def gemm_calls(prog: CupyProgram, a, b, c, adt: DType, bdt: DType, cdt: DType) -> list[Callable[[], None]] | None:
    """c = a @ b on cuBLAS (batch dims broadcast), f32 accumulation (f64 for f64; TF32 for
    f32 when the program says). None when cuBLAS cannot (integer operands, a strided
    output); a strided operand is copied to scratch first."""
    cublas = prog.cublas
    if adt not in _CUDA_R or bdt not in _CUDA_R or cdt not in _CUDA_R:
        return None
    if DType.f64 in (adt, bdt, cdt) and not adt == bdt == cdt == DType.f64:
        return None
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    if c.ndim < 2 or c.strides[-1] != c.itemsize:
        return None
    calls: list[Callable[[], None]] = []
    pre: list[Callable[[], None]] = []
    fixed = []
    for x, r, cc, dt in ((a, m, k, adt), (b, k, n, bdt)):
        if _matrix(x, r, cc) is None:  # neither rows nor columns contiguous: copy it
            off = prog.scratch([x.size * x.itemsize])[0]
            y = prog.cp.ndarray(x.shape, dtype=x.dtype, memptr=prog._scratch[-1].data + off)
            prog._keep.append(prog._scratch[-1])
            pre.append(copy_call(prog, x, y))
            x = y
        fixed.append(x)
    a, b = fixed
    batch = c.shape[:-2]
    a_b, b_b, c_b = _batch_strides(a, batch), _batch_strides(b, batch), _batch_strides(c, batch)
    a_rs = a.strides[-2] // a.itemsize
    c_rs = c.strides[-2] // c.itemsize
    # fold the batch into the rows of one GEMM when b is shared and a and c walk it as rows
    if batch and all(s == 0 for s in b_b) and _matrix(a, m, k)[0] == _OP_N:
        shp, sts = cp_print.collapse(tuple(batch) + (m,), [a_b + (a_rs,), c_b + (c_rs,)])
        if len(shp) <= 1:
            rows = math.prod(batch) * m
            a2 = (a.data.ptr, sts[0][0] if shp and rows > 1 else k)
            c2 = (c.data.ptr, sts[1][0] if shp and rows > 1 else n)
            return pre + [_gemm(prog, cublas, rows, n, k, a2, (_OP_N, None), b, c2, adt, bdt, cdt)]
    shp, sts = cp_print.collapse(tuple(batch), [a_b, b_b, c_b])
    op_a, op_b = _matrix(a, m, k), _matrix(b, k, n)
    if not shp:
        return pre + [_gemm(prog, cublas, m, n, k, (a.data.ptr, op_a[1]), op_a, b, (c.data.ptr, op_c(c, n)),
                            adt, bdt, cdt)]
    outer = shp[:-1]
    count = shp[-1]
    for index in np.ndindex(*outer):
        oa = sum(i * sts[0][j] for j, i in enumerate(index))
        ob = sum(i * sts[1][j] for j, i in enumerate(index))
        oc = sum(i * sts[2][j] for j, i in enumerate(index))
        calls.append(_gemm_batched(prog, cublas, m, n, k, a, a.data.ptr + oa * a.itemsize, op_a, sts[0][-1],
                                   b, b.data.ptr + ob * b.itemsize, op_b, sts[1][-1],
                                   c.data.ptr + oc * c.itemsize, op_c(c, n), sts[2][-1], count, adt, bdt, cdt))
    return pre + calls


def op_c(c, n: int) -> int:
    return max(c.strides[-2] // c.itemsize if c.shape[-2] > 1 else n, n, 1)


def _scalars(prog: CupyProgram, adt: DType, cdt: DType):
    if adt == DType.f64:
        one, zero = np.ones(1, np.float64), np.zeros(1, np.float64)
        ctype = _COMPUTE_64F
    else:
        one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
        ctype = _COMPUTE_32F_TF32 if adt == F32 and prog.tf32 else _COMPUTE_32F
    prog._keep += [one, zero]
    return one.ctypes.data, zero.ctypes.data, ctype


def _gemm(prog, cublas, m, n, k, a_ptr_ld, op_a, b, c_ptr_ld, adt, bdt, cdt) -> Callable[[], None]:
    """Row-major C (m×n) = A (m×k) · B (k×n) as column-major Cᵀ = Bᵀ·Aᵀ."""
    a_ptr, lda = a_ptr_ld
    ta = op_a[0]
    tb, ldb = _matrix(b, k, n)
    c_ptr, ldc = c_ptr_ld
    alpha, beta, ctype = _scalars(prog, adt, cdt)
    fn, handle = cublas.lib.cublasGemmEx, cublas.handle
    b_ptr = b.data.ptr
    ra, rb, rc = _CUDA_R[adt], _CUDA_R[bdt], _CUDA_R[cdt]

    def call() -> None:
        _ok(fn(handle, tb, ta, n, m, k, alpha, b_ptr, rb, ldb, a_ptr, ra, lda, beta, c_ptr, rc, ldc,
               ctype, _GEMM_DEFAULT), f"GEMM {m}x{k}x{n}")
    return call


def _gemm_batched(prog, cublas, m, n, k, a, a_ptr, op_a, sa, b, b_ptr, op_b, sb, c_ptr, ldc, sc, count,
                  adt, bdt, cdt) -> Callable[[], None]:
    alpha, beta, ctype = _scalars(prog, adt, cdt)
    fn, handle = cublas.lib.cublasGemmStridedBatchedEx, cublas.handle
    ra, rb, rc = _CUDA_R[adt], _CUDA_R[bdt], _CUDA_R[cdt]

    def call() -> None:
        _ok(fn(handle, op_b[0], op_a[0], n, m, k, alpha, b_ptr, rb, op_b[1], sb, a_ptr, ra, op_a[1], sa,
               beta, c_ptr, rc, ldc, sc, count, ctype, _GEMM_DEFAULT), f"batched GEMM {count}x{m}x{k}x{n}")
    return call


# ---------------------------------------------------------------------------- natives
def _matmul(prog, ins, outs, in_dt, out_dt, attrs):
    a, b = ins
    if a.ndim < 2 or b.ndim < 2:
        return None
    return gemm_calls(prog, a, b, outs[0], in_dt[0], in_dt[1], out_dt[0])


def _typed_arg(i: int, dt: DType) -> Expr:
    return Expr("arg", value=i, dtype=dt)


def _cast(e: Expr, dt: DType) -> Expr:
    return e if e.dtype == dt else Expr("cast", (e,), attrs=(("dtype", dt),), dtype=dt)


def _reduce(kind: str):
    def native(prog, ins, outs, in_dt, out_dt, attrs):
        x, o = ins[0], outs[0]
        rank = x.ndim
        axes = attrs["axes"]
        axes = tuple(range(rank)) if axes is None else tuple(sorted(a % rank for a in axes))
        keep = [d for d in range(rank) if d not in axes]
        if not axes:  # nothing reduced: a copy (through a view of the output in the input's shape)
            if in_dt[0] != out_dt[0]:
                return None
            if x.shape == o.shape:
                return [copy_call(prog, x, o)]
            return [copy_call(prog, x, o.reshape(x.shape))] if o.flags.c_contiguous else None
        if kind == "sum":
            acc = cp_print._acc(out_dt[0])
        elif kind == "mean":
            acc = F32 if in_dt[0] in (F32, DType.f16, DType.bf16) else DType.f64
        else:
            acc = F32 if in_dt[0] in (DType.f16, DType.bf16) else in_dt[0]
        body = _cast(_typed_arg(0, in_dt[0]), acc)
        red_out = _cast(Expr("red", value=0, dtype=acc), out_dt[0])
        xs = cp_print.elem_strides(x)
        ost = cp_print.elem_strides(o)
        o_outer = tuple(ost[d] for d in keep) if o.ndim == rank else ost
        source = cp_print.rows(((kind, body),), (red_out,),
                               [cp_print.RowOperand(in_dt[0] if in_dt[0] != DType.bf16 else DType.bf16,
                                                    tuple(xs[d] for d in keep), tuple(xs[d] for d in axes))],
                               [cp_print.RowOperand(out_dt[0], o_outer, (0,) * len(axes))],
                               tuple(x.shape[d] for d in keep), tuple(x.shape[d] for d in axes),
                               row_outputs=True, sms=prog.sms, align=aligns([x, o]))
        return [prog.kernel(source, [x, o])]
    return native


def _gather(prog, ins, outs, in_dt, out_dt, attrs):
    data, ids = ins
    axis = attrs["axis"] % data.ndim
    storage = in_dt[0]
    source = cp_print.gather(cp_print.Operand(storage, tuple(s // data.itemsize for s in data.strides)),
                             data.shape, axis, cp_print.Operand(in_dt[1], tuple(s // ids.itemsize for s in ids.strides)),
                             ids.shape, cp_print.Operand(out_dt[0], cp_print.elem_strides(outs[0])), sms=prog.sms)
    return [prog.kernel(source, [data, ids, outs[0]])]


def _concat(prog, ins, outs, in_dt, out_dt, attrs):
    o = outs[0]
    axis = attrs["axis"] % o.ndim
    calls, start = [], 0
    for x in ins:
        size = x.shape[axis]
        if size:
            index = tuple(slice(start, start + size) if d == axis else slice(None) for d in range(o.ndim))
            calls.append(copy_call(prog, x, o[index]))
        start += size
    return calls


def _reshape(prog, ins, outs, in_dt, out_dt, attrs):
    o = outs[0]
    if not o.flags.c_contiguous:
        return None
    return [copy_call(prog, ins[0], o.reshape(ins[0].shape))]


def _rotary(prog, ins, outs, in_dt, out_dt, attrs):
    """out = [x1·cos − x2·sin, x2·cos + x1·sin] over the two halves of the last axis: one
    pointwise kernel over half the head dim with two outputs (slices of the result)."""
    from rlx.kernels.scalar import finish
    from rlx.ir.expr import arg
    x, cos, sin = ins
    o = outs[0]
    h = x.shape[-1] // 2
    x1, x2, o1, o2 = x[..., :h], x[..., h:], o[..., :h], o[..., h:]
    dts = (in_dt[0],) * 4
    lo = finish(arg(0) * arg(2) - arg(1) * arg(3), dts)
    hi = finish(arg(1) * arg(2) + arg(0) * arg(3), dts)
    shape = o1.shape
    opers = [cp_print.Operand(d, cp_print.aligned_strides(a, shape)) for a, d in zip((x1, x2, cos, sin), in_dt[:1] * 2 + in_dt[1:])]
    source = cp_print.pointwise([lo, hi], opers, [cp_print.Operand(out_dt[0], cp_print.elem_strides(o1)),
                                                  cp_print.Operand(out_dt[0], cp_print.elem_strides(o2))],
                                shape, restrict=not overlaps([x], [o]), sms=prog.sms,
                                align=aligns([x1, x2, cos, sin, o1, o2]))
    return [prog.kernel(source, [x1, x2, cos, sin, o1, o2])]


def _pool(kind: str):
    def native(prog, ins, outs, in_dt, out_dt, attrs):
        from rlx.ir.ops import window_params
        x, o = ins[0], outs[0]
        kernel = tuple(attrs["kernel"])
        if in_dt[0] != out_dt[0] or in_dt[0] not in cp_print.CTYPE or in_dt[0] == DType.bool:
            return None
        strides, dil, lo, hi = window_params(x.ndim, attrs, kernel)
        source = cp_print.pool(kind, cp_print.Operand(in_dt[0], cp_print.own_strides(x)), x.shape,
                               cp_print.Operand(out_dt[0], cp_print.own_strides(o)), o.shape, kernel, strides, dil, lo, hi,
                               bool(attrs.get("count_include_pad", False)), sms=prog.sms)
        return [prog.kernel(source, [x, o])]
    return native


def _triangle(causal: bool):
    def native(prog, ins, outs, in_dt, out_dt, attrs):
        x, o = ins[0], outs[0]
        if in_dt[0] != out_dt[0] or x.shape != o.shape or o.ndim < 2:
            return None
        upper, k, fill = (False, 0, -math.inf) if causal else (bool(attrs["upper"]), int(attrs["k"]), 0.0)
        source = cp_print.triangle(cp_print.Operand(in_dt[0], cp_print.elem_strides(x)),
                                   cp_print.Operand(out_dt[0], cp_print.elem_strides(o)), o.shape, upper, k, fill)
        return [prog.kernel(source, [x, o])]
    return native


_NATIVE: dict[str, Callable] = {"causal_mask": _triangle(True), "trilu": _triangle(False),
                                "max_pool": _pool("max"), "avg_pool": _pool("avg"), "matmul": _matmul, "sum": _reduce("sum"), "mean": _reduce("mean"),
                                "max": _reduce("max"), "gather": _gather, "concat": _concat, "reshape": _reshape,
                                "rotary": _rotary}


# ---------------------------------------------------------------------------- skeletons
def build(prog: CupyProgram, s, ins, outs, in_dt, out_dt, constant: frozenset[int]) -> list | None:
    """The calls of one skeleton instance over these views (None: not on this executor)."""
    if isinstance(s, Pointwise):
        shape = outs[0].shape
        if any(o.shape != shape for o in outs):
            return None
        source = cp_print.pointwise(s.outputs, [cp_print.Operand(d, cp_print.aligned_strides(a, shape)) for a, d in zip(ins, in_dt)],
                                    [cp_print.Operand(d, cp_print.elem_strides(o)) for o, d in zip(outs, out_dt)], shape,
                                    restrict=not overlaps(ins, outs), sms=prog.sms, align=aligns(list(ins) + list(outs)))
        return [prog.kernel(source, _used(s.outputs, ins) + list(outs))]
    if isinstance(s, RowReduce):
        shape = outs[0].shape
        if not shape or any(o.shape != shape for o in outs):
            return None
        exprs = list(s.outputs) + [e for _, e in s.reductions]
        source = cp_print.rows(s.reductions, s.outputs, [_row_operand(a, d, shape) for a, d in zip(ins, in_dt)],
                               [_row_operand(o, d, shape) for o, d in zip(outs, out_dt)], shape[:-1], shape[-1:],
                               restrict=not overlaps(ins, outs), sms=prog.sms, align=aligns(list(ins) + list(outs)))
        return [prog.kernel(source, _used(exprs, ins) + list(outs))]
    if isinstance(s, Gemm):
        return _gemm_epilogue(prog, s, ins, outs, in_dt, out_dt, constant)
    if isinstance(s, Attention):
        return _attention(prog, s, ins, outs, in_dt, out_dt)
    if isinstance(s, Conv):
        return _conv(prog, s, ins, outs, in_dt, out_dt)
    return None


def _used(exprs: Sequence[Expr], ins) -> list:
    used = sorted({x.value for e in exprs for x in nodes(e) if x.op == "arg" and 0 <= x.value < len(ins)})
    return [ins[i] for i in used]


def _row_operand(a, dt: DType, shape) -> cp_print.RowOperand:
    st = cp_print.aligned_strides(a, shape)
    return cp_print.RowOperand(dt, st[:-1], st[-1:])


def _gemm_epilogue(prog, s: Gemm, ins, outs, in_dt, out_dt, constant):
    """The products on cuBLAS into scratch (in the product's dtype, one wide GEMM for
    products of one left operand with constant matrices of one shape), then the epilogue
    as one pointwise kernel reading them."""
    cp = prog.cp
    n_in = len(ins)
    used = {x.value - n_in for e in s.outputs for x in nodes(e) if x.op == "arg" and x.value >= n_in}
    products = [j for j in range(len(s.gemms)) if j in used]
    shape = outs[0].shape
    if any(o.shape != shape for o in outs):
        return None
    calls: list = []
    prods: dict[int, Any] = {}
    pdt = {j: in_dt[s.gemms[j][0]] for j in products}
    lefts = {s.gemms[j][0] for j in products}
    ws = [ins[s.gemms[j][1]] for j in products]
    if (len(products) > 1 and len(lefts) == 1 and all(s.gemms[j][1] in constant for j in products)
            and len({w.shape for w in ws}) == 1 and len({in_dt[s.gemms[j][1]] for j in products}) == 1
            and len(set(pdt.values())) == 1):
        key = tuple(w.data.ptr for w in ws)
        packed = prog._packed.get(key)
        if packed is None:  # filled once the params (and what the prologue folds) are in place
            packed = prog._packed[key] = cp.empty(ws[0].shape[:-1] + (ws[0].shape[-1] * len(ws),), dtype=ws[0].dtype)
            prog._after_prologue.append(lambda ws=ws, packed=packed: cp.concatenate(ws, axis=-1, out=packed))
        a = ins[next(iter(lefts))]
        wide_shape = a.shape[:-1] + (packed.shape[-1],)
        dt = pdt[products[0]]
        (off,) = prog.scratch([math.prod(wide_shape) * dt.itemsize])
        wide = prog.scratch_array(off, wide_shape, dt)
        prog._keep.append(prog._scratch[-1])
        g = gemm_calls(prog, a, packed, wide, in_dt[next(iter(lefts))], in_dt[s.gemms[products[0]][1]], dt)
        if g is None:
            return None
        calls += g
        nn = ws[0].shape[-1]
        for k, j in enumerate(products):
            prods[j] = wide[..., k * nn:(k + 1) * nn]
    else:
        sizes = []
        shapes = {}
        for j in products:
            a, b = ins[s.gemms[j][0]], ins[s.gemms[j][1]]
            shapes[j] = a.shape[:-1] + (b.shape[-1],)
            sizes.append(math.prod(shapes[j]) * pdt[j].itemsize)
        offs = prog.scratch(sizes)
        prog._keep.append(prog._scratch[-1])
        for off, j in zip(offs, products):
            prods[j] = prog.scratch_array(off, shapes[j], pdt[j])
            a, b = s.gemms[j]
            g = gemm_calls(prog, ins[a], ins[b], prods[j], in_dt[a], in_dt[b], pdt[j])
            if g is None:
                return None
            calls += g
    operands = [cp_print.Operand(d, cp_print.aligned_strides(a, shape)) for a, d in zip(ins, in_dt)]
    operands += [cp_print.Operand(pdt[j], cp_print.aligned_strides(prods[j], shape)) if j in prods else None
                 for j in range(len(s.gemms))]
    arrays = list(ins) + [prods.get(j) for j in range(len(s.gemms))]
    source = cp_print.pointwise(s.outputs, operands, [cp_print.Operand(d, cp_print.elem_strides(o)) for o, d in zip(outs, out_dt)],
                                shape, restrict=not overlaps(ins, outs), sms=prog.sms,
                                align=aligns(arrays + list(outs)))
    used = sorted({x.value for e in s.outputs for x in nodes(e) if x.op == "arg"})
    calls.append(prog.kernel(source, [arrays[i] for i in used] + list(outs)))
    return calls


def _attention(prog, s: Attention, ins, outs, in_dt, out_dt):
    """scores = q·kᵀ (cuBLAS, f32), the score expression, causal mask and softmax (and the
    map of the probabilities) in one printed row kernel writing probabilities in v's dtype,
    then probabilities·v (cuBLAS) into the output."""
    cp = prog.cp
    q, k, v = ins[s.q], ins[s.k], ins[s.v]
    o = outs[0]
    sq, sk = q.shape[-2], k.shape[-2]
    batch = tuple(np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2]))
    flash = _flash(prog, s, ins, outs, in_dt, out_dt, batch)
    if flash is not None:
        return flash
    score_shape = batch + (sq, sk)
    pdt = in_dt[s.v]
    n_scores = math.prod(score_shape)
    s_off, p_off = prog.scratch([n_scores * 4, n_scores * pdt.itemsize])
    S = prog.scratch_array(s_off, score_shape, F32)
    P = prog.scratch_array(p_off, score_shape, pdt)
    prog._keep.append(prog._scratch[-1])
    qb = cp.broadcast_to(q, batch + q.shape[-2:])
    kt = cp.swapaxes(cp.broadcast_to(k, batch + k.shape[-2:]), -1, -2)
    vb = cp.broadcast_to(v, batch + v.shape[-2:])
    g1 = gemm_calls(prog, qb, kt, S, in_dt[s.q], in_dt[s.k], F32)
    g2 = gemm_calls(prog, P, vb, o, pdt, in_dt[s.v], out_dt[0])
    if g1 is None or g2 is None:
        return None
    score = s.score
    if score.dtype != F32 and score.dtype != DType.f64:  # a half score (as the program rounds it), widened
        score = Expr("cast", (score,), attrs=(("dtype", F32),), dtype=F32)
    if s.causal:
        masked = Expr("arg", value=-1, dtype=DType.bool)
        score = Expr("where", (masked, Expr("const", value=-math.inf, dtype=score.dtype), score), dtype=score.dtype)
    acc = score.dtype
    r0, r1 = Expr("red", value=0, dtype=acc), Expr("red", value=1, dtype=acc)
    ex = Expr("exp", (Expr("sub", (score, r0), dtype=acc),), dtype=acc)
    p = Expr("div", (ex, r1), dtype=acc)
    if s.probs is not None:
        from rlx.ir.expr import fold
        p = fold(s.probs, lambda x, args: p if x.op == "arg" else Expr(x.op, tuple(args), x.value, x.attrs, x.dtype))
    used = sorted({x.value for e in (score, p) for x in nodes(e) if x.op == "arg" and x.value >= 0})
    operands = [cp_print.RowOperand(F32, cp_print.elem_strides(S)[:-1], cp_print.elem_strides(S)[-1:])]
    operands += [_row_operand(a, d, score_shape) if 1 + i in used else None for i, (a, d) in enumerate(zip(ins, in_dt))]
    arrays = [S] + list(ins)
    source = cp_print.rows((("max", score), ("sum", ex)), (p,), operands,
                           [cp_print.RowOperand(pdt, cp_print.elem_strides(P)[:-1], cp_print.elem_strides(P)[-1:])],
                           score_shape[:-1], score_shape[-1:], causal=sq if s.causal else None, sms=prog.sms,
                           align=aligns([S] + list(ins) + [P]))
    return g1 + [prog.kernel(source, [arrays[i] for i in used] + [P])] + g2


DIRECT_CONV_DEPTH = 16  # a convolution summing fewer products per output runs as one direct kernel


def _conv(prog, s: Conv, ins, outs, in_dt, out_dt):
    """A convolution and its epilogue: per image, the windows as an im2col matrix in the
    input's dtype (a 1x1 unit-stride unpadded one reads the image in place), times the
    weights (group, M/group, C/group·taps) on cuBLAS into an f32 (f64) product (one
    strided-batched GEMM over the images, per group), then the bias and the epilogue as one
    pointwise kernel. A depthwise one, or one summing fewer than ``DIRECT_CONV_DEPTH``
    products per output, is one direct kernel with its epilogue."""
    x, w, o = ins[s.x], ins[s.w], outs[0]
    if any(q.shape != o.shape for q in outs) or x.ndim < 3:
        return None
    n_in, g = len(ins), s.group
    nsp = x.ndim - 2
    acc = DType.f64 if in_dt[s.x] == DType.f64 else F32
    n, c, m = x.shape[0], x.shape[1], w.shape[0]
    taps, osp = w.shape[2:], o.shape[2:]
    depth = w.shape[1] * math.prod(taps)
    shape = o.shape
    epilogue_args = sorted({q.value for e in s.outputs for q in nodes(e) if q.op == "arg" and q.value != n_in})
    if any(i in (s.x, s.w) for i in epilogue_args):
        return None

    def operand(i):
        a = ins[i]
        if i == s.bias:
            return cp_print.Operand(in_dt[i], cp_print.own_strides(a))
        if i in (s.x, s.w):
            return cp_print.Operand(in_dt[i], cp_print.own_strides(a))
        return cp_print.Operand(in_dt[i], cp_print.aligned_strides(a, shape)) if i in epilogue_args else None
    if depth < DIRECT_CONV_DEPTH or w.shape[1] == 1:
        opers = [operand(i) for i in range(n_in)]
        source = cp_print.conv_direct(s.outputs, opers, [cp_print.Operand(d, cp_print.elem_strides(q)) for q, d in zip(outs, out_dt)],
                                      shape, n_in, s.x, x.shape, s.w, w.shape, s.bias, s.strides, s.pads[:nsp],
                                      s.dilations, g, acc, sms=prog.sms)
        used = sorted(set(epilogue_args) | {s.x, s.w} | ({s.bias} if s.bias is not None else set()))
        return [prog.kernel(source, [ins[i] for i in used] + list(outs))]
    if not w.flags.c_contiguous:
        return None  # the weights are read in place (constant folding may write them after this build)
    pixels = math.prod(osp)
    calls: list = []
    unit = all(t == 1 for t in taps) and all(st == 1 for st in s.strides) and not any(s.pads)
    sizes = [n * c * math.prod(taps) * pixels * in_dt[s.x].itemsize, n * m * pixels * acc.itemsize]
    if unit and x.flags.c_contiguous:
        sizes[0] = 0
    offs = prog.scratch(sizes)
    prog._keep.append(prog._scratch[-1])
    if sizes[0]:
        cols = prog.scratch_array(offs[0], (n, c * math.prod(taps), pixels), in_dt[s.x])
        src = cp_print.im2col(cp_print.Operand(in_dt[s.x], cp_print.own_strides(x)), x.shape, w.shape, o.shape, s.strides,
                              s.pads[:nsp], s.dilations, sms=prog.sms)
        calls.append(prog.kernel(src, [x, cols]))
    else:
        cols = x.reshape(n, c, pixels)
    prod = prog.scratch_array(offs[1], (n, m, pixels), acc)
    k = depth
    if g == 1:
        g_calls = gemm_calls(prog, w.reshape(m, k), cols, prod, in_dt[s.w], in_dt[s.x], acc)
    else:
        g_calls = gemm_calls(prog, w.reshape(g, m // g, k), cols.reshape(n, g, k, pixels),
                             prod.reshape(n, g, m // g, pixels), in_dt[s.w], in_dt[s.x], acc)
    if g_calls is None:
        return None
    calls += g_calls
    # the epilogue: arg(n_in) is the convolution, bias included
    conv = Expr("arg", value=n_in, dtype=acc)
    if s.bias is not None:
        conv = Expr("add", (conv, Expr("arg", value=s.bias, dtype=acc)), dtype=acc)
    from rlx.ir.expr import fold
    outputs = [fold(e, lambda q, args: conv if q.op == "arg" and q.value == n_in else
                    Expr(q.op, tuple(args), q.value, q.attrs, q.dtype)) for e in s.outputs]
    pview = prod.reshape((n, m) + tuple(osp))
    arrays = list(ins) + [pview]
    opers = [cp_print.Operand(in_dt[i], cp_print.aligned_strides(ins[i], shape)) if i in epilogue_args else None
             for i in range(n_in)]
    if s.bias is not None:
        bview = ins[s.bias].reshape((m,) + (1,) * nsp)
        arrays[s.bias] = bview
        opers[s.bias] = cp_print.Operand(in_dt[s.bias], cp_print.aligned_strides(bview, shape))
    opers.append(cp_print.Operand(acc, cp_print.aligned_strides(pview, shape)))
    source = cp_print.pointwise(outputs, opers, [cp_print.Operand(d, cp_print.elem_strides(q)) for q, d in zip(outs, out_dt)],
                                shape, restrict=not overlaps(ins, outs), sms=prog.sms,
                                align=aligns([a if op is not None else None for a, op in zip(arrays, opers)] + list(outs)))
    used = sorted({q.value for e in outputs for q in nodes(e) if q.op == "arg"})
    calls.append(prog.kernel(source, [arrays[i] for i in used] + list(outs)))
    return calls


FLASH_MIN_QUERIES = 32  # below, the products on cuBLAS spread the keys over more of the chip (decode)


def _flash(prog, s: Attention, ins, outs, in_dt, out_dt, batch):
    """The flash kernel where it applies: f16/bf16 q, k, v, head dims multiples of 16 up to
    128, unit-stride rows, 16-byte aligned K and V rows, no map of the probabilities, enough
    query rows; else None."""
    if os.environ.get("RLX_CUDA_FLASH", "1") in ("0", "no", "false"):
        return None
    q, k, v, o = ins[s.q], ins[s.k], ins[s.v], outs[0]
    dt = in_dt[s.q]
    if s.probs is not None or dt not in (DType.f16, DType.bf16) or in_dt[s.k] != dt or in_dt[s.v] != dt:
        return None
    d, dv, sq, sk = q.shape[-1], v.shape[-1], q.shape[-2], k.shape[-2]
    if d % 16 or dv % 16 or d > 128 or dv > 128 or sq < FLASH_MIN_QUERIES or k.shape[-1] != d:
        return None
    for x in (q, k, v, o):
        if x.shape[-1] > 1 and x.strides[-1] != x.itemsize:
            return None
    for x in (k, v):
        if x.data.ptr % 16 or (x.shape[-2] > 1 and x.strides[-2] % 16):
            return None
    if q.data.ptr % 4 or q.strides[-2] % 4:
        return None

    def operand(x, dtype):
        return cp_print.AttnOperand(dtype, _batch_strides(x, batch), x.strides[-2] // x.itemsize if x.shape[-2] > 1
                                    else 0, x.strides[-1] // x.itemsize if x.shape[-1] > 1 else 0)
    score_shape = batch + (sq, sk)
    masks = {}
    used = sorted({x.value for x in nodes(s.score) if x.op == "arg" and x.value >= 1})
    for i in used:
        m = ins[i - 1]
        st = cp_print.aligned_strides(m, score_shape)
        masks[i - 1] = cp_print.AttnOperand(in_dt[i - 1], st[:-2], st[-2], st[-1])
    source = cp_print.flash_attention(s.score, operand(q, dt), operand(k, dt), operand(v, dt),
                                      operand(o, out_dt[0]), masks, batch, sq, sk, d, dv, s.causal)
    return [prog.kernel(source, [q, k, v] + [ins[i] for i in sorted(masks)] + [o])]


# ---------------------------------------------------------------------------- calibration
def measure(n: int = 8192, copy_mib: int = 1024, repeats: int = 20) -> dict[str, float]:
    """This executor's peaks as its own programs achieve them (what the ``cuda`` cost model
    prices), each the median of ``repeats`` replays of a one-step program timed by CUDA
    events on random data: an n x n x n cuBLAS GEMM per dtype (f16 and bf16 with f32
    accumulation, f32 exact (``peak_f32``, the target's default), f32 on TF32 tensor cores
    (``gemm_tf32``, reported only: a target has no TF32 dtype), f64); a printed pointwise
    kernel over ``copy_mib`` MiB (bytes read + written); the cost of one more small kernel
    in a replayed CUDA graph (a chain of 201 kernels on one element against a chain of 1,
    per kernel); and of a view (a chain of 200 reshapes the planner aliases, between two
    kernels, against one kernel, per view). Also reports ``memcpy`` (the copy engine's device-to-device
    bytes read + written) for comparison. Raises ExecutorError without CuPy and a GPU."""
    import statistics

    from rlx.exec.base import ExecutorError
    from rlx.ir.graph import Graph
    from rlx.plan import plan

    reason = CupyExecutor().available()
    if reason is not None:
        raise ExecutorError(f"executor 'cupy' is not available on this machine: {reason}")
    cp = _cupy()
    rng = np.random.default_rng(0)

    def program(g: Graph, feeds: dict, tf32: bool = False) -> CupyProgram:
        p = CupyProgram(plan(g, alignment=256), {}, tf32=tf32)
        p.run(feeds)  # eager, then captured
        p.run(feeds)  # a replay
        if p.graph_error:
            raise ExecutorError(f"calibration program {g.name!r} did not capture: {p.graph_error}")
        return p

    def replay_seconds(p: CupyProgram) -> float:
        times = []
        for _ in range(3):
            p.launch()
        for _ in range(repeats):
            a, b = cp.cuda.Event(), cp.cuda.Event()
            a.record(p.stream)
            p.launch()
            b.record(p.stream)
            b.synchronize()
            times.append(cp.cuda.get_elapsed_time(a, b) * 1e-3)
        return statistics.median(times)

    out: dict[str, float] = {}
    for key, dt, tf32 in (("peak_f16", "f16", False), ("peak_bf16", "bf16", False), ("peak_f32", "f32", False),
                          ("gemm_tf32", "f32", True), ("peak_f64", "f64", False)):
        g = Graph("peak")
        g.output(y=g.matmul(g.input("a", (n, n), dt), g.input("b", (n, n), dt)))
        feeds = {k: rng.standard_normal((n, n), dtype=np.float32).astype(DType(dt).np) for k in "ab"}
        p = program(g, feeds, tf32)
        out[key] = 2.0 * n ** 3 / replay_seconds(p)
        del p, feeds
        cp.get_default_memory_pool().free_all_blocks()
    size = copy_mib * 2 ** 20 // 4
    g = Graph("copy")
    g.output(y=g.op("neg", g.input("x", (size,), "f32")))
    p = program(g, {"x": rng.standard_normal(size, dtype=np.float32)})
    out["bandwidth"] = 8.0 * size / replay_seconds(p)
    src = p.arrays[p.lir.steps[-1].inputs[0]]
    dst = cp.empty_like(src)
    with p.stream:
        t = []
        for _ in range(repeats + 3):
            a, b = cp.cuda.Event(), cp.cuda.Event()
            a.record(p.stream)
            dst.data.copy_from_device_async(src.data, src.nbytes, p.stream)
            b.record(p.stream)
            b.synchronize()
            t.append(cp.cuda.get_elapsed_time(a, b) * 1e-3)
    out["memcpy"] = 2.0 * src.nbytes / statistics.median(t[3:])
    del p, src, dst
    cp.get_default_memory_pool().free_all_blocks()

    def chain(k: int, views: int = 0) -> float:
        g = Graph("chain")
        x = g.op("neg", g.input("x", (4, 8), "f32"))
        for _ in range(k - 1):
            x = g.op("neg", x)
        for i in range(views):
            x = g.op("reshape", x, shape=(32,) if i % 2 == 0 else (4, 8))
        g.output(y=g.op("neg", x) if views else x)
        return replay_seconds(program(g, {"x": rng.standard_normal((4, 8), dtype=np.float32)}))
    out["launch"] = max(0.0, (chain(201) - chain(1)) / 200)
    out["view"] = max(0.0, (chain(1, 200) - chain(1, 0) - out["launch"]) / 200)
    out["device"] = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"].decode()
    return out


# ---------------------------------------------------------------------------- executor
class CupyExecutor:
    """NVIDIA GPUs through CuPy: NVRTC kernels, cuBLAS, CUDA graphs."""
    name = NAME

    def available(self) -> str | None:
        try:
            import cupy
        except Exception as e:  # ImportError, or a CuPy built for another CUDA
            return f"CuPy is not installed or does not load ({type(e).__name__}: {e}); " \
                   "install the cuda extra: pip install 'rlx[cuda]'"
        try:
            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:
            return f"CuPy finds no usable CUDA driver or GPU ({type(e).__name__}: {e})"
        if n < 1:
            return "CuPy sees no CUDA GPU on this machine"
        return None

    def supports(self, op: OpDef) -> bool:
        return op.reference is not None and (not op.is_primitive_elementwise or op.name in cp_print.printable())

    def prepare(self, lir: LIR, params: Mapping[str, Any]) -> CupyProgram:
        return CupyProgram(lir, params)


register_executor(NAME, CupyExecutor)

__all__ = ["CupyExecutor", "CupyProgram", "gemm_calls", "copy_call", "tf32_default"]
