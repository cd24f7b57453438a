"""Semantic checks of parsed rule files against the op registry.

Everything a rule can get wrong short of unsoundness is caught here, with the file, line
and column: unknown ops (with a did-you-mean), wrong arity, unknown or ill-typed attribute
literals, variables on the right that the left does not bind, op variables no guard ranges
over, ill-typed guards, duplicate names. Soundness is rlx.verify's job.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from rlx.errors import RlxError
from rlx.ir.dtypes import DType
from rlx.ir.registry import REGISTRY, OpDef
from rlx.rules.ast import AttrRef, Bind, Call, Expr, FusedDecl, GArith, GFunc, GLit, GName, Guard, Num, Rule, Span, Var
from rlx.rules.errors import RuleError
from rlx.rules.fused import FUSED_ATTR_KINDS

GUARD_FUNCS = {"rank": "int", "dim": "int", "dtype": "str"}
SCALAR = "scalar"  # scalar(c) matches a scalar constant and binds its value to c
ROOT = "root"
# The most egglog rules one rule (each choice of its `in` guards times each operand order of
# its commutative ops) or one fused op's definition (each value of its op-kind attributes)
# expands to; the shipped rules need at most 64.
MAX_VARIANTS = 4096


def _unary_elementwise_count() -> int:
    return sum(1 for op in REGISTRY if op.elementwise and len(op.inputs) == 1 and not op.attrs)


@dataclass
class Bindings:
    """What one side of a rule binds: tensor, attribute and op variables."""
    tensors: dict[str, Span] = field(default_factory=dict)
    attrs: dict[str, tuple[str, Span]] = field(default_factory=dict)   # name -> (attr kind, span)
    op_vars: dict[str, tuple[int, Span]] = field(default_factory=dict)  # name -> (arity, span)


class Checker:
    def __init__(self, source: dict[str, str]) -> None:
        self.source = source  # path -> text, for carets

    def error(self, span: Span, msg: str) -> RuleError:
        return RuleError(span, msg, self.source.get(span.path))

    # ------------------------------------------------------------------ ops
    def opdef(self, call: Call, op_vars_ok: bool) -> OpDef | None:
        if call.op in REGISTRY:
            return REGISTRY.get(call.op)
        if op_vars_ok:
            return None
        hint = difflib.get_close_matches(call.op, REGISTRY.names(), n=1)
        raise self.error(call.span, f"unknown op {call.op!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))

    def check_call(self, call: Call, op: OpDef) -> None:
        n = len(call.args)
        if op.category == "source":
            raise self.error(call.span, f"{op.name} cannot appear in a rule")
        if op.variadic:
            ok, want = n >= 1, "at least 1"
        else:
            ok = op.min_inputs <= n <= len(op.inputs)
            want = str(len(op.inputs)) if not op.optional_inputs else f"{op.min_inputs} to {len(op.inputs)}"
        if not ok:
            raise self.error(call.span, f"{op.name} expects {want} input{'s' if want != '1' else ''} "
                                        f"({', '.join(op.inputs)}), got {n}")
        known = {a.name: a for a in op.attrs}
        for k, v in call.kwargs:
            if k not in known:
                hint = difflib.get_close_matches(k, known, n=1)
                raise self.error(call.span, f"{op.name} has no attribute {k!r}" +
                                 (f"; did you mean {hint[0]!r}?" if hint else
                                  f"; it has {', '.join(known) or 'none'}"))
            if not isinstance(v, AttrRef):
                try:
                    known[k].normalize(list(v) if isinstance(v, tuple) else v, f"{op.name}")
                except RlxError as e:
                    raise self.error(call.span, str(e)) from None
        for a in call.args:
            if isinstance(a, Num) and not op.elementwise:
                raise self.error(a.span, f"a number can only be an operand of an elementwise op, not {op.name}")

    # ------------------------------------------------------------------ patterns
    def collect(self, expr: Expr, b: Bindings, op_vars_ok: bool) -> None:
        """Record the variables ``expr`` binds, checking every call on the way (iteratively)."""
        stack = [expr]
        while stack:
            e = stack.pop()
            if isinstance(e, Var):
                if e.name in b.attrs and b.attrs[e.name][0] != "float":
                    raise self.error(e.span, f"{e.name!r} is an attribute variable; it cannot stand for a tensor")
                b.tensors.setdefault(e.name, e.span)
            elif isinstance(e, Bind):
                b.tensors.setdefault(e.name, e.span)
                stack.append(e.expr)
            elif isinstance(e, Call) and e.op == SCALAR:
                if len(e.args) != 1 or not isinstance(e.args[0], Var) or e.kwargs:
                    raise self.error(e.span, "scalar(c) takes one variable, bound to a scalar constant's value")
                b.attrs[e.args[0].name] = ("float", e.args[0].span)
            elif isinstance(e, Call):
                op = self.opdef(e, op_vars_ok)
                if op is None:
                    if len(e.args) != 1 or e.kwargs:
                        raise self.error(e.span, f"op variable {e.op!r} must be applied to exactly one "
                                                 "tensor and no attributes")
                    b.op_vars.setdefault(e.op, (1, e.span))
                else:
                    self.check_call(e, op)
                    specs = {a.name: a for a in op.attrs}
                    for k, v in e.kwargs:
                        if isinstance(v, AttrRef):
                            if v.name in b.tensors:
                                raise self.error(v.span, f"{v.name!r} is a tensor variable; it cannot be an attribute")
                            kind = specs[k].kind
                            prev = b.attrs.get(v.name)
                            if prev and prev[0] != kind:
                                raise self.error(v.span, f"attribute variable {v.name!r} is used as {prev[0]} "
                                                         f"and as {kind}")
                            b.attrs[v.name] = (kind, v.span)
                stack.extend(reversed(e.args))

    def check_bound(self, expr: Expr, lhs: Bindings, extra: set[str] = frozenset(),
                    op_attrs: set[str] = frozenset()) -> None:
        """Every variable of a right side must be bound by the left."""
        rhs = Bindings()
        self.collect(expr, rhs, op_vars_ok=True)
        for name, span in rhs.tensors.items():
            if name not in lhs.tensors and name not in extra:
                raise self.error(span, f"variable {name!r} on the right is not bound on the left")
        for name, (kind, span) in rhs.attrs.items():
            if name in lhs.op_vars and kind in ("op", "str"):
                continue  # an op variable's name feeds an op-kind attribute
            if name not in lhs.attrs:
                raise self.error(span, f"attribute variable {name!r} on the right is not bound on the left")
        for name, (_, span) in rhs.op_vars.items():
            if name not in lhs.op_vars and name not in op_attrs:
                raise self.error(span, f"unknown op {name!r} (not an op, and not an op variable of the left)")
        if isinstance(expr, Bind):
            raise self.error(expr.span, "'as' binds names on the left side only")

    # ------------------------------------------------------------------ guards
    def guard_type(self, g: Any, b: Bindings, guard: Guard) -> str:
        """The type of a guard term: int, float, str or list; ill-typed terms are errors."""
        if isinstance(g, GLit):
            v = g.value
            return "list" if isinstance(v, tuple) else "int" if isinstance(v, int) else \
                "float" if isinstance(v, float) else "str"
        if isinstance(g, GName):
            if g.name in b.tensors:
                raise self.error(g.span, f"{g.name!r} is a tensor; compare rank({g.name}), dim({g.name}, i) "
                                         f"or dtype({g.name})")
            if g.name in b.attrs:
                kind = b.attrs[g.name][0]
                return {"int": "int", "float": "float", "ints": "list", "dims": "list"}.get(kind, "str")
            if g.name in b.op_vars:
                return "str"
            return "str"  # an identifier literal: f32, relu, true ...
        if isinstance(g, GFunc):
            if g.fn not in GUARD_FUNCS:
                raise self.error(g.span, f"unknown guard function {g.fn!r}; expected rank, dim or dtype")
            if g.var not in b.tensors:
                raise self.error(g.span, f"{g.fn}({g.var}): {g.var!r} is not a tensor variable of the left side")
            if (g.fn == "dim") != (g.axis is not None):
                raise self.error(g.span, "dim takes a tensor and an axis: dim(x, -1)" if g.fn == "dim"
                                 else f"{g.fn} takes one tensor: {g.fn}({g.var})")
            if g.axis is not None and not isinstance(g.axis, int):
                raise self.error(g.span, f"dim axis must be an integer, got {g.axis!r}")
            return GUARD_FUNCS[g.fn]
        if isinstance(g, GArith):
            for x in (g.a, g.b):
                if self._attr_kind(x, b) == "float":  # its exact text in the e-graph, not a number
                    raise self.error(guard.span, f"the float attribute {x.name!r} cannot take part in "
                                                 "arithmetic")
            ta, tb = self.guard_type(g.a, b, guard), self.guard_type(g.b, b, guard)
            if ta not in ("int", "float") or tb not in ("int", "float"):
                raise self.error(guard.span, f"arithmetic '{g.op}' needs numbers, got {ta} and {tb}")
            if g.op in ("//", "%") and "float" in (ta, tb):
                raise self.error(guard.span, f"'{g.op}' needs integers")
            return "float" if "float" in (ta, tb) else "int"
        raise AssertionError(g)

    @staticmethod
    def _attr_kind(g: Any, b: Bindings) -> str | None:
        return b.attrs[g.name][0] if isinstance(g, GName) and g.name in b.attrs else None

    def _is_dtype(self, g: Any, b: Bindings) -> bool:
        """``dtype(x)`` or a dtype attribute variable."""
        return isinstance(g, GFunc) and g.fn == "dtype" or self._attr_kind(g, b) == "dtype"

    def check_dtype(self, g: Any, b: Bindings, guard: Guard) -> None:
        """A literal compared with a dtype must be a dtype (else the guard could never hold)."""
        if isinstance(g, GName) and g.name not in b.attrs and g.name not in b.op_vars:
            value = g.name
        elif isinstance(g, GLit) and isinstance(g.value, str):
            value = g.value
        else:
            return
        if value not in DType.__members__ and value != "None":  # None: an optional attribute unset
            hint = difflib.get_close_matches(value, DType.__members__, n=1)
            raise self.error(guard.span, f"unknown dtype {value!r} in '{guard.text}'" +
                             (f"; did you mean {hint[0]!r}?" if hint else
                              f"; expected one of {', '.join(DType.__members__)}"))

    def check_guard(self, guard: Guard, b: Bindings) -> None:
        if guard.kind == "member":
            if guard.a not in b.op_vars and guard.a not in b.attrs:
                raise self.error(guard.span, f"{guard.a!r} in [...]: not an attribute or op variable of the left side")
            if b.attrs.get(guard.a, ("",))[0] == "dtype":
                for name in guard.b:
                    self.check_dtype(GLit(name), b, guard)
            if guard.a in b.op_vars or b.attrs.get(guard.a, ("",))[0] == "op":
                for name in guard.b:
                    op = REGISTRY.get(name) if name in REGISTRY else None
                    if name != "none" and (op is None or not op.elementwise or len(op.inputs) != 1):
                        raise self.error(guard.span, f"{name!r} is not a unary elementwise op")
            return
        ta, tb = self.guard_type(guard.a, b, guard), self.guard_type(guard.b, b, guard)
        for x, y in ((guard.a, guard.b), (guard.b, guard.a)):
            if self._is_dtype(x, b):
                self.check_dtype(y, b, guard)
        numeric = {"int", "float"}
        if guard.op in ("==", "!=") and any(isinstance(x, GName) and x.name == "None" for x in (guard.a, guard.b)):
            return  # an optional attribute compared with None
        if not (ta == tb or {ta, tb} <= numeric):
            raise self.error(guard.span, f"cannot compare {ta} with {tb} in '{guard.text}'")
        if guard.op not in ("==", "!=") and ta not in numeric:
            raise self.error(guard.span, f"'{guard.op}' needs numbers, got {ta}")
        if guard.op not in ("==", "!=") and "float" in (ta, tb) and any(
                isinstance(x, GName) and x.name in b.attrs for x in (guard.a, guard.b)):
            raise self.error(guard.span, "float attributes can only be compared with == and !=")
        for x, y in ((guard.a, guard.b), (guard.b, guard.a)):  # a float attribute is its exact text
            if self._attr_kind(x, b) == "float" and not (
                    isinstance(y, GLit) and isinstance(y.value, float) or
                    self._attr_kind(y, b) == "float"):
                raise self.error(guard.span, f"the float attribute {x.name!r} can only be compared with a float "
                                             "literal (2.0, not 2), None or another float attribute")

    # ------------------------------------------------------------------ items
    def check_rule(self, rule: Rule) -> Bindings:
        root = rule.lhs.expr if isinstance(rule.lhs, Bind) else rule.lhs  # `f(...) as r` names the root
        if not isinstance(root, Call):
            raise self.error(rule.span, "the left side of a rule must be an op call")
        lhs = Bindings()
        self.collect(rule.lhs, lhs, op_vars_ok=True)
        if ROOT in lhs.tensors:
            raise self.error(lhs.tensors[ROOT], f"{ROOT!r} is reserved for the matched root")
        for g in rule.guards:
            self.check_guard(g, lhs)
        ranged = {g.a for g in rule.guards if g.kind == "member"}
        for name, (_, span) in lhs.op_vars.items():
            if name not in ranged:
                hint = difflib.get_close_matches(name, REGISTRY.names(), n=1)
                raise self.error(span, f"unknown op {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "") +
                                 f" (to use it as an op variable, add a guard: where {name} in [...])")
        op_attrs = {g.a for g in rule.guards if g.kind == "member" and lhs.attrs.get(g.a, ("",))[0] == "op"}
        self.check_bound(rule.rhs, lhs, {ROOT} if rule.outputs else set(), op_attrs)
        if rule.outputs:
            if not isinstance(rule.rhs, Call) or rule.rhs.op not in REGISTRY:
                raise self.error(rule.span, "'-> (...)' needs a multi-output op on the right")
            for name in rule.outputs:
                if name != ROOT and name not in lhs.tensors:
                    raise self.error(rule.span, f"output {name!r} is not bound on the left (bind it with 'as')")
            if ROOT not in rule.outputs:
                raise self.error(rule.span, f"one of the outputs must be {ROOT!r}, the matched root")
        if rule.bidirectional:
            if rule.outputs or rule.guards and any(g.kind == "member" for g in rule.guards):
                raise self.error(rule.span, "a '<=>' rule can have no outputs and no op variables")
            if not isinstance(rule.rhs, Call):
                raise self.error(rule.span, "both sides of '<=>' must be op calls")
            rhs = Bindings()
            self.collect(rule.rhs, rhs, op_vars_ok=False)
            self.check_bound(rule.lhs, rhs)
        return lhs

    def check_fused(self, decl: FusedDecl) -> None:
        if decl.name in REGISTRY and REGISTRY.get(decl.name).category != "fused":
            raise self.error(decl.span, f"fused op {decl.name!r} would shadow the registry op {decl.name!r}")
        seen: set[str] = set()
        for name in decl.inputs:
            if name in seen:
                raise self.error(decl.span, f"duplicate input {name!r}")
            seen.add(name)
        ops = set()
        for a in decl.attrs:
            if a.name in seen:
                raise self.error(decl.span, f"duplicate parameter {a.name!r}")
            seen.add(a.name)
            if a.kind not in FUSED_ATTR_KINDS:
                raise self.error(decl.span, f"attribute {a.name!r} has unknown kind {a.kind!r}; expected one of "
                                            f"{', '.join(FUSED_ATTR_KINDS)}")
            if a.name in REGISTRY:
                raise self.error(decl.span, f"attribute {a.name!r} shadows the op {a.name!r}")
            if a.kind == "op":
                ops.add(a.name)
        n = (1 + _unary_elementwise_count()) ** len(ops)  # none or a unary elementwise op each, as compiled
        if n > MAX_VARIANTS:
            raise self.error(decl.span, f"fused op {decl.name!r}: its {len(ops)} op-kind attributes expand "
                                        f"its "
                                        f"definition to {n} rules (one per choice of ops), more than "
                                        f"MAX_VARIANTS = {MAX_VARIANTS}")
        env = set(decl.inputs)
        attr_names = {a.name for a in decl.attrs}
        scalars = {a.name for a in decl.attrs if a.kind in ("float", "int")}
        for name, expr in list(decl.bindings) + [(None, r) for r in decl.results]:
            b = Bindings()
            self.collect(expr, b, op_vars_ok=True)
            for v, span in b.tensors.items():
                if v in scalars:
                    continue  # a numeric attribute used as a scalar operand
                if v not in env:
                    raise self.error(span, f"{v!r} is not an input or an earlier binding of {decl.name}")
            for v, (_, span) in b.attrs.items():
                if v not in attr_names:
                    raise self.error(span, f"{v!r} is not an attribute of {decl.name}")
            for v, (_, span) in b.op_vars.items():
                if v not in ops:
                    hint = difflib.get_close_matches(v, REGISTRY.names(), n=1)
                    raise self.error(span, f"unknown op {v!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
            if name is not None:
                if name in env or name in attr_names:
                    raise self.error(decl.span, f"{decl.name}: {name!r} is already bound (a binding names a "
                                                "new value)")
                env.add(name)
