"""Plan MIR into LIR: schedule, views, liveness, in-place reuse, regions and one arena."""
from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial

from rlx.errors import BindingError, RlxError
from rlx.ir.graph import Graph, Node, Value
from rlx.ir.lir import LIR, Buffer, Step, ValueLayout
from rlx.ir.shapes import DimBinding, is_static, symbols
from rlx.plan.arena import align, assign
from rlx.plan.schedule import schedule

def _contiguous(shape: tuple) -> tuple:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


def plan(graph: Graph, alignment: int = 64, binding: Mapping[str, int] | None = None) -> LIR:
    """Plan ``graph``. With unbound symbolic dims the plan has a schedule but no offsets
    (``LIR.symbols`` lists them); ``specialize`` binds them and plans the arena."""
    if alignment <= 0 or alignment & (alignment - 1):
        raise RlxError(f"alignment must be a power of two, got {alignment}")
    syms = sorted(symbols(d for n in graph.nodes for t in n.outputs for d in t.shape))
    if binding is not None:
        unknown = sorted(set(binding) - set(syms))
        if unknown:
            raise BindingError(f"graph {graph.name!r} has no symbol{'s' if len(unknown) > 1 else ''} "
                               f"{', '.join(unknown)} (its symbols: {', '.join(syms) or 'none'})")
        try:
            graph = graph.bind(binding)
        except RlxError as e:
            if isinstance(e, BindingError):
                raise
            raise BindingError(f"binding {dict(binding)} is inconsistent with graph {graph.name!r}: {e}") from None
        syms = []
    lir = _plan(graph, alignment, syms)
    lir.planner = plan
    lir.fingerprint = lir.compute_fingerprint()
    return lir


def _nbytes(v: Value, nominal: DimBinding) -> int:
    return math.prod(nominal.resolve_shape(v.shape)) * v.dtype.itemsize


def _plan(graph: Graph, alignment: int, syms: list[str]) -> LIR:
    nominal = DimBinding({s: 128 for s in syms})  # sizes for scheduling decisions only
    order = schedule(graph, {v.name: _nbytes(v, nominal) for n in graph.nodes for v in n.values})
    step_of = {n.id: i for i, n in enumerate(order)}
    outputs = {v.name for _, v in graph.outputs}
    last_use: dict[str, int] = {}
    for n in order:
        for v in n.inputs:
            last_use[v.name] = step_of[n.id]
    end = len(order)
    folded = graph.bind_time()  # run once, at bind, into buffers that live with the params
    for name in outputs:
        last_use[name] = end
    values: dict[str, ValueLayout] = {}
    buffers: dict[int, dict] = {}   # id -> region, nbytes, first, last
    steps: list[Step] = []

    def new_buffer(region: str, nbytes: int, first: int) -> int:
        bid = len(buffers)
        buffers[bid] = {"region": region, "nbytes": nbytes, "first": first, "last": first}
        return bid

    def touch(bid: int, t: int) -> None:
        buffers[bid]["last"] = max(buffers[bid]["last"], t)

    for t, node in enumerate(order):
        op = node.opdef
        phase = "prologue" if op.category == "source" or node.id in folded else "body"
        in_place = is_view = False
        for out_index, v in enumerate(node.values):
            shape = v.shape
            nbytes = _nbytes(v, nominal)
            if op.category == "source":
                region = "input" if node.op == "input" else "param"  # constants live with the params
                bid = new_buffer(region, nbytes, t)
                values[v.name] = ValueLayout(v.name, bid, 0, shape, _strides(shape), str(v.dtype), False)
                continue
            src = values[node.inputs[0].name] if node.inputs else None
            layout = _view(node, src, shape, out_index) if op.view_layout is not None and src else None
            if layout is not None:
                off, strides = layout
                itemsize = v.dtype.itemsize
                values[v.name] = ValueLayout(v.name, src.buffer, src.byte_offset + off * itemsize, shape, strides,
                                             str(v.dtype), True)
                is_view = True
                continue
            donor = _in_place_donor(node, v, values, buffers, last_use, t, outputs, nbytes)
            if donor is not None:
                bid = donor
                in_place = True
            else:
                bid = new_buffer("output" if v.name in outputs else "param" if node.id in folded else "arena",
                                 nbytes, t)
            values[v.name] = ValueLayout(v.name, bid, 0, shape, _strides(shape), str(v.dtype), False)
        for v in node.inputs:
            touch(values[v.name].buffer, t)
        for v in node.values:
            touch(values[v.name].buffer, t)
        steps.append(Step(t, phase, node.op, node.name, tuple(v.name for v in node.inputs),
                          tuple(v.name for v in node.values),
                          {} if node.op in ("input", "param") else dict(node.attrs), in_place, is_view))
    for name in outputs:  # an output keeps its buffer (and a view's root) alive to the end
        touch(values[name].buffer, end)
        if buffers[values[name].buffer]["region"] == "arena":
            buffers[values[name].buffer]["region"] = "output"
    for i, (name, v) in enumerate(graph.outputs):
        steps.append(Step(end + i, "epilogue", "output", name, (v.name,), (), {}, False, False))
    offsets: dict[int, int | None] = {}
    for region in ("input", "param", "output"):
        cursor = 0
        for bid, b in buffers.items():
            if b["region"] == region:
                offsets[bid] = cursor if not syms else None
                cursor += align(max(b["nbytes"], 1), alignment)
    arena = [bid for bid, b in buffers.items() if b["region"] == "arena"]
    if syms:
        offsets.update({bid: None for bid in arena})
    else:
        placed = assign([(buffers[b]["nbytes"], buffers[b]["first"], buffers[b]["last"]) for b in arena], alignment)
        offsets.update(dict(zip(arena, placed)))
    blist = [Buffer(bid, b["region"], b["nbytes"], offsets[bid], b["first"], b["last"]) for bid, b in buffers.items()]
    manifest = {"inputs": [], "params": [], "outputs": []}
    for n in order:
        if n.op in ("input", "param"):
            lay = values[n.name]
            manifest["inputs" if n.op == "input" else "params"].append(_entry(n.name, lay, blist))
    for name, v in graph.outputs:
        manifest["outputs"].append(_entry(name, values[v.name], blist))
    return LIR(graph.name, alignment, steps, blist, values, manifest, syms, graph)


def _strides(shape: tuple) -> tuple:
    return _contiguous(shape) if all(is_static(d) for d in shape) else ()


def _view(node: Node, src: ValueLayout, shape: tuple, output: int = 0) -> tuple[int, tuple] | None:
    """The op's view layout of its ``output`` over its input's, or None (a copy). With
    symbolic sizes the layout is decided when the plan is specialized: an op that would
    alias its input at every size (a transpose, an expand, a reshape of a dense input) is a
    view already."""
    static = all(is_static(d) for d in src.shape) and all(is_static(d) for d in shape)
    layout = partial(node.opdef.view_layout, output=output) if len(node.values) > 1 else node.opdef.view_layout
    if static:
        return layout(node.attrs, src.shape, src.strides, shape)
    if any(not is_static(d) for a in ("starts", "ends") for d in node.attrs.get(a) or ()):
        return None
    probe = DimBinding({s: 5 for s in symbols(list(src.shape) + list(shape))})  # any size will do
    ins, outs = probe.resolve_shape(src.shape), probe.resolve_shape(shape)
    attrs = {k: (probe.resolve_shape(v) if k == "shape" and v is not None else v) for k, v in node.attrs.items()}
    return (0, ()) if layout(attrs, ins, _contiguous(ins), outs) is not None else None


def _in_place_donor(node: Node, v: Value, values: dict, buffers: dict, last_use: dict, t: int,
                    outputs: set[str], nbytes: int) -> int | None:
    """A buffer an elementwise node may overwrite: an input of the same size and dtype that
    is not a view, lives in the arena, and dies at this step (nothing else reads it later)."""
    if not node.opdef.elementwise or v.name in outputs:
        return None
    for w in node.inputs:
        lay = values[w.name]
        b = buffers[lay.buffer]
        if (not lay.view and b["region"] == "arena" and b["nbytes"] == nbytes and w.dtype == v.dtype
                and last_use.get(w.name) == t and b["last"] <= t
                and not any(x.buffer == lay.buffer and last_use.get(x.name, -1) > t for x in values.values())):
            return lay.buffer
    return None


def _entry(name: str, lay: ValueLayout, buffers: list[Buffer]) -> dict:
    b = buffers[lay.buffer]
    return {"name": name, "shape": list(lay.shape), "dtype": lay.dtype, "region": b.region,
            "offset": None if b.offset is None else b.offset + lay.byte_offset, "nbytes": b.nbytes,
            "strides": list(lay.strides)}


__all__ = ["plan"]
