"""Proving and fuzzing rewrites: every rule must be an equivalence before it ships.

``prove(rule)`` builds both sides as e-graph terms over opaque leaves (tensor variables are
inputs, attribute variables stay symbolic), runs the fused-op definitions, the ``legalize``
rules (the semantics of composite ops) and the algebra axioms of ``axioms.rlx`` under
limits, and checks that the two sides meet in one e-class. Guards are preconditions: they
restrict where a rule applies and are assumed by the proof; leaves get the ranks of a
fuzzed instance so rank-guarded axioms can apply.

``fuzz(rule)`` draws shapes that satisfy the rule (rejection sampling against the pattern's
own shape rules and its guards, static and symbolic), random data (never zeros; every other
instance again with whole rows of one input at -inf, so non-finite semantics such as a fully
masked attention row are compared too), runs both sides in the reference interpreter and
compares them (non-finite values must sit in the same places).
"""
from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from rlx.errors import RlxError
from rlx.egraph.encode import attr_sort, encode_attr, literal
from rlx.egraph.load import new_egraph, run_pieces
from rlx.egraph.saturate import count_enodes
from rlx.egraph.schema import BODY_RULES, schema, type_rules
from rlx.ir.dtypes import DType
from rlx.ir.graph import Graph, Value
from rlx.ir.interpret import interpret
from rlx.ir.registry import REGISTRY, REQUIRED
from rlx.rules import RuleSet, load
from rlx.rules.ast import AttrRef, Bind, Call, Expr, GFunc, GLit, GName, Rule, Var
from rlx.rules.compile import _variants, all_definitions, compile_rule, definition_rules, egg_term
from rlx.rules.fused import emit
from rlx.rules.guards import evaluate

AXIOMS = Path(__file__).parent / "axioms.rlx"
DIMS = (1, 2, 3, 4)


# ---------------------------------------------------------------------------- instances
@dataclass
class Instance:
    """One concrete use of a rule: input shapes, attribute values, op choices, symbols."""
    shapes: dict[str, tuple]
    attrs: dict[str, Any]
    binding: dict[str, int]


def _inputs(e: Expr) -> list[str]:
    out, binds, stack = [], set(), [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Bind):
            binds.add(x.name)
            stack.append(x.expr)
        elif isinstance(x, Var) and x.name not in out:
            out.append(x.name)
        elif isinstance(x, Call) and x.op != "scalar":
            stack.extend(reversed(x.args))
    return [v for v in out if v not in binds]


def _calls(e: Expr):
    """Every call of a pattern, through its ``as`` bindings."""
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Bind):
            stack.append(x.expr)
        elif isinstance(x, Call):
            yield x
            stack.extend(x.args)


def _attr_specs(e: Expr) -> dict[str, Any]:
    """Attribute variables of a pattern and the spec (or 'scalar') each one feeds."""
    out: dict[str, Any] = {}
    for x in _calls(e):
        if x.op == "scalar":
            out[x.args[0].name] = "scalar"
        elif x.op in REGISTRY:
            specs = {a.name: a for a in REGISTRY.get(x.op).attrs}
            for k, v in x.kwargs:
                if isinstance(v, AttrRef):
                    out.setdefault(v.name, specs[k])
    return out


def _draw_attr(spec, rng) -> Any:
    if spec == "scalar":
        return float(np.float32(rng.uniform(0.25, 2.0)))
    kind = spec.kind
    if kind == "float":
        return float(rng.uniform(1e-6, 1e-2)) if "eps" in spec.name else float(rng.uniform(0.1, 2.0))
    if kind == "int":
        return int(rng.choice([-1, 0, 1]))
    if kind == "bool":
        return bool(rng.random() < 0.5)
    if kind == "dims":  # a reshape target: rejection sampling keeps the ones that fit
        d = int(rng.choice(DIMS))
        return [(-1,), (-1, d), (d, -1), (1, -1)][int(rng.integers(0, 4))]
    if spec.default is not REQUIRED:
        return spec.default
    raise LookupError(spec.name)


def _fitting_target(s: tuple, rng) -> tuple:
    """A reshape target made from a drawn shape, as attention code writes them: the leading
    axes merged, or the trailing pair swapped (after a transpose)."""
    if len(s) < 2:
        return (-1,)
    forms = [(-1,) + tuple(s[-2:]), tuple(s[:-2]) + (s[-1], s[-2])]
    return forms[int(rng.integers(0, len(forms)))]


def _build(rule_side: Expr, shapes: dict[str, tuple], attrs: dict[str, Any], subst: dict[str, str],
           name: str, dtype: str = "f32", fixed: dict[str, str] | None = None
           ) -> tuple[Graph, Value | tuple, dict[str, Value]]:
    """One side as a graph over inputs of ``dtype``, or the dtype a guard fixes (``fixed``)."""
    g = Graph(name)
    env: dict[str, Value] = {v: g.input(v, s, (fixed or {}).get(v, dtype)) for v, s in shapes.items()}
    out = emit(rule_side, g, env, {**attrs, **subst}, subst)
    return g, out, env


def draw_instances(rule: Rule, n: int, rng: np.random.Generator, attempts: int = 3000) -> list[Instance]:
    """Up to ``n`` instances whose left side builds (shape rules hold) and whose guards hold."""
    inputs = _inputs(rule.lhs)
    specs = _attr_specs(rule.lhs)
    variants = _variants(rule, widen=False)
    wanted = _guard_sizes(rule)  # sizes the guards ask for (dim(x, -1) == 8)
    ranks = _guard_fixed(rule, "rank", int)   # ranks the guards ask for (rank(b) == 1)
    coupled = [(v, e) for v, e in _coupled(rule.lhs, inputs) if v not in ranks]
    fixed = _guard_fixed(rule, "dtype", str)
    leaves = _leaf_calls(rule.lhs, inputs)
    found: list[Instance] = []
    builds = 0  # graphs built, leaf redraws included: bounded like the attempts
    good: dict[int, dict[str, tuple]] = {}  # per leaf call, the last operand shapes its shape rule took
    for attempt in range(attempts):
        if len(found) >= n or builds > 4 * attempts:
            break
        subst = variants[attempt % len(variants)]
        try:
            attrs = {k: subst[k] if k in subst else _draw_attr(spec, rng) for k, spec in specs.items()}
        except LookupError:
            return found  # an attribute this sampler cannot draw
        str_subst = {k: x for k, x in subst.items() if isinstance(x, str)}
        for gd in rule.guards:  # `a == b` between attribute variables: draw them equal
            if gd.kind == "compare" and gd.op == "==" and all(isinstance(x, GName) for x in (gd.a, gd.b)):
                if gd.b.name in attrs and gd.a.name in attrs:
                    attrs[gd.a.name] = attrs[gd.b.name]
        # Correlated draws make matching shapes likely: one base rank, two dim sizes per attempt.
        base, pool = int(rng.integers(1, 5)), rng.choice(DIMS, size=2, replace=False)
        if ranks and rng.random() < 0.5:  # the others likely share a rank a guard fixes (a conv's x and w)
            base = int(rng.choice(list(ranks.values())))
        if wanted and rng.random() < 0.5:
            pool[int(rng.integers(0, 2))] = int(rng.choice(wanted))
        shapes = {v: tuple(int(rng.choice(pool)) for _ in range(
            ranks.get(v, base if rng.random() < 0.7 else int(rng.integers(0, 5))))) for v in inputs}
        for k, spec in specs.items():  # reshape targets that fit the drawn shapes half the time
            if k not in subst and spec != "scalar" and spec.kind == "dims" and shapes and rng.random() < 0.5:
                attrs[k] = _fitting_target(list(shapes.values())[int(rng.integers(0, len(shapes)))], rng)
        for i, call in enumerate(leaves):  # an op on inputs only (a conv's x, w, bias): redraw until its
            args = [a.name for a in call.args if a.name not in ranks]  # shape rule holds
            if i in good and rng.random() < 0.7:  # most of the time, start from shapes that fitted
                shapes.update(good[i])
            for _ in range(LEAF_TRIES):
                builds += 1
                try:
                    _build(call, {k: shapes[k] for k in _inputs(call)}, attrs, str_subst, "leaf", fixed=fixed)
                    good[i] = {a: shapes[a] for a in args}
                    break
                except (RlxError, KeyError, IndexError, ValueError, TypeError, AttributeError):
                    for a in args:
                        rank = int(rng.integers(0, 5)) if rng.random() < 0.5 else len(shapes[a])
                        shapes[a] = tuple(int(rng.choice(pool)) for _ in range(rank))
        for v, sibling in coupled:  # a residual or a mask: half the time, its partner's shape
            if rng.random() < 0.5:
                try:
                    _, out, _ = _build(sibling, {k: shapes[k] for k in _inputs(sibling)}, attrs,
                                       {k: x for k, x in subst.items() if isinstance(x, str)}, "sibling",
                                       fixed=fixed)
                    shapes[v] = tuple(out.shape)
                except (RlxError, KeyError, IndexError, ValueError, TypeError, AttributeError):
                    pass
        binding: dict[str, int] = {}
        if attempt % 2 and shapes:  # half the instances name one dim symbolically
            sizes = [d for s in shapes.values() for d in s if d > 1]
            if sizes:
                pick = int(rng.choice(sizes))
                shapes = {v: tuple("S" if d == pick else d for d in s) for v, s in shapes.items()}
                binding = {"S": pick}
        builds += 1
        try:
            g, out, env = _build(rule.lhs, shapes, attrs, {k: v for k, v in subst.items() if isinstance(v, str)},
                                 "lhs", fixed=fixed)
        except (RlxError, KeyError, IndexError, ValueError, TypeError):
            continue
        tensors = {k: v.type for k, v in env.items()}
        if all(_holds(gd, tensors, {**attrs, **subst}) for gd in rule.guards):
            found.append(Instance(shapes, {**attrs, **subst}, binding))
    return found


def _holds(guard, tensors, attrs) -> bool:
    """A guard that cannot be evaluated on an instance (a name it lacks) does not hold."""
    try:
        return evaluate(guard, tensors, attrs) is True
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError, RlxError):
        return False


LEAF_TRIES = 10


def _leaf_calls(e: Expr, inputs: list[str]) -> list[Call]:
    """Calls of non-elementwise registry ops on two or more inputs (a conv, a matmul): their
    shapes can be drawn until the op's own shape rule holds, before the whole pattern is tried
    (broadcasting ones are left to the correlated draws)."""
    return [x for x in _calls(e) if x.op in REGISTRY and not REGISTRY.get(x.op).elementwise and len(x.args) >= 2
            and all(isinstance(a, Var) and a.name in inputs for a in x.args)]


def _coupled(e: Expr, inputs: list[str]) -> list[tuple[str, Expr]]:
    """Inputs that are an operand of an elementwise op beside a computed operand (a residual
    added to a convolution): drawing them at that operand's shape makes instances likely."""
    out: list[tuple[str, Expr]] = []
    for x in _calls(e):
        if x.op in REGISTRY and REGISTRY.get(x.op).elementwise and len(x.args) == 2:
            for a, b in (x.args, x.args[::-1]):
                if isinstance(a, Var) and a.name in inputs and isinstance(b, (Call, Bind)) \
                        and a.name not in _inputs(b):
                    out.append((a.name, b.expr if isinstance(b, Bind) else b))
    return out


def _guard_fixed(rule: Rule, fn: str, kind: type) -> dict[str, Any]:
    """Inputs whose ``fn`` (rank or dtype) a guard fixes to a literal (``rank(b) == 1``,
    ``dtype(m) == "bool"``): drawn and built at that value."""
    out = {}
    for g in rule.guards:
        if g.kind == "compare" and g.op == "==":
            for a, b in ((g.a, g.b), (g.b, g.a)):
                if isinstance(a, GFunc) and a.fn == fn and isinstance(b, GLit) and type(b.value) is kind:
                    out[a.var] = b.value
    return out


def _guard_sizes(rule: Rule) -> list[int]:
    """Positive integers the guards compare a dim with: sizes worth drawing."""
    out = set()
    for g in rule.guards:
        if g.kind == "compare":
            sides = (g.a, g.b)
            if any(isinstance(x, GFunc) and x.fn == "dim" for x in sides):
                out |= {x.value for x in sides if isinstance(x, GLit) and isinstance(x.value, int)
                        and not isinstance(x.value, bool) and 0 < x.value <= 64}
    return sorted(out)


# ---------------------------------------------------------------------------- fuzzing
@dataclass
class Counterexample:
    """One instance on which the sides differ; ``replay(rule, cx)`` evaluates it again."""
    shapes: dict[str, tuple]
    attrs: dict[str, Any]
    seed: int
    max_abs: float
    max_rel: float
    output: str
    binding: dict[str, int] = field(default_factory=dict)   # symbol values
    dtype: str = "f32"
    index: int = 0                                           # which instance: its data's seed

    def __str__(self) -> str:
        syms = f", symbols {self.binding}" if self.binding else ""
        return (f"shapes {self.shapes}{syms}, attributes {self.attrs}, dtype {self.dtype}, seed {self.seed} "
                f"(instance {self.index}): output {self.output} differs by {self.max_abs:.3g} "
                f"(relative {self.max_rel:.3g})")


@dataclass
class FuzzResult:
    rule: str
    trials: int
    instances: int = 0
    failures: list[Counterexample] = field(default_factory=list)
    max_abs: float = 0.0
    max_rel: float = 0.0
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.instances > 0 and not self.failures


def _rhs_outputs(rule: Rule, lhs_out, lhs_env, rhs_out) -> list[tuple[str, Value, Value]]:
    if rule.outputs:
        lhs_vals = [lhs_out if n == "root" else lhs_env[n] for n in rule.outputs]
        return [(n, a, b) for n, a, b in zip(rule.outputs, lhs_vals, rhs_out)]
    return [("root", lhs_out, rhs_out)]


# Tolerance (rtol = atol) by data dtype. Both sides run in the float64 reference interpreter on
# the same rounded data, so what differs is where the sides round a constant (a rule's
# 1.4142135 against gelu's exact sqrt 2): f32 or f16 rounding of a constant, not of the data.
TOLERANCE = {"f64": 1e-6, "f32": 1e-5, "f16": 2e-3}


def fuzz(rule: Rule, trials: int = 20, seed: int = 0, dtypes: tuple[str, ...] = ("f32", "f64", "f16"),
         rules: RuleSet | None = None) -> FuzzResult:
    """Evaluate both sides on ``trials`` random valid instances, cycling through ``dtypes``
    for the data (tolerances: TOLERANCE). ``rules`` is the rule set the rule comes from (its
    fused ops); the standard library's are always there."""
    with (rules or RuleSet()).active():
        return _fuzz(rule, trials, seed, dtypes)


def _fuzz(rule: Rule, trials: int, seed: int, dtypes: tuple[str, ...]) -> FuzzResult:
    rng = np.random.default_rng(seed)
    result = FuzzResult(rule.name, trials)
    instances = draw_instances(rule, trials, rng)
    result.instances = len(instances)
    if not instances:
        result.note = "no instance satisfying the pattern and its guards was found"
        return result
    for i, inst in enumerate(instances):
        found, err, rel = _check_instance(rule, inst, seed, i, dtypes[i % len(dtypes)])
        result.failures += found
        result.max_abs, result.max_rel = max(result.max_abs, err), max(result.max_rel, rel)
    return result


def replay(rule: Rule, cx: Counterexample, rules: RuleSet | None = None) -> Counterexample | None:
    """Evaluate a counterexample's instance again (same shapes, symbols, attributes, dtype
    and data): the failure it shows now, or None if the sides agree."""
    with (rules or RuleSet()).active():
        found, _, _ = _check_instance(rule, Instance(cx.shapes, cx.attrs, cx.binding), cx.seed, cx.index, cx.dtype)
    return next((f for f in found if f.output == cx.output), found[0] if found else None)


def _check_instance(rule: Rule, inst: Instance, seed: int, index: int, dtype: str
                    ) -> tuple[list[Counterexample], float, float]:
    """Both sides on one instance: its counterexamples, the max absolute and relative error."""
    rtol = atol = TOLERANCE[dtype]

    def fail(output: str, err: float = math.inf, rel: float = math.inf) -> Counterexample:
        return Counterexample(inst.shapes, inst.attrs, seed, err, rel, output, dict(inst.binding), dtype, index)

    subst = {k: v for k, v in inst.attrs.items() if isinstance(v, str)}
    fixed = _guard_fixed(rule, "dtype", str)
    try:
        gl, lout, lenv = _build(rule.lhs, inst.shapes, inst.attrs, subst, "lhs", dtype, fixed)
    except RlxError:
        return [], 0.0, 0.0  # the pattern needs another dtype (a float-only op on this one, say)
    try:
        gr, rout, _ = _build(rule.rhs, {v: inst.shapes[v] for v in _inputs(rule.lhs)}, inst.attrs, subst, "rhs",
                             dtype, fixed)
    except RlxError as e:  # the right side is not even defined where the left matched
        return [fail(f"right side rejects this instance: {e}")], 0.0, 0.0
    pairs = _rhs_outputs(rule, lout, lenv, rout)
    for n, (name, a, b) in enumerate(pairs):
        gl.output(**{f"o{n}": a})
        gr.output(**{f"o{n}": b if not isinstance(b, tuple) else b[0]})
    data_rng = np.random.default_rng(seed * 1000 + index)
    shapes = {v: tuple(inst.binding.get(d, d) for d in s) for v, s in inst.shapes.items()}
    data = {}
    for v, s in shapes.items():
        if fixed.get(v) == "bool":
            data[v] = data_rng.random(s) < 0.5
            continue
        x = data_rng.standard_normal(s)
        x[np.abs(x) < 1e-3] = 0.5  # never zeros
        data[v] = x.astype(DType(fixed.get(v, dtype)).np)
    out, max_abs, max_rel = _compare(gl, gr, pairs, data, inst, rtol, fail, "")
    # every other instance again with whole rows of one input at -inf (a fully masked row,
    # an overflowed activation): a rule must agree on non-finite values too
    floats = [v for v in sorted(data) if np.issubdtype(data[v].dtype, np.floating) and data[v].ndim]
    if index % 2 and floats:
        v = floats[(index // 2) % len(floats)]
        edge = dict(data)
        x = edge[v].copy()
        rows = data_rng.random(x.shape[:-1]) < 0.5
        x[rows] = -np.inf
        edge[v] = x
        more, _, _ = _compare(gl, gr, pairs, edge, inst, rtol, fail, f" with -inf rows in {v}")
        out += more
    return out, max_abs, max_rel


def _compare(gl, gr, pairs, data, inst: Instance, tol: float, fail, note: str) -> tuple[list, float, float]:
    """Both sides on ``data``: the counterexamples, the max absolute and relative error."""
    try:
        with np.errstate(all="ignore"):
            want = interpret(gl, data, {}, binding=inst.binding)
            got = interpret(gr, data, {}, binding=inst.binding)
    except Exception as e:  # a reference that cannot run this instance: report it, do not crash
        return [fail(f"evaluation failed{note}: {type(e).__name__}: {e}")], 0.0, 0.0
    out, max_abs, max_rel = [], 0.0, 0.0
    for n, (name, _, _) in enumerate(pairs):
        a, b = want[f"o{n}"], got[f"o{n}"]
        if a.shape != b.shape:
            out.append(fail(f"{name} (shape {b.shape} instead of {a.shape})"))
            continue
        finite = np.isfinite(a) & np.isfinite(b)
        if not np.array_equal(np.isfinite(a), np.isfinite(b)):
            out.append(fail(f"{name} (non-finite values differ{note})"))
            continue
        diff = np.abs(a[finite] - b[finite])
        err = float(diff.max()) if diff.size else 0.0
        rel = float((diff / (np.abs(a[finite]) + 1e-12)).max()) if diff.size else 0.0
        max_abs, max_rel = max(max_abs, err), max(max_rel, min(rel, 1e300))
        if not np.allclose(b[finite], a[finite], rtol=tol, atol=tol):
            out.append(fail(name + note, err, rel))
    return out, max_abs, max_rel


# ---------------------------------------------------------------------------- proving
@dataclass
class Proof:
    rule: str
    proved: bool
    reason: str                      # proved | axiom | limits hit | sides differ | ...
    used: list[str] = field(default_factory=list)
    iterations: int = 0
    enodes: int = 0
    variants: int = 0


GENERIC_INT = 1_000_003  # an integer attribute value no fact singles out (see _int_values)
_FACTS: dict[tuple, RuleSet] = {}


def _facts(rules: RuleSet | None, proving: Rule) -> RuleSet:
    """What a proof may use, and nothing else: the definitions (registry ops', the standard
    library's and the given rule set's fused ops: an op means its definition), the shipped
    legalize rules of ops that have no definition (sdpa's, which the test suite fuzzes
    against its NumPy reference) and the axioms of axioms.rlx (fuzzed in the test suite).
    Never a user's rule, and never the rule being proved: a fact is not assumed into being."""
    key = tuple(d.text for d in (rules.fused if rules else ())) + (proving.text,)
    if key not in _FACTS:
        shipped, axioms = _shipped_facts()
        decls = {d.name: d for d in shipped.fused}
        decls.update({d.name: d for d in (rules.fused if rules else ())})
        legalize = [r for r in shipped.rules if r.ruleset == "legalize" and r.text != proving.text]
        _FACTS[key] = RuleSet(rules=legalize + axioms.rules, fused=list(decls.values()), commutative=set())
    return _FACTS[key]


@lru_cache(maxsize=1)
def _shipped_facts() -> tuple[RuleSet, RuleSet]:
    return load(), load([AXIOMS])


def _int_literals(facts: RuleSet, rule: Rule) -> set[int]:
    """Every integer an attribute is compared with or set to anywhere in the facts or the
    rule: the values a fact can treat specially."""
    out: set[int] = {-1, 0, 1}
    stack: list[Any] = [r.lhs for r in facts.rules] + [r.rhs for r in facts.rules] + [rule.lhs, rule.rhs]
    for d in all_definitions(facts.fused):
        stack += [e for _, e in d.bindings] + list(d.results)
        out |= {v for _, v in REGISTRY.get(d.name).defined_for if isinstance(v, int) and not isinstance(v, bool)}
    while stack:
        x = stack.pop()
        if isinstance(x, Bind):
            stack.append(x.expr)
        elif isinstance(x, Call):
            out |= {v for _, v in x.kwargs if isinstance(v, int) and not isinstance(v, bool)}
            stack.extend(x.args)
    for g in rule.guards:
        for side in (g.a, g.b):
            if isinstance(side, GLit) and isinstance(side.value, int) and not isinstance(side.value, bool):
                out.add(side.value)
    return out


def _int_assignments(rule: Rule, subst: dict[str, Any], facts: RuleSet) -> list[dict[str, int]]:
    """Values for the rule's free integer attribute variables that together cover every
    value: a generic one (no fact mentions it, so a proof with it holds for every value no
    fact mentions) and each value a fact mentions. Choices a guard rules out are dropped."""
    names = sorted(v for v, spec in _attr_specs(rule.lhs).items()
                   if spec != "scalar" and attr_sort(spec) == "i64" and v not in subst)
    values = sorted(_int_literals(facts, rule)) + [GENERIC_INT]
    out = []
    for combo in itertools.product(values, repeat=len(names)):
        chosen = dict(zip(names, combo))
        if all(_guard_allows(g, chosen) for g in rule.guards):
            out.append(chosen)
    return out


def _guard_allows(g, chosen: dict[str, int]) -> bool:
    """False only when a guard over these attribute variables and literals fails."""
    if g.kind != "compare":
        return True
    sides = []
    for side in (g.a, g.b):
        if isinstance(side, GLit) and isinstance(side.value, int):
            sides.append(side.value)
        elif isinstance(side, GName) and side.name in chosen:
            sides.append(chosen[side.name])
        else:
            return True  # depends on shapes or other values: a precondition, assumed
    a, b = sides
    return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[g.op]


def _term(e: Expr, attrs: dict[str, Any], subst: dict[str, str], sym: dict[str, str], env: dict[str, str]) -> str:
    """One side over opaque leaves. String-typed attribute variables (floats, lists, ...) stay
    symbolic, so the proof covers every value; integer ones take the value being proved."""
    def attr(name: str, spec) -> str:
        if spec is None or attr_sort(spec) == "String":
            return json.dumps(sym.setdefault(name, f"sym:{name}"))
        return literal(encode_attr(spec, attrs[name]), attr_sort(spec))
    return egg_term(e, subst, lambda name: env.get(name) or f'(O_input "{name}")', attr, env.__setitem__,
                    lambda spec: json.dumps(f"sym:{spec.name}"))


def prove(rule: Rule, rules: RuleSet | None = None, iterations: int = 8, enodes: int = 20000,
          seconds: float = 10.0) -> Proof:
    """Prove ``rule`` (from ``rules``, whose fused ops it may use) in fresh e-graphs, for
    every ``in`` choice and every class of integer attribute values; see the module
    docstring. Sound by construction: the facts are ``_facts``."""
    with (rules or RuleSet()).active():
        return _prove(rule, rules, iterations, enodes, seconds)


def _prove(rule: Rule, rules: RuleSet | None, iterations: int, enodes: int, seconds: float) -> Proof:
    ax = _facts(rules, rule)
    root = getattr(rule.lhs, "expr", rule.lhs)
    if rule.ruleset == "legalize" and getattr(root, "op", None) in REGISTRY and \
            REGISTRY.get(root.op).definition is None and rule in _shipped_facts()[0].rules:
        return Proof(rule.name, False, f"{root.op} has no definition: this decomposition is part of its meaning "
                                       "(the fuzzer checks it against the NumPy reference)")
    programs = [f"(ruleset {s})" for s in ("legalize", "axioms")]
    for r in ax.rules:
        for _, text in compile_rule(r) + (compile_rule(r, r.rhs, r.lhs, suffix="~rev") if r.bidirectional else []):
            programs.append(text)
    programs += [text for _, text in definition_rules(all_definitions(ax.fused))]
    instances = draw_instances(rule, 100, np.random.default_rng(0))
    variants = _variants(rule, widen=False)
    used: set[str] = set()
    total_iters = total_nodes = cases = 0
    failed: list[str] = []
    for subst in variants:
        inst = next((i for i in instances if all(i.attrs.get(k) == v for k, v in subst.items())), None)
        ranks = {v: len(s) for v, s in inst.shapes.items()} if inst else {}
        for ints in _int_assignments(rule, subst, ax):
            cases += 1
            eg = new_egraph()
            run_pieces(eg, [schema(), BODY_RULES, type_rules()] + programs)
            sym: dict[str, str] = {}
            lenv: dict[str, str] = {}
            lhs = _term(rule.lhs, ints, subst, sym, lenv)
            rhs = _term(rule.rhs, ints, subst, sym, dict(lenv))
            facts = [f"(let $lhs {lhs})", f"(let $rhs {rhs})"]
            facts += [f'(set (ty-rank (O_input "{v}")) {r})' for v, r in ranks.items()]
            run_pieces(eg, facts)
            goals = ([(f"(O_get $rhs {i})", "$lhs" if n == "root" else lenv[n]) for i, n in enumerate(rule.outputs)]
                     if rule.outputs else [("$rhs", "$lhs")])
            t0, stop = time.perf_counter(), "sides differ (saturated)"
            for it in range(iterations):
                changed = False
                for s in ("legalize", "axioms"):
                    rep = eg.run_program(*eg.parse_program(f"(run {s} 1)"))[-1].report
                    changed |= rep.updated
                    used.update(k.split("@")[0] for k, n in rep.num_matches_per_rule.items() if n)
                total_iters += 1
                if all(_equal(eg, a, b) for a, b in goals):
                    break
                n_nodes = count_enodes(eg)
                if not changed:
                    break
                late = time.perf_counter() - t0 > seconds
                if n_nodes > enodes or late or it == iterations - 1:
                    stop = f"limits hit ({'e-nodes' if n_nodes > enodes else 'seconds' if late else 'iterations'})"
                    break
            total_nodes = max(total_nodes, count_enodes(eg))
            if not all(_equal(eg, a, b) for a, b in goals):
                where = {**subst, **{k: ("any other value" if v == GENERIC_INT else v) for k, v in ints.items()}}
                failed.append(f"{stop}" + (f" for {', '.join(f'{k}={v}' for k, v in where.items())}" if where else ""))
                break
        if failed:
            break
    if failed:
        return Proof(rule.name, False, "; ".join(failed), sorted(used), total_iters, total_nodes, cases)
    undefined = _rhs_undefined(rule, instances)
    if undefined:
        return Proof(rule.name, False, f"the sides are equal where both are defined, but the right side rejects "
                                       f"an instance the left accepts: {undefined}", sorted(used), total_iters,
                     total_nodes, cases)
    return Proof(rule.name, True, "proved", sorted(used), total_iters, total_nodes, cases)


def _neighbours(rule: Rule, instances: list[Instance], limit: int = 400) -> list[Instance]:
    """Instances one static dim away from drawn ones that the left side and guards accept."""
    out: list[Instance] = []
    for inst in instances:
        for v, shape in inst.shapes.items():
            for ax, d in enumerate(shape):
                for new in DIMS:
                    if len(out) >= limit or not isinstance(d, int) or new == d:
                        continue
                    shapes = {**inst.shapes, v: shape[:ax] + (new,) + shape[ax + 1:]}
                    subst = {k: x for k, x in inst.attrs.items() if isinstance(x, str)}
                    try:
                        _, _, env = _build(rule.lhs, shapes, inst.attrs, subst, "lhs",
                                           fixed=_guard_fixed(rule, "dtype", str))
                    except (RlxError, KeyError, IndexError, ValueError, TypeError):
                        continue
                    tensors = {k: x.type for k, x in env.items()}
                    if all(_holds(g, tensors, inst.attrs) for g in rule.guards):
                        out.append(Instance(shapes, inst.attrs, inst.binding))
    return out


def _rhs_undefined(rule: Rule, instances: list[Instance]) -> str:
    """The e-graph proves the sides equal as terms; that the right side's shape rules hold
    wherever the left side's and the guards do is checked on drawn instances and on their
    neighbours (one dim changed: where shape coincidences end): the first it rejects, or ""."""
    for inst in instances + _neighbours(rule, instances):
        subst = {k: v for k, v in inst.attrs.items() if isinstance(v, str)}
        try:
            _build(rule.rhs, {v: inst.shapes[v] for v in _inputs(rule.lhs)}, inst.attrs, subst, "rhs",
                   fixed=_guard_fixed(rule, "dtype", str))
        except RlxError as e:
            return f"shapes {inst.shapes}, attributes {inst.attrs}: {e}"
    return ""


def _equal(eg, a: str, b: str) -> bool:
    try:
        eg.run_program(*eg.parse_program(f"(check (= {a} {b}))"))
        return True
    except Exception:
        return False


__all__ = ["prove", "fuzz", "replay", "Proof", "FuzzResult", "Counterexample", "draw_instances"]
