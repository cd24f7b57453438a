"""CPU runtime (issues 6, 8 and 17): compiled rlx vs the reference interpreter on the
unfused graph and vs PyTorch eager, on a 4-layer Llama block stack and a BERT-base-sized
stack, f32, batch 1; and, on the same sizes exported from PyTorch with torch.onnx.export, rlx
(imported with rlx.frontends.onnx, compiled for cpu) vs ONNX Runtime (CPU provider, all graph
optimizations) at batch 1 and 8, with the share of rlx's time in its GEMM steps (matmul, GEMM
+ epilogue, attention) and the GFLOP/s they reach against NumPy's sgemm here.

PyTorch runs idiomatic eager modules (F.scaled_dot_product_attention, F.layer_norm,
F.gelu, F.silu) with the same weights; its outputs are checked against rlx's before
timing; so are ONNX Runtime's. Medians of --repeats runs in one process, with min and max;
ratios are peer time / rlx time (above 1: rlx is faster). All use 2 threads. NumPy's
OpenBLAS runs the fastest of its kernels on this machine, measured first (rlx.exec.blas; the
script restarts itself with OPENBLAS_CORETYPE set; --blas-default keeps OpenBLAS's pick).
rlx is timed before ONNX Runtime's session is made
(its threads spin after its runs and slowed rlx by up to 20% when timed after it). Writes bench/results/runtime_cpu.json.

    python bench/runtime_cpu.py [--repeats 15] [--skip-onnx] [--blas-default]   (needs the test extra)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import rlx
from rlx.exec.blas import rerun_with_fastest
from rlx.extract.calibrate import sample_seconds as timed
from rlx.ir import interpret, random_arrays

from common import cell, ms

MODELS = {
    "llama 4x1024 (d_ff 2816, seq 128)": lambda: rlx.models.llama(layers=4, d_model=1024, n_heads=16, d_ff=2816,
                                                                   seq=128, batch=1),
    "bert-base 12x768 (seq 128)": lambda: rlx.models.bert(layers=12, d_model=768, n_heads=12, d_ff=3072, seq=128,
                                                          batch=1),
}


def torch_model(graph, params, torch):
    """An idiomatic PyTorch eager forward for rlx's llama/bert builders, with their weights."""
    F = torch.nn.functional
    p = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}
    layers = sorted({k.split(".")[0] for k in p if k.startswith("layer")}, key=lambda s: int(s[5:]))
    llama = any(k.endswith("ffn.gate.weight") for k in p)

    def attn(x, pre, cos=None, sin=None):
        b, s, d = x.shape
        h = graph_heads
        def heads(name):
            y = x @ p[f"{pre}.{name}.weight"]
            if f"{pre}.{name}.bias" in p:
                y = y + p[f"{pre}.{name}.bias"]
            return y.view(b, s, h, d // h).transpose(1, 2)
        q, k, v = heads("q_proj"), heads("k_proj"), heads("v_proj")
        if cos is not None:
            def rot(t):
                t1, t2 = t[..., : t.shape[-1] // 2], t[..., t.shape[-1] // 2:]
                return torch.cat([t1 * cos - t2 * sin, t2 * cos + t1 * sin], dim=-1)
            q, k = rot(q), rot(k)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=llama, scale=1 / math.sqrt(d // h))
        o = o.transpose(1, 2).reshape(b, s, d) @ p[f"{pre}.o_proj.weight"]
        return o + p[f"{pre}.o_proj.bias"] if f"{pre}.o_proj.bias" in p else o

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    def forward(inputs):
        x = torch.from_numpy(inputs["x"])
        if llama:
            cos, sin = torch.from_numpy(inputs["rope_cos"]), torch.from_numpy(inputs["rope_sin"])
            for L in layers:
                x = x + attn(rms(x, p[f"{L}.attn.norm.weight"]), f"{L}.attn", cos, sin)
                hdn = rms(x, p[f"{L}.ffn.norm.weight"])
                x = x + (F.silu(hdn @ p[f"{L}.ffn.gate.weight"]) * (hdn @ p[f"{L}.ffn.up.weight"])) @ p[f"{L}.ffn.down.weight"]
            return x
        d = x.shape[-1]
        for L in layers:
            x = F.layer_norm(x + attn(x, f"{L}.attn"), (d,), p[f"{L}.attn.norm.weight"], p[f"{L}.attn.norm.bias"], 1e-12)
            hdn = F.gelu(x @ p[f"{L}.ffn.fc1.weight"] + p[f"{L}.ffn.fc1.bias"]) @ p[f"{L}.ffn.fc2.weight"] + p[f"{L}.ffn.fc2.bias"]
            x = F.layer_norm(x + hdn, (d,), p[f"{L}.ffn.norm.weight"], p[f"{L}.ffn.norm.bias"], 1e-12)
        return x
    graph_heads = next(n for n in graph.nodes if n.op == "reshape").attrs["shape"][2]
    return forward


ONNX_MODELS = {  # name: (tests/onnx_models.py model, its sizes, sequence length)
    "llama 4x1024 (d_ff 2816, seq 128)": ("llama", dict(layers=4, d=1024, heads=16, ff=2816, max_seq=128), 128),
    "bert-base 12x768 (seq 128)": ("bert", dict(layers=12, d=768, heads=12, ff=3072), 128),
}


GEMM_SKELETONS = ("Gemm", "Attention", "Conv")


def gemm_share(result, feeds: dict, repeats: int = 3) -> dict[str, float]:
    """From per-step timings (the executor's profile, median of ``repeats``): the fraction of
    the run spent in steps that multiply matrices (matmul, GEMM + epilogue, attention,
    convolution) and the GFLOP/s those steps reach, by the registry's FLOP count."""
    from rlx.ir.dtypes import DType
    from rlx.ir.registry import REGISTRY, TensorType
    from rlx.kernels.lower import kernel_for
    prog = result.executor_for(feeds)
    runs = [prog.profile(feeds) for _ in range(repeats)]
    steps = {s.index: s for s in prog.lir.steps}
    flops, gemm = {}, set()
    for t in runs[0]:
        step = steps[t.index]
        ins = [prog.lir.values[n] for n in step.inputs]
        outs = [prog.lir.values[n] for n in step.outputs]
        kernel = kernel_for(step.op, [TensorType(v.shape, DType(v.dtype)) for v in ins], step.attrs)
        if step.op == "matmul" or (kernel is not None and type(kernel.skeleton).__name__ in GEMM_SKELETONS):
            gemm.add(t.index)
            flops[t.index] = float(REGISTRY.get(step.op).flops([v.shape for v in ins], [v.shape for v in outs],
                                                              step.attrs))
    total = statistics.median(sum(t.seconds for t in r) for r in runs)
    in_gemm = statistics.median(sum(t.seconds for t in r if t.index in gemm) for r in runs)
    return {"gemm_fraction": in_gemm / total, "gemm_gflops": sum(flops.values()) / in_gemm / 1e9,
            "gemm_steps": len(gemm), "profiled_ms": 1e3 * total}


def sgemm_peak(repeats: int = 9) -> float:
    """This machine's sgemm GFLOP/s through NumPy at 1024³ with all its threads (the peak
    the GEMM steps are measured against)."""
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    c = np.empty_like(a)
    return 2 * 1024 ** 3 / statistics.median(timed(lambda: np.matmul(a, a, out=c), repeats)) / 1e9


def ort_session(path: Path, level: str = "ORT_ENABLE_ALL"):
    """ONNX Runtime on the CPU provider, 2 threads, every graph optimization (``level``:
    ``ORT_ENABLE_EXTENDED`` keeps every fusion but not the NCHWc layout of convolutions)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 2, 1
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def exported_path(name: str) -> Path:
    """The ONNX file of an exported stack of ``ONNX_MODELS`` (exported on first use)."""
    kind, cfg, seq = ONNX_MODELS[name]
    path = Path(__file__).parent / "out" / f"{kind}_{cfg['layers']}x{cfg['d']}.onnx"
    if not path.exists():
        sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
        from onnx_models import export
        path.parent.mkdir(parents=True, exist_ok=True)
        export(kind, str(path), seq=seq, **cfg)
    return path


def exported_feeds(name: str, batch: int) -> dict[str, np.ndarray]:
    """Seeded inputs of an exported stack at ``batch``."""
    kind, cfg, seq = ONNX_MODELS[name]
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((batch, seq, cfg["d"])).astype(np.float32)}
    if kind == "bert":
        feeds["mask"] = rng.standard_normal((batch, 1, 1, seq)).astype(np.float32)
    return feeds


def onnx_rows(repeats: int, console: Console, batches: tuple[int, ...] = (1, 8)) -> list[dict]:
    """rlx vs ONNX Runtime on models exported from PyTorch, same inputs, same run."""
    from rlx.frontends.onnx import load
    rows = []
    for name, (kind, cfg, seq) in ONNX_MODELS.items():
        with console.status(f"exporting {name} with torch.onnx.export (once) ..."):
            path = exported_path(name)
        graph = load(path)
        runs = []  # rlx first: ONNX Runtime's threads spin after its runs and would slow whatever runs next
        for batch in batches:
            result = rlx.compile(graph, target="cpu", binding={"B": batch, "S": seq})
            feeds = exported_feeds(name, batch)
            got = result.run(feeds)["y"]
            runs.append((batch, result, feeds, got, timed(lambda: result.run(feeds), repeats), gemm_share(result, feeds)))
        sess = ort_session(path)
        for batch, result, feeds, got, t_rlx, share in runs:
            want = sess.run(None, feeds)[0]
            t_ort = timed(lambda: sess.run(None, feeds), repeats)
            rows.append({"model": f"{name}, exported, batch {batch}", "batch": batch, "nodes": len(graph.nodes),
                         "nodes_compiled": len(result.graph.nodes), "fused": dict(result.report.fused),
                         "max_err_vs_onnxruntime": float(np.max(np.abs(got - want))),
                         **ms("rlx_ms", t_rlx), **ms("ort_ms", t_ort), **share})
        del sess
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--skip-onnx", action="store_true", help="leave out the exported models and ONNX Runtime")
    ap.add_argument("--blas-default", action="store_true",
                    help="keep OpenBLAS's own kernel (default: the fastest of its kernels, measured; rlx.exec.blas)")
    args = ap.parse_args()
    coretype = os.environ.get("OPENBLAS_CORETYPE", "") if args.blas_default else rerun_with_fastest()
    print(f"OpenBLAS kernel: {coretype or 'its own pick'}")
    try:
        import torch
        torch.set_num_threads(2)
    except ImportError:
        torch = None
        print("PyTorch is not installed (pip install torch==2.13.0): its column is left out")
    rows = []
    for name, build in MODELS.items():
        graph = build()
        result = rlx.compile(graph, target="cpu")
        arrays = random_arrays(graph, seed=0)
        ins = {n.name: arrays[n.name].astype(np.float32) for n in graph.inputs}
        ps = {n.name: arrays[n.name].astype(np.float32) for n in graph.params}
        out = result.run(ins, ps)
        ref = interpret(graph, ins, ps)
        key = next(iter(ref))
        err = float(np.max(np.abs(out[key] - ref[key])))
        t_rlx = timed(lambda: result.run(ins), args.repeats)
        t_ref = timed(lambda: interpret(graph, ins, ps, dtype="native"), max(3, args.repeats // 3))
        row = {"model": name, "nodes": len(graph.nodes), "nodes_compiled": len(result.graph.nodes),
               "max_err_vs_reference": err, **ms("rlx_ms", t_rlx), **ms("unfused_ms", t_ref)}
        if torch is not None:
            fwd = torch_model(graph, ps, torch)
            with torch.inference_mode():
                terr = float(np.max(np.abs(fwd(ins).numpy() - out[key])))
                t_pt = timed(lambda: fwd(ins), args.repeats)
            row.update(**ms("torch_ms", t_pt), torch_max_err_vs_rlx=terr)
        rows.append(row)
    table = Table(title=f"CPU runtime, f32, batch 1 (median of {args.repeats}, min-max)")
    for col in ("model", "MIR nodes (compiled)", "rlx ms", "unfused interpreter ms", "unfused / rlx",
                "PyTorch eager ms", "PyTorch / rlx", "max err"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["model"], f"{r['nodes']} ({r['nodes_compiled']})",
                      cell(r, "rlx_ms"),
                      cell(r, "unfused_ms"),
                      f"{r['unfused_ms'] / r['rlx_ms']:.2f}x",
                      cell(r, "torch_ms"),
                      f"{r['torch_ms'] / r['rlx_ms']:.2f}x" if "torch_ms" in r else "-",
                      f"{r['max_err_vs_reference']:.1e} / {r.get('torch_max_err_vs_rlx', float('nan')):.1e}")
    console = Console(width=180)
    console.print(table)
    print("max err: rlx vs the reference interpreter / PyTorch vs rlx")
    exported = [] if args.skip_onnx else onnx_rows(args.repeats, console)
    if exported:
        peak = sgemm_peak()
        t2 = Table(title=f"exported from PyTorch: rlx vs ONNX Runtime, f32 (median of {args.repeats}, min-max); "
                         f"GEMM steps against NumPy's 1024³ sgemm here, {peak:.0f} GFLOP/s "
                         "(rlx's compiled GEMM packs its weights once and can pass it)")
        for col in ("model", "ONNX → MIR nodes (compiled)", "rlx ms", "onnxruntime ms", "onnxruntime / rlx",
                    "time in GEMM steps", "their GFLOP/s (of sgemm)", "max err vs onnxruntime", "fused"):
            t2.add_column(col, justify="right")
        for r in exported:
            r["sgemm_peak_gflops"] = peak
            t2.add_row(r["model"], f"{r['nodes']} ({r['nodes_compiled']})",
                       cell(r, "rlx_ms"),
                       cell(r, "ort_ms"),
                       f"{r['ort_ms'] / r['rlx_ms']:.2f}x", f"{100 * r['gemm_fraction']:.0f}%",
                       f"{r['gemm_gflops']:.0f} ({100 * r['gemm_gflops'] / peak:.0f}%)",
                       f"{r['max_err_vs_onnxruntime']:.1e}",
                       ", ".join(f"{k} {v}" for k, v in sorted(r["fused"].items())))
        console.print(t2)
    rows += exported
    out = Path(__file__).parent / "results" / "runtime_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "runtime_cpu", "machine": platform.platform(), "openblas_coretype": coretype, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
