"""Kernel skeletons: the few loop structures every kernel is, parameterized by expressions.

Each backend prints these five and the primitives of ``rlx.kernels.scalar``; an op's kernel
is a skeleton instance derived from its definition (``rlx.kernels.lower``). All expressions
are typed and over primitives: ``arg(i)`` is kernel input ``i``; in a row reduction
``red(j)`` is the j-th per-row result; in a GEMM ``arg(n_inputs + j)`` is the j-th product.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from rlx.ir.expr import Expr
from rlx.ir.registry import TensorType


@dataclass(frozen=True)
class Pointwise:
    """Each output is an expression of the inputs, elementwise with broadcasting."""
    outputs: tuple[Expr, ...]
    name = "pointwise"


@dataclass(frozen=True)
class RowReduce:
    """Per row of the last axis: ``reductions[j] = (kind, expr)`` reduces ``expr`` (over
    inputs and earlier reductions) with sum, mean or max; then each output is an expression
    of the inputs and the reductions."""
    reductions: tuple[tuple[str, Expr], ...]
    outputs: tuple[Expr, ...]
    name = "row reduction + elementwise"


@dataclass(frozen=True)
class Gemm:
    """``gemms[j] = (a, b)``: input a times input b (a matrix), accumulated in f32; each
    output is an epilogue expression of the inputs and the products."""
    gemms: tuple[tuple[int, int], ...]
    outputs: tuple[Expr, ...]
    name = "GEMM + epilogue"


@dataclass(frozen=True)
class Attention:
    """``probs(softmax(score)) · v`` over the last two axes, where ``score`` is an expression
    of ``q · kᵀ`` (its ``arg(0)``) and the inputs (``arg(1 + i)``: a mask, say), with the
    top-left causal mask applied when ``causal``; ``probs``, when given, is an elementwise
    expression of the probabilities (its ``arg(0)``), such as torch's export zeroing the NaN
    rows of fully masked queries."""
    q: int
    k: int
    v: int
    score: Expr
    causal: bool
    probs: Expr | None = None
    name = "attention"


@dataclass(frozen=True)
class Conv:
    """Input ``x`` (N, C, *spatial) convolved with input ``w`` (M, C/group, *kernel) as a GEMM
    over its windows (im2col; a depthwise one tap by tap), plus input ``bias`` (M,) per output
    channel when given, accumulated in f32; each output is an epilogue expression of the
    inputs and the convolution (its ``arg(n_inputs)``), broadcast over (N, M, *out)."""
    x: int
    w: int
    bias: int | None
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    group: int
    outputs: tuple[Expr, ...]
    name = "convolution + epilogue"


Skeleton = Union[Pointwise, RowReduce, Gemm, Attention, Conv]


@dataclass(frozen=True)
class Kernel:
    """A skeleton instance for one op application: what a backend prints."""
    skeleton: Skeleton
    in_types: tuple[TensorType, ...]
    out_types: tuple[TensorType, ...]

    @property
    def kind(self) -> str:
        return self.skeleton.name


__all__ = ["Pointwise", "RowReduce", "Gemm", "Attention", "Conv", "Skeleton", "Kernel"]
