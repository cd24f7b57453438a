"""MIR: a DAG of typed tensor ops, built through one method per registry op.

``Graph.add_node`` is the one door into a graph: it looks the op up in the registry, checks
arity and attributes, infers output shapes and dtypes, and names the node. Every other
method (the ``g.<op>(...)`` builders, JSON loading, rewrites) goes through it, so a graph
is well-typed by construction.
"""
from __future__ import annotations

import contextlib
import json
import math
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
_NO_DEFAULT = object()


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
        if opdef.axis_attrs and inputs:
            attrs = opdef.canonical_axes(attrs, len(inputs[0].shape))
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
        where = f"node {name or 'constant'!r} (constant)"
        arr = _numbers(value, where)
        dt = as_dtype(dtype) if dtype is not None else as_dtype(
            np.float32 if arr.dtype == np.float64 else arr.dtype)
        return self.add_node("constant", (), {"value": _cast(arr, dt, where), "dtype": dt}, name).value()

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

    def bind_time(self) -> set[int]:
        """Ids of the nodes whose values depend on no input: computed from params, constants
        and attributes alone, once when params are bound (constant folding), never per run."""
        out: set[int] = set()
        for n in self.topo_order():
            if n.opdef.category != "source" and all(
                    v.node.op in ("param", "constant") or v.node.id in out for v in n.inputs):
                out.add(n.id)
        return out

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
        top = "malformed MIR JSON"
        if not isinstance(data, dict):
            raise GraphError(f"{top}: expected an object at the top level, got {type(data).__name__}")
        if data.get("format") != JSON_FORMAT:
            raise GraphError(f"not an rlx MIR document (format {_clip(data.get('format'))}, "
                             f"expected {JSON_FORMAT!r})")
        g = cls(_field(data, "name", str, top))
        nodes = _field(data, "nodes", list, top)
        outputs = _field(data, "outputs", list, top)
        values: dict[str, Value] = {}
        for i, nd in enumerate(nodes):
            name = nd.get("name") if isinstance(nd, dict) else None
            where = f"node #{i} {_clip(name)}"
            if not isinstance(nd, dict):
                raise GraphError(f"{where}: expected an object, got {type(nd).__name__}")
            name, op = _field(nd, "name", str, where), _field(nd, "op", str, where)
            refs, raw = _field(nd, "inputs", list, where), _field(nd, "attrs", dict, where)
            _check_depth(raw, where)  # what is not an attribute is checked to be flat
            for ref in refs:
                if not isinstance(ref, str) or ref not in values:
                    raise GraphError(f"{where}: input {_clip(ref)} is not defined before it")
            opdef = REGISTRY.get(op, where)
            kinds = {a.name: a.kind for a in opdef.attrs}
            attrs = {k: _fromjsonable(v, kinds.get(k), f"{where}: attribute {k!r}", raw.get("dtype"))
                     for k, v in raw.items()}
            try:
                node = g.add_node(op, [values[ref] for ref in refs], attrs, name)
            except RecursionError:
                raise GraphError(f"{where}: an attribute is nested or chained too deeply") from None
            declared = [_declared_type(o, f"{where}: output #{j}")
                        for j, o in enumerate(_field(nd, "outputs", list, where, []))]
            actual = [(tuple(t.shape), str(t.dtype)) for t in node.outputs]
            if declared and declared != actual:
                raise GraphError(f"{where}: declared outputs {_clip(declared)} but inferred {actual}")
            for v in node.values:
                if v.name in values:
                    raise GraphError(f"{where}: value name {v.name!r} is already defined")
                values[v.name] = v
        for i, out in enumerate(outputs):
            where = f"output #{i}"
            if not isinstance(out, dict):
                raise GraphError(f"{where}: expected an object, got {type(out).__name__}")
            name, ref = _field(out, "name", str, where), _field(out, "value", str, where)
            if ref not in values:
                raise GraphError(f"output {name!r} refers to unknown value {ref!r}")
            if name in dict(g.outputs):
                raise GraphError(f"duplicate output name {name!r}")
            g.outputs.append((name, values[ref]))
        return g

    @classmethod
    def from_json(cls, text: str) -> "Graph":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise GraphError(f"malformed MIR JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        except RecursionError:
            raise GraphError("malformed MIR JSON: nested deeper than Python can read") from None
        except ValueError as e:  # e.g. an integer literal longer than Python converts
            raise GraphError(f"malformed MIR JSON: {e}") from None
        if not isinstance(data, dict):
            raise GraphError("malformed MIR JSON: expected an object at the top level")
        return cls.from_dict(data)


MAX_DEPTH = 128  # nesting an attribute value may have (a tensor has at most 32 axes)


def _clip(v: Any, n: int = 60) -> str:
    """A short repr of a value read from a document, for messages."""
    try:
        text = repr(v)
    except RecursionError:
        text = f"<deeply nested {type(v).__name__}>"
    return text if len(text) <= n else text[:n] + "..."


def _field(obj: dict, key: str, kind: type, where: str, default: Any = _NO_DEFAULT) -> Any:
    """``obj[key]``, checked to be of ``kind`` (bool is not an int)."""
    if key not in obj and default is not _NO_DEFAULT:
        return default
    v = obj.get(key)
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
        raise GraphError(f"{where}: missing or invalid field {key!r} (expected {kind.__name__}, "
                         f"got {_clip(v) if key in obj else 'nothing'})")
    return v


def _check_depth(attrs: dict, where: str) -> None:
    """Reject attribute values nested deeper than MAX_DEPTH (level by level: never recurses)."""
    level = [attrs]
    for _ in range(MAX_DEPTH):
        level = [y for x in level for y in (x.values() if isinstance(x, dict) else x) if isinstance(y, (list, dict))]
        if not level:
            return
    raise GraphError(f"{where}: nested deeper than {MAX_DEPTH} levels")


def _declared_type(o: Any, where: str) -> tuple[tuple, str]:
    if not isinstance(o, dict):
        raise GraphError(f"{where}: expected an object, got {type(o).__name__}")
    shape, dtype = _field(o, "shape", list, where), _field(o, "dtype", str, where)
    return tuple(d if isinstance(d, (int, str)) else _clip(d) for d in shape), dtype


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


def _numbers(value: Any, where: str) -> np.ndarray:
    """``value`` as an array of numbers: no strings, objects, ragged lists or integers
    beyond 64 bits."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        arr = None
    if arr is None or arr.dtype.kind not in "biuf":
        raise GraphError(f"{where}: value must be a rectangular array of numbers, got {_clip(value)}")
    return arr


def _cast(arr: np.ndarray, dt: DType, where: str) -> np.ndarray:
    """``arr`` in ``dt``; an integer or bool dtype must hold every value exactly."""
    fits = True
    if arr.size and not dt.is_float and arr.dtype.kind != "b":
        if dt == DType.bool:
            fits = bool(np.isin(arr, (0, 1)).all())
        elif arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            fits = False
        else:
            info = np.iinfo(dt.np)
            fits = info.min <= int(arr.min()) and int(arr.max()) <= info.max
    if not fits:
        raise GraphError(f"{where}: value {_clip(arr.tolist())} does not fit {dt}")
    with np.errstate(over="ignore"):  # a float beyond the dtype's range becomes inf
        return arr.astype(dt.np)


def _fromjsonable(v: Any, kind: str | None, where: str, dtype: Any = None) -> Any:
    if kind == "tensor":
        arr = _tensor(v, where)
        try:
            dt = as_dtype(dtype) if isinstance(dtype, str) else None
        except DTypeError:
            dt = None  # the dtype attribute's own check names it
        return _cast(arr, dt, where) if dt is not None else arr
    if kind == "expr":
        return from_json(v, where)
    if kind == "dtype" and not isinstance(v, str):
        raise GraphError(f"{where}: expected a dtype name, got {_clip(v)}")
    if kind == "float" and isinstance(v, int) and not isinstance(v, bool):
        try:
            float(v)
        except OverflowError:
            raise GraphError(f"{where}: {_clip(v)} is too large for a float") from None
    return v


def _tensor(v: Any, where: str) -> np.ndarray:
    """A tensor attribute from its JSON form ``{"tensor": nested lists, "shape": [...]}``."""
    if not isinstance(v, dict):
        return _numbers(v, where)
    if set(v) != {"tensor", "shape"}:
        raise GraphError(f"{where}: expected {{'tensor': [...], 'shape': [...]}}, "
                         f"got keys {_clip(sorted(v))}")
    shape = v["shape"]
    if not isinstance(shape, list) or len(shape) > 32 or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d for d in shape):
        raise GraphError(f"{where}: shape must be a list of at most 32 non-negative ints, got {_clip(shape)}")
    arr = _numbers(v["tensor"], where)
    if arr.size != math.prod(shape):
        raise GraphError(f"{where}: {arr.size} values do not fill shape {shape} ({math.prod(shape)} values)")
    return arr.reshape(shape)


__all__ = ["Graph", "Node", "Value", "JSON_FORMAT", "RlxError"]
