"""Real models on the CPU (issue 15): Hugging Face GPT-2, BERT and Llama (12 layers of 768,
Llama with grouped-query attention; vocabulary 100) and torchvision ResNet-50,
MobileNetV3-Large and ViT-B/16, random weights, exported with torch.onnx.export (dynamo),
batch 1, sequence 128 / image 224.

For each: export, import and compile times; rlx vs ONNX Runtime (CPU provider, 2 threads,
all graph optimizations) in the same run on the same inputs, outputs checked against each
other first; MIR node counts before and after; the fusions. Medians of --repeats with min
and max; the ratio is onnxruntime / rlx (above 1: rlx is faster). NumPy's OpenBLAS runs the
fastest of its kernels here, measured first (rlx.exec.blas; --blas-default keeps its pick). rlx is timed before ONNX Runtime's session is made
(its threads spin after its runs and slowed rlx by up to 20% when timed after it).
--without-nchwc also times ONNX Runtime with every fusion but its NCHWc layout of
convolutions (ORT_ENABLE_EXTENDED): how much of a vision model's time is that layout. Writes
bench/results/models_cpu.json.

    python bench/models_cpu.py [--repeats 7] [--models resnet50,vit] [--without-nchwc]   (needs the test extra)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import rlx
from rlx.exec.blas import rerun_with_fastest
from rlx.extract.calibrate import sample_seconds as timed
from rlx.frontends.onnx import load
from rlx.pipeline import max_error

from runtime_cpu import ort_session

from common import cell, ms

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from real_models import TEXT, VISION, VOCAB, export, image_size  # noqa: E402

SEQ = 128


def feeds_for(name: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if name in TEXT:
        return {"x": rng.integers(0, VOCAB, (1, SEQ))}
    s = image_size(name, full=True)
    return {"x": rng.standard_normal((1, 3, s, s)).astype(np.float32)}


def row(name: str, repeats: int, console: Console, without_nchwc: bool = False) -> dict:
    path = Path(__file__).parent / "out" / f"{name}_full.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if not path.exists():
        with console.status(f"exporting {name} with torch.onnx.export (dynamo) ..."):
            export(name, path, "dynamo", full=True)
    t_export = time.perf_counter() - t
    t = time.perf_counter()
    graph = load(path)
    t_import = time.perf_counter() - t
    t = time.perf_counter()
    result = rlx.compile(graph, target="cpu")
    t_compile = time.perf_counter() - t
    feeds = feeds_for(name, np.random.default_rng(0))
    got = next(iter(result.run(feeds).values()))
    t_rlx = timed(lambda: result.run(feeds), repeats)  # first: ONNX Runtime's threads spin after its runs
    sess = ort_session(path)
    want = sess.run(None, feeds)[0]
    err, tol = max_error(got, want.astype(np.float64), "f32")
    t_ort = timed(lambda: sess.run(None, feeds), repeats)
    del sess
    nchw = {}
    if without_nchwc:
        sess = ort_session(path, "ORT_ENABLE_EXTENDED")
        sess.run(None, feeds)
        nchw = ms("ort_nchw_ms", timed(lambda: sess.run(None, feeds), repeats))
        del sess
    return {"model": name, "export_s": t_export, "import_s": t_import, "compile_s": t_compile,
            "nodes": result.report.nodes_before, "nodes_compiled": result.report.nodes_after,
            "folded": result.report.folded, "fused": dict(result.report.fused),
            "missed": [(m.rule, m.reason) for m in result.report.missed],
            "max_err_vs_onnxruntime": err, "tolerance": tol, **ms("rlx_ms", t_rlx), **ms("ort_ms", t_ort), **nchw}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--models", default=",".join(TEXT + VISION))
    ap.add_argument("--blas-default", action="store_true",
                    help="keep OpenBLAS's own kernel (default: the fastest of its kernels, measured; rlx.exec.blas)")
    ap.add_argument("--without-nchwc", action="store_true",
                    help="also time ONNX Runtime without its NCHWc layout (ORT_ENABLE_EXTENDED)")
    args = ap.parse_args()
    coretype = os.environ.get("OPENBLAS_CORETYPE", "") if args.blas_default else rerun_with_fastest()
    print(f"OpenBLAS kernel: {coretype or 'its own pick'}")
    import torch
    torch.set_num_threads(2)
    console = Console(width=200)
    rows = [row(name, args.repeats, console, args.without_nchwc) for name in args.models.split(",")]
    table = Table(title=f"Real models, CPU, f32, batch 1, seq {SEQ} / image 224 (median of {args.repeats}, min-max)")
    nchw = ["onnxruntime ms, no NCHWc", "no NCHWc / rlx"] if args.without_nchwc else []
    for col in ("model", "import s", "compile s", "MIR nodes (compiled)", "rlx ms", "onnxruntime ms",
                "onnxruntime / rlx", *nchw, "max err (tol)", "fused"):
        table.add_column(col, justify="right")
    for r in rows:
        extra = [cell(r, "ort_nchw_ms"), f"{r['ort_nchw_ms'] / r['rlx_ms']:.2f}x"] if nchw else []
        table.add_row(r["model"], f"{r['import_s']:.2f}", f"{r['compile_s']:.2f}",
                      f"{r['nodes']} ({r['nodes_compiled']})", cell(r, "rlx_ms"), cell(r, "ort_ms"),
                      f"{r['ort_ms'] / r['rlx_ms']:.2f}x", *extra,
                      f"{r['max_err_vs_onnxruntime']:.1e} ({r['tolerance']:.0e})",
                      ", ".join(f"{k} {v}" for k, v in sorted(r["fused"].items())))
    console.print(table)
    for r in rows:
        if r["max_err_vs_onnxruntime"] > r["tolerance"]:
            console.print(f"[red]{r['model']}: rlx and onnxruntime differ by {r['max_err_vs_onnxruntime']:.3g}")
    out = Path(__file__).parent / "results" / "models_cpu.json"
    out.write_text(json.dumps({"benchmark": "models_cpu", "machine": platform.platform(), "openblas_coretype": coretype,
                               "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
