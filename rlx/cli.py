"""The ``rlx`` command line. Exit codes: 0 ok, 1 a check failed, 2 bad input."""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import rlx
from rlx.dot import write_dot
from rlx.errors import RlxError
from rlx.pipeline import max_error
from rlx.extract.calibrate import calibrate, median_seconds
from rlx.extract.target import shipped_targets
from rlx.ir import REGISTRY, interpret, random_arrays


def _check(graph, result, arrays, console: Console, reference=None) -> tuple[bool, dict]:
    """Compare the compiled program on the executor with a reference (by default the
    interpreter on the unfused graph); print max error per output."""
    ins = {n.name: arrays[n.name] for n in graph.inputs}
    ps = {n.name: arrays[n.name] for n in graph.params}
    got = result.run(ins, ps)
    want = reference(ins) if reference is not None else interpret(graph, ins, ps)
    outputs = dict(graph.outputs)
    if set(want) != set(outputs):
        raise RlxError(f"the reference computes outputs {sorted(want)}, the model declares {sorted(outputs)}")
    ok, errors = True, {}
    for name, ref in want.items():
        err, tol = max_error(got[name], ref, str(outputs[name].dtype))
        errors[name] = err
        good = err <= tol
        ok &= good
        console.print(f"  output {escape(name)}: max |compiled - reference| = {err:.3g} "
                      f"(tolerance {tol:.3g}) " + ("[green]ok[/]" if good else "[red]MISMATCH[/]"))
    return ok, errors


def _median_ms(fn, repeats: int) -> float:
    return 1e3 * median_seconds(fn, repeats)


def _demo(args: argparse.Namespace, console: Console) -> int:
    """The main job: build a Llama-style model, optimize it in the e-graph with the shipped
    rules, print the fusion report and the memory plan, run it on the NumPy executor,
    check it against the reference interpreter and time both."""
    for flag in ("layers", "d_model", "heads", "seq"):
        _positive(flag, getattr(args, flag))
    _seed(args.seed)
    if args.d_model % args.heads:
        raise RlxError(f"--heads {args.heads} does not divide --d-model {args.d_model}")
    cfg = dict(layers=args.layers, d_model=args.d_model, n_heads=args.heads, seq=args.seq, batch=1)
    graph = rlx.models.llama(**cfg)
    console.print(f"[bold]rlx demo[/]: llama {cfg}: {len(graph.nodes)} MIR nodes")
    t0 = time.perf_counter()
    with console.status("optimizing in the e-graph ..."):
        result = rlx.compile(graph, target="cpu")
    console.print(f"compiled for target cpu in {(time.perf_counter() - t0) * 1e3:.0f} ms")
    console.print(result.report)
    s = result.lir.summary()
    console.print(f"[bold]memory plan[/]: arena {s['arena_bytes'] / 2**20:.2f} MiB (liveness lower bound "
                  f"{s['lower_bound_bytes'] / 2**20:.2f} MiB, no reuse {s['no_reuse_bytes'] / 2**20:.2f} MiB, "
                  f"saved {s['saved_pct']:.1f}%), {s['views']} views, {s['in_place']} in-place steps, "
                  f"fingerprint {s['fingerprint']}")
    arrays = random_arrays(graph, seed=args.seed)
    console.print("checking the compiled program on the numpy executor against the reference interpreter:")
    ok, _ = _check(graph, result, arrays, console)
    ins = {n.name: arrays[n.name] for n in graph.inputs}
    ps = {n.name: arrays[n.name] for n in graph.params}
    ins32 = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in ins.items()}
    ps32 = {k: v.astype(np.float32) for k, v in ps.items()}
    t_run = _median_ms(lambda: result.run(ins), 5)
    t_ref = _median_ms(lambda: interpret(graph, ins32, ps32, dtype="native"), 3)
    console.print(f"time (median): compiled {t_run:.1f} ms, reference interpreter on the unfused graph in f32 "
                  f"{t_ref:.1f} ms ({t_ref / t_run:.2f}x)")
    return 0 if ok else 1


def _load_model(path: str):
    p = Path(path)
    if not p.exists():
        raise RlxError(f"{path}: no such file")
    if p.suffix == ".onnx":
        from rlx.frontends import onnx
        return onnx.load(p)
    if p.suffix != ".json":
        raise RlxError(f"{path}: expected a MIR .json file or an .onnx model")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RlxError(f"{path}: not a MIR JSON file (not UTF-8 text: byte {e.start})") from None
    try:
        return rlx.Graph.from_json(text)
    except RlxError as e:
        raise RlxError(f"{path}: {e}") from None


def _positive(flag: str, value: int | None) -> None:
    """A size given on the command line must be at least 1."""
    if value is not None and value < 1:
        raise RlxError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")


def _seed(value: int) -> None:
    if value < 0:
        raise RlxError(f"--seed must be a non-negative integer, got {value}")


def _dim(flag: str, value: str | None) -> int | str | None:
    """A size (a positive integer) or a symbol such as S."""
    if value is None or value.isidentifier():
        return value
    if value.lstrip("-").isdecimal():
        _positive(flag, int(value))
        return int(value)
    raise RlxError(f"--{flag} expects a positive integer or a symbol name such as S, got {value!r}")


def _bindings(pairs: list[str]) -> dict[str, int]:
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if not name.isidentifier() or not value.isdecimal() or int(value) < 1:
            raise RlxError(f"--bind expects SYMBOL=SIZE with a positive SIZE, got {pair!r}")
        out[name] = int(value)
    return out


def _rules(args: argparse.Namespace):
    """The rule set a command compiles with: the shipped rules, plus --rules, or only these
    with --only-rules (as ``rlx.compile(rules=[...])`` does)."""
    import rlx.rules
    if not args.rules:
        return rlx.rules.load()
    return rlx.rules.load(([] if args.only_rules else [rlx.rules.SHIPPED]) + list(args.rules))


def _with_rules(command):
    """Run a command with its rule set active: a MIR file may use the set's fused ops."""
    def run(args: argparse.Namespace, console: Console) -> int:
        rules = _rules(args)
        with rules.active():
            return command(args, console, rules)
    return run


@_with_rules
def _compile(args: argparse.Namespace, console: Console, rules) -> int:
    graph = _load_model(args.model)
    with console.status(escape(f"compiling {args.model} for {args.target} ...")):
        result = rlx.compile(graph, target=args.target, rules=rules)
    r = result.report
    console.print(f"{args.model}: {r.nodes_before} -> {r.nodes_after} nodes for target {r.target}; fused "
                  + (", ".join(f"{op} x{n}" for op, n in r.fused.items()) or "nothing")
                  + f"; predicted {r.cost_before * 1e3:.3f} -> {r.cost_after * 1e3:.3f} ms"
                  + (f"; {len(r.missed)} missed fusion(s)" if r.missed else ""), markup=False)
    if args.report or args.json:
        from rlx.dispatch import dispatch_report
        with console.status(escape(f"asking executor {result.executor} how each step runs ...")):
            dispatch_report(result, args.target)
    if args.report:
        console.print(r)
    if args.json:
        Path(args.json).write_text(r.to_json())
        console.print(f"wrote {args.json}", markup=False)
    if args.dot:
        console.print("wrote " + ", ".join(map(str, write_dot(result.graph, args.dot))), markup=False)
    if args.dump:
        _dump(Path(args.dump), graph, result)
        console.print(f"wrote every stage to {args.dump}/", markup=False)
    return 0


def _dump(out: Path, graph, result) -> None:
    """Every stage, as readable text and JSON."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "1-input.mir.txt").write_text(graph.to_text() + "\n")
    (out / "1-input.mir.json").write_text(graph.to_json())
    (out / "2-egraph.json").write_text(json.dumps({"egraph": result.report.to_dict()["egraph"],
                                                   "times": result.report.times,
                                                   "extraction": result.report.extraction}, indent=2, default=str))
    (out / "3-report.txt").write_text(str(result.report))
    (out / "3-report.json").write_text(result.report.to_json())
    (out / "4-optimized.mir.txt").write_text(result.graph.to_text() + "\n")
    (out / "4-optimized.mir.json").write_text(result.graph.to_json())
    lir = result.lir
    (out / "5-lir.json").write_text(json.dumps({"summary": lir.summary(), **lir.to_dict()}, indent=1, default=str))
    (out / "5-lir.txt").write_text("\n".join(
        f"{s.index:4d} {s.phase:8s} {s.op:16s} {', '.join(s.outputs)} <- {', '.join(s.inputs)}"
        + (" [in place]" if s.in_place else "") + (" [view]" if s.view else "") for s in lir.steps) + "\n")


@_with_rules
def _run(args: argparse.Namespace, console: Console, rules) -> int:
    _seed(args.seed)
    graph = _load_model(args.model)
    with console.status(escape(f"compiling {args.model} ...")):
        result = rlx.compile(graph, target=args.target, rules=rules)
    binding = {s: 8 for s in result.lir.symbols} | _bindings(args.bind)
    arrays = random_arrays(graph, binding, seed=args.seed)
    arrays.update(graph.weights)  # an imported model runs with its own weights
    if args.check:
        reference = None
        if args.model.endswith(".onnx"):  # ONNX Runtime is the reference for ONNX files
            console.print(f"checking against onnxruntime with {dict(sorted(binding.items()))}:", markup=False)
            reference = lambda ins: _onnxruntime(args.model, ins)  # noqa: E731
        ok, _ = _check(graph, result, arrays, console, reference)
        return 0 if ok else 1
    out = result.run({n.name: arrays[n.name] for n in graph.inputs}, {n.name: arrays[n.name] for n in graph.params})
    for name, v in out.items():
        stats = f"mean {float(np.mean(v)):.4g} std {float(np.std(v)):.4g}" if v.size else "empty"
        console.print(f"  {escape(name)}: {v.dtype}{list(v.shape)} {stats}")
    return 0


def _onnxruntime(model: str, inputs: dict) -> dict:
    """The model's outputs under ONNX Runtime; a model it cannot load or run is bad input."""
    try:
        from rlx.frontends.onnx import run_onnxruntime
        return run_onnxruntime(model, inputs)
    except ImportError:
        raise RlxError("--check of an ONNX model needs onnxruntime: pip install onnxruntime") from None
    except Exception as e:  # onnxruntime's own error types (InvalidGraph, Fail, NotImplemented, ...)
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RlxError(f"{model}: ONNX Runtime cannot run the model, so there is no reference: "
                       f"{why}") from None


def _model(args: argparse.Namespace, console: Console) -> int:
    build = {"mlp": rlx.models.mlp, "llama": rlx.models.llama, "bert": rlx.models.bert}[args.name]
    for flag in ("layers", "d_model", "heads"):
        _positive(flag, getattr(args, flag))
    if args.name == "mlp" and (args.d_model, args.heads, args.seq) != (None, None, None):
        raise RlxError("rlx model mlp takes --layers and --batch only (not --d-model, --heads or --seq)")
    given = (("layers", args.layers), ("d_model", args.d_model), ("n_heads", args.heads),
             ("seq", _dim("seq", args.seq)), ("batch", _dim("batch", args.batch)))
    kw = {k: v for k, v in given if v is not None}
    if args.name != "mlp":
        defaults = inspect.signature(build).parameters
        d_model, heads = (kw.get(k, defaults[k].default) for k in ("d_model", "n_heads"))
        if d_model % heads:
            raise RlxError(f"--heads {heads} does not divide --d-model {d_model}")
    graph = build(**kw)
    Path(args.out).write_text(graph.to_json())
    console.print(f"wrote {args.out}: {args.name} {kw}, {len(graph.nodes)} nodes", markup=False)
    return 0


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
                      ", ".join(unclaimed) or "-", escape(str(t.path)))
    console.print(table)
    return 0


def _model_arg(spec: str):
    """A model from the command line: a MIR .json or .onnx file, or a builder of
    ``rlx.models`` with keyword arguments, ``llama:layers=4,d_model=1024,seq=128``."""
    if spec.endswith((".json", ".onnx")) or Path(spec).exists():
        return _load_model(spec)
    name, _, rest = spec.partition(":")
    builders = {"mlp": rlx.models.mlp, "llama": rlx.models.llama, "bert": rlx.models.bert,
                "llama_decode": rlx.models.llama_decode}
    if name not in builders:
        raise RlxError(f"{spec!r} is neither a .json/.onnx file nor a model builder ({', '.join(builders)}) "
                       "with arguments such as llama:layers=4,d_model=1024")
    kw: dict = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in inspect.signature(builders[name]).parameters:
            raise RlxError(f"{name}: expected KEY=VALUE with KEY one of "
                           f"{', '.join(inspect.signature(builders[name]).parameters)}, got {item!r}")
        kw[key] = int(value) if value.lstrip("-").isdecimal() else value
    return builders[name](**kw)


@_with_rules
def _calibrate_check(args: argparse.Namespace, console: Console, rules) -> int:
    """Predicted vs measured, step by step, on the target's executor (``rlx.extract.fidelity``)."""
    from rlx.extract.fidelity import check_model, toml_lines
    if not args.model:
        raise RlxError("calibrate --check needs a MODEL: a .json/.onnx file or e.g. llama:layers=4,d_model=1024")
    _positive("repeats", args.repeats)
    graph = _model_arg(args.model)
    with console.status(escape(f"compiling {args.model} and profiling it on target {args.target} ...")):
        f = check_model(graph, args.target, binding=_bindings(args.bind), repeats=args.repeats, rules=rules,
                        name=args.model)
    console.print(f"{args.model} on target {f.target} (executor {f.executor}, {f.device}): {len(f.steps)} steps, "
                  f"predicted {f.predicted_total * 1e3:.3f} ms, measured {f.measured_total * 1e3:.3f} ms "
                  f"(median of {args.repeats} profiled runs per step)", markup=False)
    def rho(x: float) -> str:
        return "n/a (fewer than two distinct values)" if x != x else f"{x:.3f}"
    console.print(f"[bold]Spearman rank correlation[/]: {rho(f.spearman)} over steps, {rho(f.spearman_ops)} over op kinds")
    if args.steps:
        table = Table(title="per step")
        for col in ("step", "op", "dispatch", "predicted us", "measured us", "measured / predicted"):
            table.add_column(col, justify="left" if col in ("step", "op", "dispatch") else "right")
        for s in f.steps:
            table.add_row(escape(s.node), escape(s.op), s.dispatch, f"{s.predicted * 1e6:.1f}",
                          f"{s.measured * 1e6:.1f}", f"{s.ratio:.2f}")
        console.print(table)
    table = Table(title="per op kind (sums over its steps)")
    for col in ("op", "steps", "predicted ms", "measured ms", "measured / predicted"):
        table.add_column(col, justify="left" if col == "op" else "right")
    for op, r in f.by_op.items():
        table.add_row(escape(op), str(r["steps"]), f"{r['predicted_ms']:.3f}", f"{r['measured_ms']:.3f}",
                      f"{r['ratio']:.2f}")
    console.print(table)
    table = Table(title="worst-predicted steps (by factor)")
    for col in ("step", "op", "dispatch", "priced as", "predicted us", "measured us", "measured / predicted"):
        table.add_column(col, justify="left" if col in ("step", "op", "dispatch", "priced as") else "right")
    for s in f.worst(args.top):
        table.add_row(escape(s.node), escape(s.op), s.dispatch, s.priced, f"{s.predicted * 1e6:.1f}",
                      f"{s.measured * 1e6:.1f}", f"{s.ratio:.2f}")
    console.print(table)
    sug = f.suggestions
    if "change" in sug:
        b, a = sug["before"], sug["after"]
        console.print(f"[bold]what to change in the target file[/] (least squares on log(measured/predicted) over "
                      f"{sug['steps_fitted']} steps): Spearman {b['spearman']:.3f} -> {a['spearman']:.3f}, median "
                      f"|log10 error| {b['median_abs_log10_error']:.2f} -> {a['median_abs_log10_error']:.2f}")
        console.print("\n".join(toml_lines(sug["change"], sug["current"], sug.get("notes")))
                      or "nothing: every figure fits within 25%", markup=False, highlight=False)
    else:
        console.print(sug.get("note", ""), markup=False)
    for line in sug.get("structural", []):
        console.print("beyond the target file: " + line, markup=False, highlight=False)
    if args.json:
        Path(args.json).write_text(json.dumps(f.to_dict(), indent=1, default=str))
        console.print(f"wrote {args.json}", markup=False)
    return 0


def _calibrate(args: argparse.Namespace, console: Console) -> int:
    if args.check:
        return _calibrate_check(args, console)
    if not args.out:
        raise RlxError("calibrate needs --out (the target file to write), or --check MODEL")
    with console.status(escape(f"measuring with target {args.target}'s executor ...")):
        m = calibrate(args.target, args.out, quick=args.quick)
    peaks = ", ".join(f"{k[5:]} {v / 1e9:.1f} GFLOP/s" for k, v in m.items() if k.startswith("peak_"))
    console.print(f"matmul {peaks}, "
                  f"copy {m['bandwidth'] / 1e9:.1f} GB/s, launch {m['launch'] * 1e6:.2f} us, "
                  f"view {m['view'] * 1e6:.2f} us")
    console.print(f"wrote {args.out}", markup=False)
    return 0


def _rules_check(args: argparse.Namespace, console: Console) -> int:
    import rlx.rules
    from rlx.verify import fuzz, prove
    from rlx.verify.lint import lint
    _seed(args.seed)
    _positive("trials", args.trials)
    rs = rlx.rules.load(args.paths or None)
    warnings = lint(rs)
    table = Table(title=f"rules check: {len(rs.rules)} rules from {len(rs.files)} files")
    for col in ("rule", "set", "proof", "fuzz", "warnings"):
        table.add_column(col)
    unsound = []
    with console.status("proving and fuzzing ...") as status:
        for r in rs.rules:
            status.update(escape(f"checking {r.name} ..."))
            p = prove(r, rs)
            f = fuzz(r, trials=args.trials, seed=args.seed, rules=rs)
            if f.failures:
                unsound.append((r, f.failures[0]))
                fz = f"[red]UNSOUND[/] ({len(f.failures)}/{f.instances})"
            elif not f.instances:
                fz = "[yellow]never fires?[/] " + escape(f.note)
            else:
                fz = f"ok ({f.instances} instances, max rel err {f.max_rel:.1e})"
            proof = "[green]proved[/]" if p.proved and p.reason == "proved" else (
                "axiom" if p.proved else f"[yellow]not proved[/]: {escape(p.reason)}")
            warn = warnings[r.name] + ([] if f.instances else ["could never fire on drawn shapes"])
            table.add_row(escape(r.name), escape(r.ruleset), proof, fz, escape("; ".join(warn)))
    console.print(table)
    for r, c in unsound:
        console.print("[red]unsound[/] " + escape(f"{r.name} ({r.span}): counterexample: {c}"),
                      highlight=False)
    return 1 if unsound else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlx", description="rlx: an e-graph ML compiler")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="build a Llama-style model and check it end to end")
    demo.add_argument("--layers", type=int, default=4)
    demo.add_argument("--d-model", type=int, default=512)
    demo.add_argument("--heads", type=int, default=8)
    demo.add_argument("--seq", type=int, default=128)
    demo.add_argument("--seed", type=int, default=0)
    sub.add_parser("ops", help="list the op registry")
    for name, fn_help in (("compile", "optimize a model and report"), ("run", "compile and run a model on random data")):
        p = sub.add_parser(name, help=fn_help)
        p.add_argument("model", help="a MIR .json file or an .onnx model")
        p.add_argument("--target", default="cpu", help="a shipped target or a target .toml (default cpu)")
        p.add_argument("--rules", nargs="*", default=[], help="rule files or directories, added to the shipped rules")
        p.add_argument("--only-rules", action="store_true", help="use only the --rules given")
        if name == "compile":
            p.add_argument("--report", action="store_true", help="print the fusion report")
            p.add_argument("--json", help="write the report as JSON")
            p.add_argument("--dot", help="write the optimized graph as Graphviz DOT (and SVG/PNG if dot is installed)")
            p.add_argument("--dump", help="write every stage to this directory")
        else:
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--check", action="store_true", help="compare with the reference (exit 1 if off): "
                           "onnxruntime for .onnx models, else the reference interpreter")
            p.add_argument("--bind", nargs="*", default=[], metavar="SYMBOL=SIZE",
                           help="sizes of symbolic dims for the random inputs (default 8 each)")
    rules_cmd = sub.add_parser("rules", help="rule files")
    rules_sub = rules_cmd.add_subparsers(dest="rules_cmd", required=True)
    chk = rules_sub.add_parser("check", help="parse, lint, prove and fuzz rules (default: the shipped ones)")
    chk.add_argument("paths", nargs="*", help="rule files or directories")
    chk.add_argument("--trials", type=int, default=20)
    chk.add_argument("--seed", type=int, default=0)
    mdl = sub.add_parser("model", help="write a model builder's graph as MIR JSON")
    mdl.add_argument("name", choices=["mlp", "llama", "bert"])
    mdl.add_argument("--out", required=True)
    mdl.add_argument("--layers", type=int)
    mdl.add_argument("--d-model", type=int)
    mdl.add_argument("--heads", type=int)
    mdl.add_argument("--seq")
    mdl.add_argument("--batch")
    sub.add_parser("targets", help="list the shipped targets with their key figures")
    cal = sub.add_parser("calibrate", help="measure this machine and write a target file")
    cal.add_argument("--target", default="cpu", help="the target whose executor measures (default cpu)")
    cal.add_argument("--out", help="the target file to write")
    cal.add_argument("--quick", action="store_true", help="small sizes (seconds, noisier)")
    cal.add_argument("--check", action="store_true", help="instead of measuring peaks: run MODEL step by step on "
                     "the target's executor and compare each step's measured time with the cost model's")
    cal.add_argument("model", nargs="?", help="with --check: a .json/.onnx file or a builder such as "
                     "llama:layers=4,d_model=1024,n_heads=16,d_ff=2816,seq=128")
    cal.add_argument("--repeats", type=int, default=5, help="with --check: profiled runs per step (median)")
    cal.add_argument("--bind", nargs="*", default=[], metavar="SYMBOL=SIZE",
                     help="with --check: sizes of symbolic dims (default 8 each)")
    cal.add_argument("--steps", action=argparse.BooleanOptionalAction, default=True,
                     help="with --check: print every step (--no-steps: op kinds and the worst steps only)")
    cal.add_argument("--top", type=int, default=8, help="with --check: how many worst-predicted steps to list")
    cal.add_argument("--json", help="with --check: write the comparison as JSON")
    cal.add_argument("--rules", nargs="*", default=[], help="with --check: rule files added to the shipped rules")
    cal.add_argument("--only-rules", action="store_true", help="with --check: use only the --rules given")
    args = parser.parse_args(argv)
    # pipes and logs get full tables; user text (paths, names) is never read as markup or emoji codes
    console = Console(width=None if sys.stdout.isatty() else 160, emoji=False)
    try:
        commands = {"demo": _demo, "ops": _ops, "targets": _targets, "calibrate": _calibrate, "compile": _compile,
                    "run": _run, "model": _model, "rules": _rules_check}
        return commands[args.cmd](args, console)
    except (RlxError, OSError) as e:
        if args.debug:
            raise
        console.print("[red]error:[/] " + escape(str(e)), highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
