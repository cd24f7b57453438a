"""The op registry: the one place every op is described.

Everything else (graph builder, interpreter, e-graph schema, cost models, executors, the
ONNX importer) reads an ``OpDef`` from here; nothing keeps a second list of ops. Rule files
add fused ops at load time through ``register``.
"""
from __future__ import annotations

import difflib
import math
from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlx.errors import AttrError, DTypeError, UnknownOpError
from rlx.ir.dtypes import DType, as_dtype
from rlx.ir.shapes import Shape

REQUIRED = object()
ATTR_KINDS = ("int", "float", "bool", "str", "ints", "floats", "dims", "dtype", "tensor", "op", "expr")


@dataclass(frozen=True)
class TensorType:
    """Shape and dtype of one value."""
    shape: Shape
    dtype: DType

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"


@dataclass(frozen=True)
class AttrSpec:
    """An attribute: its kind (one of ATTR_KINDS), default, and whether None is allowed."""
    name: str
    kind: str
    default: Any = REQUIRED
    optional: bool = False

    def normalize(self, value: Any, where: str) -> Any:
        """Check and canonicalize a value (lists become tuples, dtypes become DType)."""
        if value is None and self.optional:
            return None
        bad = AttrError(f"{where}: attribute {self.name!r} expects {self.kind}"
                        f"{' or None' if self.optional else ''}, got {value!r}")
        k = self.kind
        if k == "int":
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                return int(value)
            raise bad
        if k == "float":
            if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
                return float(value)
            raise bad
        if k == "bool":
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            raise bad
        if k == "str":
            if isinstance(value, str):
                return value
            raise bad
        if k == "op":  # the name of a unary elementwise op, or "none" for identity
            if value == "none" or (isinstance(value, str) and value in REGISTRY and
                                   REGISTRY.get(value).elementwise and len(REGISTRY.get(value).inputs) == 1):
                return value
            raise AttrError(f"{where}: attribute {self.name!r} expects the name of a unary elementwise "
                            f"op or 'none', got {value!r}")
        if k == "ints":
            if isinstance(value, (list, tuple)) and all(
                    isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
                return tuple(int(v) for v in value)
            raise bad
        if k == "floats":
            if isinstance(value, (list, tuple)) and all(
                    isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                    and math.isfinite(v) for v in value):
                return tuple(float(v) for v in value)
            raise bad
        if k == "dims":
            if isinstance(value, (list, tuple)) and all(
                    (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) or isinstance(v, str)
                    for v in value):
                return tuple(int(v) if not isinstance(v, str) else v for v in value)
            raise bad
        if k == "dtype":
            try:
                return as_dtype(value)
            except DTypeError as e:
                raise DTypeError(f"{where}: attribute {self.name!r}: {e}") from None
        if k == "expr":  # a scalar expression tree (rlx.ir.expr), e.g. a region's body
            from rlx.ir.expr import Expr  # expr builds on this module
            if isinstance(value, Expr):
                return value
            raise bad
        if k == "tensor":
            try:
                arr = np.asarray(value)
            except Exception:
                raise bad from None
            if arr.dtype == object:
                raise bad
            return arr
        raise AssertionError(k)


ShapeRule = Callable[[Sequence[Shape], dict], Sequence[Shape]]
DTypeRule = Callable[[Sequence[DType], dict], Sequence[DType]]
Reference = Callable[[Sequence[np.ndarray], dict], Any]
CostRule = Callable[[Sequence[tuple[int, ...]], Sequence[tuple[int, ...]], dict], float]


@dataclass(frozen=True)
class OpDef:
    """One op: its interface, inference rules, reference semantics and cost.

    ``inputs`` names the tensor inputs; the last ``optional_inputs`` of them may be omitted,
    and a ``variadic`` op repeats its last input one or more times. ``shape`` and ``dtype``
    map input shapes/dtypes and attributes to one entry per output. ``reference`` computes
    the outputs with NumPy. ``flops`` counts arithmetic on concrete shapes; bytes moved are
    inputs read once plus outputs written once, except for views, which move nothing.
    """
    name: str
    inputs: tuple[str, ...]
    shape: ShapeRule
    dtype: DTypeRule
    reference: Reference
    flops: CostRule
    attrs: tuple[AttrSpec, ...] = ()
    optional_inputs: int = 0
    variadic: bool = False
    elementwise: bool = False
    view: bool = False
    category: str = "primitive"      # source | primitive | composite | fused
    doc: str = ""
    # What the op means in other ops: a fused op's declaration (rule files), or for a
    # registry op the body in the rule language over its input and attribute names, valid
    # where its attributes equal ``defined_for``. Kernels, decompositions and scalar bodies
    # follow from it; an elementwise op without one is a primitive every backend prints.
    definition: Any = field(default=None, compare=False)
    defined_for: tuple[tuple[str, Any], ...] = ()
    types: Any = field(default=None, compare=False)  # optional combined shape+dtype rule
    value_inputs: tuple[int, ...] | None = None  # inputs a weak scalar takes its dtype from
    # Attributes naming axes of input 0: the graph keeps them counted from the end, so a
    # rule written with axis=-1 matches softmax(x; axis=2) on a rank-3 x.
    axis_attrs: tuple[str, ...] = ()
    commutative: bool = False   # a binary op whose operands may swap (add, mul, ...)
    # A view op: (attrs, input shape, input strides, output shape) -> (element offset,
    # strides) when the output can alias its input, else None (the executor copies). An op
    # with several outputs (split) also takes ``output``, the index of the one asked for.
    view_layout: Any = field(default=None, compare=False)

    def infer(self, in_types: Sequence[TensorType], attrs: dict) -> list[TensorType]:
        """Output types from input types: the combined rule if the op has one, else the
        shape rule and the dtype rule."""
        if self.types is not None:
            return list(self.types(in_types, attrs))
        shapes = self.shape([t.shape for t in in_types], attrs)
        dtypes = self.dtype([t.dtype for t in in_types], attrs)
        return [TensorType(tuple(s), d) for s, d in zip(shapes, dtypes)]

    def canonical_axes(self, attrs: dict, rank: int) -> dict:
        """``attrs`` with its axis attributes counted from the end (-1 is the last axis)."""
        from rlx.ir.shapes import normalize_axis  # shapes builds on nothing here; import late
        out = dict(attrs)
        for name in self.axis_attrs:
            v = out.get(name)
            if isinstance(v, int):
                out[name] = normalize_axis(v, rank) - rank
            elif isinstance(v, tuple):
                out[name] = tuple(sorted({normalize_axis(a, rank) - rank for a in v}))
        return out

    def dtype_peers(self, n_inputs: int) -> Sequence[int]:
        """The operands whose dtype a weak scalar among them takes (all, unless the op says:
        where's condition is bool and its two values set the dtype)."""
        return self.value_inputs if self.value_inputs is not None else range(n_inputs)

    @property
    def is_primitive_elementwise(self) -> bool:
        """An elementwise op every backend prints itself (it has no definition)."""
        return self.elementwise and self.definition is None and not self.variadic

    @property
    def min_inputs(self) -> int:
        return len(self.inputs) - self.optional_inputs

    def attr(self, name: str) -> AttrSpec:
        for a in self.attrs:
            if a.name == name:
                return a
        raise KeyError(name)

    def normalize_attrs(self, attrs: dict, where: str) -> dict:
        """Fill defaults, check kinds, reject unknown or missing attributes."""
        known = {a.name for a in self.attrs}
        unknown = sorted(set(attrs) - known)
        if unknown:
            hint = difflib.get_close_matches(unknown[0], known, n=1)
            raise AttrError(f"{where}: {self.name} has no attribute {unknown[0]!r}"
                            + (f"; did you mean {hint[0]!r}?" if hint else
                               f"; it takes {', '.join(sorted(known)) or 'none'}"))
        out = {}
        for a in self.attrs:
            if a.name in attrs:
                out[a.name] = a.normalize(attrs[a.name], where)
            elif a.default is REQUIRED:
                raise AttrError(f"{where}: {self.name} requires attribute {a.name!r} ({a.kind})")
            else:
                out[a.name] = a.default
        return out

    def bytes_moved(self, in_types: Sequence[TensorType], out_types: Sequence[TensorType],
                    in_shapes: Sequence[tuple[int, ...]], out_shapes: Sequence[tuple[int, ...]]) -> int:
        if self.view or self.category == "source":
            return 0
        total = sum(math.prod(s) * t.dtype.itemsize for s, t in zip(in_shapes, in_types))
        return total + sum(math.prod(s) * t.dtype.itemsize for s, t in zip(out_shapes, out_types))


class Registry:
    """Name -> OpDef. One instance, ``REGISTRY``, is the source of truth.

    It has three layers, looked up in this order: the ops of the rule set a compile is using
    (``scope``: a context-local overlay, so loading rules never changes what another compile
    or thread sees), the built-in ops registered here, and the *standard library*: fused ops
    declared by rlx's shipped rule files, provided on demand by ``rlx.rules``."""

    def __init__(self) -> None:
        self._ops: dict[str, OpDef] = {}
        self._overlay: ContextVar[Mapping[str, OpDef] | None] = ContextVar("rlx_rule_set_ops", default=None)
        self.library: Callable[[], Mapping[str, OpDef]] | None = None  # set by rlx.rules

    def register(self, op: OpDef, *, replace: bool = False) -> OpDef:
        if op.name in self._ops and not replace and self._ops[op.name] != op:
            raise AttrError(f"op {op.name!r} is already registered")
        self._ops[op.name] = op
        return op

    def unregister(self, name: str) -> None:
        self._ops.pop(name, None)

    @contextmanager
    def scope(self, ops: Mapping[str, OpDef]) -> Iterator[None]:
        """Make ``ops`` (a rule set's fused ops) visible in this context, over the others."""
        outer = self._overlay.get()
        token = self._overlay.set(ChainMap(ops, outer) if outer is not None else ChainMap(ops))  # live: sees additions
        try:
            yield
        finally:
            self._overlay.reset(token)

    def _layers(self) -> list[Mapping[str, OpDef]]:
        return [self._overlay.get() or {}, self._ops, self.library() if self.library else {}]

    def get(self, name: str, where: str = "") -> OpDef:
        overlay = self._overlay.get()
        op = overlay.get(name) if overlay is not None else None
        if op is None:
            op = self._ops.get(name)
        if op is None and self.library is not None:
            op = self.library().get(name)
        if op is not None:
            return op
        hint = difflib.get_close_matches(name, self.names(), n=1)
        raise UnknownOpError(f"{where + ': ' if where else ''}unknown op {name!r}"
                             + (f"; did you mean {hint[0]!r}?" if hint else ""))

    def __contains__(self, name: object) -> bool:
        return any(name in layer for layer in self._layers())

    def __iter__(self) -> Iterator[OpDef]:
        seen: dict[str, OpDef] = {}
        for layer in self._layers():
            for name, op in layer.items():
                seen.setdefault(name, op)
        return iter(seen.values())

    def names(self) -> list[str]:
        return [op.name for op in self]


REGISTRY = Registry()


def get_op(name: str, where: str = "") -> OpDef:
    return REGISTRY.get(name, where)


def register(op: OpDef, *, replace: bool = False) -> OpDef:
    return REGISTRY.register(op, replace=replace)

