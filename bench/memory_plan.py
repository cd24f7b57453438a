"""Memory planning (issue 5): arena bytes against the liveness lower bound and no reuse.

For mlp, bert and llama graphs of several sizes, as built (unfused) and as compiled for the
cpu target, plans the LIR and prints: arena bytes, the liveness lower bound (max over
schedule steps of the aligned bytes live at that step), arena / bound (goal <= 1.05), the
bytes with no reuse and the saving, views, in-place steps and the planning time. Writes
bench/results/memory_plan.json.

    python bench/memory_plan.py
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import rlx
from rlx.plan import plan
from rlx.rules import load

MODELS = {
    "mlp 4x1024": lambda: rlx.models.mlp(layers=4, d_in=1024, d_hidden=4096, batch=64),
    "mlp 16x1024": lambda: rlx.models.mlp(layers=16, d_in=1024, d_hidden=4096, batch=64),
    "bert 2x256": lambda: rlx.models.bert(layers=2, d_model=256, n_heads=4, seq=128),
    "bert 12x768": lambda: rlx.models.bert(layers=12, d_model=768, n_heads=12, seq=128),
    "llama 2x256": lambda: rlx.models.llama(layers=2, d_model=256, n_heads=4, seq=128),
    "llama 4x1024": lambda: rlx.models.llama(layers=4, d_model=1024, n_heads=16, d_ff=2816, seq=128),
    "llama 16x1024": lambda: rlx.models.llama(layers=16, d_model=1024, n_heads=16, d_ff=2816, seq=128),
}


def main() -> None:
    rules = load()
    rows = []
    for name, build in MODELS.items():
        g = build()
        for form, graph in (("unfused", g), ("compiled", rlx.compile(g, rules=rules).graph)):
            t = time.perf_counter()
            lir = plan(graph, alignment=64)
            dt = time.perf_counter() - t
            s = lir.summary()
            rows.append({"model": name, "form": form, "nodes": len(graph.nodes), "plan_s": dt, **s})
    table = Table(title="LIR memory plans (cpu alignment 64 B)")
    for col in ("model", "form", "nodes", "arena MiB", "lower bound MiB", "arena/bound", "no reuse MiB",
                "saved %", "views", "in place", "plan ms"):
        table.add_column(col, justify="right")
    mib = 2 ** 20
    for r in rows:
        table.add_row(r["model"], r["form"], str(r["nodes"]), f"{r['arena_bytes'] / mib:.2f}",
                      f"{r['lower_bound_bytes'] / mib:.2f}", f"{r['arena_over_bound']:.3f}",
                      f"{r['no_reuse_bytes'] / mib:.2f}", f"{r['saved_pct']:.1f}", str(r["views"]),
                      str(r["in_place"]), f"{r['plan_s'] * 1e3:.0f}")
    Console(width=180).print(table)
    worst = max(r["arena_over_bound"] for r in rows)
    print(f"worst arena/bound: {worst:.3f} (goal <= 1.05)")
    out = Path(__file__).parent / "results" / "memory_plan.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "memory_plan", "machine": platform.platform(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
