"""Compile time of the e-graph optimizer on Llama-style stacks (issue 3).

Measures rlx.compile with the shipped rules on rlx.models.llama(layers=L, d_model=4096,
n_heads=32, d_ff=11008) for L in 1, 8, 32, 128, 512: the time of each phase (rule setup,
load, saturate, freeze, extract), the total, and the total without rule setup (load +
saturate + freeze + extract, the part that depends on the model) per layer. Medians of
repeated runs in one process, with min and max. Writes bench/results/compile_time.json.

    python bench/compile_time.py [--layers 1 8 32] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import rlx
from rlx.rules import load

PHASES = ("rules", "load", "saturate", "freeze", "extract")


def measure(layers: int, repeats: int, rules) -> dict:
    graph = rlx.models.llama(layers=layers, d_model=4096, n_heads=32, d_ff=11008)
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = rlx.compile(graph, rules=rules)
        total = time.perf_counter() - t
        runs.append({"total": total, **result.report.times})
    report = result.report
    model = [sum(r[p] for p in PHASES if p != "rules") for r in runs]
    return {
        "layers": layers, "nodes": len(graph.nodes), "repeats": repeats,
        "total_median": statistics.median(r["total"] for r in runs),
        "total_min": min(r["total"] for r in runs), "total_max": max(r["total"] for r in runs),
        "model_median": statistics.median(model), "model_min": min(model), "model_max": max(model),
        "per_layer_ms": 1e3 * statistics.median(model) / layers,
        "phases_median": {p: statistics.median(r[p] for r in runs) for p in PHASES},
        "eclasses": report.egraph.eclasses, "enodes": report.egraph.enodes,
        "iterations": report.egraph.iterations, "stop": report.egraph.stop,
        "nodes_after": report.nodes_after, "missed": len(report.missed),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 8, 32, 128, 512])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "compile_time.json"))
    args = ap.parse_args()
    rules = load()
    rlx.compile(rlx.models.llama(layers=1, d_model=64, n_heads=2), rules=rules)  # warm caches
    rows = [measure(L, args.repeats if L <= 128 else max(1, args.repeats // 2), rules) for L in args.layers]
    table = Table(title="rlx.compile on llama(d_model=4096, n_heads=32, d_ff=11008), shipped rules, cpu target")
    for col in ("layers", "MIR nodes", "total s (min-max)", "model s (min-max)", "ms/layer",
                "rules", "load", "saturate", "freeze", "extract", "e-nodes", "iters", "stop"):
        table.add_column(col, justify="right")
    for r in rows:
        ph = r["phases_median"]
        table.add_row(str(r["layers"]), str(r["nodes"]),
                      f"{r['total_median']:.3f} ({r['total_min']:.3f}-{r['total_max']:.3f})",
                      f"{r['model_median']:.3f} ({r['model_min']:.3f}-{r['model_max']:.3f})",
                      f"{r['per_layer_ms']:.1f}", *(f"{ph[p]:.3f}" for p in PHASES),
                      str(r["enodes"]), str(r["iterations"]), r["stop"])
    Console(width=180).print(table)
    print("model = load + saturate + freeze + extract (rule setup excluded: it does not depend on the model)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "compile_time", "machine": platform.platform(),
                               "python": platform.python_version(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
