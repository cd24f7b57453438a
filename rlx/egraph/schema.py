"""The egglog schema, generated from the op registry: one constructor per op, tensor
types as functions, and the elementwise-region body language with its helpers."""
from __future__ import annotations

from rlx.ir.registry import REGISTRY, OpDef
from rlx.egraph.encode import constructor_sorts, ctor

# Sources and projections have constructors of their own.
SPECIAL = {"input", "param", "constant"}


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
    (Region Body TVec)
    {ops})
  (sort TVec (Vec T)))
(function ty-rank (T) i64 :merge old)
(function ty-dim (T i64) i64 :merge old)
(function ty-dtype (T) String :merge old)
(constructor Splice (Body i64 Body) Body)
(constructor Shift (Body i64) Body)
(function Size (Body) i64 :merge (min old new))
"""


BODY_RULES = """
(ruleset region-eval)
(rule ((= e (Splice a i r)) (= a (Arg j)) (< j i)) ((union e (Arg j))) :ruleset region-eval)
(rule ((= e (Splice a i r)) (= a (Arg j)) (= j i)) ((union e r)) :ruleset region-eval)
(rule ((= e (Splice a i r)) (= a (Arg j)) (> j i)) ((union e (Arg (- j 1)))) :ruleset region-eval)
(rule ((= e (Splice a i r)) (= a (Cst c))) ((union e (Cst c))) :ruleset region-eval)
(rule ((= e (Splice a i r)) (= a (U o x))) ((union e (U o (Splice x i r)))) :ruleset region-eval)
(rule ((= e (Splice a i r)) (= a (Bn o x y))) ((union e (Bn o (Splice x i r) (Splice y i r)))) :ruleset region-eval)
(rule ((= e (Splice a i r)) (= a (Tn o x y z))) ((union e (Tn o (Splice x i r) (Splice y i r) (Splice z i r)))) :ruleset region-eval)
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
"""
