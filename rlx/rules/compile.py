"""Compile checked rules to egglog program text.

A rule becomes one egglog rule per choice of its ``v in [...]`` guards (op variables and
attribute variables are substituted). The left side is flattened into query facts, guards
become facts over the type functions (``ty-rank``, ``ty-dim``, ``ty-dtype``), the right
side becomes a ``union`` with the matched root (or ``O_get`` projections of a multi-output
op). Every fusion rule also gets a *near-miss* relation: its left side with op variables
ranging over every unary elementwise op and no guards, so the report can say why a
near match did not fire. ``regions`` declarations expand to the region rules.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from rlx.ir.registry import REGISTRY, REQUIRED, AttrSpec
from rlx.egraph.encode import (BODY_ARITY, HEAD_SEP, attr_sort, ctor, encode_attr, lifts_into_regions, literal,
                               scalar_key)
from rlx.rules import RuleSet
from rlx.rules.check import MAX_VARIANTS

MAX_EGGLOG_RULES = 4 * MAX_VARIANTS  # per rule set, every rule's variants together
from rlx.rules.ast import AttrRef, Bind, Call, Expr, FusedDecl, GArith, GFunc, GLit, GName, Guard, Num, Rule, Var
from rlx.rules.definitions import decl_of, registry_definitions
from rlx.rules.errors import RuleError

ROOT = "v_root"


@dataclass
class NearMiss:
    """The relation recording structural matches of a fusion rule's left side."""
    relation: str
    rule: Rule
    columns: list[tuple[str, str, str]]  # (role: root|tensor|attr|op, name, sort)


@dataclass
class Compiled:
    programs: list[str] = field(default_factory=list)
    rule_of: dict[str, str] = field(default_factory=dict)   # egglog rule name -> rlx rule name
    near: list[NearMiss] = field(default_factory=list)
    rulesets: list[str] = field(default_factory=list)
    region_sets: list[str] = field(default_factory=list)


# Rule sets rlx gives a meaning to keep their names in egglog; any other name a rule file gives
# is spelled "user-NAME", which no name rlx or egglog declares can be (a NAME has no '-').
RLX_RULESETS = ("algebra", "fusion", "legalize", "axioms")


def egg_ruleset(name: str) -> str:
    """How a rule file's ruleset is spelled in egglog."""
    return name if name in RLX_RULESETS else f"user-{name}"


def _unary_elementwise() -> list[str]:
    return [op.name for op in REGISTRY if op.elementwise and len(op.inputs) == 1 and not op.attrs]


class _Query:
    """Builds the facts of one left side."""

    def __init__(self, subst: dict[str, Any]) -> None:
        self.subst, self.facts, self.n = subst, [], 0
        self.attr_sorts: dict[str, str] = {}

    def fresh(self) -> str:
        self.n += 1
        return f"_t{self.n}"

    def term(self, e: Expr) -> str:
        if isinstance(e, Var):
            return f"v_{e.name}"
        if isinstance(e, Num):
            t = self.fresh()
            self.facts.append(f'(= {t} (O_scalar "{scalar_key(e.value)}"))')
            return t
        if isinstance(e, Bind):
            self.facts.append(f"(= v_{e.name} {self.term(e.expr)})")
            return f"v_{e.name}"
        if e.op == "scalar":
            t = self.fresh()
            self.attr_sorts[e.args[0].name] = "String"
            self.facts.append(f"(= {t} (O_scalar a_{e.args[0].name}))")
            return t
        op = self.subst.get(e.op, e.op)
        if op == "none":
            return self.term(e.args[0])
        opdef = REGISTRY.get(op)
        if opdef.variadic:  # its operands are a vector: exactly this many, each matched in place
            vec = self.fresh()
            self.facts.append(f"(= {len(e.args)} (vec-length {vec}))")
            for i, a in enumerate(e.args):
                self.facts.append(f"(= {self.term(a)} (vec-get {vec} {i}))")
            args = [vec]
        else:
            args = [self.term(a) for a in e.args]
        while len(args) < len(opdef.inputs) and not opdef.variadic:  # an omitted optional input is absent
            t = self.fresh()
            self.facts.append(f"(= {t} (O_absent))")
            args.append(t)
        kw = e.kw()
        attrs = []
        for spec in opdef.attrs:
            v = kw.get(spec.name)
            if v is None:
                attrs.append(self.fresh())
            elif isinstance(v, AttrRef):
                self.attr_sorts[v.name] = attr_sort(spec)
                attrs.append(self.subst_attr(v.name, spec))
            else:
                attrs.append(attr_literal(spec, v))
        t = self.fresh()
        self.facts.append(f"(= {t} ({ctor(op)} {' '.join(args + attrs)}))")
        return t

    def subst_attr(self, name: str, spec: AttrSpec) -> str:
        if name in self.subst:
            return attr_literal(spec, self.subst[name])
        return f"a_{name}"


def attr_literal(spec: AttrSpec, value: Any) -> str:
    v = spec.normalize(list(value) if isinstance(value, tuple) else value, f"attribute {spec.name}")
    return literal(encode_attr(spec, v), attr_sort(spec))


class _Guards:
    """Guard facts. Dims in arithmetic or ordering must be static: symbolic dims are interned
    ids, which only equality can compare soundly."""

    def __init__(self, q: _Query, subst: dict[str, Any]) -> None:
        self.q, self.subst = q, subst

    def term(self, g, static: bool, other_sort: str = "") -> tuple[str, str]:
        q = self.q
        if isinstance(g, GLit):
            v = g.value
            if isinstance(v, tuple):
                return json.dumps(json.dumps(list(v), separators=(",", ":"))), "String"
            if isinstance(v, bool) or isinstance(v, str):
                return json.dumps(str(v).lower() if isinstance(v, bool) else v), "String"
            if isinstance(v, float) and other_sort == "String":
                return json.dumps(repr(v)), "String"
            return (str(v), "i64") if isinstance(v, int) else (literal(v, "f64"), "f64")
        if isinstance(g, GName):
            if g.name in self.subst:
                v = self.subst[g.name]
                text = json.dumps(list(v), separators=(",", ":")) if isinstance(v, tuple) else str(v)
                return json.dumps(text), "String"
            if g.name in q.attr_sorts:
                return f"a_{g.name}", q.attr_sorts[g.name]
            return json.dumps(g.name), "String"
        if isinstance(g, GFunc):
            t = q.fresh()
            if g.fn == "rank":
                q.facts.append(f"(= {t} (ty-rank v_{g.var}))")
                return t, "i64"
            if g.fn == "dtype":
                q.facts.append(f"(= {t} (ty-dtype v_{g.var}))")
                return t, "String"
            # ty-dim holds both axis spellings (i and i - rank), so the key is a constant:
            # a computed key would make egglog scan the whole table per match.
            q.facts.append(f"(= {t} (ty-dim v_{g.var} {g.axis}))")
            if static:
                q.facts.append(f"(>= {t} 0)")
            return t, "i64"
        if isinstance(g, GArith):
            a, ta = self.term(g.a, True)
            b, tb = self.term(g.b, True)
            a, b, sort = _unify(a, ta, b, tb)
            return f"({ {'//': '/'}.get(g.op, g.op)} {a} {b})", sort
        raise AssertionError(g)

    def fact(self, g: Guard) -> None:
        ordering = g.op not in ("==", "!=")
        a, ta = self.term(g.a, ordering)
        b, tb = self.term(g.b, ordering, ta)
        if ta != tb and isinstance(g.a, GLit):
            a, ta = self.term(g.a, ordering, tb)
        a, b, _ = _unify(a, ta, b, tb)
        self.q.facts.append(f"({'=' if g.op == '==' else g.op} {a} {b})")


def _unify(a: str, ta: str, b: str, tb: str) -> tuple[str, str, str]:
    if ta == tb:
        return a, b, ta
    if ta == "i64" and tb == "f64":
        return f"(to-f64 {a})", b, "f64"
    if ta == "f64" and tb == "i64":
        return a, f"(to-f64 {b})", "f64"
    return a, b, ta


def egg_term(e: Expr, subst: dict[str, Any], var: Callable[[str], str], attr: Callable[[str, AttrSpec], str],
             on_bind: Callable[[str, str], None] | None = None,
             missing: Callable[[AttrSpec], str] | None = None) -> str:
    """Egglog text of an expression built on the right of a rule, in a definition or in a
    proof. Callers say how a variable and an attribute variable are spelled; op variables and
    ``in``-guarded attributes come from ``subst``; omitted attributes take their defaults
    (a required one is an error, or ``missing``'s spelling: a left side's wildcard)."""
    if isinstance(e, Var):
        return var(e.name)
    if isinstance(e, Num):
        return f'(O_scalar "{scalar_key(e.value)}")'
    if isinstance(e, Bind):
        text = egg_term(e.expr, subst, var, attr, on_bind, missing)
        if on_bind is not None:
            on_bind(e.name, text)
        return text
    if e.op == "scalar":
        return f"(O_scalar {attr(e.args[0].name, None)})"
    op = subst.get(e.op, e.op)
    if op == "none":
        return egg_term(e.args[0], subst, var, attr, on_bind, missing)
    opdef = REGISTRY.get(op)
    args = [egg_term(a, subst, var, attr, on_bind, missing) for a in e.args]
    if opdef.variadic:
        args = [f"(vec-of {' '.join(args)})"]
    else:
        args += ["(O_absent)"] * (len(opdef.inputs) - len(args))
    kw = e.kw()
    attrs = []
    for spec in opdef.attrs:
        v = kw.get(spec.name)
        if v is None:
            if spec.default is not REQUIRED:
                attrs.append(literal(encode_attr(spec, spec.default), attr_sort(spec)))
            elif missing is not None:
                attrs.append(missing(spec))
            else:
                raise RuleError(e.span, f"{op} needs attribute {spec.name!r} on the right side")
        elif isinstance(v, AttrRef):
            attrs.append(attr_literal(spec, subst[v.name]) if v.name in subst else attr(v.name, spec))
        else:
            attrs.append(attr_literal(spec, v))
    return f"({ctor(op)} {' '.join(args + attrs)})"


def _rhs(e: Expr, subst: dict[str, Any]) -> str:
    return egg_term(e, subst, lambda name: f"v_{name}", lambda name, spec: f"a_{name}")


def _variants(rule: Rule, widen: bool) -> list[dict[str, Any]]:
    """Each choice of the rule's ``in`` guards (counted before they are expanded: at most
    MAX_VARIANTS). Widened for the near-miss relation, op variables range over every unary
    elementwise op, unless that would pass the bound: then over their lists only."""
    members = [g for g in rule.guards if g.kind == "member"]
    attr_vars = _attr_vars(rule.lhs)
    narrow = [[(g.a, o) for o in g.b] for g in members]
    choices = narrow
    if widen:
        wide = [[(g.a, o) for o in sorted(set(_unary_elementwise()) | set(g.b))]
                for g in members if g.a not in attr_vars]
        if math.prod(map(len, wide)) <= MAX_VARIANTS:
            choices = wide  # an attribute variable stays free; its value is recorded
        else:
            choices = [c for g, c in zip(members, narrow) if g.a not in attr_vars]
    n = math.prod(map(len, choices))
    if n > MAX_VARIANTS:
        raise RuleError(rule.span, f"rule {rule.name!r} expands to {n} variants (one per choice of its 'in' "
                                   f"guards: {' x '.join(str(len(c)) for c in choices)}), more than "
                                   f"MAX_VARIANTS = {MAX_VARIANTS}")
    return [dict(c) for c in itertools.product(*choices)]


def _expanded(rule: Rule, lhs: Expr, commutative, widen: bool) -> list[tuple[dict[str, Any], Expr]]:
    """Each ``in`` choice with each operand order: at most MAX_VARIANTS in all."""
    substs, forms = _variants(rule, widen), orders(lhs, commutative)
    if len(substs) * len(forms) > MAX_VARIANTS:
        raise RuleError(rule.span, f"rule {rule.name!r} expands to {len(substs) * len(forms)} variants "
                                   f"({len(substs)} choices of its 'in' guards x {len(forms)} operand orders), "
                                   f"more than MAX_VARIANTS = {MAX_VARIANTS}")
    return [(s, f) for s in substs for f in forms]


def _attr_vars(e: Expr) -> set[str]:
    out: set[str] = set()
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Bind):
            stack.append(x.expr)
        elif isinstance(x, Call) and x.op == "scalar":
            out.add(x.args[0].name)
        elif isinstance(x, Call):
            out.update(v.name for _, v in x.kwargs if isinstance(v, AttrRef))
            stack.extend(x.args)
    return out


def _tensor_vars(e: Expr) -> list[str]:
    out: list[str] = []
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Var) and x.name not in out:
            out.append(x.name)
        elif isinstance(x, Bind):
            out.append(x.name) if x.name not in out else None
            stack.append(x.expr)
        elif isinstance(x, Call) and x.op != "scalar":
            stack.extend(reversed(x.args))
    return out


def orders(e: Expr, commutative: set[str] | frozenset) -> list[Expr]:
    """``e`` with the operands of commutative ops in every order (duplicates removed); their
    number is counted before they are expanded: at most MAX_VARIANTS."""
    n = _order_count(e, commutative)
    if n > MAX_VARIANTS:
        raise RuleError(e.span, f"the operand orders of its commutative ops "
                                f"({', '.join(sorted(commutative))}) expand this pattern to {n} forms, more "
                                f"than MAX_VARIANTS = {MAX_VARIANTS}")
    return _orders(e, commutative)


def _order_count(e: Expr, commutative: set[str] | frozenset) -> int:
    if isinstance(e, Bind):
        return _order_count(e.expr, commutative)
    if not isinstance(e, Call) or e.op == "scalar":
        return 1
    n = math.prod(_order_count(a, commutative) for a in e.args)
    return 2 * n if e.op in commutative and len(e.args) == 2 else n


def _orders(e: Expr, commutative: set[str] | frozenset) -> list[Expr]:
    if isinstance(e, Bind):
        return [Bind(x, e.name, e.span) for x in _orders(e.expr, commutative)]
    if not isinstance(e, Call) or e.op == "scalar":
        return [e]
    out: dict[Expr, None] = {}
    for args in itertools.product(*(_orders(a, commutative) for a in e.args)):
        forms = [args, args[::-1]] if e.op in commutative and len(args) == 2 else [args]
        out.update((Call(e.op, tuple(f), e.kwargs, e.span), None) for f in forms)
    return list(out)


def compile_rule(rule: Rule, lhs: Expr | None = None, rhs: Expr | None = None, suffix: str = "",
                 commutative: set[str] | frozenset = frozenset()) -> list[tuple[str, str]]:
    """(egglog rule name, program text) for each variant of ``rule``: each choice of its
    ``in`` guards and each operand order of its commutative ops."""
    lhs, rhs = lhs or rule.lhs, rhs or rule.rhs
    out = []
    variants = _expanded(rule, lhs, commutative, widen=False)
    for k, (subst, lhs) in enumerate(variants):
        q = _Query(subst)
        q.facts.append(f"(= {ROOT} {q.term(lhs)})")
        guards = _Guards(q, subst)
        for g in rule.guards:
            if g.kind == "compare":
                guards.fact(g)
        body = _rhs(rhs, subst)
        if rule.outputs:
            actions = [f"(let _f {body})"] + [
                f"(union {ROOT if n == 'root' else 'v_' + n} (O_get _f {i}))" for i, n in enumerate(rule.outputs)]
        else:
            actions = [f"(union {ROOT} {body})"]
        name = f"{rule.name}{suffix}@{k}"
        out.append((name, f"(rule ({' '.join(q.facts)}) ({' '.join(actions)}) "
                          f":ruleset {egg_ruleset(rule.ruleset)} :name {json.dumps(name)})"))
    return out


def compile_near(rule: Rule, index: int, commutative: set[str] | frozenset = frozenset()) -> tuple[NearMiss, list[str]]:
    """The near-miss relation of a fusion rule and the rules that fill it."""
    relation = f"Near_{index}"
    tensors = _tensor_vars(rule.lhs)
    op_vars = [g.a for g in rule.guards if g.kind == "member" and g.a not in _attr_vars(rule.lhs)]
    programs = []
    columns: list[tuple[str, str, str]] | None = None
    # Near matches also in the operand orders of every commutative op, marked when the rule
    # itself (its `commutative` declarations) does not match that order: the report can say so.
    own = set(orders(rule.lhs, commutative))
    symmetric = set(commutative) | {op.name for op in REGISTRY if op.commutative}
    try:
        variants = _expanded(rule, rule.lhs, symmetric, widen=True)
    except RuleError:
        variants = _expanded(rule, rule.lhs, commutative, widen=True)
    for k, (subst, lhs) in enumerate(variants):
        q = _Query(subst)
        q.facts.append(f"(= {ROOT} {q.term(lhs)})")
        attrs = sorted(q.attr_sorts)
        cols = ([("root", "root", "T")] + [("tensor", t, "T") for t in tensors] +
                [("attr", a, q.attr_sorts[a]) for a in attrs] + [("op", o, "String") for o in op_vars] +
                [("order", "order", "i64")])
        columns = columns or cols
        values = ([ROOT] + [f"v_{t}" for t in tensors] + [f"a_{a}" for a in attrs] +
                  [json.dumps(subst[o]) for o in op_vars] + ["0" if lhs in own else "1"])
        programs.append(f"(rule ({' '.join(q.facts)}) (({relation} {' '.join(values)})) :ruleset near "
                        f":name {json.dumps(f'near:{rule.name}@{k}')})")
    decl = f"(relation {relation} ({' '.join(s for _, _, s in columns)}))"
    return NearMiss(relation, rule, columns), [decl] + programs


def region_rules(ruleset: str, max_inputs: int, max_ops: int) -> list[tuple[str, str]]:
    """Lift elementwise ops into one-op regions, absorb producer regions, inline scalars.

    A producer is absorbed only when the input program uses it once: absorbing a shared
    producer recomputes it, and lets the number of partial regions grow combinatorially
    (every subset of a branching elementwise subgraph); single-use absorption keeps it
    linear, as producer-consumer fusion does in other compilers. Argument lists are cons
    lists indexed by the ArgAt relation, so one rule absorbs at any position."""
    out = []
    for op in REGISTRY:
        if not op.elementwise or op.variadic:
            continue
        n = len(op.inputs)
        xs = [f"x{i}" for i in range(n)]
        if op.attrs:  # attributes go into the body's op spelling (body_head), as strings
            if not lifts_into_regions(op):
                continue
            ds = [f"d{j}" for j in range(len(op.attrs))]
            head = f'(+ "{op.name}:" {f" {json.dumps(HEAD_SEP)} ".join(ds)})'
            pat = f"({ctor(op.name)} {' '.join(xs + ds)})"
        else:
            head, pat = f'"{op.name}"', f"({ctor(op.name)} {' '.join(xs)})"
        args = " ".join(f"(Arg {i})" for i in range(n))
        body = BODY_ARITY[n]
        lst = "(Nil)"
        for x in reversed(xs):
            lst = f"(Cons {x} {lst})"
        name = f"regions:lift-{op.name}"
        out.append((name, f"(rule ((= e {pat})) ((union e (Region ({body} {head} {args}) {lst}))) "
                          f":ruleset {ruleset} :name {json.dumps(name)})"))
    name = "regions:absorb"
    out.append((name, f"(rule ((= e (Region b args)) (ArgAt args i a) (= a (Region b2 args2)) (= (uses a) 1) "
                      f"(= n (Len args)) (= m (Len args2)) (<= (+ (- n 1) m) {max_inputs}) "
                      f"(= s1 (Size b)) (= s2 (Size b2)) (<= (+ s1 s2) {max_ops})) "
                      f"((union e (Region (Splice b i (Shift b2 i) m) (Replace args i args2)))) "
                      f":ruleset {ruleset} :name {json.dumps(name)})"))
    name = "regions:scalar"
    out.append((name, f"(rule ((= e (Region b args)) (ArgAt args i a) (= a (O_scalar c)) (= n (Len args)) (> n 1)) "
                      f"((union e (Region (Splice b i (Cst c) 0) (Replace args i (Nil))))) "
                      f":ruleset {ruleset} :name {json.dumps(name)})"))
    return out


def all_definitions(fused: list[FusedDecl]) -> list[FusedDecl]:
    """The registry ops' definitions and the rule set's fused declarations."""
    return [decl_of(op) for op in registry_definitions()] + list(fused)


def definition_rules(decls: list[FusedDecl]) -> list[tuple[str, str]]:
    """An op equals its definition: ``op(inputs; attrs) => body`` in the legalize set,
    generated from the declaration (op-kind attributes range over the unary elementwise ops;
    a registry op's ``defined_for`` attributes are literals), so every defined op, a user's
    fused op too, has its common lowering with no rule written twice."""
    out = []
    for decl in decls:
        spec = REGISTRY.get(decl.name)
        op_attrs = [a for a in decl.attrs if a.kind == "op"]
        choices = [[(a.name, o) for o in ["none"] + _unary_elementwise()] for a in op_attrs]
        choices += [[kv] for kv in spec.defined_for]
        for k, subst in enumerate(dict(c) for c in itertools.product(*choices)):
            attrs = [attr_literal(a, subst[a.name]) if a.name in subst else f"a_{a.name}" for a in spec.attrs]
            facts = [f"(= v_root ({ctor(decl.name)} {' '.join([f'v_{x}' for x in decl.inputs] + attrs)}))"]
            env = {x: f"v_{x}" for x in decl.inputs}
            actions = []
            for name, expr in decl.bindings:
                actions.append(f"(let b_{name} {_def_term(expr, env, subst)})")
                env[name] = f"b_{name}"
            results = [_def_term(r, env, subst) for r in decl.results]
            if len(results) == 1:
                actions.append(f"(union v_root {results[0]})")
            else:
                actions += [f"(union (O_get v_root {i}) {t})" for i, t in enumerate(results)]
            name = f"definition:{decl.name}@{k}"
            out.append((name, f"(rule ({' '.join(facts)}) ({' '.join(actions)}) :ruleset legalize :name {json.dumps(name)})"))
    return out


def _def_term(e: Expr, env: dict[str, str], subst: dict[str, Any]) -> str:
    """A definition body: inputs and bindings from ``env``; a name that is none of them is a
    numeric attribute used as a scalar operand."""
    return egg_term(e, subst, lambda name: env[name] if name in env else f"(O_scalar a_{name})",
                    lambda name, spec: f"a_{name}")


def compile_rules(rs: RuleSet, max_inputs: int = 16, max_ops: int = 32, near: bool = True) -> Compiled:
    c = Compiled()
    order = ["algebra", "fusion"]
    sets = rs.sets()
    c.rulesets = [s for s in order if s in sets] + [s for s in sets if s not in order]
    c.rulesets = [egg_ruleset(s) for s in c.rulesets]
    c.programs.extend(f"(ruleset {s})" for s in c.rulesets)
    c.programs.append("(ruleset near)")
    total = 0
    for rule in rs.rules:
        pieces = compile_rule(rule, commutative=rs.commutative)
        total += len(pieces)
        if total > MAX_EGGLOG_RULES:
            raise RuleError(rule.span, f"the rule set expands to more than MAX_EGGLOG_RULES = {MAX_EGGLOG_RULES} "
                                       f"egglog rules by rule {rule.name!r}")
        if rule.bidirectional:
            pieces += compile_rule(rule, rule.rhs, rule.lhs, suffix="~rev", commutative=rs.commutative)
        for name, text in pieces:
            c.rule_of[name] = rule.name
            c.programs.append(text)
        if near and rule.ruleset == "fusion" and not rule.bidirectional:
            miss, texts = compile_near(rule, len(c.near), rs.commutative)
            c.near.append(miss)
            c.programs.extend(texts)
    decls = all_definitions(rs.fused)
    if decls:
        if "legalize" not in c.rulesets:
            c.rulesets.append("legalize")
            c.programs.append("(ruleset legalize)")
        for name, text in definition_rules(decls):
            c.rule_of[name] = "definitions"
            c.programs.append(text)
    for decl in rs.regions:
        ruleset = egg_ruleset(decl.ruleset)
        if ruleset in c.region_sets:
            continue
        c.region_sets.append(ruleset)
        for name, text in region_rules(ruleset, max_inputs, max_ops):
            c.rule_of[name] = "regions"
            c.programs.append(text)
    return c
