"""Fused ops on the NumPy executor (issue 12): each one's generated kernel against the same
program unfused (compiled with no rules: every op its own kernel), in one run.

The three user ops are declared in rule files written to a temporary directory
(tests/user_ops.py: scale-mask-softmax, bias + residual + layer_norm with two outputs, a
gated GELU with the gate on the right); the shipped fused ops come from rlx's own rules.
Each program is checked against the float64 reference first. Fused and unfused runs
alternate; medians of --repeats with min and max; ratio = unfused / fused (above 1: the
fused kernel is faster). Writes bench/results/user_ops.json.

    python bench/user_ops.py [--repeats 30]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import rlx
from rlx.ir import interpret, random_arrays
from rlx.pipeline import max_error
from rlx.rules import RuleSet, load

from common import cell, ms

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from user_ops import MODELS, write_rules  # noqa: E402


def shipped_cases() -> dict[str, tuple[str, rlx.Graph]]:
    """Programs in primitive form that the shipped rules fuse into one op each."""
    cases = {}
    s, d, f, h = 128, 1024, 2816, 16

    g = rlx.Graph("matmul_bias_gelu")
    x, w, b = g.input("x", (s, d)), g.param("w", (d, 3 * d)), g.param("b", (3 * d,))
    g.output(y=g.gelu(g.add(g.matmul(x, w), b)))
    cases["matmul + bias + gelu"] = ("matmul_bias_act", g)

    g = rlx.Graph("swiglu")
    x, wg, wu = g.input("x", (s, d)), g.param("wg", (d, f)), g.param("wu", (d, f))
    g.output(y=g.mul(g.silu(g.matmul(x, wg)), g.matmul(x, wu)))
    cases["swiglu"] = ("swiglu", g)

    g = rlx.Graph("rms_norm")
    x, w = g.input("x", (4 * s, d)), g.param("w", (d,))
    ms_ = g.mean(g.pow(x, 2.0), (-1,), True)
    g.output(y=g.mul(g.mul(x, g.reciprocal(g.sqrt(g.add(ms_, 1e-6)))), w))
    cases["rms_norm"] = ("rms_norm", g)

    g = rlx.Graph("residual_rms_norm")
    x, r, w = g.input("x", (4 * s, d)), g.input("r", (4 * s, d)), g.param("w", (d,))
    sm = g.add(x, r)
    g.output(s=sm, y=g.rms_norm(sm, w))
    cases["residual + rms_norm"] = ("add_rms_norm", g)

    g = rlx.Graph("layer_norm")
    x, w, b = g.input("x", (4 * s, d)), g.param("w", (d,)), g.param("b", (d,))
    dv = g.sub(x, g.mean(x, (-1,), True))
    g.output(y=g.add(g.mul(g.div(dv, g.sqrt(g.add(g.mean(g.pow(dv, 2.0), (-1,), True), 1e-5))), w), b))
    cases["layer_norm"] = ("layer_norm", g)

    g = rlx.Graph("attention")
    q, k, v = (g.input(n, (1, h, 2 * s, 64)) for n in "qkv")
    sc = g.mul(g.matmul(q, g.transpose(k, (0, 1, 3, 2))), 0.125)
    g.output(y=g.matmul(g.softmax(g.causal_mask(sc), axis=-1), v))
    cases["causal attention"] = ("sdpa", g)
    return cases


def measure(name: str, fused_op: str, graph: rlx.Graph, rules, repeats: int) -> dict:
    fused = rlx.compile(graph, rules=rules)
    unfused = rlx.compile(graph, rules=RuleSet())
    counts = dict(fused.graph.op_counts())
    if counts.get(fused_op) != 1:
        raise SystemExit(f"{name}: expected one {fused_op}, got {counts}")
    arrays = random_arrays(graph, seed=0)
    ins = {n.name: arrays[n.name] for n in graph.inputs}
    ps = {n.name: arrays[n.name] for n in graph.params}
    want = interpret(graph, ins, ps)
    err = 0.0
    for result in (fused, unfused):
        got = result.run(ins, ps)
        for k in want:
            e, tol = max_error(got[k], want[k], "f32")
            if not e <= tol:
                raise SystemExit(f"{name}: output {k} off by {e:.3g} (tolerance {tol:.3g})")
            err = max(err, e)
    program = fused.executor_for(ins)
    t_fused, t_unfused = [], []
    for _ in range(repeats):  # alternate, so both see the same machine
        for result, samples in ((fused, t_fused), (unfused, t_unfused)):
            t = time.perf_counter()
            result.run(ins)
            samples.append(time.perf_counter() - t)
    return {"op": name, "fused_op": fused_op, "kernel": fused.report.kernels.get(fused_op, ""),
            "dispatch": sorted(set(program.dispatch.values()) - {"view"}),
            "steps_fused": len(program.steps), "steps_unfused": len(unfused.executor_for(ins).steps),
            "max_err": err, **ms("fused_ms", t_fused), **ms("unfused_ms", t_unfused)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        user = load([write_rules(Path(tmp))])
        sizes = {"scale_mask_softmax": dict(b=1, h=16, s=256), "bias_residual_layer_norm": dict(rows=512, d=1024),
                 "gated_gelu": dict(rows=128, d=1024, f=2816)}
        for name, build in MODELS.items():
            rows.append({"source": "user rule file", **measure(name, name, build(**sizes[name]), user, args.repeats)})
    shipped = load()
    for name, (op, graph) in shipped_cases().items():
        rows.append({"source": "shipped", **measure(name, op, graph, shipped, args.repeats)})
    table = Table(title=f"fused kernel vs unfused program, NumPy executor, f32 (median of {args.repeats}, min-max, ms)")
    for col in ("op", "from", "kernel", "steps", "fused ms", "unfused ms", "unfused / fused"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["op"], r["source"], r["kernel"].replace("generated: ", ""),
                      f"{r['steps_fused']} vs {r['steps_unfused']}", cell(r, "fused_ms", 2), cell(r, "unfused_ms", 2),
                      f"{r['unfused_ms'] / r['fused_ms']:.2f}x")
    Console(width=160).print(table)
    out = Path(__file__).parent / "results" / "user_ops.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "user_ops", "machine": platform.platform(), "repeats": args.repeats,
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
