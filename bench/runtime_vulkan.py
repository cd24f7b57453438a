"""Vulkan runtime (issue 14): rlx compiled for the `vulkan` target (WGSL on wgpu) vs rlx on
the NumPy executor (target `cpu`), on the Llama and BERT stacks of bench/runtime_cpu.py, f32,
batch 1. On a machine without a GPU the Vulkan device is Mesa's lavapipe, which runs the
shaders on the same CPU cores: the ratio then measures the WGSL kernels against NumPy/BLAS
on equal hardware, not a GPU.

Both programs get the same weights and inputs; the Vulkan output is checked against the
NumPy one before timing. Medians of --repeats runs in one process, with min and max, the
two executors alternating run by run (this machine is shared: its load moves); the
ratio is NumPy time / Vulkan time (above 1: Vulkan is faster). One profiled Vulkan run
splits the time by kind of step (GEMM + epilogue, attention, row reductions, pointwise,
data movement) with the GFLOP/s each achieved: device times from timestamp queries where the
adapter has them, else each step its own waited submission (the sum then exceeds a run). Writes bench/results/runtime_vulkan.json.

On a machine with an NVIDIA GPU (CuPy loads and sees it) the same graphs also run compiled for
`cuda` on the CuPy executor (exact f32 GEMMs, as the shaders compute), so rlx-vulkan is set
against rlx-cupy on the same GPU as well as against rlx-numpy; all three alternate run by run
and are timed the same way (a run: inputs in, every step, outputs out). The GPU's ceilings are
measured through CuPy (a device-to-device copy, bytes read + written; cuBLAS's exact-f32 8192^3
GEMM, the rate an f32 FMA shader can approach) and each kind of Vulkan step gets its achieved
fraction: bytes each step must read and write over its device time against the copy ceiling
(regions, row reductions, data movement), FLOPs over time against the GEMM ceiling (the tiled
GEMM); plus the executor's own calibration (``vulkan_exec.measure``: one tiled GEMM, one
pointwise copy) against the same ceilings.

    python bench/runtime_vulkan.py [--repeats N] [--small]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import rlx
from rlx.exec import vulkan_exec
from rlx.ir import random_arrays
from rlx.ir.dtypes import DType
from rlx.ir.registry import TensorType
from rlx.kernels.lower import kernel_for

from common import cell, ms

MODELS = {
    "llama 4x1024 (d_ff 2816, seq 128)": lambda: rlx.models.llama(layers=4, d_model=1024, n_heads=16, d_ff=2816,
                                                                   seq=128, batch=1),
    "bert-base 12x768 (seq 128)": lambda: rlx.models.bert(layers=12, d_model=768, n_heads=12, d_ff=3072, seq=128,
                                                          batch=1),
}
SMALL = {
    "llama 2x256 (seq 64)": lambda: rlx.models.llama(layers=2, d_model=256, n_heads=4, seq=64, batch=1),
    "bert 2x256 (seq 64)": lambda: rlx.models.bert(layers=2, d_model=256, n_heads=4, seq=64, batch=1),
}


def step_kind(program, step) -> str:
    """What a step is, for the breakdown: its skeleton, or native/host."""
    kind = program.dispatch[step.node]
    if kind == "native":
        return "GEMM + epilogue" if step.op == "matmul" else f"native {step.op}"
    if kind != "generated":
        return kind
    types = [TensorType(program.lir.values[n].shape, program.lir.values[n].dtype) for n in step.inputs]
    return kernel_for(step.op, types, step.attrs).kind


def breakdown(program, inputs, ceil: dict | None = None) -> dict[str, dict[str, float]]:
    """Seconds, steps, GFLOP/s and GB/s per kind of step in one profiled run (GB/s: the bytes
    each step must read and write once); with ``ceil``, their fractions of the GPU's GEMM
    rate and copy bandwidth."""
    steps = {s.node: s for s in program.lir.steps}
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"ms": 0.0, "steps": 0, "gflop": 0.0, "gbyte": 0.0})
    for t in program.profile(inputs):
        step = steps[t.node]
        node = program.lir.source.node(step.node)
        row = out[step_kind(program, step)]
        row["ms"] += 1e3 * t.seconds
        row["steps"] += 1
        row["gflop"] += node.cost()[0] / 1e9
        row["gbyte"] += sum(math.prod(program.lir.values[v].shape) * DType(program.lir.values[v].dtype).itemsize
                            for v in list(step.inputs) + list(step.outputs)) / 1e9
    for kind, row in out.items():
        sec = row["ms"] / 1e3
        row["gflops_per_s"] = row["gflop"] / sec if sec else 0.0
        row["gbytes_per_s"] = row["gbyte"] / sec if sec else 0.0
        if ceil:
            row["fraction_of_gemm_peak"] = row["gflops_per_s"] * 1e9 / ceil["gemm_f32"]
            row["fraction_of_copy_bandwidth"] = row["gbytes_per_s"] * 1e9 / ceil["copy"]
    return dict(out)


def gpu_ceilings() -> dict | None:
    """The NVIDIA GPU's copy bandwidth and exact-f32 GEMM rate through CuPy (None without)."""
    from rlx.exec.cupy_exec import CupyExecutor
    if CupyExecutor().available() is not None:
        return None
    import cupy as cp

    def best(fn, n=10):
        fn()
        times = []
        for _ in range(n):
            a, b = cp.cuda.Event(), cp.cuda.Event()
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(cp.cuda.get_elapsed_time(a, b) * 1e-3)
        return sorted(times)[len(times) // 2]
    x = cp.random.standard_normal(1 << 28, dtype=cp.float32)
    y = cp.empty_like(x)
    copy = 2 * x.nbytes / best(lambda: y.__setitem__(Ellipsis, x))
    del x, y
    n = 8192
    a = cp.random.standard_normal((n, n), dtype=cp.float32)
    gemm = 2 * n ** 3 / best(lambda: a @ a)
    del a
    cp.get_default_memory_pool().free_all_blocks()
    return {"copy": copy, "gemm_f32": gemm, "device": cp.cuda.runtime.getDeviceProperties(0)["name"].decode()}


def interleaved(*fns, repeats: int) -> list[list[float]]:
    """Wall times of each of ``fns`` run alternately (after a warm-up of each), so all see
    the same load on a shared machine."""
    for fn in fns:
        fn()
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, times in zip(fns, out):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=None, help="runs per executor (default 20 on a GPU, 5 on a CPU)")
    ap.add_argument("--small", action="store_true", help="small stacks (a quick check)")
    args = ap.parse_args()
    reason = vulkan_exec.VulkanExecutor().available()
    if reason:
        raise SystemExit(f"no Vulkan device: {reason}")
    ctx = vulkan_exec.context()
    device = ctx["name"]
    on_gpu = ctx["adapter"].info.get("adapter_type") != "CPU"
    repeats = args.repeats or (20 if on_gpu else 5)
    ceil = gpu_ceilings()
    cuda = ceil is not None
    console = Console(width=180)
    calib = None
    if ceil:
        console.print(f"GPU ceilings through CuPy ({ceil['device']}): copy {ceil['copy'] / 1e12:.2f} TB/s, "
                      f"exact-f32 GEMM {ceil['gemm_f32'] / 1e12:.1f} TFLOP/s")
    if on_gpu:
        calib = vulkan_exec.measure(n=4096, copy_mib=256, repeats=7)
        if ceil:
            calib["gemm_fraction_of_cublas_f32"] = calib["peak_f32"] / ceil["gemm_f32"]
            calib["copy_fraction_of_bandwidth"] = calib["bandwidth"] / ceil["copy"]
        console.print(f"vulkan_exec.measure: tiled GEMM 4096^3 f32 {calib['peak_f32'] / 1e12:.2f} TFLOP/s"
                      + (f", f16 {calib['peak_f16'] / 1e12:.2f}" if "peak_f16" in calib else "")
                      + f", pointwise copy {calib['bandwidth'] / 1e12:.2f} TB/s, {calib['launch'] * 1e6:.1f} us "
                      "per extra dispatch")
    rows = []
    for name, build in (SMALL if args.small else MODELS).items():
        graph = build()
        vk, cpu = rlx.compile(graph, target="vulkan"), rlx.compile(graph, target="cpu")
        arrays = random_arrays(graph, seed=0)
        ins = {n.name: arrays[n.name].astype(np.float32) for n in graph.inputs}
        ps = {n.name: arrays[n.name].astype(np.float32) for n in graph.params}
        want, got = cpu.run(ins, ps), vk.run(ins, ps)
        key = next(iter(want))
        scale = max(1.0, float(np.max(np.abs(want[key]))))
        err = float(np.max(np.abs(got[key] - want[key])))
        fns = [lambda: vk.run(ins), lambda: cpu.run(ins)]
        row: dict = {}
        if cuda:
            os.environ["RLX_CUDA_TF32"] = "0"
            cu = rlx.compile(graph, target="cuda")
            got_cu = cu.run(ins, ps)
            row["cupy_max_err_vs_numpy"] = float(np.max(np.abs(got_cu[key] - want[key])))
            fns.append(lambda: cu.run(ins))
        times = interleaved(*fns, repeats=repeats)
        program = vk.executor_for(ins)
        row.update({"model": name, "device": device, "nodes_compiled": len(vk.graph.nodes),
                    "steps": sum(1 for s in program.lir.steps if s.phase == "body"),
                    "pipelines": len(set(program.sources.values())),
                    "host_steps": len(program.host_reasons), "max_err_vs_numpy": err, "output_scale": scale,
                    **ms("vulkan_ms", times[0]), **ms("numpy_ms", times[1]),
                    **(ms("cupy_ms", times[2]) if cuda else {}),
                    "breakdown": breakdown(program, ins, ceil)})
        row["vulkan_device_ms"] = sum(b["ms"] for b in row["breakdown"].values())
        rows.append(row)
    title = f"rlx on Vulkan ({device}) vs rlx on NumPy" + (" and on CuPy (same GPU)" if cuda else "")
    table = Table(title=f"{title}, f32, batch 1 (median of {repeats}, min-max, wall ms per run: inputs in, "
                        "outputs out)")
    cols = ["model", "steps (pipelines)", "vulkan ms", "numpy ms"] + (["cupy ms"] if cuda else []) + \
        ["numpy / vulkan"] + (["cupy / vulkan"] if cuda else []) + ["max err"]
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["model"], f"{r['steps']} ({r['pipelines']})", cell(r, "vulkan_ms", 2), cell(r, "numpy_ms", 2),
                      *([cell(r, "cupy_ms", 2)] if cuda else []), f"{r['numpy_ms'] / r['vulkan_ms']:.2f}x",
                      *([f"{r['cupy_ms'] / r['vulkan_ms']:.2f}x"] if cuda else []), f"{r['max_err_vs_numpy']:.1e}")
    console.print(table)
    how = "timestamp queries" if ctx.get("timestamps") else "each step its own submission"
    t2 = Table(title=f"one profiled Vulkan run by kind of step ({how})"
                     + ("; fractions of the GPU's copy bandwidth and exact-f32 cuBLAS rate" if ceil else ""))
    for col in ("model", "kind", "steps", "ms", "GFLOP/s", "GB/s") + (("of GEMM peak", "of bandwidth") if ceil else ()):
        t2.add_column(col, justify="right")
    for r in rows:
        for kind, b in sorted(r["breakdown"].items(), key=lambda kv: -kv[1]["ms"]):
            t2.add_row(r["model"], kind, str(b["steps"]), f"{b['ms']:.2f}", f"{b['gflops_per_s']:.1f}",
                       f"{b['gbytes_per_s']:.1f}",
                       *((f"{b['fraction_of_gemm_peak']:.1%}", f"{b['fraction_of_copy_bandwidth']:.1%}") if ceil else ()))
    console.print(t2)
    out = Path(__file__).parent / "results" / "runtime_vulkan.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "runtime_vulkan", "machine": platform.platform(), "device": device,
                               "repeats": repeats, "gpu_ceilings": ceil, "vulkan_calibration": calib, "rows": rows},
                              indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
