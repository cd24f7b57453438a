"""Load a MIR graph into an egglog e-graph in bulk.

Nodes are written as rows of one relation per op kind (TSV files read with egglog's
``input``), and one ``load`` ruleset unions ``(N id)`` with the constructor applied to its
inputs' ``N``s. Adding nodes one command each, or parsing one large program, is quadratic
(DESIGN.md); this is linear. Types go in the same way, as rows for ``ty-*``.
"""
from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from egglog import bindings

from rlx.ir.graph import Graph, Node, Value
from rlx.ir.expr import Expr, fold
from rlx.ir.registry import REGISTRY
from rlx.egraph.encode import (BODY_ARITY, DimTable, attr_sort, body_head, constructor_sorts, ctor, encode_attr, literal,
                               scalar_key, tsv_cell)


@dataclass
class Loaded:
    """Where MIR went: value name -> e-class id (the ``N`` id), and the nodes by id."""
    value_ids: dict[str, int] = field(default_factory=dict)
    node_of_id: dict[int, Node] = field(default_factory=dict)
    dims: DimTable = field(default_factory=DimTable)


ABSENT = -1  # the N id of the absent tensor (an omitted optional input)


def run_pieces(eg: bindings.EGraph, pieces: list[str]) -> None:
    """Run program text one small piece at a time: egglog's parser is quadratic in the
    length of one program (10 s for the shipped rules in one piece, 0.2 s in pieces)."""
    for p in pieces:
        eg.run_program(*eg.parse_program(p))


def load_graph(eg: bindings.EGraph, graph: Graph, workdir: Path) -> Loaded:
    """Write ``graph`` into ``eg`` (whose schema is already declared)."""
    out = Loaded()
    rows: dict[str, list[list]] = defaultdict(list)
    sorts: dict[str, list[str]] = {}
    small: list[str] = []
    next_value = len(graph.nodes)
    uses: dict[str, int] = {}
    for node in graph.nodes:
        for v in node.inputs:
            uses[v.name] = uses.get(v.name, 0) + 1
    for _, v in graph.outputs:
        uses[v.name] = uses.get(v.name, 0) + 1
    scalars = _scalar_like(graph)

    def vid(v: Value) -> int:
        return out.value_ids[v.name]

    for idx, node in enumerate(graph.topo_order()):
        out.node_of_id[idx] = node
        op = node.opdef
        if len(node.outputs) == 1:
            out.value_ids[node.value().name] = idx
        else:
            for i, v in enumerate(node.values):
                out.value_ids[v.name] = next_value
                rows["L_get"].append([next_value, idx, i])
                next_value += 1
        if node.op in ("input", "param"):
            rows[f"L_{node.op}"].append([idx, node.name])
            sorts[f"L_{node.op}"] = ["i64", "String"]
        elif node.op == "constant":
            value = node.attrs["value"]
            if node.name in scalars:
                rows["L_scalar"].append([idx, scalar_key(value)])
            else:
                rows["L_const"].append([idx, idx])
        elif node.op == "region":  # the region term, and its body as ordinary ops (any target runs those)
            ids = [vid(v) for v in node.inputs]
            args = "(Nil)"
            for i in reversed(ids):
                args = f"(Cons (N {i}) {args})"
            small.append(f"(union (N {idx}) (Region {body_term(node.attrs['body'])} {args}))")
            small.append(f"(union (N {idx}) {ops_term(node.attrs['body'], ids)})")
        elif op.variadic:
            args = " ".join(f"(N {vid(v)})" for v in node.inputs)
            attrs = " ".join(literal(encode_attr(a, node.attrs[a.name]), attr_sort(a)) for a in op.attrs)
            small.append(f"(union (N {idx}) ({ctor(node.op)} (vec-of {args}) {attrs}))")
        else:
            rel = f"L_{node.op}"
            sorts[rel] = ["i64"] + constructor_sorts(op)
            absent = [ABSENT] * (len(op.inputs) - len(node.inputs))  # omitted optional inputs
            rows[rel].append([idx] + [vid(v) for v in node.inputs] + absent +
                             [encode_attr(a, node.attrs[a.name]) for a in op.attrs])
        for v in node.values:
            t = v.type
            rows["L_type"].append([vid(v), str(t.dtype), len(t.shape), uses.get(v.name, 0)])
            for ax, d in enumerate(t.shape):  # both axis spellings: guards look up constants
                rows["L_dim"].append([vid(v), ax, out.dims.id(d)])
                rows["L_dim"].append([vid(v), ax - len(t.shape), out.dims.id(d)])
    sorts.update(L_get=["i64", "i64", "i64"], L_scalar=["i64", "String"], L_const=["i64", "i64"],
                 L_type=["i64", "String", "i64", "i64"], L_dim=["i64", "i64", "i64"])
    program = ["(ruleset load)"]
    for rel, rs in rows.items():
        cols = sorts[rel]
        stored = ["i64" if c == "T" else c for c in cols]  # tensors are written as node ids
        program.append(f"(relation {rel} ({' '.join(stored)}))")
        path = workdir / f"{rel}.tsv"
        with path.open("w") as f:
            for r in rs:
                f.write("\t".join(tsv_cell(v, s) for v, s in zip(r, stored)) + "\n")
        program.append(_load_rule(rel, cols))
        program.append(f'(input {rel} "{path.name}")')
    program.append(f"(union (N {ABSENT}) (O_absent))")
    program.extend(small)
    program.append("(run-schedule (saturate (run load)))")
    run_pieces(eg, program)
    return out


def _scalar_like(graph: Graph) -> set[str]:
    """Constants a rule's ``scalar(c)`` may match: 0-d ones, and one-element ones that only
    elementwise ops of at least their rank read (broadcasting a (1, 1) constant there is
    broadcasting its value), so how a program spells a literal does not decide a match.
    Floats only: a scalar's e-class is keyed by its value, so an integer or bool 0 keyed
    as a float would share a class (and a type) with the float 0.0."""
    readers: dict[str, list[Node]] = {}
    for node in graph.nodes:
        for v in node.inputs:
            readers.setdefault(v.name, []).append(node)
    outputs = {v.name for _, v in graph.outputs}
    out = set()
    for node in graph.nodes:
        if node.op != "constant" or node.attrs["value"].size != 1 or not node.outputs[0].dtype.is_float:
            continue
        rank = node.attrs["value"].ndim
        if rank == 0 or (node.name not in outputs and readers.get(node.name) and all(
                r.opdef.elementwise and len(r.outputs[0].shape) >= rank for r in readers[node.name])):
            out.add(node.name)
    return out


def body_term(body: Expr) -> str:
    """Egglog text of a region body in the Body language (Arg, Cst, U, Bn, Tn)."""
    def fn(x: Expr, args: list[str]) -> str:
        if x.op == "arg":
            return f"(Arg {x.value})"
        if x.op == "const":
            return f'(Cst "{scalar_key(x.value)}")'
        head = json.dumps(body_head(x.op, x.attr_dict()))
        return f"({BODY_ARITY[len(args)]} {head} {' '.join(args)})"
    return fold(body, fn)


def ops_term(body: Expr, ids: list[int]) -> str:
    """Egglog text of a region body as registry ops over its inputs' N ids."""
    def fn(x: Expr, args: list[str]) -> str:
        if x.op == "arg":
            return f"(N {ids[x.value]})"
        if x.op == "const":
            return f'(O_scalar "{scalar_key(x.value)}")'
        spec = REGISTRY.get(x.op)
        attrs = x.attr_dict()
        extra = [literal(encode_attr(a, attrs[a.name]), attr_sort(a)) for a in spec.attrs]
        return f"({ctor(x.op)} {' '.join(args + extra)})"
    return fold(body, fn)


def _load_rule(rel: str, cols: list[str]) -> str:
    vs = [f"c{i}" for i in range(len(cols))]
    head = f"({rel} {' '.join(vs)})"
    if rel == "L_type":
        action = "(set (ty-dtype (N c0)) c1) (set (ty-rank (N c0)) c2) (set (uses (N c0)) c3)"
    elif rel == "L_dim":
        action = "(set (ty-dim (N c0) c1) c2)"
    elif rel == "L_get":
        action = "(union (N c0) (O_get (N c1) c2))"
    elif rel in ("L_input", "L_param", "L_scalar", "L_const"):
        action = f"(union (N c0) (O_{rel[2:]} c1))"
    else:
        args = [f"(N {v})" if s == "T" else v for v, s in zip(vs[1:], cols[1:])]
        action = f"(union (N c0) ({ctor(rel[2:])} {' '.join(args)}))"
    return f"(rule ({head}) ({action}) :ruleset load)"


def new_egraph(workdir: Path | None = None) -> bindings.EGraph:
    """A fresh e-graph; ``load_graph`` needs one that reads facts from a ``fact_directory``."""
    return bindings.EGraph(fact_directory=str(workdir) if workdir is not None else None)


@contextmanager
def fact_directory() -> Iterator[Path]:
    """A temporary directory for the TSV files ``load_graph`` writes, removed when the block
    ends (on error too): the e-graph has read them once the load is done."""
    with tempfile.TemporaryDirectory(prefix="rlx-egraph-") as workdir:
        yield Path(workdir)
