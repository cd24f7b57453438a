"""Explain fusion rules against an extracted program: which near matches did not fire,
and why (a guard, an op outside the rule's range, an extra consumer, the cost model)."""
from __future__ import annotations

from collections import Counter
from typing import Any

from rlx.egraph.encode import scalar_key
from rlx.egraph.view import EGraphView, ENode, near_rows
from rlx.extract.cost import CostModel
from rlx.extract.greedy import Extraction
from rlx.ir.registry import REGISTRY
from rlx.report import MissedFusion
from rlx.rules.ast import Bind, Call, Expr, Num, Rule, Var
from rlx.rules.compile import NearMiss
from rlx.rules.guards import describe, evaluate


def _cone(ex: Extraction, root: int, inputs: set[int]) -> set[int]:
    """The classes the extracted program computes from ``inputs`` on the way to ``root``."""
    out, todo = set(), [root]
    while todo:
        c = todo.pop()
        if c in out or c in inputs or c not in ex.choice:
            continue
        out.add(c)
        todo.extend(ex.choice[c].children)
    return out


def _made(view: EGraphView, c: int, op: str) -> bool:
    """Whether class ``c`` holds ``op`` (or one output of it): the rule fired there."""
    return any(n.op == op or n.is_get and any(m.op == op for m in view.classes[n.children[0]])
               for n in view.classes[c])


def _inner(view: EGraphView, e: Expr, c: int, env: dict[str, Any]) -> list[int] | None:
    """Classes of the calls of pattern ``e`` matched at class ``c`` (root first), or None."""
    if isinstance(e, Var):
        return [] if env.get(e.name) == c else None
    if isinstance(e, Num):
        key = scalar_key(e.value)
        return [] if any(n.op == "constant" and n.attr_dict().get("key") == key for n in view.classes[c]) else None
    if isinstance(e, Bind):
        return _inner(view, e.expr, c, env) if env.get(e.name) == c else None
    if e.op == "scalar":  # scalar(c): any scalar constant
        return [] if any(n.op == "constant" and "key" in n.attr_dict() for n in view.classes[c]) else None
    op = env.get(f"op:{e.op}", e.op)
    if op == "none":
        return _inner(view, e.args[0], c, env)
    for n in view.classes[c]:
        kids = view.inputs(n)
        if n.op != op or len(kids) != len(e.args):
            continue
        found: list[int] = [c]
        for a, ch in zip(e.args, kids):
            sub = _inner(view, a, ch, env)
            if sub is None:
                break
            found += sub
        else:
            return found
    return None


def _guard_miss(rule: str, node: str, g, tensors, attrs) -> MissedFusion:
    facts = describe(g, tensors, attrs)
    return MissedFusion(rule, node, (g.message or f"guard `{g.text}` does not hold") + (f" ({facts})" if facts else ""),
                        f"the rule needs {g.text}")


def _rhs_op(rule: Rule, env: dict[str, Any]) -> str:
    rhs = rule.rhs
    while isinstance(rhs, Bind):
        rhs = rhs.expr
    return env.get(f"op:{rhs.op}", rhs.op) if isinstance(rhs, Call) else ""


def explain(eg, view: EGraphView, near: list[NearMiss], ex: Extraction, cost: CostModel,
            class_name: dict[int, str], original: dict[int, ENode]
            ) -> tuple[list[MissedFusion], list[MissedFusion], Counter]:
    """Missed fusions, fusions the target cannot run, and how many times each rule's result
    is in the extracted program.

    Only matches rooted at a node of the input program count. One whose root the final
    program computes with another fused op is not a miss; nor is a failed guard of one rule
    at a root another rule fully matched (a residual add is not a near-miss bias add); a full
    match whose op the target does not claim is reported as unsupported, not missed."""
    regions = [set(n.children) for n in ex.choice.values() if n.op == "region"]
    consumers: dict[int, list[int]] = {}
    for c, n in ex.choice.items():
        for ch in n.children:
            consumers.setdefault(ch, []).append(c)
    rows = []
    for nm in near:
        for row in near_rows(eg, view, nm.relation, nm.columns):
            root = row["root"]
            if root is None or root not in original:
                continue
            tensors = {name: view.type1(row[name]) for role, name, _ in nm.columns if role == "tensor"}
            if any(t is None for t in tensors.values()):
                continue
            attrs = {name: row[name] for role, name, _ in nm.columns if role in ("attr", "op")}
            env: dict[str, Any] = {name: row[name] for role, name, _ in nm.columns if role in ("root", "tensor")}
            env.update({f"op:{name}": row[name] for role, name, _ in nm.columns if role == "op"})
            verdicts = [evaluate(g, tensors, attrs) for g in nm.rule.guards]
            rows.append((nm.rule, root, tensors, attrs, env, verdicts, row.get("order", 0)))
    matched = {root for _, root, _, _, _, verdicts, order in rows if not order and all(v is True for v in verdicts)}
    missed: list[MissedFusion] = []
    unsupported: list[MissedFusion] = []
    applied: Counter = Counter()
    seen: set[tuple[str, int]] = set()
    rows.sort(key=lambda r: r[-1])  # a match in the rule's own operand order explains first
    for rule, root, tensors, attrs, env, verdicts, order in rows:
        if (rule.name, root) in seen:
            continue
        node = class_name.get(root, f"e-class {root}")
        failed = [g for g, v in zip(rule.guards, verdicts) if v is False]
        op = _rhs_op(rule, env)
        chosen = ex.choice.get(root)
        if chosen is None:  # not computed on its own: reported if a region computes it inline
            inside = set(env[name] for name in tensors)
            if failed and root not in matched and any(inside <= args for args in regions):
                missed.append(_guard_miss(rule.name, node, failed[0], tensors, attrs))
            seen.add((rule.name, root))
            continue
        used = chosen.op == op or (chosen.is_get and ex.choice.get(chosen.children[0]) is not None
                                  and ex.choice[chosen.children[0]].op == op)
        if used and not failed:
            applied[rule.name] += 1
            seen.add((rule.name, root))
            continue
        if order and not failed and not used and chosen.op in (original[root].op, "region"):
            missed.append(MissedFusion(rule.name, node, "the operands are in another order than the rule's",
                                       "declare `commutative add, mul` in the rule file (the shipped algebra "
                                       "rules do) or write the pattern in this order"))
            seen.add((rule.name, root))
            continue
        if used or chosen.op not in (original[root].op, "region"):
            continue  # another rule fused this root (a region alone does not cover the match)
        if failed:
            if root in matched:
                continue  # another rule's pattern is what this node is
            missed.append(_guard_miss(rule.name, node, failed[0], tensors, attrs))
        elif any(v is None for v in verdicts):
            missed.append(MissedFusion(rule.name, node, "a guard depends on a symbolic dim",
                                       "specialize the symbol or relax the guard"))
        elif op in REGISTRY and not cost.claims(op):
            unsupported.append(MissedFusion(rule.name, node, f"target {cost.name} does not claim {op}",
                                            f"add {op} to the target's ops to use it"))
        else:
            inner = _inner(view, rule.lhs, root, env) or [root]
            # what the program computes between the match's inputs and its root (another form of the
            # same computation, such as prescaled q and k) is not an extra consumer
            cone = _cone(ex, root, {env[name] for name in tensors if name in env})
            shared = [(c, p) for c in inner[1:] if c in ex.choice for p in consumers.get(c, [])
                      if p not in inner and p not in cone]
            if shared:
                c, p = shared[0]
                missed.append(MissedFusion(
                    rule.name, node, f"extra consumer: {class_name.get(p, f'e-class {p}')} also uses "
                    f"{class_name.get(c, f'e-class {c}')}; fusing would compute it twice",
                    "fuse only single-use intermediates"))
            elif op in REGISTRY and not _made(view, root, op):
                missed.append(MissedFusion(
                    rule.name, node, f"matches here, but the e-graph never made {op}: a guard read a type "
                    "the e-graph does not have for a class another rule created",
                    "guard on the rule's inputs, or on classes whose types follow from their operands"))
            else:
                missed.append(MissedFusion(rule.name, node, "not profitable under the cost model",
                                           "check the target's launch overhead and peaks"))
        seen.add((rule.name, root))
    return missed, unsupported, applied
