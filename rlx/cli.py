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
from rlx.extract.calibrate import calibrate
from rlx.extract.target import shipped_targets
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


def _targets(args: argparse.Namespace, console: Console) -> int:
    import rlx.rules
    rlx.rules.load()  # rule files register the fused ops targets may claim
    table = Table(title="targets")
    for col in ("name", "executor", "f32 peak", "f16 peak", "bandwidth", "launch", "regions", "not claimed", "file"):
        table.add_column(col)
    for t in shipped_targets():
        t = t.resolve_claims()
        c = t.cost
        unclaimed = sorted(set(REGISTRY.names()) - set(c.claimed or ()) - {"input", "param", "constant"})
        table.add_row(t.name, t.executor, f"{c.peak_flops['f32'] / 1e9:.0f} GFLOP/s",
                      f"{c.peak_flops.get('f16', 0) / 1e9:.0f} GFLOP/s", f"{c.bandwidth / 1e9:.0f} GB/s",
                      f"{c.launch_overhead * 1e6:.1f} us", f"{c.region_max_inputs} in / {c.region_max_ops} ops",
                      ", ".join(unclaimed) or "-", t.path)
    console.print(table)
    return 0


def _calibrate(args: argparse.Namespace, console: Console) -> int:
    with console.status(f"measuring with target {args.target}'s executor ..."):
        m = calibrate(args.target, args.out, quick=args.quick)
    console.print(f"f32 matmul {m['peak_f32'] / 1e9:.1f} GFLOP/s, f64 {m['peak_f64'] / 1e9:.1f} GFLOP/s, "
                  f"copy {m['bandwidth'] / 1e9:.1f} GB/s, launch {m['launch'] * 1e6:.2f} us, "
                  f"view {m['view'] * 1e6:.2f} us")
    console.print(f"wrote {args.out}")
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
    sub.add_parser("targets", help="list the shipped targets with their key figures")
    cal = sub.add_parser("calibrate", help="measure this machine and write a target file")
    cal.add_argument("--target", default="cpu", help="the target whose executor measures (default cpu)")
    cal.add_argument("--out", required=True, help="the target file to write")
    cal.add_argument("--quick", action="store_true", help="small sizes (seconds, noisier)")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 160)  # pipes and logs get full tables
    try:
        return {"demo": _demo, "ops": _ops, "targets": _targets, "calibrate": _calibrate}[args.cmd](args, console)
    except RlxError as e:
        if args.debug:
            raise
        console.print(f"[red]error:[/] {e}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
