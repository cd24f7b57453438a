"""GPU runtime (issue 13): rlx's cupy executor vs PyTorch eager, torch.compile and
torch.compile(mode="max-autotune") on one NVIDIA GPU.

Rows: a Llama-style stack (4 layers, d_model 4096, d_ff 11008, 32 heads, seq 512) at batch
1 and 8 in f16 and f32 (TF32 GEMMs on both sides), BERT-base (12x768, batch 8, seq 128) and
a Llama decode step (batch 1, a KV cache of 1024). Same process, same weights; each peer's
outputs are checked against rlx's before timing. Times are medians of --repeats runs by CUDA
events, with min and max; ratios are peer / rlx (above 1: rlx is faster). rlx runs its
captured CUDA graphs with the inputs already on the device (as the peers do).

Then, from one profiled rlx run per row (CUDA events around every step, no graph): the
achieved fraction of the measured device copy bandwidth for the elementwise and row
kernels (bytes each step must read and write once over its time) and of the measured
cuBLAS throughput for the GEMM steps. Writes bench/results/runtime_gpu.json.

Every peer runs on every row. Each torch.compile peer starts from a reset of TorchDynamo and
compiles with ``dynamic=False`` (the rows share the forward's code objects: without the reset,
later rows recompiled under automatic dynamic shapes and, past Dynamo's cache limit, ran
eagerly). With ``--deadline S``, a peer whose compile would likely end past S seconds from the
start (judged from its compile time on earlier rows) is skipped and the row's JSON says so
(``<peer>_skipped``), so the run ends, with its JSON, inside a time limit.

    python bench/runtime_gpu.py [--rows llama-f16-b1,...] [--peers eager,compile,autotune] [--repeats 20]
                                [--deadline SECONDS]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import rlx
from rlx.ir import random_arrays

from common import cell, ms

LLAMA = dict(layers=4, d_model=4096, n_heads=32, d_ff=11008)
ROWS = {
    "llama-f16-b1": ("llama", dict(LLAMA, seq=512, batch=1, dtype="f16")),
    "llama-f16-b8": ("llama", dict(LLAMA, seq=512, batch=8, dtype="f16")),
    "llama-tf32-b1": ("llama", dict(LLAMA, seq=512, batch=1, dtype="f32")),
    "llama-tf32-b8": ("llama", dict(LLAMA, seq=512, batch=8, dtype="f32")),
    "bert-base-f16-b8": ("bert", dict(layers=12, d_model=768, n_heads=12, d_ff=3072, seq=128, batch=8, dtype="f16")),
    "decode-f16-b1": ("decode", dict(LLAMA, cache=1024, batch=1, dtype="f16")),
}


def build(kind: str, cfg: dict):
    if kind == "llama":
        return rlx.models.llama(**cfg)
    if kind == "bert":
        return rlx.models.bert(**cfg)
    return rlx.models.llama_decode(**cfg)


def torch_forward(kind: str, cfg: dict, params: dict, torch):
    """An idiomatic PyTorch forward of rlx's builders with rlx's weights (on the GPU)."""
    F = torch.nn.functional
    p = {k: torch.from_numpy(np.ascontiguousarray(v)).cuda() for k, v in params.items()}
    layers = cfg["layers"]
    h = cfg["n_heads"]

    def rms(x, w):
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(x.dtype) * w

    def rot(t, cos, sin):
        t1, t2 = t[..., : t.shape[-1] // 2], t[..., t.shape[-1] // 2:]
        return torch.cat([t1 * cos - t2 * sin, t2 * cos + t1 * sin], dim=-1)

    def proj(x, pre, name):
        y = x @ p[f"{pre}.{name}.weight"]
        return y + p[f"{pre}.{name}.bias"] if f"{pre}.{name}.bias" in p else y

    def heads(y, b, s, d):
        return y.view(b, s, h, d // h).transpose(1, 2)

    def llama(inputs):
        x, cos, sin = inputs["x"], inputs["rope_cos"], inputs["rope_sin"]
        b, s, d = x.shape
        for i in range(layers):
            pre = f"layer{i}.attn"
            n = rms(x, p[f"{pre}.norm.weight"])
            q, k, v = (heads(proj(n, pre, f"{c}_proj"), b, s, d) for c in "qkv")
            o = F.scaled_dot_product_attention(rot(q, cos, sin), rot(k, cos, sin), v, is_causal=True)
            x = x + proj(o.transpose(1, 2).reshape(b, s, d), pre, "o_proj")
            f = rms(x, p[f"layer{i}.ffn.norm.weight"])
            x = x + (F.silu(f @ p[f"layer{i}.ffn.gate.weight"]) * (f @ p[f"layer{i}.ffn.up.weight"])) \
                @ p[f"layer{i}.ffn.down.weight"]
        return (x,)

    def decode(inputs):
        x, cos, sin = inputs["x"], inputs["rope_cos"], inputs["rope_sin"]
        b, s, d = x.shape
        outs = []
        for i in range(layers):
            pre = f"layer{i}.attn"
            n = rms(x, p[f"{pre}.norm.weight"])
            q, k, v = (heads(proj(n, pre, f"{c}_proj"), b, s, d) for c in "qkv")
            kc = torch.cat([inputs[f"k_cache{i}"], rot(k, cos, sin)], dim=2)
            vc = torch.cat([inputs[f"v_cache{i}"], v], dim=2)
            o = F.scaled_dot_product_attention(rot(q, cos, sin), kc, vc)
            x = x + proj(o.transpose(1, 2).reshape(b, s, d), pre, "o_proj")
            f = rms(x, p[f"layer{i}.ffn.norm.weight"])
            x = x + (F.silu(f @ p[f"layer{i}.ffn.gate.weight"]) * (f @ p[f"layer{i}.ffn.up.weight"])) \
                @ p[f"layer{i}.ffn.down.weight"]
            outs += [kc, vc]
        return (x, *outs)

    def bert(inputs):
        x = inputs["x"]
        b, s, d = x.shape
        for i in range(layers):
            pre = f"layer{i}.attn"
            q, k, v = (heads(proj(x, pre, f"{c}_proj"), b, s, d) for c in "qkv")
            o = F.scaled_dot_product_attention(q, k, v)
            a = proj(o.transpose(1, 2).reshape(b, s, d), pre, "o_proj")
            x = F.layer_norm(x + a, (d,), p[f"{pre}.norm.weight"], p[f"{pre}.norm.bias"], 1e-5)
            pf = f"layer{i}.ffn"
            y = proj(F.gelu(proj(x, pf, "fc1")), pf, "fc2")
            x = F.layer_norm(x + y, (d,), p[f"{pf}.norm.weight"], p[f"{pf}.norm.bias"], 1e-5)
        return (x,)
    return {"llama": llama, "decode": decode, "bert": bert}[kind]


def event_times(fn, repeats: int, torch) -> list[float]:
    """Seconds of each of ``repeats`` calls by CUDA events (after 3 warm-ups)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) * 1e-3)
    return out


def ceilings(torch) -> dict:
    """Measured copy bandwidth (bytes read + written) and cuBLAS GEMM rates."""
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    t = min(event_times(lambda: y.copy_(x), 10, torch))
    out = {"copy_bytes_per_s": 2 * x.numel() / t}
    del x, y
    for dt in ("float16", "float32"):
        torch.backends.cuda.matmul.allow_tf32 = True
        a = torch.randn(8192, 8192, device="cuda", dtype=getattr(torch, dt))
        t = min(event_times(lambda: a @ a, 10, torch))
        out[f"gemm_flops_{'f16' if dt == 'float16' else 'tf32'}"] = 2 * 8192 ** 3 / t
    return out


def kernel_fractions(program, lir, ceil: dict, dtype: str) -> dict:
    """From one profiled run: elementwise/row kernels' bytes over time vs copy bandwidth,
    GEMM steps' FLOPs over time vs cuBLAS's."""
    from rlx.ir.dtypes import DType
    times = program.profile({e["name"]: program.read(e["name"]) for e in lir.manifest["inputs"]})
    node_of = {n.name: n for n in lir.source.nodes}
    mem_bytes = mem_t = gemm_flops = gemm_t = 0.0
    per_op: dict[str, list[float]] = {}
    for t in times:
        step = lir.steps[t.index]
        node = node_of[step.node]
        if t.dispatch == "view":
            continue
        nbytes = sum(math.prod(lir.values[v].shape) * DType(lir.values[v].dtype).itemsize
                     for v in list(step.inputs) + list(step.outputs))
        flops = float(node.opdef.flops([lir.values[v].shape for v in step.inputs],
                                       [lir.values[v].shape for v in step.outputs], step.attrs))
        gemm = step.op in ("matmul", "matmul_bias_act", "matmul_residual", "swiglu", "sdpa", "sdpa_nan_zero")
        if gemm:
            gemm_flops += flops
            gemm_t += t.seconds
        else:
            mem_bytes += nbytes
            mem_t += t.seconds
        acc = per_op.setdefault(step.op, [0.0, 0.0, 0])
        acc[0] += t.seconds
        acc[1] += nbytes
        acc[2] += 1
    peak = ceil["gemm_flops_f16" if dtype != "f32" else "gemm_flops_tf32"]
    return {"elementwise_bandwidth_fraction": (mem_bytes / mem_t) / ceil["copy_bytes_per_s"] if mem_t else None,
            "elementwise_ms": 1e3 * mem_t, "gemm_fraction_of_cublas": (gemm_flops / gemm_t) / peak if gemm_t else None,
            "gemm_ms": 1e3 * gemm_t, "profiled_total_ms": 1e3 * sum(t.seconds for t in times),
            "per_op": {op: {"ms": 1e3 * v[0], "GB_per_s": v[1] / v[0] / 1e9 if v[0] else None, "steps": v[2]}
                       for op, v in sorted(per_op.items(), key=lambda kv: -kv[1][0])}}


START = time.perf_counter()
# a peer's first call before any row measured it (on the lent H200: compile 3-7 s, max-autotune 21-49 s a row)
GUESS_S = {"eager": 10.0, "compile": 30.0, "autotune": 90.0}


def run_row(name: str, kind: str, cfg: dict, peers: list[str], repeats: int, ceil: dict, torch, console,
            deadline: float = 0.0, seen: dict | None = None) -> dict:
    dtype = cfg["dtype"]
    tf32 = dtype == "f32"
    os.environ["RLX_CUDA_TF32"] = "1" if tf32 else "0"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    graph = build(kind, cfg)
    t0 = time.perf_counter()
    result = rlx.compile(graph, target="cuda")
    compile_s = time.perf_counter() - t0
    arrays = random_arrays(graph, seed=0)
    ins = {n.name: arrays[n.name] for n in graph.inputs}
    ps = {n.name: arrays[n.name] for n in graph.params}
    t0 = time.perf_counter()
    out = result.run(ins, ps)  # binds, runs eagerly, captures the graphs
    first_s = time.perf_counter() - t0
    program = result.executor_for(ins)
    out = result.run(ins)  # a replay
    import cupy
    stream = torch.cuda.ExternalStream(program.stream.ptr)

    def rlx_step():
        program.launch()
    with torch.cuda.stream(stream):
        t_rlx = event_times(rlx_step, repeats, torch)
    row = {"row": name, "dtype": dtype, "tf32": tf32, "compile_s": compile_s, "first_run_s": first_s,
           "nodes": len(graph.nodes), "nodes_compiled": len(result.graph.nodes),
           "fused": dict(result.report.fused), **ms("rlx_ms", t_rlx)}
    tin = {k: torch.from_numpy(np.ascontiguousarray(v)).cuda() for k, v in ins.items()}
    fwd = torch_forward(kind, cfg, ps, torch)
    names = list(out)
    seen = {} if seen is None else seen
    for peer in peers:
        elapsed = time.perf_counter() - START
        expect = max(seen.get(peer, [GUESS_S.get(peer, 60.0)]))
        if deadline and elapsed + expect > deadline:
            why = (f"not run: {elapsed:.0f} s of the {deadline:.0f} s deadline spent, and its first call took up to "
                   f"{expect:.0f} s" + (" on earlier rows" if peer in seen else " (a guess: no earlier row)"))
            row[f"{peer}_skipped"] = why
            console.print(f"  {name} {peer}: {why}")
            continue
        if peer == "eager":
            fn = fwd
        else:
            torch._dynamo.reset()  # a fresh compile for this row's shapes and dtypes
            fn = torch.compile(fwd, mode="max-autotune" if peer == "autotune" else None, dynamic=False)
        with torch.inference_mode():
            t0 = time.perf_counter()
            got = fn(tin)
            torch.cuda.synchronize()
            warm_s = time.perf_counter() - t0
            seen.setdefault(peer, []).append(warm_s)
            err = 0.0
            for k, g in zip(names, got):
                ref = out[k].astype(np.float32)
                err = max(err, float(np.max(np.abs(g.float().cpu().numpy() - ref))) / max(1.0, float(np.max(np.abs(ref)))))
            t = event_times(lambda: fn(tin), repeats, torch)
        row.update({**ms(f"{peer}_ms", t), f"{peer}_rel_err_vs_rlx": err, f"{peer}_first_call_s": warm_s})
        console.print(f"  {name} {peer}: {row[f'{peer}_ms']:.3f} ms (rel err vs rlx {err:.1e}, first call {warm_s:.1f} s)")
    row.update(kernel_fractions(program, program.lir, ceil, dtype))
    console.print(f"  {name} rlx: {row['rlx_ms']:.3f} ms; elementwise at "
                  f"{(row['elementwise_bandwidth_fraction'] or 0):.0%} of copy bandwidth, GEMMs at "
                  f"{(row['gemm_fraction_of_cublas'] or 0):.0%} of cuBLAS")
    del program, result
    cupy.get_default_memory_pool().free_all_blocks()
    torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--peers", default="eager,compile,autotune")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "runtime_gpu.json"))
    ap.add_argument("--deadline", type=float, default=0.0,
                    help="skip a peer whose compile would likely end past this many seconds from the start")
    args = ap.parse_args()
    import torch
    console = Console(width=200)
    ceil = ceilings(torch)
    console.print(f"ceilings: copy {ceil['copy_bytes_per_s'] / 1e12:.2f} TB/s, f16 GEMM "
                  f"{ceil['gemm_flops_f16'] / 1e12:.0f} TFLOP/s, TF32 GEMM {ceil['gemm_flops_tf32'] / 1e12:.0f} TFLOP/s")
    peers = [p for p in args.peers.split(",") if p]
    rows = []
    seen: dict[str, list[float]] = {}
    for name in args.rows.split(","):
        kind, cfg = ROWS[name]
        try:
            rows.append(run_row(name, kind, cfg, peers, args.repeats, ceil, torch, console, args.deadline, seen))
        except Exception as e:  # a peer that fails to compile is reported, not fatal
            console.print(f"  {name}: failed: {type(e).__name__}: {e}")
            rows.append({"row": name, "error": f"{type(e).__name__}: {e}"})
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"benchmark": "runtime_gpu", "device": torch.cuda.get_device_name(),
                                              "machine": platform.platform(), "torch": torch.__version__,
                                              "peers": peers, "repeats": args.repeats, "deadline_s": args.deadline,
                                              "elapsed_s": time.perf_counter() - START, "ceilings": ceil,
                                              "rows": rows}, indent=2))
    table = Table(title=f"GPU runtime on {torch.cuda.get_device_name()} (median of {args.repeats} by CUDA events, "
                        "min-max, ms); ratio = peer / rlx")
    for col in ["row", "rlx"] + [f"{p}" for p in peers] + [f"{p}/rlx" for p in peers] + ["elementwise BW", "GEMM/cuBLAS"]:
        table.add_column(col, justify="right")
    for r in rows:
        if "error" in r:
            table.add_row(r["row"], r["error"][:60], *[""] * (2 * len(peers) + 2))
            continue
        table.add_row(r["row"], cell(r, "rlx_ms", 2), *[cell(r, f"{p}_ms", 2) for p in peers],
                      *[f"{r[f'{p}_ms'] / r['rlx_ms']:.2f}x" if f"{p}_ms" in r else
                        ("skipped" if f"{p}_skipped" in r else "-") for p in peers],
                      f"{r['elementwise_bandwidth_fraction']:.0%}" if r.get("elementwise_bandwidth_fraction") else "-",
                      f"{r['gemm_fraction_of_cublas']:.0%}" if r.get("gemm_fraction_of_cublas") else "-")
    console.print(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
