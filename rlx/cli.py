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
    """Build a Llama-style model, lower it under both HIR policies, run both through the
    reference interpreter and check they agree."""
    cfg = dict(layers=args.layers, d_model=args.d_model, n_heads=args.heads, seq=args.seq, batch=1)
    t0 = time.perf_counter()
    graphs = {p: rlx.models.llama(**cfg, policy=p) for p in ("fusable", "direct")}
    build_s = time.perf_counter() - t0
    console.print(f"[bold]rlx demo[/]: llama {cfg} built (both policies) in {build_s * 1e3:.1f} ms")
    table = Table(title="MIR op counts by lowering policy")
    table.add_column("op")
    for p in graphs:
        table.add_column(p, justify="right")
    counts = {p: g.op_counts() for p, g in graphs.items()}
    for op in sorted(set().union(*counts.values())):
        table.add_row(op, *(str(counts[p].get(op, "")) for p in graphs))
    table.add_row("[bold]nodes", *(str(len(g.nodes)) for g in graphs.values()))
    console.print(table)
    arrays = random_arrays(graphs["fusable"], seed=args.seed)
    results = {}
    for p, g in graphs.items():
        ins = {n.name: arrays[n.name] for n in g.inputs}
        ps = {n.name: arrays[n.name] for n in g.params}
        t0 = time.perf_counter()
        results[p] = interpret(g, ins, ps)
        console.print(f"reference interpreter ({p}): {(time.perf_counter() - t0) * 1e3:.1f} ms")
    err = max(float(np.max(np.abs(a - b))) for a, b in zip(results["fusable"].values(), results["direct"].values()))
    ok = err < 1e-6
    console.print(f"max |fusable - direct| = {err:.3g}: " + ("[green]agree[/]" if ok else "[red]MISMATCH[/]"))
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
