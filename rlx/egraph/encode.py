"""How rlx values are spelled in egglog: constructor names, attribute sorts and literals,
scalar keys and interned symbolic dims. Loader, rule compiler and decoder share these."""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from rlx.ir.registry import REGISTRY, AttrSpec, OpDef


def ctor(op: str) -> str:
    """The egglog constructor of a registry op."""
    return f"O_{op}"


def attr_sort(spec: AttrSpec) -> str:
    """i64 for ints; everything else, floats included, as its exact text (a float is its
    repr, the same spelling as a scalar constant's key, so ``scalar(e)`` can feed ``eps``)."""
    if spec.kind == "int" and not spec.optional:
        return "i64"
    return "String"


def encode_attr(spec: AttrSpec, value: Any) -> Any:
    """A normalized attribute value as the Python value of its egglog column."""
    sort = attr_sort(spec)
    if sort == "i64":
        return int(value)
    if value is None:
        return "None"
    if spec.kind == "float":
        return repr(float(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return json.dumps(list(value), separators=(",", ":"))
    return str(value)


def decode_attr(spec: AttrSpec, value: Any) -> Any:
    """The inverse of ``encode_attr`` (then normalized by the spec)."""
    if attr_sort(spec) != "String":
        return value
    if value == "None":
        return None
    if spec.kind == "bool":
        return value == "true"
    if spec.kind in ("ints", "floats", "dims"):
        return tuple(json.loads(value))
    if spec.kind == "int":
        return int(value)
    if spec.kind == "float":
        return float(value)
    return value


def literal(value: Any, sort: str) -> str:
    """Egglog program text for a column value."""
    if sort == "i64":
        return str(int(value))
    if sort == "f64":
        text = repr(float(value))
        return text if any(c in text for c in ".en") else text + ".0"
    return json.dumps(str(value))


def tsv_cell(value: Any, sort: str) -> str:
    if sort == "String":
        s = str(value)
        if "\t" in s or "\n" in s:
            raise ValueError(f"cannot write {s!r} to a TSV column")
        return s
    return literal(value, sort)


def scalar_key(value: Any) -> str:
    """One spelling per scalar constant, shared by loaded constants and rule literals: the
    shortest repr of its float32 rounding (so 1.4142135 in a rule matches f32(sqrt 2))."""
    v = np.asarray(value).reshape(())[()]
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    return repr(float(np.float32(v)))


BODY_ARITY = {1: "U", 2: "Bn", 3: "Tn"}  # region Body constructors by operand count
HEAD_SEP = "|"  # between the attributes of a body op with several (hard_sigmoid's alpha and beta)
JOINABLE = ("float", "floats", "int", "ints", "bool", "dims")  # kinds whose encoding never holds HEAD_SEP


def lifts_into_regions(op: OpDef) -> bool:
    """Whether a body op's attributes can be spelled in its head: one string-sorted
    attribute of any kind, or several whose encodings cannot hold the separator."""
    return all(attr_sort(a) == "String" for a in op.attrs) and \
        (len(op.attrs) <= 1 or all(a.kind in JOINABLE for a in op.attrs))


def body_head(op: str, attrs: dict[str, Any]) -> str:
    """How a region body node's op is spelled in egglog: the op, or ``op:value`` for an op
    with one attribute (a cast's dtype), ``op:v1|v2`` with several (in spec order)."""
    if not attrs:
        return op
    specs = REGISTRY.get(op).attrs
    return f"{op}:" + HEAD_SEP.join(encode_attr(spec, attrs[spec.name]) for spec in specs)


def parse_head(head: str) -> tuple[str, dict[str, Any]]:
    op, _, text = head.partition(":")
    if not text:
        return op, {}
    specs = REGISTRY.get(op).attrs
    values = text.split(HEAD_SEP) if len(specs) > 1 else [text]
    return op, {spec.name: spec.normalize(decode_attr(spec, v), f"region body op {op}")
                for spec, v in zip(specs, values)}


def constructor_sorts(op: OpDef) -> list[str]:
    """Argument sorts of an op's constructor: tensors (a TVec when variadic), then attributes."""
    tensors = ["TVec"] if op.variadic else ["T"] * len(op.inputs)
    return tensors + [attr_sort(a) for a in op.attrs]


class DimTable:
    """Symbolic dims as distinct negative i64 (static dims are themselves). Equality of the
    canonical spelling is equality of the ids; arithmetic is only decided on static dims."""
    BASE = -1_000_000

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def id(self, d: int | str) -> int:
        if isinstance(d, int):
            return d
        return self.ids.setdefault(d, self.BASE - len(self.ids))

