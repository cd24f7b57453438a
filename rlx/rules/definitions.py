"""The definition of every op that has one, as a rule-language declaration.

A fused op declared in a rule file carries its ``FusedDecl``. A registry op (gelu, silu,
softmax, rms_norm, layer_norm...) carries its body as rule-language text on its ``OpDef``;
here it is parsed and checked once, like a rule file's ``fused`` declaration, so both kinds
are one thing to everything downstream: the e-graph's decomposition rules, the prover, the
fuzzer and the kernel layer.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from rlx.errors import RlxError
from rlx.ir.registry import REGISTRY, REQUIRED, OpDef
from rlx.rules.ast import FusedDecl
from rlx.rules.parse import parse_text

_KINDS = {"int": "int", "float": "float", "bool": "bool", "str": "str", "dtype": "dtype", "ints": "ints",
          "op": "op"}


def decl_of(op: OpDef | str) -> FusedDecl | None:
    """The declaration defining ``op``, or None for a primitive."""
    opdef = REGISTRY.get(op) if isinstance(op, str) else op
    d = opdef.definition
    if d is None or isinstance(d, FusedDecl):
        return d
    return _parse(opdef.name)


def applies(opdef: OpDef, attrs: dict[str, Any]) -> bool:
    """Whether the definition holds for these attribute values (``defined_for``)."""
    return all(attrs.get(k) == v for k, v in opdef.defined_for)


def registry_definitions() -> list[OpDef]:
    """Registry ops defined in text on their OpDef (not rule-file fused ops)."""
    return [op for op in REGISTRY if isinstance(op.definition, str)]


@lru_cache(maxsize=None)
def _parse(name: str) -> FusedDecl:
    op = REGISTRY.get(name)
    params = []
    for a in op.attrs:
        if a.kind not in _KINDS:
            raise RlxError(f"op {name}: attribute {a.name!r} of kind {a.kind} cannot appear in a definition")
        default = "" if a.default is REQUIRED else f" = {_literal(a.default)}"
        params.append(f"{a.name}: {_KINDS[a.kind]}{default}")
    sig = ", ".join(op.inputs) + (f"; {', '.join(params)}" if params else "")
    text = f"fused {name}({sig}) {json.dumps(op.doc)} {{\n{op.definition}\n}}\n"
    (decl,) = parse_text(text, f"<definition of {name}>").fused
    return decl


def _literal(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(map(str, v)) + "]"
    if isinstance(v, str):
        return v if v.isidentifier() else json.dumps(v)
    return repr(v)
