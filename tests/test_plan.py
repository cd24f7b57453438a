"""LIR planning: arena safety on random DAGs, views, in-place reuse, specialization, fingerprints."""
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

import rlx
from rlx.errors import BindingError
from rlx.ir import Graph
from rlx.ir.expr import arg
from rlx.plan import plan


@st.composite
def random_graphs(draw):
    """Random well-typed DAGs of elementwise ops, views, reductions and matmuls."""
    g = Graph("random")
    n, m = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    pool = [g.input(f"x{i}", (n, m)) for i in range(draw(st.integers(1, 3)))]
    pool.append(g.param("w", (m, m)))
    for _ in range(draw(st.integers(1, 25))):
        a = draw(st.sampled_from(pool))
        kind = draw(st.sampled_from(["unary", "binary", "reshape", "transpose", "slice", "expand", "sum",
                                     "matmul", "region"]))
        same = [v for v in pool if v.shape == a.shape]
        if kind == "unary":
            v = g.op(draw(st.sampled_from(["exp", "neg", "relu", "tanh"])), a)
        elif kind == "binary":
            v = g.op(draw(st.sampled_from(["add", "mul", "sub"])), a, draw(st.sampled_from(same)))
        elif kind == "reshape":
            v = g.reshape(a, (-1,) if len(a.shape) > 1 else (1, a.shape[0]))
        elif kind == "transpose" and len(a.shape) == 2:
            v = g.transpose(a)
        elif kind == "slice" and a.shape and a.shape[-1] > 1:
            v = g.slice(a, (draw(st.integers(0, a.shape[-1] - 1)),), (a.shape[-1],), (-1,))
        elif kind == "expand" and len(a.shape) == 1:
            v = g.expand(g.reshape(a, (1, a.shape[0])), (3, a.shape[0]))
        elif kind == "sum" and a.shape:
            v = g.sum(a, (0,), True)
        elif kind == "matmul" and len(a.shape) == 2:
            v = g.matmul(a, g.param(f"w{len(g.nodes)}", (a.shape[1], draw(st.integers(1, 5)))))
        elif kind == "region":
            v = g.region(a, draw(st.sampled_from(same)), body=arg(0) * arg(1) + 1.0)
        else:
            continue
        pool.append(v)
    outs = draw(st.lists(st.sampled_from(pool[-6:]), min_size=1, max_size=3, unique_by=lambda v: v.name))
    g.output(*outs)
    return g


def check_plan(lir):
    align = lir.alignment
    for b in lir.buffers:
        assert b.offset % align == 0, b
    arena = [b for b in lir.buffers if b.region == "arena"]
    for i, a in enumerate(arena):
        for b in arena[i + 1:]:
            if a.first <= b.last and b.first <= a.last:  # live at a common step
                assert a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset, (a, b)
    for v in lir.values.values():
        root = lir.buffers[v.buffer]
        itemsize = {"f32": 4, "f64": 8, "f16": 2, "bf16": 2, "i64": 8, "i32": 4, "bool": 1}[v.dtype]
        span = sum((d - 1) * s for d, s in zip(v.shape, v.strides) if d > 0)
        if all(d > 0 for d in v.shape):
            assert 0 <= v.byte_offset and v.byte_offset + (span + 1) * itemsize <= max(root.nbytes, itemsize), v
    # No value is overwritten before its last read: a write to a buffer at step t ends the
    # life of the value held there; its readers must come at or before t.
    writes: dict[int, list[tuple[int, str]]] = {}
    for s in lir.steps:
        for name in s.outputs:
            lay = lir.values[name]
            if not lay.view:
                writes.setdefault(lay.buffer, []).append((s.index, name))
    reads: dict[str, list[int]] = {}
    for s in lir.steps:
        for name in s.inputs:
            reads.setdefault(name, []).append(s.index)

    def root_writer(name):
        return [w for w in writes.get(lir.values[name].buffer, [])]
    for s in lir.steps:
        for name in s.inputs:
            seq = root_writer(name)
            if not seq:
                continue  # inputs and params: written before the program
            holder = max((w for w in seq if w[0] < s.index or (w[0] == s.index and w[1] not in s.outputs)),
                         default=None)
            if holder is None:
                continue
            later = [w for w in seq if holder[0] < w[0] < s.index]
            assert not later, f"{name} read at step {s.index} after its buffer was overwritten at {later}"
    order = {name: s.index for s in lir.steps for name in s.outputs}
    for s in lir.steps:
        assert all(order[name] < s.index for name in s.inputs), s
    assert lir.arena_bytes >= lir.liveness_lower_bound()


@settings(max_examples=60, deadline=None)
@given(g=random_graphs(), alignment=st.sampled_from([64, 256]))
def test_random_dags_plan_safely(g, alignment):
    check_plan(plan(g, alignment=alignment))


@pytest.mark.parametrize("build", [
    lambda: rlx.models.mlp(layers=4, d_in=64, d_hidden=128),
    lambda: rlx.models.bert(layers=2, d_model=64, n_heads=4, seq=16),
    lambda: rlx.models.llama(layers=2, d_model=64, n_heads=4, seq=16),
])
def test_models_plan_at_the_lower_bound_fused_and_unfused(build):
    g = build()
    for graph in (g, rlx.compile(g).graph):
        lir = plan(graph)
        check_plan(lir)
        s = lir.summary()
        assert s["arena_bytes"] <= 1.05 * s["lower_bound_bytes"]
        assert s["saved_pct"] > 30 and s["views"] > 0 or graph.name.startswith("mlp")


def test_views_alias_their_root_with_offsets_and_strides():
    g = Graph()
    x = g.input("x", (4, 6))
    h = g.exp(x)
    t = g.transpose(h)
    s = g.slice(h, (2,), (6,), (1,))
    r = g.reshape(h, (24,))
    e = g.expand(g.reshape(g.sum(h, (0,)), (1, 6)), (5, 6))
    g.output(g.neg(t), g.neg(s), g.neg(r), g.neg(e))
    lir = plan(g)
    root = lir.values[h.name].buffer
    assert lir.values[t.name].view and lir.values[t.name].buffer == root and lir.values[t.name].strides == (1, 6)
    assert lir.values[s.name].byte_offset == 8 and lir.values[s.name].strides == (6, 1)
    assert lir.values[r.name].strides == (1,) and lir.values[r.name].buffer == root
    assert lir.values[e.name].strides == (0, 1)
    check_plan(lir)
    assert sum(st.view for st in lir.steps) == 5


def test_a_reshape_of_a_transposed_view_is_a_copy():
    g = Graph()
    t = g.transpose(g.exp(g.input("x", (4, 6))))
    r = g.reshape(t, (24,))
    g.output(r)
    lir = plan(g)
    assert lir.values[t.name].view and not lir.values[r.name].view


def test_a_reshape_that_only_splits_merges_or_squeezes_strided_axes_is_a_view():
    """Attention's head split: (S, 3·D) sliced to one of q/k/v, split into heads, a size-1
    axis dropped and a leading one added: views over the projection's buffer, no copies."""
    g = Graph()
    qkv = g.exp(g.input("x", (5, 3 * 8)))
    q = g.slice(qkv, (8,), (16,), (1,))                      # (5, 8) strides (24, 1)
    heads = g.reshape(q, (5, 1, 2, 4))                       # split 8 = 2 heads x 4
    squeezed = g.reshape(heads, (5, 2, 4))
    lead = g.reshape(g.transpose(squeezed, (1, 0, 2)), (1, 2, 5, 4))
    g.output(g.neg(lead))
    lir = plan(g)
    assert all(lir.values[v.name].view for v in (q, heads, squeezed, lead))
    assert lir.values[lead.name].strides == (8, 4, 24, 1) and lir.values[lead.name].byte_offset == 32
    check_plan(lir)


def test_split_outputs_are_views_at_their_offsets():
    """Each piece of a split aliases its input at the piece's offset (q, k and v of a fused
    projection cost no copies), and the program still computes the reference."""
    import numpy as np
    from rlx.exec.base import get_executor
    from rlx.ir import interpret
    g = Graph()
    h = g.exp(g.input("x", (4, 10)))
    pieces = g.op("split", h, axis=-1, sizes=(2, 3, 5))
    g.output(*(g.neg(p) for p in pieces))
    lir = plan(g)
    root = lir.values[h.name]
    assert [lir.values[p.name].byte_offset - root.byte_offset for p in pieces] == [0, 8, 20]
    assert all(lir.values[p.name].view and lir.values[p.name].strides == (10, 1) for p in pieces)
    check_plan(lir)
    feeds = {"x": np.random.default_rng(3).standard_normal((4, 10)).astype(np.float32)}
    got = get_executor("numpy").prepare(lir, {}).run(feeds)
    for name, want in interpret(g, feeds).items():
        np.testing.assert_allclose(got[name], want, rtol=1e-6)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_reshape_views_are_exactly_numpys(data):
    """The planner aliases a reshape exactly where NumPy's reshape is a view, with the
    same element order (strided inputs from slices and transposes, size-1 axes anywhere)."""
    import numpy as np
    from rlx.ir.ops import _reshape_view
    rank = data.draw(st.integers(1, 4))
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank)))
    grown = tuple(d * data.draw(st.integers(1, 2)) for d in shape)
    a = np.arange(int(np.prod(grown))).reshape(grown)[tuple(slice(0, d) for d in shape)]
    a = a.transpose(data.draw(st.permutations(range(rank))))
    target, rest = [], a.size
    while rest > 1 and len(target) < 4:
        f = data.draw(st.sampled_from([f for f in range(1, rest + 1) if rest % f == 0]))
        target.append(f)
        rest //= f
    target.append(rest)
    target.insert(data.draw(st.integers(0, len(target))), 1)
    target = tuple(target)
    layout = _reshape_view({}, a.shape, tuple(s // a.itemsize for s in a.strides), target)
    try:
        np.reshape(a, target, copy=False)
        numpy_view = True
    except ValueError:
        numpy_view = False
    assert (layout is not None) == numpy_view
    if layout is not None:
        view = np.lib.stride_tricks.as_strided(a, target, tuple(s * a.itemsize for s in layout[1]))
        np.testing.assert_array_equal(view, a.reshape(target))


def test_elementwise_ops_write_in_place_over_a_dying_input():
    g = Graph()
    x = g.input("x", (64, 64))
    a = g.exp(x)
    b = g.tanh(a)
    c = g.neg(b)
    g.output(g.sum(c, (0,)))
    lir = plan(g)
    assert [s.in_place for s in lir.steps if s.op in ("tanh", "neg")] == [True, True]
    assert lir.values[a.name].buffer == lir.values[b.name].buffer == lir.values[c.name].buffer
    check_plan(lir)


def test_phases_manifest_and_regions():
    g = rlx.models.mlp(layers=2, d_in=8, d_hidden=16, batch=4)
    lir = plan(g, alignment=256)
    phases = [s.phase for s in lir.steps]
    assert phases == sorted(phases, key=["prologue", "body", "epilogue"].index)
    assert {s.op for s in lir.steps if s.phase == "prologue"} == {"input", "param", "constant"}
    assert [s.op for s in lir.steps if s.phase == "epilogue"] == ["output"]
    (inp,) = lir.manifest["inputs"]
    assert inp == {"name": "x", "shape": [4, 8], "dtype": "f32", "region": "input", "offset": 0, "nbytes": 128,
                   "strides": [8, 1]}
    assert [p["name"] for p in lir.manifest["params"]] == ["fc0.weight", "fc0.bias", "fc1.weight", "fc1.bias"]
    assert all(p["offset"] % 256 == 0 and p["region"] == "param" for p in lir.manifest["params"])
    (out,) = lir.manifest["outputs"]
    assert out["name"] == "fc1" and out["region"] == "output"


def test_specialize_binds_symbols_and_replans():
    g = rlx.models.llama(layers=1, d_model=32, n_heads=2, seq="S", batch="B")
    lir = plan(g)
    assert not lir.planned and lir.symbols == ["B", "S"] and lir.summary()["planned"] is False
    small, big = lir.specialize({"B": 1, "S": 8}), lir.specialize({"B": 2, "S": 64})
    check_plan(small)
    check_plan(big)
    assert big.arena_bytes > small.arena_bytes and big.manifest["inputs"][0]["shape"] == [2, 64, 32]
    with pytest.raises(BindingError, match="symbol S .* not bound"):
        lir.specialize({"B": 2})
    with pytest.raises(BindingError, match="has no symbol T"):
        lir.specialize({"B": 2, "S": 8, "T": 3})
    with pytest.raises(BindingError, match="non-negative int"):
        lir.specialize({"B": -1, "S": 8})
    r = rlx.compile(g, target="cuda")
    assert r.lir.alignment == 256 and r.lir.specialize({"B": 1, "S": 8}).summary()["planned"]


def test_fingerprint_is_stable_and_changes_with_the_program():
    def build(eps=1e-6, d=32, policy="fusable"):
        return rlx.models.llama(layers=1, d_model=d, n_heads=2, seq=8, policy=policy)
    fp = plan(build()).fingerprint
    assert fp == plan(build()).fingerprint
    code = ("import rlx; from rlx.plan import plan; "
            "print(plan(rlx.models.llama(layers=1, d_model=32, n_heads=2, seq=8)).fingerprint)")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == fp
    assert plan(build(d=64)).fingerprint != fp
    assert plan(build(policy="direct")).fingerprint != fp
    assert plan(build(), alignment=256).fingerprint != fp
    g = build()
    g.node("layer0.attn.norm.add_1").inputs[1].node.attrs["value"] = g.node(
        "layer0.attn.norm.add_1").inputs[1].node.attrs["value"] * 2  # change one constant
    assert plan(g).fingerprint != fp


def test_an_lir_passes_through_compile():
    r = rlx.compile(rlx.models.mlp(layers=2, d_in=8, d_hidden=16))
    again = rlx.compile(r.lir)
    assert again.lir is r.lir and again.graph is r.graph
    assert again.report.extraction["extractor"].startswith("none")
