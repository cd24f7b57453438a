"""Greedy vs exact extraction (issue 4): cost and time on Llama stacks of 1, 2, 4, 8 layers.

For each target and model size, the same saturated e-graph is extracted twice: by the
DAG-aware greedy extractor and by the ILP (HiGHS, time limit from --seconds). Prints the
predicted cost of the input program, of each extraction, their ratio, the solver's status
and gap, and the extraction times (medians of --repeats runs). Writes
bench/results/extraction.json.

    python bench/extraction.py [--layers 1 2 4 8] [--targets cpu cuda vulkan-basic] [--seconds 60]
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
from rlx.extract.exact import extract_exact
from rlx.extract.greedy import extract
from rlx.pipeline import saturate_program
from rlx.rules import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--targets", nargs="+", default=["cpu", "cuda", "vulkan-basic"])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "extraction.json"))
    args = ap.parse_args()
    rules = load()
    rows = []
    for target in args.targets:
        for layers in args.layers:
            graph = rlx.models.llama(layers=layers, d_model=1024, n_heads=16, d_ff=2816, seq=128)
            s = saturate_program(graph, target=target, rules=rules)
            v, roots, cost = s.view, s.roots, s.node_cost
            g_times, e_times = [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                greedy = extract(v, roots, cost, s.original, s.order)
                g_times.append(time.perf_counter() - t)
                t = time.perf_counter()
                _, info = extract_exact(v, roots, cost, greedy, args.seconds)
                e_times.append(time.perf_counter() - t)
            exact_cost = info.get("exact_cost")
            rows.append({
                "target": target, "layers": layers, "enodes": v.n_nodes, "eclasses": len(v.classes),
                "input_cost": greedy.initial_cost, "greedy_cost": greedy.cost, "exact_cost": exact_cost,
                "greedy_over_exact": greedy.cost / exact_cost if exact_cost else None,
                "status": info["status"], "gap": info["gap"], "variables": info["variables"],
                "greedy_s": statistics.median(g_times), "exact_s": statistics.median(e_times),
                "exact_s_min": min(e_times), "exact_s_max": max(e_times)})
    table = Table(title="greedy vs exact extraction, llama(d_model=1024, n_heads=16, d_ff=2816, seq=128)")
    for col in ("target", "layers", "e-nodes", "input us", "greedy us", "exact us", "greedy/exact", "status", "gap",
                "greedy ms", "exact ms (min-max)"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["target"], str(r["layers"]), str(r["enodes"]), f"{r['input_cost'] * 1e6:.1f}",
                      f"{r['greedy_cost'] * 1e6:.3f}", f"{r['exact_cost'] * 1e6:.3f}" if r["exact_cost"] else "-",
                      f"{r['greedy_over_exact']:.6f}" if r["greedy_over_exact"] else "-", r["status"],
                      f"{r['gap']:.1e}" if r["gap"] is not None else "-", f"{r['greedy_s'] * 1e3:.1f}",
                      f"{r['exact_s'] * 1e3:.0f} ({r['exact_s_min'] * 1e3:.0f}-{r['exact_s_max'] * 1e3:.0f})")
    Console(width=180).print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "extraction", "machine": platform.platform(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
