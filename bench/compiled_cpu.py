"""Compiled CPU kernels against the NumPy printer's (issue 17): each model compiled twice for
cpu, once with the C++ printer's kernels (rlx.exec.c_print, compiled by rlx.exec.cc) and once
with RLX_CC=0 (every step on the NumPy printer's kernels), the two programs run alternately on
the same inputs so that this machine's drifts hit both alike; outputs checked against each
other first. Medians of --repeats pairs with min and max; speedup = NumPy kernels / compiled.
Writes bench/results/compiled_cpu.json.

    python bench/compiled_cpu.py [--repeats 9] [--models llama_4x1024,mobilenet_v3]
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
from rlx.exec import cc
from rlx.exec.blas import rerun_with_fastest
from rlx.frontends.onnx import load
from rlx.pipeline import max_error

from common import cell, ms
from models_cpu import feeds_for
from runtime_cpu import exported_feeds, exported_path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from real_models import TEXT, VISION, export  # noqa: E402

OUT = Path(__file__).parent / "out"
STACKS = {"llama_4x1024": "llama 4x1024 (d_ff 2816, seq 128)", "bert_12x768": "bert-base 12x768 (seq 128)"}


def model(name: str) -> tuple[Path, dict[str, np.ndarray]]:
    """The ONNX file and inputs of a benchmark model: an exported stack of runtime_cpu.py or a
    real model of models_cpu.py (exported once, as those scripts do)."""
    if name in STACKS:  # runtime_cpu.py's exported stacks
        return exported_path(STACKS[name]), exported_feeds(STACKS[name], 1)
    path = OUT / f"{name}_full.onnx"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        export(name, path, "dynamo", full=True)
    return path, feeds_for(name, np.random.default_rng(0))


def row(name: str, repeats: int) -> dict:
    path, feeds = model(name)
    graph = load(path)
    programs = {}
    for kind, env in (("numpy", "0"), ("compiled", "")):
        os.environ["RLX_CC"] = env
        result = rlx.compile(graph, target="cpu")
        result.executor_for(feeds)  # prepared now, with this setting
        programs[kind] = result
    os.environ["RLX_CC"] = ""
    got = {k: next(iter(p.run(feeds).values())) for k, p in programs.items()}
    err, tol = max_error(got["compiled"], got["numpy"].astype(np.float64), "f32")
    samples: dict[str, list[float]] = {k: [] for k in programs}
    for _ in range(repeats):
        for kind, p in programs.items():
            t = time.perf_counter()
            p.run(feeds)
            samples[kind].append(time.perf_counter() - t)
    return {"model": name, **ms("numpy_ms", samples["numpy"]), **ms("compiled_ms", samples["compiled"]),
            "max_err": err, "tolerance": tol}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--models", default=",".join(list(STACKS) + list(TEXT) + list(VISION)))
    args = ap.parse_args()
    if cc.available() is not None:
        print(f"no compiled kernels here: {cc.available()}")
        sys.exit(2)
    coretype = rerun_with_fastest()
    rows = [row(name, args.repeats) for name in args.models.split(",")]
    table = Table(title=f"Compiled CPU kernels vs the NumPy printer's, f32, batch 1 (median of {args.repeats} "
                        "alternated pairs, min-max)")
    for col in ("model", "NumPy kernels ms", "compiled ms", "speedup", "max diff (tol)"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["model"], cell(r, "numpy_ms"), cell(r, "compiled_ms"), f"{r['numpy_ms'] / r['compiled_ms']:.2f}x",
                      f"{r['max_err']:.1e} ({r['tolerance']:.0e})")
    Console(width=160).print(table)
    out = Path(__file__).parent / "results" / "compiled_cpu.json"
    out.write_text(json.dumps({"benchmark": "compiled_cpu", "machine": platform.platform(), "openblas_coretype": coretype,
                               "compiler": cc._compiler(os.environ.get("RLX_CC", ""))[1],
                               "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
