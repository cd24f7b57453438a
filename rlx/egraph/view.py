"""A Python view of a frozen e-graph: classes of decoded e-nodes, with tensor types.

``EGraph.freeze()`` gives every function's rows; this turns the tensor constructors into
``ENode``s over integer class ids (region bodies decoded to expression trees), then infers every
class's type from the registry, starting from the loaded MIR types. Nothing here recurses,
so deep graphs are fine.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from egglog import bindings

from rlx.errors import RlxError
from rlx.ir.graph import Graph
from rlx.ir.expr import Expr, arg, const, remap
from rlx.ir.registry import REGISTRY, TensorType
from rlx.egraph.encode import attr_sort, decode_attr, parse_head
from rlx.egraph.load import Loaded
from rlx.egraph.schema import schema_ops

BODY_CTORS = {"Arg", "Cst", "U", "Bn", "Tn"}


class Kind(Enum):
    """What an e-node is: an application of a registry op (sources included), the i-th
    result of a multi-output op, or the absent tensor in an omitted optional input."""
    OP = "op"
    GET = "get"
    ABSENT = "absent"


@dataclass(frozen=True)
class ENode:
    op: str                            # the registry op ("" for GET and ABSENT)
    children: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...] = ()
    kind: Kind = Kind.OP

    def attr_dict(self) -> dict[str, Any]:
        return dict(self.attrs)

    @property
    def is_get(self) -> bool:
        return self.kind is Kind.GET

    @property
    def is_absent(self) -> bool:
        return self.kind is Kind.ABSENT

    @property
    def is_source(self) -> bool:
        return self.kind is Kind.OP and REGISTRY.get(self.op).category == "source"


@dataclass
class EGraphView:
    classes: list[list[ENode]] = field(default_factory=list)
    types: dict[int, tuple[TensorType, ...]] = field(default_factory=dict)
    value_class: dict[str, int] = field(default_factory=dict)   # MIR value name -> class
    class_of: dict[Any, int] = field(default_factory=dict)       # egglog Value -> class
    frozen: dict[str, Any] = field(default_factory=dict, repr=False)
    absent: int = -1  # the class of the absent tensor (omitted optional inputs)

    def inputs(self, n: ENode) -> tuple[int, ...]:
        """A node's tensor inputs, without absent optional ones."""
        return tuple(c for c in n.children if c != self.absent)

    @property
    def n_nodes(self) -> int:
        return sum(len(c) for c in self.classes)

    def cid(self, v: Any) -> int:
        c = self.class_of.get(v)
        if c is None:
            c = self.class_of[v] = len(self.classes)
            self.classes.append([])
        return c

    def type1(self, c: int) -> TensorType | None:
        t = self.types.get(c)
        return t[0] if t is not None and len(t) == 1 else None


def freeze(eg: bindings.EGraph, graph: Graph, loaded: Loaded) -> EGraphView:
    frozen = eg.freeze().functions
    view = EGraphView()
    view.frozen = frozen
    bodies = _bodies(eg, frozen)
    arglists = _arglists(frozen)
    ops = {f"O_{op.name}": op for op in schema_ops()}
    seen: set[tuple] = set()

    def add(cls: int, node: ENode) -> None:
        key = (cls, node)
        if key not in seen:
            seen.add(key)
            view.classes[cls].append(node)

    names_of_id: dict[int, str] = {i: name for name, i in loaded.value_ids.items()}
    for row in frozen["N"].rows:
        nid = eg.value_to_i64(row.inputs[0])
        c = view.cid(row.output)
        node = loaded.node_of_id.get(nid)
        if node is not None and len(node.outputs) > 1:
            view.types[c] = node.outputs  # the tuple class of a multi-output node
        if nid in names_of_id:
            view.value_class[names_of_id[nid]] = c
    for fname, f in frozen.items():
        if fname in ("O_input", "O_param"):
            for r in f.rows:
                name = eg.value_to_string(r.inputs[0])
                node = graph.node(name)
                add(view.cid(r.output), ENode(node.op, (), (("name", name),)))
        elif fname == "O_scalar":
            for r in f.rows:
                add(view.cid(r.output), ENode("constant", (), (("key", eg.value_to_string(r.inputs[0])),)))
        elif fname == "O_const":
            for r in f.rows:
                node = loaded.node_of_id[eg.value_to_i64(r.inputs[0])]
                add(view.cid(r.output), ENode("constant", (), (("node", node.name),)))
        elif fname == "O_absent":
            for r in f.rows:
                view.absent = view.cid(r.output)
                add(view.absent, ENode("", (), kind=Kind.ABSENT))
        elif fname == "O_get":
            for r in f.rows:
                add(view.cid(r.output), ENode("", (view.cid(r.inputs[0]),),
                                              (("index", eg.value_to_i64(r.inputs[1])),), Kind.GET))
        elif fname == "Region":
            for r in f.rows:
                body, args = bodies.get(r.inputs[0]), arglists.get(r.inputs[1])
                if body is None or args is None:
                    continue  # body not evaluated within the limits: this region is not usable
                args = [view.cid(a) for a in args]
                add(view.cid(r.output), _region_node(body, args))
        elif fname in ops:
            op = ops[fname]
            for r in f.rows:
                ins = list(r.inputs)
                if op.variadic:
                    children = tuple(view.cid(a) for a in eg.value_to_vec(ins[0]))
                    rest = ins[1:]
                else:
                    children = tuple(view.cid(a) for a in ins[:len(op.inputs)])
                    rest = ins[len(op.inputs):]
                attrs = tuple((spec.name, decode_attr(spec, _prim(eg, v, spec)))
                              for spec, v in zip(op.attrs, rest))
                add(view.cid(r.output), ENode(op.name, children, attrs))
    _infer_types(view, graph)
    return view


def _prim(eg: bindings.EGraph, v: Any, spec) -> Any:
    sort = attr_sort(spec)
    return eg.value_to_i64(v) if sort == "i64" else eg.value_to_f64(v) if sort == "f64" else eg.value_to_string(v)


def _bodies(eg: bindings.EGraph, frozen) -> dict[Any, Expr]:
    """Body class -> its smallest concrete expression (fixpoint, no recursion)."""
    forms: dict[Any, list[tuple[str, tuple, Any]]] = defaultdict(list)
    for name in BODY_CTORS:
        f = frozen.get(name)
        if f is None:
            continue
        for r in f.rows:
            if name == "Arg":
                forms[r.output].append(("Arg", (), eg.value_to_i64(r.inputs[0])))
            elif name == "Cst":
                forms[r.output].append(("Cst", (), eg.value_to_string(r.inputs[0])))
            else:
                forms[r.output].append((name, tuple(r.inputs[1:]), eg.value_to_string(r.inputs[0])))
    best: dict[Any, tuple[int, Expr]] = {}
    changed = True
    while changed:
        changed = False
        for cls, fs in forms.items():
            for kind, kids, payload in fs:
                if kind == "Arg":
                    cand = (0, arg(payload))
                elif kind == "Cst":
                    try:
                        cand = (0, const(payload == "true" if payload in ("true", "false") else float(payload)))
                    except ValueError:
                        continue
                else:
                    if any(k not in best for k in kids):
                        continue
                    op, attrs = parse_head(payload)
                    cand = (1 + sum(best[k][0] for k in kids),
                            Expr(op, tuple(best[k][1] for k in kids), attrs=tuple(sorted(attrs.items()))))
                if cls not in best or cand[0] < best[cls][0]:
                    best[cls] = cand
                    changed = True
    return {cls: expr for cls, (_, expr) in best.items()}


def _arglists(frozen) -> dict[Any, list[Any]]:
    """Args class -> its elements (T values), from Nil/Cons rows (fixpoint, no recursion)."""
    best: dict[Any, list[Any]] = {r.output: [] for r in frozen["Nil"].rows} if "Nil" in frozen else {}
    cons = [(r.output, r.inputs[0], r.inputs[1]) for r in frozen["Cons"].rows] if "Cons" in frozen else []
    changed = True
    while changed:
        changed = False
        for out, head, tail in cons:
            if tail in best and (out not in best or len(best[out]) > len(best[tail]) + 1):
                best[out] = [head] + best[tail]
                changed = True
    return best


def _region_node(body: Expr, args: list[int]) -> ENode:
    """A region e-node with duplicate inputs merged (``$i`` renumbered)."""
    unique = list(dict.fromkeys(args))
    if len(unique) == len(args):
        return ENode("region", tuple(args), (("body", body),))
    mapping = {i: unique.index(a) for i, a in enumerate(args)}
    return ENode("region", tuple(unique), (("body", remap(body, mapping)),))


def _infer_types(view: EGraphView, graph: Graph) -> None:
    """Loaded classes have their MIR types; the rest are inferred from the registry."""
    loaded = {v.name: v.type for n in graph.nodes for v in n.values}
    for name, c in view.value_class.items():
        view.types.setdefault(c, (loaded[name],))
    changed = True
    while changed:
        changed = False
        for c, nodes in enumerate(view.classes):
            if c in view.types:
                continue
            for n in nodes:
                t = _node_type(view, n)
                if t is not None:
                    view.types[c] = t
                    changed = True
                    break
        if not changed:
            changed = _type_new_scalars(view)


def _type_new_scalars(view: EGraphView) -> bool:
    """A scalar constant a rule created has no MIR type: it is a 0-d tensor of the dtype of
    the operand beside it in an elementwise op (as a Python scalar would be in the builder)."""
    untyped = {c for c, nodes in enumerate(view.classes) if c not in view.types
               and any(n.op == "constant" and "key" in n.attr_dict() for n in nodes)}
    found = False
    for nodes in view.classes:
        for n in nodes:
            if not untyped.intersection(n.children) or n.kind is not Kind.OP or not REGISTRY.get(n.op).elementwise:
                continue
            kids = view.inputs(n)
            like = next((view.type1(kids[i]) for i in REGISTRY.get(n.op).dtype_peers(len(kids))
                         if view.type1(kids[i]) is not None), None)
            if like is not None:
                for c in n.children:
                    if c in untyped:
                        view.types[c] = (TensorType((), like.dtype),)
                        untyped.discard(c)
                        found = True
    return found


def _node_type(view: EGraphView, n: ENode) -> tuple[TensorType, ...] | None:
    """The type of an e-node from its children's types, or None if not (yet) known."""
    if n.is_absent or n.is_source:
        return None  # sources are typed from the loaded MIR
    kids = [view.types.get(c) for c in view.inputs(n)]
    if any(k is None for k in kids):
        return None
    if n.is_get:
        tup = kids[0]
        i = n.attr_dict()["index"]
        return (tup[i],) if i < len(tup) else None
    if any(len(k) != 1 for k in kids):
        return None
    try:
        return tuple(REGISTRY.get(n.op).infer([k[0] for k in kids], n.attr_dict()))
    except RlxError:
        return None


def near_rows(eg: bindings.EGraph, view: EGraphView, relation: str, columns) -> list[dict[str, Any]]:
    """Decoded rows of a near-miss relation: column name -> class id or attribute value."""
    f = view.frozen.get(relation)
    if f is None:
        return []
    out = []
    for r in f.rows:
        row = {}
        for (role, name, sort), v in zip(columns, r.inputs):
            if sort == "T":
                row[name] = view.class_of.get(v)
            elif sort == "i64":
                row[name] = eg.value_to_i64(v)
            elif sort == "f64":
                row[name] = eg.value_to_f64(v)
            else:
                row[name] = _decode_string(eg.value_to_string(v))
        out.append(row)
    return out


def _decode_string(s: str) -> Any:
    if s == "None":
        return None
    if s in ("true", "false"):
        return s == "true"
    if s.startswith("["):
        return tuple(json.loads(s))
    return s
