"""The ``rlx`` command line. Exit codes: 0 ok, 1 a check failed, 2 bad input."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from rich.console import Console
from rich.table import Table

import rlx
from rlx.errors import RlxError
from rlx.ir import REGISTRY, interpret, random_arrays


def _demo(args: argparse.Namespace, console: Console) -> int:
    """The main job: build a Llama-style model, optimize it in the e-graph with the shipped
    rules, print the fusion report, and check the optimized program against the reference."""
    cfg = dict(layers=args.layers, d_model=args.d_model, n_heads=args.heads, seq=args.seq, batch=1)
    t0 = time.perf_counter()
    graph = rlx.models.llama(**cfg)
    console.print(f"[bold]rlx demo[/]: llama {cfg}: {len(graph.nodes)} MIR nodes "
                  f"(built in {(time.perf_counter() - t0) * 1e3:.1f} ms)")
    t0 = time.perf_counter()
    with console.status("optimizing in the e-graph ..."):
        result = rlx.compile(graph)
    console.print(f"compiled for target cpu in {(time.perf_counter() - t0) * 1e3:.0f} ms")
    console.print(result.report)
    arrays = random_arrays(graph, seed=args.seed)
    ins = {n.name: arrays[n.name] for n in graph.inputs}
    ps = {n.name: arrays[n.name] for n in graph.params}
    with console.status("checking against the reference interpreter ..."):
        t0 = time.perf_counter()
        want = interpret(graph, ins, ps)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = interpret(result.graph, ins, ps)
        t_opt = time.perf_counter() - t0
    err = max(float(np.max(np.abs(want[k] - got[k]))) for k in want)
    scale = max(float(np.max(np.abs(v))) for v in want.values())
    ok = err <= 1e-6 * max(1.0, scale)
    console.print(f"reference interpreter: unfused {t_ref * 1e3:.1f} ms, optimized {t_opt * 1e3:.1f} ms "
                  "(the NumPy executor comes with issue 6)")
    console.print(f"max |optimized - reference| = {err:.3g} (tolerance 1e-6 x max |output|): "
                  + ("[green]equal[/]" if ok else "[red]MISMATCH[/]"))
    return 0 if ok else 1


def _ops(args: argparse.Namespace, console: Console) -> int:
    table = Table(title="op registry")
    for col in ("op", "category", "inputs", "attributes", "elementwise"):
        table.add_column(col)
    for op in REGISTRY:
        table.add_row(op.name, op.category, ", ".join(op.inputs) + (" ..." if op.variadic else ""),
                      ", ".join(a.name for a in op.attrs), "yes" if op.elementwise else "")
    console.print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlx", description="rlx: an e-graph ML compiler")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="build a Llama-style model and check it end to end")
    demo.add_argument("--layers", type=int, default=2)
    demo.add_argument("--d-model", type=int, default=256)
    demo.add_argument("--heads", type=int, default=4)
    demo.add_argument("--seq", type=int, default=64)
    demo.add_argument("--seed", type=int, default=0)
    sub.add_parser("ops", help="list the op registry")
    args = parser.parse_args(argv)
    console = Console()
    try:
        return {"demo": _demo, "ops": _ops}[args.cmd](args, console)
    except RlxError as e:
        if args.debug:
            raise
        console.print(f"[red]error:[/] {e}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
