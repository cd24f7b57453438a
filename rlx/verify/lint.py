"""Lint warnings for rules: variables bound and never used, duplicate rules."""
from __future__ import annotations

from rlx.rules import RuleSet
from rlx.rules.ast import AttrRef, Bind, Call, Expr, Var


def _names(e: Expr) -> list[str]:
    """Every occurrence of a variable name (a name bound twice on the left is a join: used)."""
    out, stack = [], [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Var):
            out.append(x.name)
        elif isinstance(x, Bind):
            out.append(x.name)
            stack.append(x.expr)
        elif isinstance(x, Call):
            out.extend(v.name for _, v in x.kwargs if isinstance(v, AttrRef))
            if x.op == "scalar":
                out.append(x.args[0].name)
            else:
                stack.extend(x.args)
    return out


def lint(rs: RuleSet) -> dict[str, list[str]]:
    """rule name -> warnings. A variable named with a leading underscore is meant unused."""
    out: dict[str, list[str]] = {r.name: [] for r in rs.rules}
    seen: dict[tuple[str, str], str] = {}
    for r in rs.rules:
        lhs = _names(r.lhs)
        used = set(_names(r.rhs)) | set(r.outputs or ()) | {n for g in r.guards for n in _guard_names(g)}
        used |= {n for n in lhs if lhs.count(n) > 1}
        for v in sorted(set(lhs) - used):
            if not v.startswith("_"):
                out[r.name].append(f"variable {v!r} is bound and never used")
        key = (repr(_strip(r.lhs)), repr(_strip(r.rhs)), tuple(g.text for g in r.guards))
        if key in seen:
            out[r.name].append(f"duplicate of rule {seen[key]!r}")
        seen.setdefault(key, r.name)
    return out


def _guard_names(g) -> set[str]:
    from rlx.rules.ast import GArith, GFunc, GName
    if g.kind == "member":
        return {g.a}
    out, stack = set(), [g.a, g.b]
    while stack:
        x = stack.pop()
        if isinstance(x, GName):
            out.add(x.name)
        elif isinstance(x, GFunc):
            out.add(x.var)
        elif isinstance(x, GArith):
            stack += [x.a, x.b]
    return out


def _strip(e: Expr):
    """A span-free form of an expression, for comparing rules."""
    if isinstance(e, Var):
        return ("var", e.name)
    if isinstance(e, Bind):
        return ("bind", e.name, _strip(e.expr))
    if isinstance(e, Call):
        return ("call", e.op, tuple(_strip(a) for a in e.args),
                tuple((k, v.name if isinstance(v, AttrRef) else v) for k, v in e.kwargs))
    return ("num", getattr(e, "value", None))


