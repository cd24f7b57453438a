"""Planted variants of every shipped rule, made mechanically: drop each guard, swap the
operands of each non-commutative call on the right side, change each attribute and each
literal, change the right side's activation. The prover must never prove a variant the
fuzzer refutes, and every variant must be accounted for: refuted by the fuzzer with a
counterexample that replays, or — where the change does not change the meaning — no
different from the rule (proved, or, for a dropped guard, never violated by an instance).

A dropped guard is fuzzed where it matters: on instances that satisfy the other guards and
violate the dropped one (the variant applies there and the rule does not)."""
from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from rlx.ir import REGISTRY
from rlx.rules import load
from rlx.rules.ast import AttrRef, Bind, Call, Guard, Num, Rule
from rlx.verify import fuzz, prove, replay

RULES = load()
SYMMETRIC = {"add", "mul", "maximum", "minimum", "equal"}
NEGATED = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}
# Rules whose equivalence needs layout algebra the axioms lack (perm composition, reshape
# regrouping) or per-rank attention instances: a variant of theirs the fuzzer cannot tell
# apart is sound, but the prover cannot show it.
BEYOND_AXIOMS = {"transpose_transpose", "reshape_reshape", "batched_swap_via_3d", "scale_through_transpose",
                 "split_heads_then_swap", "gelu_erf_mul", "attention", "attention_causal", "attention_masked",
                 "attention_masked_heads", "attention_prescaled", "attention_prescaled_masked",
                 "conv_batch_norm_fold", "conv_batch_norm_fold_nobias"}


def _rewrite(e, fn):
    """Every copy of ``e`` in which ``fn`` changed exactly one node, with a label."""
    out = list(fn(e))
    if isinstance(e, Bind):
        return out + [(Bind(x, e.name, e.span), d) for x, d in _rewrite(e.expr, fn)]
    if isinstance(e, Call):
        for i, a in enumerate(e.args):
            for x, d in _rewrite(a, fn):
                out.append((dataclasses.replace(e, args=e.args[:i] + (x,) + e.args[i + 1:]), d))
    return out


def _swap(e):
    if isinstance(e, Call) and e.op in REGISTRY and e.op not in SYMMETRIC and len(e.args) >= 2 \
            and e.args[0] != e.args[1]:
        yield dataclasses.replace(e, args=(e.args[1], e.args[0]) + e.args[2:]), f"swap the operands of {e.op}"


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1 if value != -1 else -2
    if isinstance(value, float):
        return value * 1.5 + 0.25
    if isinstance(value, tuple) and len(value) > 1 and tuple(reversed(value)) != value:
        return tuple(reversed(value))
    if value in ("silu", "gelu", "relu", "gelu_tanh", "none"):
        return "tanh"
    return None


def _attrs(others: dict[str, set[str]]):
    """Changes of literals and attributes; an attribute variable may become another that the
    left side binds under the same attribute name."""
    def fn(e):
        if isinstance(e, Num):
            yield Num(_changed(float(e.value)), e.span), f"literal {e.value!r} -> {_changed(float(e.value))!r}"
        if not isinstance(e, Call):
            return
        if e.op == "scalar":
            yield Num(2.0, e.span), f"scalar({e.args[0].name}) -> 2.0"
            return
        for i, (k, v) in enumerate(e.kwargs):
            if isinstance(v, AttrRef):
                swaps = [AttrRef(o, v.span) for o in sorted(others.get(k, set()) - {v.name})]
                new = swaps[0] if swaps else (0.5 if k in ("eps", "scale") else None)
            else:
                new = _changed(v)
            if new is not None:
                label = new.name if isinstance(new, AttrRef) else repr(new)
                yield dataclasses.replace(e, kwargs=e.kwargs[:i] + ((k, new),) + e.kwargs[i + 1:]), f"{e.op}: {k}={label}"
        opdef = REGISTRY.get(e.op) if e.op in REGISTRY else None
        if opdef is not None and opdef.elementwise and len(opdef.inputs) == 1 and not opdef.attrs:
            other = "tanh" if e.op != "tanh" else "sigmoid"
            yield dataclasses.replace(e, op=other), f"{e.op} -> {other}"
        if opdef is None and len(e.args) == 1 and not e.kwargs:  # an op variable (act in [...]) applied
            yield dataclasses.replace(e, op="tanh"), f"{e.op}(...) -> tanh(...)"
    return fn


def _attr_names(e) -> dict[str, set[str]]:
    """Attribute name -> the variables the pattern binds under it."""
    out: dict[str, set[str]] = {}
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Bind):
            stack.append(x.expr)
        elif isinstance(x, Call):
            for k, v in x.kwargs:
                if isinstance(v, AttrRef):
                    out.setdefault(k, set()).add(v.name)
            stack.extend(x.args)
    return out


def variants(rule: Rule) -> list[tuple[str, Rule, Guard | None]]:
    """(what changed, the variant, the dropped guard if one was)."""
    out = []
    for i, g in enumerate(rule.guards):
        if g.kind == "compare":
            out.append((f"drop guard {g.text!r}", dataclasses.replace(rule, guards=rule.guards[:i] + rule.guards[i + 1:]), g))
    for fn in (_swap, _attrs(_attr_names(rule.lhs))):
        out += [(d, dataclasses.replace(rule, rhs=rhs), None) for rhs, d in _rewrite(rule.rhs, fn)]
    out += [(f"left side: {d}", dataclasses.replace(rule, lhs=lhs), None)
            for lhs, d in _rewrite(rule.lhs, lambda e: _attrs({})(e) if isinstance(e, Num) else ())]
    return [(d, dataclasses.replace(r, name=f"{rule.name}~{k}", text=f"{rule.text} [planted: {d}]"), g)
            for k, (d, r, g) in enumerate(out)]


PLANTED = [(r, d, v, g) for r in RULES.rules if r.ruleset in ("fusion", "algebra") for d, v, g in variants(r)]
OUTCOMES: Counter = Counter()


def test_every_shipped_rule_has_planted_variants():
    assert {r.name for r, *_ in PLANTED} == {r.name for r in RULES.rules if r.ruleset in ("fusion", "algebra")}
    assert len(PLANTED) >= 100


@pytest.mark.parametrize("rule,change,variant,dropped", PLANTED, ids=[f"{r.name}: {d}" for r, d, _, _ in PLANTED])
def test_a_planted_variant_is_refuted_or_no_different_and_never_both(rule, change, variant, dropped):
    target = variant
    if dropped is not None:  # fuzz where the variant and the rule differ: the dropped guard fails
        neg = dataclasses.replace(dropped, op=NEGATED[dropped.op], message=None)
        target = dataclasses.replace(variant, guards=variant.guards + (neg,))
    f = fuzz(target, trials=30, seed=7, rules=RULES)
    p = prove(variant, RULES)
    if f.failures:
        assert not p.proved, f"{rule.name} with {change} was proved, but: {f.failures[0]}"
        again = replay(variant, f.failures[0], RULES)
        assert again is not None and again.output == f.failures[0].output, f.failures[0]
        OUTCOMES["refuted"] += 1
    elif dropped is not None and not f.instances:
        OUTCOMES["guard implied by the others"] += 1  # no instance where it differs: the same rule
    else:
        assert p.proved or rule.name in BEYOND_AXIOMS, \
            f"{rule.name} with {change}: neither refuted ({f.instances} instances) nor proved ({p.reason})"
        OUTCOMES["no different (proved)" if p.proved else "no different (fuzzed)"] += 1


def test_outcomes_are_reported(capsys):
    """Runs last in this module: the tally for the note (pytest -s shows it)."""
    if sum(OUTCOMES.values()) == len(PLANTED):
        print(f"\nplanted {len(PLANTED)} variants of {len({r.name for r, *_ in PLANTED})} rules: {dict(OUTCOMES)}")
        assert OUTCOMES["refuted"] >= len(PLANTED) // 2
