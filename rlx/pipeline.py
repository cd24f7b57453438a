"""``rlx.compile``: load the program into an e-graph, saturate it under the rules, extract
the cheapest program for the target, and report what happened."""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from egglog import bindings

from rlx.errors import RlxError
from rlx.egraph.load import fact_directory, load_graph, new_egraph, run_pieces
from rlx.egraph.saturate import Limits, SaturationStats, saturate
from rlx.egraph.schema import BODY_RULES, schema, type_rules
from rlx.egraph.view import ENode, EGraphView, Kind, freeze
from rlx.explain import explain
from rlx.extract.cost import CostModel
from rlx.extract.exact import extract_exact
from rlx.extract.greedy import NoProgram, extract
from rlx.extract.target import Target, load_target
from rlx.extract.to_mir import to_mir
from rlx.exec.base import Program, check_claims, get_executor, has_native
from rlx.kernels.lower import kernel_for, why_not
from rlx.rules.definitions import decl_of
from rlx.rules.fused import body_graph
from rlx.ir.graph import Graph
from rlx.ir.hir import Module
from rlx.ir.interpret import as_array, bind_dims, interpret, random_arrays
from rlx.ir.lir import LIR
from rlx.ir.registry import REGISTRY
from rlx.plan import plan
from rlx.report import EGraphStats, FusionNotClean, FusionReport, RuleStats
from rlx.rules import RuleSet, load
from rlx.rules.compile import Compiled, compile_rules


@dataclass
class CompileResult:
    """The optimized MIR, the program it came from, the report, and (planned on first use)
    the LIR for the target's alignment.

    Runs are safe from any number of threads: each thread runs its own program (its own
    arena and scratch) on the shared, read-only params."""
    graph: Graph
    source: Graph
    report: FusionReport
    alignment: int = 64
    executor: str = "numpy"
    ruleset: RuleSet = field(default_factory=RuleSet)  # its fused ops are active while it runs

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()

    @cached_property
    def lir(self) -> LIR:
        return plan(self.graph, alignment=self.alignment)

    def bind(self, params: Mapping[str, Any]) -> "CompileResult":
        """Bind parameters once; every later ``run`` reuses them (and the arena)."""
        with self._lock:
            self._params = {k: np.asarray(v) for k, v in params.items()}
            self._local = threading.local()  # programs are made again for the new params
        return self

    def executor_for(self, inputs: Mapping[str, Any]) -> Program:
        """This thread's program on the target executor for these inputs' sizes (symbols
        bound from their shapes; cached per specialization and thread)."""
        with self.ruleset.active():
            executor = get_executor(self.executor)
            with self._lock:
                if not hasattr(self, "_params"):
                    if not self.source.weights and self.source.params:
                        raise RlxError("no params bound: call result.bind(params) or pass params= to run")
                    self._params = dict(self.source.weights)
                params, local = self._params, self._local
            # symbols bind from the source's inputs: an input used only for its shape (ONNX
            # Shape) is not in the optimized graph, but its dims still size the outputs
            binding = (bind_dims(self.source, {k: as_array(v, f'input {k!r}') for k, v in inputs.items()})
                       if self.lir.symbols else {})
            key = tuple(sorted((k, v) for k, v in dict(binding).items() if k in self.lir.symbols))
            programs = local.__dict__.setdefault("programs", {})
            if key not in programs:
                lir = self.lir.specialize(dict(key)) if self.lir.symbols else self.lir
                programs[key] = executor.prepare(lir, params)
            return programs[key]

    def run(self, inputs: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Run the compiled program on the target's executor; returns outputs by name."""
        if params is not None:
            self.bind(params)
        return self.executor_for(inputs).run(inputs)


class ExtractionError(RlxError):
    """No program the target can run computes the outputs."""


def _target(target: str | Path | Target | CostModel) -> Target:
    """A target by name, path or object; a bare CostModel gets the cpu target's other settings."""
    if isinstance(target, CostModel):
        return replace(load_target("cpu"), name=target.name, cost=target, claim_spec=("*",), exclude=())
    return load_target(target)


def _original(graph: Graph, view: EGraphView) -> tuple[dict[int, ENode], dict[int, int], dict[int, str]]:
    """The input program's node per loaded class, its topological index, and its name."""
    original: dict[int, ENode] = {}
    order: dict[int, int] = {}
    names: dict[int, str] = {}
    for i, node in enumerate(graph.topo_order()):
        values = node.values
        for v in values:
            c = view.value_class.get(v.name)
            if c is None:
                continue
            names.setdefault(c, v.name)
            order.setdefault(c, i)
            if len(values) > 1:
                original.setdefault(c, next((n for n in view.classes[c] if n.is_get
                                             and n.attr_dict()["index"] == v.index), None))
                tup = original[c].children[0] if original[c] else None
                if tup is not None:
                    order.setdefault(tup, i)
                    names.setdefault(tup, node.name)
                    kids = tuple(view.value_class[x.name] for x in node.inputs)
                    original.setdefault(tup, next((n for n in view.classes[tup]
                                                   if n.op == node.op and view.inputs(n) == kids), None))
                continue
            kids = tuple(view.value_class[x.name] for x in node.inputs)
            for n in view.classes[c]:
                if n.op == node.op and view.inputs(n) == kids and (node.op not in ("input", "param")
                                                               or n.attr_dict()["name"] == node.name):
                    if node.op != "constant" or _same_constant(n, node):
                        original[c] = n
                        break
    return {c: n for c, n in original.items() if n is not None}, order, names


def _same_constant(n: ENode, node) -> bool:
    a = n.attr_dict()
    return a.get("node") == node.name or ("key" in a and node.attrs["value"].size == 1)


@dataclass
class Saturated:
    """A program loaded and saturated for a target: everything extraction needs."""
    graph: Graph
    target: Target
    ruleset: RuleSet
    compiled: Compiled
    egraph: bindings.EGraph
    view: EGraphView
    stats: SaturationStats
    limits: Limits
    original: dict[int, ENode]
    order: dict[int, int]
    names: dict[int, str]
    roots: list[int]
    node_cost: Callable[[int, ENode], float]
    times: dict[str, float]


def saturate_program(model: Graph | Module, target: str | Path | Target | CostModel = "cpu",
                     rules: Iterable[str | Path] | RuleSet | None = None, *, limits: Limits | None = None,
                     binding: Mapping[str, int] | None = None, decompose: Iterable[str] = ()) -> Saturated:
    """Load ``model`` into an e-graph and saturate it under the rules and the target's limits."""
    times: dict[str, float] = {}
    t = time.perf_counter()
    graph = model.lower("fusable") if isinstance(model, Module) else model
    if not isinstance(graph, Graph):
        raise RlxError(f"compile expects a Graph or an hir.Module, got {type(model).__name__}")
    tgt = _target(target)
    ruleset = rules if isinstance(rules, RuleSet) else load(rules)
    with ruleset.active():
        return _saturate(graph, tgt, ruleset, limits, binding, decompose, times, t)


def _saturate(graph: Graph, tgt: Target, ruleset: RuleSet, limits, binding, decompose, times, t) -> Saturated:
    tgt = tgt.resolve_claims().with_decomposed(list(decompose))
    check_claims(tgt.executor, tgt.cost.claimed)
    cost = tgt.cost
    limits = limits or tgt.limits
    compiled = compile_rules(ruleset, cost.region_max_inputs, cost.region_max_ops)
    with fact_directory() as workdir:
        eg = new_egraph(workdir)
        run_pieces(eg, [schema(), BODY_RULES, type_rules()] + compiled.programs)
        times["rules"] = time.perf_counter() - t
        t = time.perf_counter()
        loaded = load_graph(eg, graph, workdir)
    times["load"] = time.perf_counter() - t
    stats = saturate(eg, compiled, limits)
    times["saturate"] = stats.seconds
    t = time.perf_counter()
    view = freeze(eg, graph, loaded)
    times["freeze"] = time.perf_counter() - t
    original, order, names = _original(graph, view)
    bind = cost.binding([ty for ts in view.types.values() for ty in ts], binding)
    folded = _bind_time_classes(view)

    def node_cost(c: int, n: ENode) -> float:
        if n.is_absent or n.is_get:
            return 0.0
        seconds = run_cost(c, n)
        if seconds < float("inf") and not n.is_source and all(ch in folded for ch in view.inputs(n)):
            return BIND_TIME_COST  # folded: computed once at bind, not per run
        return seconds

    def run_cost(c: int, n: ENode) -> float:
        outs = view.types.get(c)
        ins = [view.type1(ch) for ch in view.inputs(n)]
        if outs is None or any(i is None for i in ins):
            return float("inf")
        attrs = n.attr_dict()
        if original.get(c) != n and not n.is_source and not _well_typed(n.op, ins, attrs, outs):
            return float("inf")  # a rule's right side whose shape rules fail here: never extracted
        body = definition_body(n.op, ins, attrs, tgt.executor)
        if body is not None:  # no kernel: it runs as its definition
            return cost.body_cost(body, bind) if cost.claims(n.op) else float("inf")
        return cost.op_cost(n.op, attrs, ins, outs, bind)

    roots = [view.value_class[v.name] for _, v in graph.outputs]
    return Saturated(graph, tgt, ruleset, compiled, eg, view, stats, limits, original, order, names, roots,
                     node_cost, times)


def definition_body(op: str, ins: list, attrs: dict, executor: str) -> Graph | None:
    """The definition a fused op runs as, op by op, on ``executor`` (and is priced as): when no
    skeleton fits it and the executor has no native kernel for it; else None."""
    if op != "region" and op in REGISTRY and REGISTRY.get(op).category == "fused" \
            and why_not(op, ins, attrs) is not None and not has_native(executor, op):
        return body_graph(decl_of(op), ins, attrs)[0]
    return None


BIND_TIME_COST = 1e-12  # per folded op: free per run, but no more of them than needed


def _bind_time_classes(view: EGraphView) -> set[int]:
    """Classes whose value depends on no input: a param or a constant, or an op over such
    classes only (a fixpoint over the e-graph, as ``Graph.bind_time`` is over a program)."""
    out: set[int] = set()
    changed = True
    while changed:
        changed = False
        for c, nodes in enumerate(view.classes):
            if c in out:
                continue
            for n in nodes:
                if not n.is_absent and n.op == "input":
                    continue
                if n.is_absent or n.op in ("param", "constant") or all(ch in out for ch in view.inputs(n)):
                    out.add(c)
                    changed = True
                    break
    return out


def _well_typed(op: str, ins: list, attrs: dict, outs) -> bool:
    """Whether the op accepts these input types and gives the class's types."""
    try:
        return tuple(REGISTRY.get(op).infer(ins, attrs)) == tuple(outs)
    except RlxError:
        return False


def compile(model: Graph | Module | LIR, target: str | Path | Target | CostModel = "cpu",
            rules: Iterable[str | Path] | RuleSet | None = None, *, limits: Limits | None = None,
            assert_fusion_clean: bool = False, binding: Mapping[str, int] | None = None,
            decompose: Iterable[str] = (), extractor: str = "auto", validate: bool = False,
            seed: int = 0) -> CompileResult:
    """Optimize ``model`` (a MIR graph, or an HIR module lowered with the fusable policy)
    for ``target`` (a shipped target's name or a TOML path) under ``rules`` (default: the
    shipped rules) and return the result. An LIR (already planned) passes through.

    ``decompose`` forces the common lowering of the named ops even where the target claims
    them. ``extractor``: "greedy", "exact" (an ILP) or "auto" (exact below the target's
    e-graph size threshold). ``validate`` runs the compiled program on random inputs (drawn
    with ``seed``; symbols bound by ``binding`` or set to 8) and raises ValidationError if it
    differs from the unfused reference beyond the dtype's tolerance."""
    if extractor not in ("auto", "greedy", "exact"):
        raise RlxError(f"extractor must be 'auto', 'greedy' or 'exact', got {extractor!r}")
    if isinstance(model, LIR):  # already planned: passes through
        result = CompileResult(model.source, model.source, FusionReport(
            target=_target(target).name, ops_before=dict(model.source.op_counts()),
            ops_after=dict(model.source.op_counts()), nodes_before=len(model.source.nodes),
            nodes_after=len(model.source.nodes), extraction={"extractor": "none (LIR passed through)"}),
            model.alignment)
        result.lir = model
        return result
    ruleset = rules if isinstance(rules, RuleSet) else load(rules)
    with ruleset.active():
        return _compile(model, target, ruleset, limits, assert_fusion_clean, binding, decompose, extractor,
                        validate, seed)


def _compile(model, target, ruleset: RuleSet, limits, assert_fusion_clean, binding, decompose, extractor,
             validate, seed) -> CompileResult:
    s = saturate_program(model, target, ruleset, limits=limits, binding=binding, decompose=decompose)
    graph, view, tgt, times = s.graph, s.view, s.target, s.times
    t = time.perf_counter()
    try:
        ex = extract(view, s.roots, s.node_cost, s.original, s.order, seconds=s.limits.seconds)
    except NoProgram as e:
        raise ExtractionError(_no_program_message(view, e.classes, e.computable, s.names, tgt, s.ruleset,
                                                  s.compiled, s.stats)) from None
    exact_info = None
    if extractor == "exact" or (extractor == "auto" and view.n_nodes < tgt.exact_below):
        ex, exact_info = extract_exact(view, s.roots, s.node_cost, ex, tgt.exact_seconds)
    optimized = to_mir(graph, view, ex, s.names)
    times["extract"] = time.perf_counter() - t
    missed, unsupported, applied = explain(s.egraph, view, s.compiled.near, ex, tgt.cost, s.names, s.original)
    stats, compiled, ruleset = s.stats, s.compiled, s.ruleset
    report = FusionReport(
        target=tgt.name, rule_files=ruleset.files,
        ops_before=dict(sorted(graph.op_counts().items())), ops_after=dict(sorted(optimized.op_counts().items())),
        nodes_before=len(graph.nodes), nodes_after=len(optimized.nodes),
        rules=[RuleStats(r.name, r.ruleset, r.doc,
                         sum(n for k, n in stats.matches.items() if compiled.rule_of.get(k) == r.name),
                         applied.get(r.name, 0)) for r in ruleset.rules],
        missed=missed, unsupported=unsupported,
        egraph=EGraphStats(stats.iterations, len(view.classes), view.n_nodes, stats.stop, vars(s.limits)),
        cost_before=ex.initial_cost, cost_after=ex.cost, times=times,
        extraction=exact_info or {"extractor": "greedy", "passes": ex.passes, "switches": ex.switches,
                                   **({"stopped": ex.stopped} if ex.stopped else {})})
    before, after = graph.op_counts(), optimized.op_counts()
    report.fused = {op: n - before.get(op, 0) for op, n in sorted(after.items()) if n > before.get(op, 0)}
    report.kernels = kernel_summary(optimized)
    report.folded = len(optimized.bind_time())
    if ruleset.regions:
        report.rules.append(RuleStats("regions", ruleset.regions[0].ruleset, ruleset.regions[0].doc,
                                      sum(n for k, n in stats.matches.items() if compiled.rule_of.get(k) == "regions"),
                                      after.get("region", 0)))
    if assert_fusion_clean and report.missed:
        raise FusionNotClean(report)
    result = CompileResult(optimized, graph, report, tgt.alignment, tgt.executor, ruleset)
    if validate:
        validate_result(result, binding or {}, seed)
    return result


def kernel_summary(graph: Graph) -> dict[str, str]:
    """Each fused or composite op kind in ``graph`` -> the skeleton its kernel is generated
    from, or why none fits (first instance of each kind)."""
    out: dict[str, str] = {}
    for n in graph.nodes:
        if n.op in out or n.opdef.category not in ("fused", "composite"):
            continue
        ins, attrs = [v.type for v in n.inputs], n.attrs
        k = kernel_for(n.op, ins, attrs)
        out[n.op] = f"generated: {k.kind}" if k is not None else why_not(n.op, ins, attrs)
    return out


class ValidationError(RlxError):
    """The compiled program disagrees with the reference interpreter."""


TOLERANCE = {"f64": 1e-9, "f32": 1e-4, "f16": 2e-2, "bf16": 6e-2}  # relative to max |reference|


def max_error(got: np.ndarray, ref: np.ndarray, dtype: str) -> tuple[float, float]:
    """(max |got - ref|, the tolerance for ``dtype`` scaled by the reference's largest finite
    magnitude). Non-finite values must agree exactly: NaN where the reference is NaN, the same
    infinity where it is infinite; anything else there is an infinite error."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if not ref.size:
        return 0.0, 0.0
    finite = np.isfinite(ref)
    scale = float(np.max(np.abs(ref[finite]))) if finite.any() else 0.0
    tol = TOLERANCE.get(dtype, 0.0) * max(1.0, scale)
    same_nonfinite = np.where(np.isnan(ref), np.isnan(got), got == ref)
    if not np.all(same_nonfinite[~finite]):
        return math.inf, tol
    return (float(np.max(np.abs(got[finite] - ref[finite]))) if finite.any() else 0.0), tol


def validate_result(result: CompileResult, binding: Mapping[str, int], seed: int) -> None:
    """Run the compiled program and the unfused source on the same random data. A mismatch
    names the first op of the compiled program whose value is off (checked against the
    reference interpreter on the compiled program) and the max error."""
    syms = {s: binding.get(s, 8) for s in result.lir.symbols}
    arrays = random_arrays(result.source, syms, seed=seed)
    ins = {n.name: arrays[n.name] for n in result.source.inputs}
    ps = {n.name: arrays[n.name] for n in result.source.params}
    got = result.run(ins, ps)
    want = interpret(result.source, ins, ps)
    outputs = dict(result.source.outputs)
    for name, ref in want.items():
        err, tol = max_error(got[name], ref, str(outputs[name].dtype))
        if not err <= tol:
            program = result.executor_for(ins)
            ref_all = interpret(result.graph, ins, ps, return_all=True)
            for step in program.lir.steps:
                for out in step.outputs:
                    if out in ref_all and step.phase != "epilogue" and step.op not in ("input", "param"):
                        e, t = max_error(program.read(out), ref_all[out], program.lir.values[out].dtype)
                        if not e <= t:
                            raise ValidationError(f"validation failed at op {step.op} (node {step.node!r}): "
                                                  f"max error {e:.3g}; output {name!r} max error {err:.3g} "
                                                  f"(tolerance {tol:.3g})")
            raise ValidationError(f"validation failed: output {name!r} differs from the unfused reference by "
                                  f"{err:.3g} (tolerance {tol:.3g}): a rewrite changed the result")


def _no_program_message(view: EGraphView, classes: list[int], computable: set[int], names: dict[int, str],
                        tgt: Target, ruleset: RuleSet, compiled, stats) -> str:
    """Each unclaimed op with the nodes that need it, and the decompositions tried."""
    cost = tgt.cost
    stuck, stack = set(), list(classes)
    while stack:  # every class below the outputs that has no computable node
        c = stack.pop()
        if c in stuck:
            continue
        stuck.add(c)
        stack.extend(ch for n in view.classes[c] for ch in n.children if ch not in computable)
    need: dict[str, list[str]] = {}
    for c in sorted(stuck):
        for n in view.classes[c]:
            if n.kind is Kind.OP and not cost.claims(n.op):
                need.setdefault(n.op, []).append(names.get(c, f"e-class {c}"))
    lines = [f"no program that target {tgt.name!r} ({tgt.path}) can run computes the outputs:"]
    for op, nodes in sorted(need.items()):
        named = sorted({x for x in nodes if not x.startswith("e-class ")})
        shown = named or sorted(set(nodes))  # classes the rules made have no MIR name
        tried = sorted({r.name for r in ruleset.rules if r.ruleset == "legalize" and _root_op(r) == op})
        fired = sorted({compiled.rule_of[k] for k in stats.matches if compiled.rule_of.get(k) in tried})
        if op in REGISTRY and REGISTRY.get(op).definition is not None:
            tried.append("its definition")
            if any(k.startswith(f"definition:{op}@") and n for k, n in stats.matches.items()):
                fired.append("its definition")
        lines.append(f"  {op} is not claimed; needed by {', '.join(shown[:5])}{' ...' if len(shown) > 5 else ''}; "
                     + (f"decompositions tried: {', '.join(tried)} (matched: {', '.join(fired) or 'none'})"
                        if tried else "no decomposition in the rules"))
    if not need:
        lines.append("  (every op is claimed, but some values have no typed, computable node)")
    return "\n".join(lines)


def _root_op(rule) -> str:
    lhs = getattr(rule.lhs, "expr", rule.lhs)  # unwrap `f(...) as r`
    return lhs.op if hasattr(lhs, "op") else ""
