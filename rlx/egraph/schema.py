"""The egglog schema, generated from the op registry: one constructor per op, tensor
types as functions, and the elementwise-region body language with its helpers."""
from __future__ import annotations

from rlx.errors import RlxError
from rlx.ir.dtypes import DType
from rlx.ir.registry import REGISTRY, OpDef
from rlx.egraph.encode import constructor_sorts, ctor

# Sources have constructors of their own; a region is a Region term over its body.
SPECIAL = {"input", "param", "constant", "region"}


def schema_ops() -> list[OpDef]:
    return [op for op in REGISTRY if op.name not in SPECIAL]


def schema() -> str:
    ops = "\n    ".join(f"({ctor(op.name)} {' '.join(constructor_sorts(op))})" for op in schema_ops())
    return f"""
(datatype Body (Arg i64) (Cst String) (U String Body) (Bn String Body Body) (Tn String Body Body Body))
(datatype* (T
    (N i64)
    (O_input String)
    (O_param String)
    (O_scalar String)
    (O_const i64)
    (O_get T i64)
    (O_absent)
    (Region Body Args)
    {ops})
  (sort TVec (Vec T))
  (Args (Nil) (Cons T Args)))
(function ty-rank (T) i64 :merge old)
(function ty-dim (T i64) i64 :merge old)
(function ty-dtype (T) String :merge old)
(function uses (T) i64 :merge (max old new))
(constructor Splice (Body i64 Body i64) Body)
(constructor Shift (Body i64) Body)
(function Size (Body) i64 :merge (min old new))
(constructor Append (Args Args) Args)
(constructor Replace (Args i64 Args) Args)
(function Len (Args) i64 :merge (min old new))
(relation ArgAt (Args i64 T))
"""


# Region arguments are a cons list, not a Vec: every region is then a hash-consed term.
# (Vec containers built in rule actions made saturation quadratic in the graph's size.)
# Splice b i r m: input i of body b becomes body r, and inputs after i move by m - 1
# (m = the number of inputs r brings). Replace l i y: element i of list l becomes list y.
# ArgAt l i x: x is element i of l (so one rule can absorb at any position).
BODY_RULES = """
(ruleset region-eval)
(rule ((= e (Splice a i r m)) (= a (Arg j)) (< j i)) ((union e (Arg j))) :ruleset region-eval)
(rule ((= e (Splice a i r m)) (= a (Arg j)) (= j i)) ((union e r)) :ruleset region-eval)
(rule ((= e (Splice a i r m)) (= a (Arg j)) (> j i)) ((union e (Arg (+ j (- m 1))))) :ruleset region-eval)
(rule ((= e (Splice a i r m)) (= a (Cst c))) ((union e (Cst c))) :ruleset region-eval)
(rule ((= e (Splice a i r m)) (= a (U o x))) ((union e (U o (Splice x i r m)))) :ruleset region-eval)
(rule ((= e (Splice a i r m)) (= a (Bn o x y))) ((union e (Bn o (Splice x i r m) (Splice y i r m)))) :ruleset region-eval)
(rule ((= e (Splice a i r m)) (= a (Tn o x y z))) ((union e (Tn o (Splice x i r m) (Splice y i r m) (Splice z i r m)))) :ruleset region-eval)
(rule ((= e (Shift a k)) (= a (Arg j))) ((union e (Arg (+ j k)))) :ruleset region-eval)
(rule ((= e (Shift a k)) (= a (Cst c))) ((union e (Cst c))) :ruleset region-eval)
(rule ((= e (Shift a k)) (= a (U o x))) ((union e (U o (Shift x k)))) :ruleset region-eval)
(rule ((= e (Shift a k)) (= a (Bn o x y))) ((union e (Bn o (Shift x k) (Shift y k)))) :ruleset region-eval)
(rule ((= e (Shift a k)) (= a (Tn o x y z))) ((union e (Tn o (Shift x k) (Shift y k) (Shift z k)))) :ruleset region-eval)
(rule ((= e (Arg j))) ((set (Size e) 0)) :ruleset region-eval)
(rule ((= e (Cst c))) ((set (Size e) 0)) :ruleset region-eval)
(rule ((= e (U o x)) (= a (Size x))) ((set (Size e) (+ a 1))) :ruleset region-eval)
(rule ((= e (Bn o x y)) (= a (Size x)) (= b (Size y))) ((set (Size e) (+ 1 (+ a b)))) :ruleset region-eval)
(rule ((= e (Tn o x y z)) (= a (Size x)) (= b (Size y)) (= c (Size z))) ((set (Size e) (+ 1 (+ a (+ b c))))) :ruleset region-eval)
(rule ((= e (Append a y)) (= a (Nil))) ((union e y)) :ruleset region-eval)
(rule ((= e (Append a y)) (= a (Cons h t))) ((union e (Cons h (Append t y)))) :ruleset region-eval)
(rule ((= e (Replace l i y)) (= l (Cons h t)) (= i 0)) ((union e (Append y t))) :ruleset region-eval)
(rule ((= e (Replace l i y)) (= l (Cons h t)) (> i 0)) ((union e (Cons h (Replace t (- i 1) y)))) :ruleset region-eval)
(rule ((= l (Cons h t))) ((ArgAt l 0 h)) :ruleset region-eval)
(rule ((= l (Cons h t)) (ArgAt t i x)) ((ArgAt l (+ i 1) x)) :ruleset region-eval)
(rule ((= e (Nil))) ((set (Len e) 0)) :ruleset region-eval)
(rule ((= e (Cons h t)) (= n (Len t))) ((set (Len e) (+ n 1))) :ruleset region-eval)
"""


def type_rules() -> str:
    """Types of classes that rules create, where they follow from an operand's: an
    elementwise op on one tensor (and scalars) has that tensor's rank and dims, and its dtype
    unless it is a cast; on two tensors, what both agree on (a dim where both have it). Guards read these, so a rule can match on another rule's result
    (the scaled k that scale_through_transpose makes, say)."""
    out = ["(ruleset types)"]
    for op in REGISTRY:
        if not op.elementwise or op.value_inputs is not None or op.variadic:
            continue
        c = ctor(op.name)
        if len(op.inputs) == 1:
            heads = [f"(= e ({' '.join([c, 'x'] + [f'_a{i}' for i in range(len(op.attrs))])}))"]
        else:  # a binary op with a scalar on either side, or two tensors that agree
            heads = [f"(= e ({c} x s)) (= s (O_scalar k))", f"(= e ({c} s x)) (= s (O_scalar k))"]
            pair = f"(= e ({c} x y))"
            out.append(f"(rule ({pair} (= r (ty-rank x)) (= r (ty-rank y))) ((set (ty-rank e) r)) :ruleset types)")
            out.append(f"(rule ({pair} (= d (ty-dim x i)) (= d (ty-dim y i))) ((set (ty-dim e i) d)) :ruleset types)")
            if _keeps_dtype(op):
                out.append(f"(rule ({pair} (= t (ty-dtype x)) (= t (ty-dtype y))) ((set (ty-dtype e) t)) "
                           ":ruleset types)")
        for head in heads:
            out.append(f"(rule ({head} (= r (ty-rank x))) ((set (ty-rank e) r)) :ruleset types)")
            out.append(f"(rule ({head} (= d (ty-dim x i))) ((set (ty-dim e i) d)) :ruleset types)")
            if _keeps_dtype(op):
                out.append(f"(rule ({head} (= t (ty-dtype x))) ((set (ty-dtype e) t)) :ruleset types)")
    # a transpose keeps its operand's rank and dtype (its dims move: guards on dims of a
    # transposed class need the class typed at load); the attention rules match on k
    # transposed by split_heads_then_swap
    head = f"(= e ({ctor('transpose')} x _p))"
    out.append(f"(rule ({head} (= r (ty-rank x))) ((set (ty-rank e) r)) :ruleset types)")
    out.append(f"(rule ({head} (= t (ty-dtype x))) ((set (ty-dtype e) t)) :ruleset types)")
    return "\n".join(out)


def _keeps_dtype(op: OpDef) -> bool:
    """Whether the op's result has its operands' dtype (not a cast or a comparison), read
    off its dtype rule."""
    try:
        attrs = op.normalize_attrs({}, op.name)
    except RlxError:
        return False  # a required attribute (a cast's dtype) decides the result
    try:
        return all(op.dtype([d] * len(op.inputs), attrs) == [d] for d in (DType.f32, DType.f16))
    except RlxError:
        return False
