"""The rule language's syntax tree: small frozen records with source spans."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class Span:
    path: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


@dataclass(frozen=True)
class AttrRef:
    """An attribute variable in a kwarg position (``eps=e``)."""
    name: str
    span: Span


@dataclass(frozen=True)
class Call:
    op: str
    args: tuple["Expr", ...]
    kwargs: tuple[tuple[str, Any], ...]  # value: a Python literal or an AttrRef
    span: Span

    def kw(self) -> dict[str, Any]:
        return dict(self.kwargs)


@dataclass(frozen=True)
class Var:
    name: str
    span: Span


@dataclass(frozen=True)
class Num:
    value: float
    span: Span


@dataclass(frozen=True)
class Bind:
    expr: "Expr"
    name: str
    span: Span


Expr = Union[Call, Var, Num, Bind]


# guard expressions
@dataclass(frozen=True)
class GLit:
    value: Any  # int | float | str | tuple[int, ...]


@dataclass(frozen=True)
class GName:
    name: str
    span: Span


@dataclass(frozen=True)
class GFunc:
    fn: str  # rank | dim | dtype
    var: str
    axis: int | None
    span: Span


@dataclass(frozen=True)
class GArith:
    op: str
    a: "GExpr"
    b: "GExpr"


GExpr = Union[GLit, GName, GFunc, GArith]


@dataclass(frozen=True)
class Guard:
    kind: str                   # "compare" | "member"
    op: str                     # comparison operator, or "in"
    a: Any                      # GExpr, or the member's variable name
    b: Any                      # GExpr, or the member's options (tuple of literals)
    message: str | None
    text: str
    span: Span


@dataclass(frozen=True)
class Rule:
    name: str
    doc: str
    lhs: Expr
    rhs: Expr
    outputs: tuple[str, ...] | None
    bidirectional: bool
    guards: tuple[Guard, ...]
    ruleset: str
    span: Span
    text: str


@dataclass(frozen=True)
class AttrParam:
    name: str
    kind: str
    default: Any
    has_default: bool


@dataclass(frozen=True)
class FusedDecl:
    name: str
    doc: str
    inputs: tuple[str, ...]
    attrs: tuple[AttrParam, ...]
    bindings: tuple[tuple[str, Expr], ...]
    results: tuple[Expr, ...]
    span: Span
    text: str


@dataclass(frozen=True)
class RegionsDecl:
    ruleset: str
    doc: str
    span: Span


@dataclass
class RuleFile:
    path: str
    fused: list[FusedDecl] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    regions: list[RegionsDecl] = field(default_factory=list)
    includes: list[tuple[str, Span]] = field(default_factory=list)
    commutative: list[tuple[str, Span]] = field(default_factory=list)
