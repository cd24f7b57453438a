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

    python bench/runtime_vulkan.py [--repeats 5] [--small]
"""
from __future__ import annotations

import argparse
import json
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


def breakdown(program, inputs) -> dict[str, dict[str, float]]:
    """Seconds, steps and GFLOP/s per kind of step in one profiled run."""
    steps = {s.node: s for s in program.lir.steps}
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"ms": 0.0, "steps": 0, "gflop": 0.0})
    for t in program.profile(inputs):
        step = steps[t.node]
        node = program.lir.source.node(step.node)
        row = out[step_kind(program, step)]
        row["ms"] += 1e3 * t.seconds
        row["steps"] += 1
        row["gflop"] += node.cost()[0] / 1e9
    for row in out.values():
        row["gflops_per_s"] = row["gflop"] / (row["ms"] / 1e3) if row["ms"] else 0.0
    return dict(out)


def interleaved(a, b, repeats: int) -> tuple[list[float], list[float]]:
    """Wall times of ``a`` and ``b`` run alternately (after a warm-up of each), so both see
    the same load on a shared machine."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return ta, tb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--small", action="store_true", help="small stacks (a quick check)")
    args = ap.parse_args()
    reason = vulkan_exec.VulkanExecutor().available()
    if reason:
        raise SystemExit(f"no Vulkan device: {reason}")
    device = vulkan_exec.context()["name"]
    rows = []
    for name, build in (SMALL if args.small else MODELS).items():
        graph = build()
        vk, cpu = rlx.compile(graph, target="vulkan"), rlx.compile(graph, target="cpu")
        arrays = random_arrays(graph, seed=0)
        ins = {n.name: arrays[n.name].astype(np.float32) for n in graph.inputs}
        ps = {n.name: arrays[n.name].astype(np.float32) for n in graph.params}
        want, got = cpu.run(ins, ps), vk.run(ins, ps)
        key = next(iter(want))
        err = float(np.max(np.abs(got[key] - want[key])))
        t_vk, t_np = interleaved(lambda: vk.run(ins), lambda: cpu.run(ins), args.repeats)
        program = vk.executor_for(ins)
        rows.append({"model": name, "device": device, "nodes_compiled": len(vk.graph.nodes),
                     "steps": sum(1 for s in program.lir.steps if s.phase == "body"),
                     "pipelines": len(set(program.sources.values())),
                     "host_steps": len(program.host_reasons), "max_err_vs_numpy": err,
                     **ms("vulkan_ms", t_vk), **ms("numpy_ms", t_np),
                     "breakdown": breakdown(program, ins)})
    console = Console(width=180)
    table = Table(title=f"rlx on Vulkan ({device}) vs rlx on NumPy, f32, batch 1 "
                        f"(median of {args.repeats}, min-max)")
    for col in ("model", "steps (pipelines)", "vulkan ms", "numpy ms", "numpy / vulkan", "max err"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["model"], f"{r['steps']} ({r['pipelines']})", cell(r, "vulkan_ms"), cell(r, "numpy_ms"),
                      f"{r['numpy_ms'] / r['vulkan_ms']:.2f}x", f"{r['max_err_vs_numpy']:.1e}")
    console.print(table)
    how = "timestamp queries" if vulkan_exec.context().get("timestamps") else "each step its own submission"
    t2 = Table(title=f"one profiled Vulkan run by kind of step ({how})")
    for col in ("model", "kind", "steps", "ms", "GFLOP/s"):
        t2.add_column(col, justify="right")
    for r in rows:
        for kind, b in sorted(r["breakdown"].items(), key=lambda kv: -kv[1]["ms"]):
            t2.add_row(r["model"], kind, str(b["steps"]), f"{b['ms']:.1f}", f"{b['gflops_per_s']:.1f}")
    console.print(t2)
    out = Path(__file__).parent / "results" / "runtime_vulkan.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "runtime_vulkan", "machine": platform.platform(), "device": device,
                               "repeats": args.repeats, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
