"""MIR: a DAG of typed tensor ops, built through one method per registry op.

``Graph.add_node`` is the one door into a graph: it looks the op up in the registry, checks
arity and attributes, infers output shapes and dtypes, and names the node. Every other
method (the ``g.<op>(...)`` builders, JSON loading, rewrites) goes through it, so a graph
is well-typed by construction.
"""
from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from rlx.errors import ArityError, DTypeError, GraphError, RlxError, ShapeError
from rlx.ir.dtypes import DType, as_dtype
from rlx.ir.expr import Expr, from_json, to_json
from rlx.ir.registry import REGISTRY, OpDef, TensorType
from rlx.ir.shapes import DimBinding, Shape, fmt_shape, shape as canonical_shape

JSON_FORMAT = "rlx.mir/1"


class Value:
    """One output of a node. Supports ``+ - * / @`` and unary ``-`` as graph ops."""
    __slots__ = ("node", "index")

    def __init__(self, node: "Node", index: int = 0) -> None:
        self.node, self.index = node, index

    @property
    def type(self) -> TensorType:
        return self.node.outputs[self.index]

    @property
    def shape(self) -> Shape:
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def name(self) -> str:
        return self.node.name if self.index == 0 else f"{self.node.name}:{self.index}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Value) and other.node is self.node and other.index == self.index

    def __hash__(self) -> int:
        return hash((id(self.node), self.index))

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"

    def _g(self) -> "Graph":
        return self.node.graph

    def __add__(self, o): return self._g().add(self, o)
    def __radd__(self, o): return self._g().add(o, self)
    def __sub__(self, o): return self._g().sub(self, o)
    def __rsub__(self, o): return self._g().sub(o, self)
    def __mul__(self, o): return self._g().mul(self, o)
    def __rmul__(self, o): return self._g().mul(o, self)
    def __truediv__(self, o): return self._g().div(self, o)
    def __rtruediv__(self, o): return self._g().div(o, self)
    def __matmul__(self, o): return self._g().matmul(self, o)
    def __neg__(self): return self._g().neg(self)


class Node:
    """An op application: inputs are Values of earlier nodes; outputs are typed. A node
    keeps its OpDef, so a graph built with a rule set's fused ops runs without it."""
    __slots__ = ("id", "op", "inputs", "attrs", "outputs", "name", "graph", "opdef")

    def __init__(self, graph: "Graph", id: int, op: str, inputs: tuple[Value, ...], attrs: dict,
                 outputs: tuple[TensorType, ...], name: str, opdef: OpDef) -> None:
        self.graph, self.id, self.op, self.inputs = graph, id, op, inputs
        self.attrs, self.outputs, self.name, self.opdef = attrs, outputs, name, opdef

    def value(self, index: int = 0) -> Value:
        return Value(self, index)

    @property
    def values(self) -> tuple[Value, ...]:
        return tuple(Value(self, i) for i in range(len(self.outputs)))

    def __repr__(self) -> str:
        return f"<Node {self.name} = {self.op}({', '.join(v.name for v in self.inputs)})>"

    def cost(self, binding: Mapping[str, int] | None = None) -> tuple[float, int]:
        """(FLOPs, bytes moved) of this node at concrete sizes; symbols resolve via binding."""
        b = DimBinding(binding or {})
        where = f"node {self.name!r}"
        ins = [b.resolve_shape(v.shape, where) for v in self.inputs]
        outs = [b.resolve_shape(t.shape, where) for t in self.outputs]
        opdef = self.opdef
        return (float(opdef.flops(ins, outs, self.attrs)),
                opdef.bytes_moved([v.type for v in self.inputs], self.outputs, ins, outs))


def _is_scalar(x: Any) -> bool:
    return isinstance(x, (int, float, bool, np.number, np.bool_))


class Graph:
    """A MIR program. Build it with ``g.input``, ``g.param``, ``g.<op>(...)``, ``g.output``."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.nodes: list[Node] = []
        self.outputs: list[tuple[str, Value]] = []
        self._names: dict[str, Node] = {}
        self._counter: Counter[str] = Counter()
        self._scope: list[str] = []
        self._next_id = 0
        # Values of params known when the graph was built (an imported model's initializers);
        # compiling binds them unless other params are given. Not part of the JSON form.
        self.weights: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ building
    def add_node(self, op: str, inputs: Sequence[Value] = (), attrs: dict | None = None,
                 name: str | None = None) -> Node:
        """Add a checked, typed node. Errors name the op, the node and the shapes involved."""
        label = name or self._auto_name(op)
        where = f"node {label!r} ({op})"
        opdef = REGISTRY.get(op, where)
        inputs = tuple(inputs)
        for v in inputs:
            if not isinstance(v, Value):
                raise GraphError(f"{where}: input {v!r} is not a Value")
            if v.node.graph is not self or self._names.get(v.node.name) is not v.node:
                raise GraphError(f"{where}: input {v.name} belongs to another graph")
        n_in = len(inputs)
        if opdef.variadic:
            ok = n_in >= max(len(opdef.inputs), 1)
            want = f"at least {max(len(opdef.inputs), 1)}"
        else:
            ok = opdef.min_inputs <= n_in <= len(opdef.inputs)
            want = (str(len(opdef.inputs)) if not opdef.optional_inputs
                    else f"{opdef.min_inputs} to {len(opdef.inputs)}")
        if not ok:
            raise ArityError(f"{where}: expects {want} input{'s' if want != '1' else ''} "
                             f"({', '.join(opdef.inputs) or 'none'}), got {n_in}")
        attrs = opdef.normalize_attrs(dict(attrs or {}), where)
        shapes = [v.shape for v in inputs]
        dtypes = [v.dtype for v in inputs]
        try:
            types = opdef.infer([v.type for v in inputs], attrs)
            out_shapes = [canonical_shape(t.shape) for t in types]
            out_dtypes = [t.dtype for t in types]
        except ShapeError as e:
            raise ShapeError(f"{where}: {e} (input shapes "
                             f"{', '.join(fmt_shape(s) for s in shapes) or 'none'})") from None
        except DTypeError as e:
            raise DTypeError(f"{where}: {e} (input dtypes {', '.join(map(str, dtypes))})") from None
        if opdef.category == "source":
            label = attrs["name"] if op != "constant" else label
        if label in self._names:
            raise GraphError(f"{where}: a node named {label!r} already exists in graph {self.name!r}")
        node = Node(self, self._next_id, op, inputs, attrs,
                    tuple(TensorType(s, d) for s, d in zip(out_shapes, out_dtypes)), label, opdef)
        self._next_id += 1
        self.nodes.append(node)
        self._names[label] = node
        return node

    def _auto_name(self, op: str) -> str:
        prefix = "".join(f"{s}." for s in self._scope)
        while True:
            self._counter[prefix + op] += 1
            label = f"{prefix}{op}_{self._counter[prefix + op]}"
            if label not in self._names:
                return label

    @contextlib.contextmanager
    def scope(self, prefix: str) -> Iterator[None]:
        """Prefix auto-generated node names: ``with g.scope("layer0"): ...``."""
        self._scope.append(prefix)
        try:
            yield
        finally:
            self._scope.pop()

    def scoped(self, name: str) -> str:
        return "".join(f"{s}." for s in self._scope) + name

    def input(self, name: str, shape: Iterable, dtype: str | DType = "f32") -> Value:
        return self.add_node("input", (), {"name": name, "shape": tuple(shape), "dtype": dtype}).value()

    def param(self, name: str, shape: Iterable, dtype: str | DType = "f32") -> Value:
        return self.add_node("param", (), {"name": name, "shape": tuple(shape), "dtype": dtype}).value()

    def constant(self, value: Any, dtype: str | DType | None = None, name: str | None = None) -> Value:
        arr = np.asarray(value)
        dt = as_dtype(dtype) if dtype is not None else as_dtype(
            np.float32 if arr.dtype == np.float64 else arr.dtype)
        return self.add_node("constant", (), {"value": arr.astype(dt.np), "dtype": dt}, name).value()

    def op(self, op: str, *args: Any, name: str | None = None, **attrs: Any) -> Value | tuple[Value, ...]:
        """Apply a registry op. Leading Values (or lists of them) are inputs; Python scalars
        among an elementwise op's inputs become constants of the other operands' dtype; the
        remaining positional arguments are attributes in declaration order."""
        opdef = REGISTRY.get(op, f"node {name or op!r}")
        inputs: list[Any] = []
        rest = list(args)
        max_in = float("inf") if opdef.variadic else len(opdef.inputs)
        while rest and len(inputs) < max_in:
            a = rest[0]
            if isinstance(a, Value) or (opdef.elementwise and _is_scalar(a)):
                inputs.append(rest.pop(0))
            elif opdef.variadic and isinstance(a, (list, tuple)) and a and all(isinstance(x, Value) for x in a):
                inputs.extend(rest.pop(0))
            else:
                break
        spare = [s for s in opdef.attrs if s.name not in attrs]
        if len(rest) > len(spare):
            raise ArityError(f"node {name or op!r} ({op}): too many arguments {rest!r}")
        attrs.update({s.name: v for s, v in zip(spare, rest)})
        if any(_is_scalar(v) for v in inputs):
            like = next((v for v in inputs if isinstance(v, Value)), None)
            if like is None:
                raise ArityError(f"node {name or op!r} ({op}): needs at least one tensor input")
            peers = [inputs[i] for i in opdef.dtype_peers(len(inputs)) if isinstance(inputs[i], Value)]
            dt = (peers[0] if peers else like).dtype
            inputs = [v if isinstance(v, Value) else self.constant(v, dt) for v in inputs]
        node = self.add_node(op, inputs, attrs, name)
        return node.values if len(node.outputs) != 1 else node.value()

    def __getattr__(self, op: str):
        if op.startswith("_"):
            raise AttributeError(op)
        if op not in REGISTRY:
            REGISTRY.get(op, "Graph")  # raises UnknownOpError with a did-you-mean
        return lambda *args, **kw: self.op(op, *args, **kw)

    def output(self, *values: Value, **named: Value) -> None:
        """Mark graph outputs; positional ones are named after their node."""
        for v in values:
            self.outputs.append((v.name, v))
        self.outputs.extend(named.items())
        seen: set[str] = set()
        for n, v in self.outputs:
            if not isinstance(v, Value) or v.node.graph is not self:
                raise GraphError(f"output {n!r} is not a value of graph {self.name!r}")
            if n in seen:
                raise GraphError(f"duplicate output name {n!r}")
            seen.add(n)

    # ------------------------------------------------------------------ queries
    def __contains__(self, name: object) -> bool:
        return name in self._names

    def node(self, name: str) -> Node:
        try:
            return self._names[name]
        except KeyError:
            raise GraphError(f"graph {self.name!r} has no node {name!r}") from None

    @property
    def inputs(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "input"]

    @property
    def params(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "param"]

    def op_counts(self) -> Counter[str]:
        return Counter(n.op for n in self.nodes if n.opdef.category != "source")

    def consumers(self) -> dict[Node, list[Node]]:
        out: dict[Node, list[Node]] = {n: [] for n in self.nodes}
        for n in self.nodes:
            for v in n.inputs:
                out[v.node].append(n)
        return out

    def topo_order(self) -> list[Node]:
        """Nodes in a topological order (iterative DFS, stable by insertion order)."""
        order: list[Node] = []
        state: dict[int, int] = {}  # id -> 1 visiting, 2 done
        for root in self.nodes:
            if state.get(root.id):
                continue
            stack = [(root, 0)]
            while stack:
                node, i = stack.pop()
                if i == 0:
                    if state.get(node.id) == 2:
                        continue
                    state[node.id] = 1
                if i < len(node.inputs):
                    stack.append((node, i + 1))
                    child = node.inputs[i].node
                    if state.get(child.id) == 1:
                        raise GraphError(f"cycle through node {child.name!r}")
                    if not state.get(child.id):
                        stack.append((child, 0))
                else:
                    state[node.id] = 2
                    order.append(node)
        return order

    def dce(self) -> int:
        """Drop nodes no output depends on (graph inputs stay: they are the interface)."""
        live: set[int] = set()
        stack = [v.node for _, v in self.outputs]
        while stack:
            n = stack.pop()
            if n.id not in live:
                live.add(n.id)
                stack.extend(v.node for v in n.inputs)
        before = len(self.nodes)
        self.nodes = [n for n in self.nodes if n.id in live or n.op == "input"]
        self._names = {n.name: n for n in self.nodes}
        return before - len(self.nodes)

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self.nodes)} nodes, {len(self.outputs)} outputs>"

    def to_text(self) -> str:
        """A readable listing: one line per node, in topological order."""
        lines = [f"graph {self.name} {{"]
        for n in self.topo_order():
            attrs = {k: v for k, v in n.attrs.items() if v is not None}
            if n.op == "constant":
                attrs = {"value": _short(attrs["value"])}
            elif n.opdef.category == "source":
                attrs = {}
            arg = ", ".join(f"%{v.name}" for v in n.inputs)
            extra = ", ".join(f"{k}={v if isinstance(v, Expr) else jsonable(v)}" for k, v in attrs.items())
            types = ", ".join(str(t) for t in n.outputs)
            lines.append(f"  %{n.name} = {n.op}({', '.join(x for x in (arg, extra) if x)}) : {types}")
        lines.append("  return " + ", ".join(f"{name}=%{v.name}" for name, v in self.outputs))
        lines.append("}")
        return "\n".join(lines)

    def bind(self, binding: Mapping[str, int]) -> "Graph":
        """A copy with every symbolic dim replaced by its value (MIR specialization).

        Every symbol the graph mentions must be bound; the error names the first node that
        needs an unbound one."""
        b = DimBinding(binding)
        data = self.to_dict()
        for nd in data["nodes"]:
            opdef = REGISTRY.get(nd["op"])
            where = f"node {nd['name']!r} ({nd['op']})"
            for spec in opdef.attrs:
                if spec.kind == "dims" and nd["attrs"].get(spec.name) is not None:
                    nd["attrs"][spec.name] = [d if d == -1 else b.resolve(d, where)
                                              for d in nd["attrs"][spec.name]]
            for o in nd["outputs"]:
                o["shape"] = list(b.resolve_shape(tuple(o["shape"]), where))
        out = Graph.from_dict(data, ops=self.ops())
        out.weights = dict(self.weights)
        return out

    def ops(self) -> dict[str, OpDef]:
        """The OpDef of every op the graph uses (a rule set's fused ops among them)."""
        return {n.op: n.opdef for n in self.nodes}

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        """A stable JSON-able form: nodes in topological order, inputs by node name."""
        nodes = []
        for n in self.topo_order():
            nodes.append({
                "name": n.name, "op": n.op,
                "inputs": [v.name for v in n.inputs],
                "attrs": {k: jsonable(v) for k, v in sorted(n.attrs.items())},
                "outputs": [{"shape": list(t.shape), "dtype": str(t.dtype)} for t in n.outputs],
            })
        return {"format": JSON_FORMAT, "name": self.name, "nodes": nodes,
                "outputs": [{"name": name, "value": v.name} for name, v in self.outputs]}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict, ops: Mapping[str, OpDef] | None = None) -> "Graph":
        """Rebuild a graph; every node is re-checked through ``add_node``. ``ops`` adds op
        definitions to the registry's (a rule set's fused ops the graph uses)."""
        with REGISTRY.scope(ops or {}):
            return cls._from_dict(data)

    @classmethod
    def _from_dict(cls, data: dict) -> "Graph":
        try:
            if data.get("format") != JSON_FORMAT:
                raise GraphError(f"not an rlx MIR document (format {data.get('format')!r}, "
                                 f"expected {JSON_FORMAT!r})")
            g = cls(data["name"])
            values: dict[str, Value] = {}
            for i, nd in enumerate(data["nodes"]):
                where = f"node #{i} {nd.get('name')!r}"
                try:
                    ins = [values[ref] for ref in nd["inputs"]]
                except KeyError as e:
                    raise GraphError(f"{where}: input {e.args[0]!r} is not defined before it") from None
                opdef = REGISTRY.get(nd["op"], where)
                attrs = {}
                for k, v in nd["attrs"].items():
                    spec = opdef.attr(k) if k in {a.name for a in opdef.attrs} else None
                    attrs[k] = _fromjsonable(v, spec.kind if spec else None, f"{where}: attribute {k!r}")
                node = g.add_node(nd["op"], ins, attrs, nd["name"])
                declared = [(tuple(o["shape"]), o["dtype"]) for o in nd.get("outputs", [])]
                actual = [(tuple(t.shape), str(t.dtype)) for t in node.outputs]
                if declared and declared != actual:
                    raise GraphError(f"{where}: declared outputs {declared} but inferred {actual}")
                for v in node.values:
                    values[v.name] = v
            for out in data["outputs"]:
                if out["value"] not in values:
                    raise GraphError(f"output {out['name']!r} refers to unknown value {out['value']!r}")
                g.outputs.append((out["name"], values[out["value"]]))
            return g
        except (KeyError, TypeError) as e:
            raise GraphError(f"malformed MIR JSON: missing or invalid field {e}") from None

    @classmethod
    def from_json(cls, text: str) -> "Graph":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise GraphError(f"malformed MIR JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        if not isinstance(data, dict):
            raise GraphError("malformed MIR JSON: expected an object at the top level")
        return cls.from_dict(data)


def _short(arr: np.ndarray) -> str:
    return repr(arr.item()) if arr.size == 1 else f"<{arr.dtype}{list(arr.shape)}>"


def jsonable(v: Any) -> Any:
    if isinstance(v, Expr):
        return to_json(v)
    if isinstance(v, np.ndarray):
        return {"tensor": v.astype(np.float64 if v.dtype.kind == "f" else v.dtype).tolist(),
                "shape": list(v.shape)}
    if isinstance(v, DType):
        return str(v)
    if isinstance(v, tuple):
        return list(v)
    return v


def _fromjsonable(v: Any, kind: str | None, where: str) -> Any:
    if kind == "tensor" and isinstance(v, dict):
        return np.asarray(v["tensor"]).reshape(v["shape"])
    if kind == "expr":
        return from_json(v, where)
    return v


__all__ = ["Graph", "Node", "Value", "JSON_FORMAT", "RlxError"]
