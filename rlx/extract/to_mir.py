"""Turn an extraction back into a MIR graph. Nodes that survive keep their names; new
nodes are named in the scope of the node whose class they took over."""
from __future__ import annotations

import numpy as np

from rlx.ir.graph import Graph, Node, Value
from rlx.egraph.view import ENode, EGraphView
from rlx.extract.greedy import Extraction


def to_mir(source: Graph, view: EGraphView, ex: Extraction, class_name: dict[int, str]) -> Graph:
    g = Graph(source.name)
    emitted: dict[int, Value | Node] = {}

    def val(c: int) -> Value:
        v = emitted[c]
        return v if isinstance(v, Value) else v.value()

    for c in sorted(ex.choice, key=lambda c: ex.level[c]):
        n = ex.choice[c]
        if n.is_absent:
            continue
        t = view.types[c]
        if n.op in ("input", "param"):
            name = n.attr_dict()["name"]
            emitted[c] = g.add_node(n.op, (), {"name": name, "shape": t[0].shape, "dtype": t[0].dtype}).value()
        elif n.op == "constant":
            a = n.attr_dict()
            value = (source.node(a["node"]).attrs["value"] if "node" in a else
                     np.asarray(a["key"] == "true" if a["key"] in ("true", "false") else float(a["key"])))
            emitted[c] = g.add_node("constant", (), {"value": value, "dtype": t[0].dtype},
                                    _name(g, class_name.get(c), "constant")).value()
        elif n.is_get:
            node = emitted[n.children[0]]
            emitted[c] = (node.node if isinstance(node, Value) else node).value(n.attr_dict()["index"])
        else:
            orig = class_name.get(c)
            keep = orig if orig and ":" not in orig and _same_op(source, orig, n) else None
            node = g.add_node(n.op, [val(ch) for ch in view.inputs(n)], n.attr_dict(),
                              keep if keep and keep not in g else _name(g, orig, n.op))
            emitted[c] = node if len(node.outputs) > 1 else node.value()
    g.output(**{name: val(view.value_class[v.name]) for name, v in source.outputs})
    return g


def _same_op(source: Graph, name: str, n: ENode) -> bool:
    try:
        return source.node(name).op == n.op
    except Exception:
        return False


def _name(g: Graph, orig: str | None, op: str) -> str:
    scope = orig.rsplit(".", 1)[0] + "." if orig and "." in orig else ""
    base = f"{scope}{op}"
    k = 1
    while f"{base}_{k}" in g:
        k += 1
    return f"{base}_{k}"
