"""The Vulkan executor: an LIR run as WGSL compute shaders through wgpu (on CPU machines,
Mesa's lavapipe).

The four regions of the plan (input, param, output, arena) are storage buffers on the device,
allocated once (a region larger than the adapter binds at once is split into several, each
plan buffer in one); params are uploaded once at bind. Each body step is one dispatch of
a shader printed by ``wgsl_print`` (a native kernel of ``wgsl_native`` for reductions,
gathers and data movement, matmul as the GEMM skeleton; else the skeleton the kernel layer derives from the op's definition, convolutions
included), its
operands' offsets in a per-step record of one uniform buffer (aligned to the device's
``min_uniform_buffer_offset_alignment``). Pipelines are cached per shader source, which is
the step's signature (shapes, strides, dtypes, regions), so repeated layers share them. A
run writes the inputs, encodes every dispatch into one compute pass of one command buffer,
copies the outputs to a mapped staging buffer and submits once; readback is that copy.

Resize reads per-axis tables of input indices and weights (the reference's interpolation
matrices, computed at bind) from one more storage buffer of constants.

A step no shader covers (``gather_elements`` and ``gather_nd`` of indices computed on the
device, whose range only the host checks; an integer resize that interpolates; dtypes WGSL
lacks such as i64 values or f64) runs on the host between submissions: its inputs are read back, its NumPy kernel runs,
its outputs are written back. That costs a submission, a device round trip and the operands'
bytes each way per such step; its dispatch is "reference" (or "definition" for a fused op)
and ``host_reasons`` says why.
The prologue (constant folding) runs once on the host at bind, as on NumPy.
"""
from __future__ import annotations

import importlib.util
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rlx.errors import BindingError
from rlx.exec import wgsl_native as N
from rlx.exec import wgsl_print as W
from rlx.exec.base import ExecutorError, StepTiming, register_executor
from rlx.exec.numpy_exec import NumpyProgram
from rlx.ir.dtypes import DType
from rlx.ir.expr import Expr
from rlx.ir.lir import LIR, Step, ValueLayout
from rlx.ir.registry import REGISTRY, OpDef, TensorType
from rlx.kernels.lower import kernel_for

NAME = "vulkan"
REGIONS = ("input", "param", "output", "arena")
TABLES = "tables"  # the device buffer of native shaders' constant tables (resize)
PREFERENCE = ("DiscreteGPU", "IntegratedGPU", "VirtualGPU", "CPU", "Unknown")
NATIVE = ("matmul", "transpose", "reshape", "expand", "slice", "concat", "split", "sum", "mean", "max", "gather",
          "gather_elements", "gather_nd", "causal_mask", "trilu", "rotary", "cumsum", "argmax", "argmin", "max_pool", "avg_pool",
          "resize")
INDEXED = {"gather": 1, "gather_elements": 1, "gather_nd": 1}  # op -> its index operand
CHECKED = ("gather_elements", "gather_nd")  # their indices are range-checked on the host first
SECOND = ("softmax",)  # native shaders where the op's definition fits no skeleton (another axis)
INDEX_OUT = ("argmax", "argmin")  # i64 results that are indices: stored as two words of an i32

_LOCK = threading.RLock()
_CONTEXT: dict[str, Any] = {}
_ADAPTERS: dict[str, list] = {}


# ---------------------------------------------------------------------------- device
def _enumerate() -> list:
    """Every adapter wgpu finds, enumerated once and kept for the process: releasing an
    adapter of another backend (OpenGL through EGL) from a worker thread aborts."""
    with _LOCK:
        if "adapters" not in _ADAPTERS:
            import wgpu
            _ADAPTERS["adapters"] = list(wgpu.gpu.enumerate_adapters_sync())
        return _ADAPTERS["adapters"]


def _find_adapter() -> tuple[Any, str | None]:
    """The preferred Vulkan adapter, or None and why there is none."""
    if importlib.util.find_spec("wgpu") is None:
        return None, "wgpu is not installed (pip install 'rlx[vulkan]')"
    try:
        adapters = _enumerate()
    except Exception as e:  # a missing or broken loader surfaces here
        return None, f"wgpu found no adapter ({type(e).__name__}: {e})"
    vulkan = [a for a in adapters if a.info.get("backend_type") == "Vulkan"]
    if not vulkan:
        found = ", ".join(f"{a.info.get('device') or a.info.get('description')} ({a.info.get('backend_type')})"
                          for a in adapters) or "no adapter at all"
        return None, (f"no Vulkan adapter: wgpu found {found} (install a Vulkan driver, e.g. "
                      "mesa-vulkan-drivers for lavapipe, and the loader libvulkan1)")
    rank = {t: i for i, t in enumerate(PREFERENCE)}
    vulkan.sort(key=lambda a: rank.get(a.info.get("adapter_type"), len(rank)))
    return vulkan[0], None


def context() -> dict[str, Any]:
    """The process's device (one per process: pipelines and buffers live on it)."""
    with _LOCK:
        if not _CONTEXT:
            adapter, reason = _find_adapter()
            if adapter is None:
                raise ExecutorError(f"executor 'vulkan' is not available on this machine: {reason}")
            lim = adapter.limits
            want = {k: lim[k] for k in ("max-storage-buffer-binding-size", "max-buffer-size",
                                        "max-storage-buffers-per-shader-stage", "max-compute-workgroup-storage-size")}
            f16 = "shader-f16" in adapter.features
            features = [f for f in ("shader-f16", "timestamp-query") if f in adapter.features]
            device = adapter.request_device_sync(required_features=features, required_limits=want)
            # workgroup-memory tiles for GPUs; on a CPU driver (lavapipe), where workgroup memory
            # is plain memory and barriers are context switches, register blocks win 3-4x
            schedule = "registers" if adapter.info.get("adapter_type") == "CPU" else "tiled"
            _CONTEXT.update(adapter=adapter, device=device, f16=f16, limits=device.limits, pipelines={},
                            timestamps="timestamp-query" in features,
                            schedule=schedule,
                            name=f"{adapter.info.get('device')} ({adapter.info.get('backend_type')}, "
                                 f"{adapter.info.get('adapter_type')})")
        return _CONTEXT


def _pipeline(ctx: dict, source: str):
    """The compute pipeline of a shader source, built once per process (its signature)."""
    cache = ctx["pipelines"]
    with _LOCK:
        if source not in cache:
            module = ctx["device"].create_shader_module(code=source)
            cache[source] = ctx["device"].create_compute_pipeline(layout="auto",
                                                                 compute={"module": module, "entry_point": "main"})
        return cache[source]


# ---------------------------------------------------------------------------- program
class VulkanProgram(NumpyProgram):
    """Bound to one planned LIR and one set of params on the device. The host mirror of the
    regions (the NumPy program this extends) stages inputs, runs the prologue and any host
    step, and receives the outputs."""

    def __init__(self, lir: LIR, params: Mapping[str, Any]) -> None:
        import wgpu
        self.ctx = ctx = context()
        dev = ctx["device"]
        if lir.alignment % 4:
            raise ExecutorError(f"the vulkan executor needs buffers aligned to 4 bytes (target says {lir.alignment})")
        if not ctx["f16"] and any(DType(v.dtype) == DType.f16 for v in lir.values.values()):
            raise ExecutorError(f"this program computes in f16 but adapter {ctx['name']} lacks shader-f16")
        super().__init__(lir, params)  # mirror, params, prologue (host, once); body steps below
        self.host_reasons: dict[str, str] = {}
        self._checks: list[tuple[Step, str]] = []  # index range checks: (step, region of indices)
        self._tables: list[np.ndarray] = []  # constant tables of native shaders (resize), as 32-bit words
        self._table_words = 0
        self._extra_units: dict[str, list[int]] = {}  # a step's uniform slots past its operands
        self._allocate()
        self._upload_region("param")  # params and folded constants, once
        for step in lir.steps:
            if step.phase == "prologue":
                for name in step.outputs:
                    self._upload_value(name)
        # body: a shader per step where one prints, else the host
        plans: list[tuple[Step, Any]] = []
        for step, _ in self.steps:
            try:
                kind, shader = self._shader(step)
            except W.Unsupported as e:
                kind, fn = NumpyProgram._step(self, step)
                kind = "definition" if REGISTRY.get(step.op).category == "fused" else "reference"
                self.host_reasons[step.node] = str(e)
                plans.append((step, fn))
            else:
                plans.append((step, shader))
            self.dispatch[step.node] = kind
        if self._tables:
            words = np.concatenate(self._tables)
            self.buffers[TABLES] = dev.create_buffer(size=max(16, words.nbytes), usage=wgpu.BufferUsage.STORAGE |
                                                     wgpu.BufferUsage.COPY_DST, label="rlx tables")
            dev.queue.write_buffer(self.buffers[TABLES], 0, words.tobytes())
        self._build(plans)
        for step, region in self._checks:
            if region == "param":
                self._check_indices(step)
        self._out_spans = [self._span(s.inputs[0]) for s in lir.steps if s.phase == "epilogue"]
        total = sum(sp[2] for sp in self._out_spans) or 4
        self.staging = dev.create_buffer(size=total, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST)

    def _step(self, step: Step) -> tuple[str, Callable[[], None] | None]:
        if step.phase == "body":
            return "pending", None  # chosen after the mirror exists (see __init__)
        kind, fn = super()._step(step)
        return "reference", fn       # prologue folding: on the host, once at bind

    # ------------------------------------------------------------------------ shaders
    def _operand(self, name: str, slot: int, index_only: bool = False) -> W.Operand:
        lay = self.lir.values[name]
        dt = DType(lay.dtype)
        index_only = index_only and dt == DType.i64
        if index_only:
            unit = 8
        elif dt in W.STORED:
            unit = 1 if dt == DType.bool else dt.itemsize
        else:
            raise W.Unsupported(f"{dt} value {name!r} (WGSL has no such type here)")
        if any(s < 0 for s in lay.strides):
            raise W.Unsupported(f"negative strides of {name!r}")
        if self._byte(lay) % unit:
            raise W.Unsupported(f"value {name!r} is not aligned to its element size")
        return W.Operand(self._region(lay), dt, tuple(lay.shape), tuple(lay.strides), slot, 0, index_only)

    def _allocate(self) -> None:
        """Device buffers for the regions: one per region, or several where a region is larger
        than the adapter binds at once (each plan buffer lies in one of them: a *chunk*)."""
        import wgpu
        ctx, lir = self.ctx, self.lir
        cap = min(ctx["limits"]["max-storage-buffer-binding-size"], ctx["limits"]["max-buffer-size"])
        cap -= cap % max(256, lir.alignment)
        usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.COPY_SRC
        self.buffers: dict[str, Any] = {}
        self.chunks: dict[str, tuple[str, int, int]] = {}   # chunk -> (region, start, bytes)
        self.chunk_of: dict[int, str] = {}                  # plan buffer id -> chunk
        for r in REGIONS:
            spans: list[list] = []
            for b in sorted((b for b in lir.buffers if b.region == r), key=lambda b: b.offset):
                end = b.offset + _up(b.nbytes)
                if end - b.offset > cap:
                    raise ExecutorError(f"a {r} buffer of {b.nbytes} bytes exceeds what adapter {ctx['name']} "
                                        f"binds at once ({cap} bytes)")
                if spans and end - spans[-1][0] <= cap:
                    spans[-1][1] = max(spans[-1][1], end)
                    spans[-1][2].append(b.id)
                else:
                    spans.append([b.offset, end, [b.id]])
            for i, (start, end, ids) in enumerate(spans or [[0, 16, []]]):
                name = f"{r}{i}"
                size = _up(max(end - start, 16))
                self.buffers[name] = ctx["device"].create_buffer(size=size, usage=usage, label=f"rlx {name}")
                self.chunks[name] = (r, start, size)
                for bid in ids:
                    self.chunk_of[bid] = name

    def _region(self, lay: ValueLayout) -> str:
        """The chunk (device buffer) a value lives in."""
        return self.chunk_of[lay.buffer]

    def _byte(self, lay: ValueLayout) -> int:
        """A value's byte offset in its chunk."""
        return self.lir.buffers[lay.buffer].offset - self.chunks[self._region(lay)][1] + lay.byte_offset

    def _shader(self, step: Step) -> tuple[str, tuple[W.Shader, list[int]]]:
        op, attrs = step.op, step.attrs
        ins = [self._operand(n, i, INDEXED.get(op) == i) for i, n in enumerate(step.inputs)]
        outs = [self._operand(n, len(ins) + i, op in INDEX_OUT) for i, n in enumerate(step.outputs)]
        if any(math.prod(o.shape) == 0 for o in [*ins, *outs]):
            raise W.Unsupported("an empty tensor")
        types = [TensorType(self.lir.values[n].shape, DType(self.lir.values[n].dtype)) for n in step.inputs]
        kernel = None if op in NATIVE else kernel_for(op, types, attrs)
        if kernel is not None:
            kind, shader = "generated", W.print_kernel(kernel, ins, outs, self.ctx["schedule"])
        elif op in NATIVE or op in SECOND:
            kind, shader = "native", self._native(step, ins, outs)
        else:
            raise W.Unsupported(f"{op}: no skeleton fits here and no native shader")
        if len(shader.bindings) > self.ctx["limits"]["max-storage-buffers-per-shader-stage"]:
            raise W.Unsupported(f"{len(shader.bindings)} storage bindings exceed the adapter's limit")
        units = [self._byte(self.lir.values[n]) // _unit(o) for n, o in zip([*step.inputs, *step.outputs], [*ins, *outs])]
        return kind, (shader, units + self._extra_units.pop(step.node, []))

    def _table(self, words: np.ndarray) -> int:
        """Append constant 32-bit words to the tables buffer; returns their word offset."""
        at = self._table_words
        self._tables.append(np.ascontiguousarray(words).view(np.uint32).ravel())
        self._table_words += words.size
        return at

    def _resize(self, step: Step, ins: list[W.Operand], outs: list[W.Operand]) -> W.Shader:
        """Each resized axis's interpolation as (output, taps) tables of input indices and
        weights, from the reference's per-axis matrix (so every mode and coordinate
        transformation is the reference's), read by one shader."""
        from rlx.ir.ops import resize_matrix
        a = step.attrs
        x, o = ins[0], outs[0]
        if not x.dtype.is_float and a["mode"] != "nearest":
            raise W.Unsupported(f"{x.dtype} {a['mode']} resize (rounding an interpolation: on the host, in f64)")
        index, weight, axes = [], [], []
        for d, (n_in, n_out) in enumerate(zip(x.shape, o.shape)):
            scale = a["scales"][d] if a["scales"] is not None else n_out / n_in
            if n_in == n_out and scale == 1.0:
                continue
            m = resize_matrix(n_in, n_out, scale, a)
            cols = [np.flatnonzero(row) for row in m]
            taps = max(1, max(len(c) for c in cols))
            ind, w = np.zeros((n_out, taps), np.int32), np.zeros((n_out, taps), np.float32)
            for r, c in enumerate(cols):
                ind[r, :len(c)], w[r, :len(c)] = c, m[r, c]
            axes.append([d, taps, sum(t.size for t in index), 0])
            index.append(ind.ravel())
            weight.append(w.ravel())
        n_index = sum(t.size for t in index)
        at = 0
        for ax, w in zip(axes, weight):
            ax[3] = n_index + at
            at += w.size
        words = np.concatenate([t.view(np.uint32) for t in index + weight]) if axes else np.zeros(1, np.uint32)
        base = self._table(words)
        self._extra_units[step.node] = [base]
        slot = len(ins) + len(outs)
        ti = W.Operand(TABLES, DType.i32, (words.size,), (1,), slot)
        tw = W.Operand(TABLES, DType.f32, (words.size,), (1,), slot)
        return N.resize(x, o, ti, tw, [tuple(ax) for ax in axes])

    def _native(self, step: Step, ins: list[W.Operand], outs: list[W.Operand]) -> W.Shader:
        op, a = step.op, step.attrs
        if op == "matmul":
            dt = outs[0].dtype
            prod = Expr("arg", value=2, dtype=DType.f32)
            e = prod if dt == DType.f32 else Expr("cast", (prod,), attrs=(("dtype", dt),), dtype=dt)
            return W.gemm(ins, outs, ((0, 1),), (e,), self.ctx["schedule"])
        if op in ("sum", "mean", "max"):
            axes = a["axes"] if a["axes"] is not None else tuple(range(len(ins[0].shape)))
            return N.reduce(ins[0], outs[0], op, axes)
        if op in ("transpose", "expand", "slice"):
            opdef = REGISTRY.get(op)
            x = ins[0]
            view = opdef.view_layout(a, x.shape, x.strides, outs[0].shape)
            if view is None:
                raise W.Unsupported(f"{op} with these attributes is not a strided read")
            off, strides = view
            src = W.Operand(x.region, x.dtype, outs[0].shape, tuple(strides), x.slot, off)
            return N.copy(src, outs[0].shape, outs[0])
        if op == "reshape":
            return N.copy(ins[0], ins[0].shape, outs[0])
        if op == "concat":
            return N.concat(ins, outs[0], a["axis"])
        if op == "split":
            return N.split(ins[0], outs, a["axis"])
        if op in INDEXED and ins[1].dtype not in (DType.i32, DType.i64):
            raise W.Unsupported(f"{ins[1].dtype} indices")
        if op in CHECKED:  # out of range is an error on NumPy: check where the host sees them
            region = self.chunks[ins[1].region][0]
            if region not in ("input", "param"):
                raise W.Unsupported("its indices are computed on the device (the host checks their range)")
            self._checks.append((step, region))
        if op == "gather":
            return N.gather(ins[0], ins[1], outs[0], a["axis"])
        if op == "gather_elements":
            return N.gather_elements(ins[0], ins[1], outs[0], a["axis"])
        if op == "gather_nd":
            return N.gather_nd(ins[0], ins[1], outs[0], a["batch_dims"])
        if op == "causal_mask":
            return N.causal_mask(ins[0], outs[0])
        if op == "trilu":
            return N.trilu(ins[0], outs[0], bool(a["upper"]), int(a["k"]))
        if op == "rotary":
            return N.rotary(*ins, outs[0])
        if op == "softmax":
            return N.softmax_axis(ins[0], outs[0], a["axis"])
        if op == "cumsum":
            return N.cumsum(ins[0], outs[0], a["axis"], bool(a["exclusive"]), bool(a["reverse"]))
        if op in INDEX_OUT:
            if ins[0].shape[a["axis"] % len(ins[0].shape)] >= 2 ** 31:
                raise W.Unsupported("an axis past i32 indices")
            return N.arg_extreme(ins[0], outs[0], a["axis"], op == "argmax", bool(a["select_last_index"]))
        if op == "resize":
            return self._resize(step, ins, outs)
        if op in ("max_pool", "avg_pool"):
            n = len(a["kernel"])
            return N.pool(ins[0], outs[0], op[:3], a["kernel"], a["strides"] or (1,) * n,
                          a.get("dilations") or (1,) * n, a["pads"] or (0,) * (2 * n),
                          bool(a.get("count_include_pad", False)))
        raise W.Unsupported(f"no native kernel for {op}")

    def _build(self, plans: list[tuple[Step, Any]]) -> None:
        """Pipelines, one uniform record per GPU step, bind groups; runs of GPU steps
        between host steps are the segments a run encodes."""
        import wgpu
        dev = self.ctx["device"]
        align = max(256, self.ctx["limits"]["min-uniform-buffer-offset-alignment"])
        gpu = [(s, p) for s, p in plans if not callable(p)]
        table = np.zeros(max(1, len(gpu)) * align // 4, np.uint32)
        self.uniform = dev.create_buffer(size=table.nbytes, usage=wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST)
        self.segments: list[list[tuple] | tuple[Step, Callable]] = []
        k = 0
        for step, plan in plans:
            if callable(plan):
                self.segments.append((step, plan))
                continue
            shader, units = plan
            table[k * align // 4: k * align // 4 + len(units)] = units
            pipe = _pipeline(self.ctx, shader.source)
            entries = [{"binding": i, "resource": {"buffer": self.buffers[r], "offset": 0, "size": self.buffers[r].size}}
                       for i, (r, _) in enumerate(shader.bindings)]
            entries.append({"binding": len(shader.bindings),
                            "resource": {"buffer": self.uniform, "offset": k * align, "size": 16 * max(1, -(-shader.slots // 4))}})
            group = dev.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=entries)
            if not self.segments or not isinstance(self.segments[-1], list):
                self.segments.append([])
            self.segments[-1].append((step, pipe, group, shader.grid))
            k += 1
        dev.queue.write_buffer(self.uniform, 0, table.tobytes())
        self.sources = {s.node: p[0].source for s, p in plans if not callable(p)}

    # ------------------------------------------------------------------------ transfers
    def _span(self, name: str) -> tuple[str, int, int]:
        """(chunk, start in it, bytes) covering a value, widened to 4-byte words."""
        lay = self.lir.values[name]
        item = DType(lay.dtype).itemsize
        extent = (sum((d - 1) * s for d, s in zip(lay.shape, lay.strides)) + 1) * item if all(lay.shape) else 0
        start = self._byte(lay)
        lo = start - start % 4
        chunk = self._region(lay)
        return chunk, lo, min(_up(start + extent), self.chunks[chunk][2]) - lo

    def _mirror(self, chunk: str, start: int, n: int) -> np.ndarray:
        """The host bytes of ``chunk[start:start + n]`` (short where the region ends first)."""
        region, base, _ = self.chunks[chunk]
        return self.regions[region][base + start:base + start + n]

    def _write(self, chunk: str, start: int, n: int) -> None:
        data = self._mirror(chunk, start, n)
        if data.size % 4:
            data = np.concatenate([data, np.zeros(4 - data.size % 4, np.uint8)])
        if data.size:
            self.ctx["device"].queue.write_buffer(self.buffers[chunk], start, data)

    def _upload_region(self, region: str) -> None:
        for chunk, (r, _, size) in self.chunks.items():
            if r == region:
                self._write(chunk, 0, size)

    def _upload_value(self, name: str) -> None:
        self._write(*self._span(name))

    def _download(self, name: str) -> None:
        chunk, start, n = self._span(name)
        if n > 0:
            data = np.frombuffer(self.ctx["device"].queue.read_buffer(self.buffers[chunk], start, n), np.uint8)
            dst = self._mirror(chunk, start, n)
            dst[:] = data[:dst.size]

    def _host(self, step: Step, fn: Callable[[], None]) -> None:
        for name in set(step.inputs):
            if self.chunks[self._region(self.lir.values[name])][0] in ("arena", "output"):
                self._download(name)
        with np.errstate(all="ignore"):
            fn()
        for name in step.outputs:
            self._upload_value(name)

    # ------------------------------------------------------------------------ runs
    def _bind_inputs(self, inputs: Mapping[str, Any]) -> None:
        super()._bind_inputs(inputs)  # checks, into the mirror
        for step, region in self._checks:
            if region == "input":
                self._check_indices(step)
        self._upload_region("input")

    def _check_indices(self, step: Step) -> None:
        """Out-of-range indices of a gather_elements/gather_nd are an error, as on NumPy (a
        shader would read another value)."""
        data, ids = (self.arrays[n] for n in step.inputs)
        if step.op == "gather_elements":
            bounds = np.array([data.shape[step.attrs["axis"] % data.ndim]])
            vals = ids.reshape(-1, 1)
        else:
            first, k = step.attrs["batch_dims"], ids.shape[-1]
            bounds = np.array(data.shape[first:first + k])
            vals = ids.reshape(-1, k)
        if vals.size and (np.any(vals < -bounds) or np.any(vals >= bounds)):
            raise BindingError(f"{step.op} {step.node!r}: indices {vals.min()} to {vals.max()} are out of range "
                               f"for dims {tuple(int(d) for d in bounds)}")

    def _encode(self, dispatches, encoder=None, timestamp_writes=None):
        dev = self.ctx["device"]
        enc = encoder or dev.create_command_encoder()
        cp = enc.begin_compute_pass(timestamp_writes=timestamp_writes)
        for _, pipe, group, grid in dispatches:
            cp.set_pipeline(pipe)
            cp.set_bind_group(0, group)
            cp.dispatch_workgroups(*grid)
        cp.end()
        return enc

    def _finish(self, enc) -> dict[str, np.ndarray]:
        """Copy the outputs to staging in ``enc``, submit, map and read them."""
        import wgpu
        at = 0
        for chunk, start, n in self._out_spans:
            if n:
                enc.copy_buffer_to_buffer(self.buffers[chunk], start, self.staging, at, n)
            at += n
        self.ctx["device"].queue.submit([enc.finish()])
        self.staging.map_sync(wgpu.MapMode.READ)
        try:
            data = np.frombuffer(self.staging.read_mapped(0, self.staging.size), np.uint8)
        finally:
            self.staging.unmap()
        at = 0
        for chunk, start, n in self._out_spans:
            dst = self._mirror(chunk, start, n)
            dst[:] = data[at:at + dst.size]
            at += n
        return self._outputs()

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run once: one submission when every step is a shader (one more per host step)."""
        self._bind_inputs(inputs)
        dev = self.ctx["device"]
        enc = dev.create_command_encoder()
        for seg in self.segments:
            if isinstance(seg, list):
                self._encode(seg, enc)
            else:
                dev.queue.submit([enc.finish()])
                self._host(*seg)
                enc = dev.create_command_encoder()
        return self._finish(enc)

    def profile(self, inputs: Mapping[str, Any]) -> list[StepTiming]:
        """Run once, timing every step: with the adapter's timestamp queries, the device time
        of each step's compute pass, in one submission (as a run); without them, each step
        is its own submission, waited for (its time then includes that overhead). A host
        step's time is its wall time, transfers included."""
        import wgpu
        self._bind_inputs(inputs)
        dev = self.ctx["device"]
        stamps = self.ctx.get("timestamps", False)
        n = sum(len(seg) for seg in self.segments if isinstance(seg, list))
        if stamps and n:
            qs = dev.create_query_set(type="timestamp", count=2 * n)
            resolved = dev.create_buffer(size=16 * n, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
        seconds: dict[str, float] = {}
        enc, k = dev.create_command_encoder(), 0
        for seg in self.segments:
            if not isinstance(seg, list):
                dev.queue.submit([enc.finish()])
                t = time.perf_counter()
                self._host(*seg)
                seconds[seg[0].node] = time.perf_counter() - t
                enc = dev.create_command_encoder()
                continue
            for item in seg:
                if not stamps:
                    t = time.perf_counter()
                    dev.queue.submit([self._encode([item]).finish()])
                    dev.queue.read_buffer(self.buffers["arena0"], 0, 4)  # waits for the queue
                    seconds[item[0].node] = time.perf_counter() - t
                    continue
                writes = {"query_set": qs, "beginning_of_pass_write_index": 2 * k, "end_of_pass_write_index": 2 * k + 1}
                self._encode([item], enc, timestamp_writes=writes)
                k += 1
        if stamps and n:
            enc.resolve_query_set(qs, 0, 2 * n, resolved, 0)
        self._finish(enc)
        if stamps and n:
            ns = np.frombuffer(dev.queue.read_buffer(resolved), np.uint64).astype(np.int64).reshape(-1, 2)
            gpu = [item[0].node for seg in self.segments if isinstance(seg, list) for item in seg]
            seconds.update({node: max(0, int(b - a)) * 1e-9 for node, (a, b) in zip(gpu, ns)})
        return [StepTiming(s.index, s.node, s.op, self.dispatch[s.node], seconds[s.node])
                for s in self.lir.steps if s.node in seconds]

    def read(self, value: str) -> np.ndarray:
        if value not in self.lir.values:
            raise BindingError(f"no value {value!r} in this program")
        self._download(value)
        return self.arrays[value].copy()


# ---------------------------------------------------------------------------- calibration
def measure(n: int = 1024, copy_mib: int = 64, repeats: int = 7) -> dict[str, float]:
    """This executor's peaks as its shaders achieve them (what its cost model should price):
    the tiled GEMM of an n x n product (f32, and f16 with shader-f16), a pointwise kernel
    over ``copy_mib`` MiB (bytes read + written), and the cost of one more dispatch in a
    run. Kernel times come from ``profile`` (one submission per step, waited for). A view
    is no dispatch at all: 0."""
    import statistics

    from rlx.ir.graph import Graph
    from rlx.plan import plan

    def program(g: Graph) -> VulkanProgram:
        return VulkanProgram(plan(g, alignment=256), {})

    def kernel_seconds(g: Graph, feeds: dict) -> float:
        p = program(g)
        p.run(feeds)
        return statistics.median(p.profile(feeds)[0].seconds for _ in range(repeats))

    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    for dt in ("f32", "f16") if context()["f16"] else ("f32",):
        g = Graph("peak")
        g.output(y=g.matmul(g.input("a", (n, n), dt), g.input("b", (n, n), dt)))
        a = rng.standard_normal((n, n)).astype(DType(dt).np)
        out[f"peak_{dt}"] = 2.0 * n ** 3 / kernel_seconds(g, {"a": a, "b": a})
    size = copy_mib * 2 ** 20 // 4
    g = Graph("copy")
    g.output(y=g.op("neg", g.input("x", (size,), "f32")))
    out["bandwidth"] = 8.0 * size / kernel_seconds(g, {"x": np.ones(size, np.float32)})

    def chain(k: int) -> float:
        g = Graph("chain")
        x = g.input("x", (1,), "f32")
        for _ in range(k):
            x = g.op("neg", x)
        g.output(y=x)
        p = program(g)
        feeds = {"x": np.ones(1, np.float32)}
        p.run(feeds)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            p.run(feeds)
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    out["launch"] = max(0.0, (chain(201) - chain(1)) / 200)
    out["view"] = 0.0
    return out


def _up(n: int) -> int:
    return -(-n // 4) * 4


def _unit(o: W.Operand) -> int:
    if o.index_only:
        return 8
    return 1 if o.dtype == DType.bool else o.dtype.itemsize


class VulkanExecutor:
    """WGSL on wgpu's Vulkan backend; a step no shader covers runs on the host."""
    name = NAME

    def available(self) -> str | None:
        if _CONTEXT:
            return None
        _, reason = _find_adapter()
        return reason

    def supports(self, op: OpDef) -> bool:
        if op.is_primitive_elementwise:
            return op.name in W.printable()
        return op.reference is not None

    def prepare(self, lir: LIR, params: Mapping[str, Any]) -> VulkanProgram:
        return VulkanProgram(lir, params)


register_executor(NAME, VulkanExecutor)

__all__ = ["VulkanExecutor", "VulkanProgram", "context", "measure"]
