"""The kernel layer: every op runs through the kernel its definition gives (or its native
override) and matches the float64 reference at its dtype's tolerance; regions keep every
node's dtype; users' fused ops get one generated kernel."""
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import rlx
from rlx.exec.base import get_executor
from rlx.ir import REGISTRY, DType, Graph, TensorType, interpret
from rlx.ir.expr import Expr, arg, call, const, from_json, to_json, typed
from rlx.kernels.lower import kernel_for, why_not
from rlx.kernels.scalar import lower, primitives
from rlx.pipeline import TOLERANCE, kernel_summary, max_error, saturate_program
from rlx.plan import plan
from rlx.rules import load
from rlx.rules.definitions import applies, decl_of, registry_definitions
from rlx.rules.fused import body_graph
from user_ops import MODELS, UNFIT, write_rules

RULES_SHIPPED = load()  # registers the shipped fused ops
FLOATS = ("f32", "f16", "bf16")


def run_graph(g: Graph, arrays: dict) -> tuple[dict, dict, object]:
    """Plan ``g`` as it is (no e-graph), run it on the NumPy executor, and return its
    outputs, the float64 reference's and the program (for its dispatch)."""
    ins = {n.name: arrays[n.name] for n in g.inputs}
    program = get_executor("numpy").prepare(plan(g), {})
    return program.run(ins), interpret(g, ins), program


def check(g: Graph, arrays: dict, generated: bool | None = None) -> None:
    got, want, program = run_graph(g, arrays)
    outputs = dict(g.outputs)
    for name, ref in want.items():
        dt = str(outputs[name].dtype)
        if dt in TOLERANCE:
            err, tol = max_error(got[name], ref, dt)
            assert err <= tol, (g.to_text(), name, err, tol)
        else:
            np.testing.assert_array_equal(got[name], ref.astype(got[name].dtype), err_msg=g.to_text())
    if generated is not None:
        node = next(n for n in g.nodes if n.opdef.category != "source")
        assert (program.dispatch[node.name] == "generated") == generated, (node.op, program.dispatch)


def data(rng, shape, dtype, positive=False):
    dt = DType(dtype)
    if dt == DType.bool:
        return rng.random(shape) < 0.5
    if dt.is_int:
        return rng.integers(-20, 20, size=shape).astype(dt.np)
    x = rng.standard_normal(shape)
    return (np.abs(x) + 0.5 if positive else x).astype(dt.np)


# ---------------------------------------------------------------------------- every op
POSITIVE = {"log", "sqrt", "rsqrt", "reciprocal", "pow"}


def _elementwise_case(op, rng, dtype):
    opdef = REGISTRY.get(op)
    rank = int(rng.integers(1, 4))
    shape = tuple(int(d) for d in rng.integers(1, 9, size=rank))
    g = Graph(op)
    arrays = {}
    if op == "cast":
        x = g.input("x", shape, dtype)
        arrays["x"] = data(rng, shape, dtype) * (4 if DType(dtype).is_float else 1)
        target = rng.choice(["f32", "f16", "i32", "bool", "i64"])
        g.output(y=g.cast(x, str(target)))
        return g, arrays
    if op == "where":
        c, a, b = g.input("c", shape, "bool"), g.input("a", shape, dtype), g.input("b", shape[1:], dtype)
        arrays.update(c=data(rng, shape, "bool"), a=data(rng, shape, dtype), b=data(rng, shape[1:], dtype))
        g.output(y=g.where(c, a, b))
        return g, arrays
    names = list(opdef.inputs)
    for i, name in enumerate(names):
        s = shape if i == 0 else shape[int(rng.integers(0, rank + 1)):]  # broadcast a suffix
        arrays[name] = data(rng, s, dtype, positive=op in POSITIVE or (op in ("div", "mod", "fmod") and i == 1))
        if op in ("isnan", "isinf") and arrays[name].size > 1:  # some of each class
            flat = arrays[name].reshape(-1)
            flat[rng.integers(0, flat.size, size=2)] = [np.nan, -np.inf]
        if op == "pow" and i == 1:
            arrays[name] = rng.choice([2.0, 3.0, 0.5, 1.7], size=s).astype(DType(dtype).np)
    ins = [g.input(name, np.shape(arrays[name]), dtype) for name in names]
    g.output(y=g.op(op, *ins))
    return g, arrays


def _case(op, rng, dtype):
    """A random instance of ``op``: its graph and inputs."""
    g = Graph(op)
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    b, s, d, n = r(1, 3), r(2, 9), r(2, 9) * 2, r(2, 9)
    arrays = {}

    def inp(name, shape, dt=dtype, **kw):
        arrays[name] = data(rng, shape, dt, **kw)
        return g.input(name, shape, dt)

    if op == "matmul":
        y = g.matmul(inp("a", (b, s, d)), inp("b", (d, n)))
    elif op == "transpose":
        y = g.transpose(inp("x", (b, s, d)), (2, 0, 1))
    elif op == "reshape":
        y = g.reshape(inp("x", (b, s, d)), (b * s, d))
    elif op == "expand":
        y = g.expand(inp("x", (1, d)), (s, d))
    elif op == "slice":
        y = g.slice(inp("x", (s, d)), (1,), (d - 1,), (1,))
    elif op == "concat":
        y = g.concat(inp("a", (s, d)), inp("b", (s, n)), axis=1)
    elif op == "split":
        y = g.split(inp("x", (s, d)), 1, (1, d - 1))[1]
    elif op in ("sum", "mean", "max"):
        y = g.op(op, inp("x", (b, s, d)), (int(rng.integers(-3, 3)),), bool(rng.random() < 0.5))
    elif op == "softmax":
        y = g.softmax(inp("x", (b, s, d)), axis=int(rng.choice([-1, 1])))
    elif op == "layer_norm":
        y = g.layer_norm(inp("x", (b, s, d)), inp("w", (d,)), inp("bb", (d,)))
    elif op == "rms_norm":
        y = g.rms_norm(inp("x", (b, s, d)), inp("w", (d,)))
    elif op == "gather":
        arrays["i"] = rng.integers(0, s, size=(b, n))
        y = g.gather(inp("t", (s, d)), g.input("i", (b, n), "i64"))
    elif op == "rotary":
        y = g.rotary(inp("x", (b, s, d)), inp("c", (s, d // 2)), inp("sn", (s, d // 2)))
    elif op == "causal_mask":
        y = g.causal_mask(inp("x", (b, s, s)))
    elif op == "trilu":
        y = g.trilu(inp("x", (s, n)), bool(rng.random() < 0.5), int(rng.integers(-1, 2)))
    elif op == "arange":
        y = g.op("arange", start=(r(-3, 4),), length=(s,), step=r(1, 4), dtype=dtype if dtype in ("i32",) else "i64")
    elif op == "cumsum":
        y = g.op("cumsum", inp("x", (b, s, d)), axis=r(-3, 3), exclusive=bool(r(0, 2)), reverse=bool(r(0, 2)))
    elif op == "gather_elements":
        axis = r(-2, 2)
        data_shape = (s, d) if axis % 2 else (s + 1, d)
        size = data_shape[axis]
        arrays["i"] = rng.integers(-size, size, size=(s, d - 1))
        y = g.op("gather_elements", inp("x", data_shape), g.input("i", (s, d - 1), "i64"), axis=axis)
    elif op == "gather_nd":
        arrays["i"] = np.stack([rng.integers(-b, b, size=n), rng.integers(-s, s, size=n)], axis=1)
        y = g.op("gather_nd", inp("x", (b, s, d)), g.input("i", (n, 2), "i64"))
    elif op in ("argmax", "argmin"):
        y = g.op(op, inp("x", (b, s, d)), axis=r(-3, 3), keepdims=bool(r(0, 2)), select_last_index=bool(r(0, 2)))
    elif op == "conv":
        grp = r(1, 3)
        y = g.op("conv", inp("x", (b, 2 * grp, s + 2, d)), inp("w", (n, 2, 3, 2)) if grp == 1 else
                 inp("w", (2 * n, 2, 3, 2)), *([inp("bias", (n * grp,))] if r(0, 2) else []),
                 strides=(r(1, 3), 1), pads=(1, 0, r(0, 2), 1), group=grp)
    elif op in ("conv_bias_act", "conv_residual_act"):
        grp = r(1, 3) if r(0, 2) else 2 * n  # grouped, or depthwise
        cin, cout = (2 * grp, n * grp) if grp <= 2 else (grp, grp)
        x, w = inp("x", (b, cin, s + 2, d + 1)), inp("w", (cout, cin // grp, 3, 2))
        stride, lo, dil = r(1, 3), r(0, 2), r(1, 3)
        win = dict(strides=(stride, 1), pads=(lo, 0, 1, 1), dilations=(dil, 1), group=grp)
        act = str(rng.choice(["none", "relu", "hard_swish", "silu"]))
        extra = []
        if op == "conv_residual_act":
            oh = (s + 2 + lo + 1 - 2 * dil - 1) // stride + 1
            extra = [inp("res", (b, cout, oh, d + 1))]  # kernel width 2, pads 0 and 1: width kept
        y = g.op(op, x, w, inp("bias", (cout,)), *extra, act=act, **win)
    elif op == "resize":
        mode = str(rng.choice(["nearest", "linear", "cubic"]))
        coords = str(rng.choice(["half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel"]))
        y = g.op(op, inp("x", (b, n, s, d)), sizes=(b, n, r(1, 2 * s + 1), r(1, 2 * d + 1)), mode=mode,
                 coordinates=coords, exclude_outside=bool(r(0, 2)))
    elif op in ("max_pool", "avg_pool"):
        y = g.op(op, inp("x", (b, n, s + 2, d)), kernel=(r(1, 4), 2), strides=(r(1, 3), r(1, 3)),
                 pads=(1, 0, 1, 1), ceil_mode=bool(r(0, 2)))
    elif op == "sdpa":
        h, sk = r(1, 3), r(2, 9)
        q, k, v = inp("q", (b, h, s, d)), inp("k", (b, h, sk, d)), inp("v", (b, h, sk, n))
        kind = rng.choice(["plain", "causal", "mask"])
        if kind == "mask":
            y = g.sdpa(q, k, v, inp("m", (s, sk)), scale=0.3)
        else:
            y = g.sdpa(q, k, v, causal=kind == "causal")
    elif op == "sdpa_nan_zero":
        h, sk = r(1, 3), r(2, 9)
        arrays["m"] = np.where(rng.random((b, 1, s, sk)) < 0.3, -np.inf, 0.0).astype(DType(dtype).np)
        y = g.op(op, inp("q", (b, h, s, d)), inp("k", (b, h, sk, d)), inp("v", (b, h, sk, n)),
                 g.input("m", (b, 1, s, sk), dtype), scale=0.3)
    elif op == "rotary_half":
        dd = 2 * d
        half = int(rng.choice([d, 1, dd - 1]))  # the usual split in half, and uneven ones
        axis = int(rng.choice([-1, 3]))
        y = g.op(op, inp("x", (b, n, s, dd)), inp("c", (1, 1, s, dd)), inp("s", (s, dd)),
                 half=[half], end=[int(rng.choice([dd, 2**62]))], dim=[axis])
    elif op == "sdpa_bool_mask":
        h, sk = r(1, 3), r(2, 9)
        arrays["m"] = rng.random((1, 1, s, sk)) < 0.3
        y = g.op(op, inp("q", (b, h, s, d)), inp("k", (b, h, sk, d)), inp("v", (b, h, sk, n)),
                 g.input("m", (1, 1, s, sk), "bool"), scale=0.3, fill=float(rng.choice([-np.inf, -1e4])))
    elif op == "region":
        y = g.region(inp("a", (s, d)), inp("c", (d,)), body=(arg(0).exp() * arg(1) + 1.0).tanh())
    elif op == "matmul_bias_act":
        y = g.matmul_bias_act(inp("x", (b, s, d)), inp("w", (d, n)), inp("bias", (n,)),
                              act=str(rng.choice(["none", "relu", "gelu", "gelu_tanh", "silu"])))
    elif op == "matmul_residual":
        y = g.matmul_residual(inp("x", (s, d)), inp("w", (d, n)), inp("res", (s, n)))
    elif op == "swiglu":
        y = g.swiglu(inp("x", (s, d)), inp("wg", (d, n)), inp("wu", (d, n)), act=str(rng.choice(["silu", "gelu"])))
    elif op == "add_rms_norm":
        y = g.add_rms_norm(inp("x", (s, d)), inp("res", (s, d)), inp("w", (d,)))
        g.output(s=y[0], y=y[1])
        return g, arrays
    else:
        return _elementwise_case(op, rng, dtype)
    g.output(y=y)
    return g, arrays


def _ops() -> list[str]:
    return sorted(op.name for op in REGISTRY if op.category != "source")


def _dtypes(op: str) -> list[str]:
    opdef = REGISTRY.get(op)
    if op.startswith("logical_"):
        return ["bool"]
    out = list(FLOATS)
    if op in ("neg", "abs", "relu", "add", "sub", "mul", "maximum", "minimum", "equal", "less", "greater",
              "where", "cast", "sign", "mod", "fmod", "cumsum"):
        out.append("i32")
    return out if not opdef.category == "fused" or op == "region" else ["f32", "f16"]


@pytest.mark.parametrize("op", _ops())
@settings(max_examples=6)
@given(seed=st.integers(0, 2**31 - 1), pick=st.integers(0, 10))
def test_every_op_runs_through_its_kernel_and_matches_the_reference(op, seed, pick):
    """Every registry op and every shipped fused op, on random shapes and dtypes: through its
    generated kernel where its definition fits a skeleton, else its native kernel."""
    dtypes = _dtypes(op)
    rng = np.random.default_rng(seed)
    g, arrays = _case(op, rng, dtypes[pick % len(dtypes)])
    node = next(n for n in g.nodes if n.opdef.category != "source")
    fits = kernel_for(node.op, [v.type for v in node.inputs], node.attrs) is not None
    check(g, arrays, generated=fits if node.op not in ("matmul", "sum", "mean", "max") else False)


def test_ops_whose_definitions_fit_a_skeleton_get_generated_kernels():
    f32 = DType.f32
    x = TensorType((4, 8), f32)
    assert kernel_for("gelu", [x], {}).kind == "pointwise"
    assert kernel_for("softmax", [x], {"axis": -1}).kind == "row reduction + elementwise"
    assert kernel_for("rms_norm", [x, TensorType((8,), f32)], {"eps": 1e-6}).kind == "row reduction + elementwise"
    assert kernel_for("matmul_bias_act", [x, TensorType((8, 3), f32), TensorType((3,), f32)],
                      {"act": "gelu"}).kind == "GEMM + epilogue"
    q = TensorType((2, 4, 8), f32)
    assert kernel_for("sdpa", [q, q, q], {"causal": True, "scale": None}).kind == "attention"
    # a softmax over another axis has no definition there: its native kernel runs
    assert "no definition" in why_not("softmax", [x], {"axis": 0})


def test_backends_print_primitives_only():
    """Non-primitive elementwise ops lower to primitives: gelu is erf, mul, add."""
    prims = set(primitives())
    assert {"gelu", "silu", "sigmoid", "rsqrt", "relu", "gelu_tanh"}.isdisjoint(prims)
    assert {"add", "mul", "exp", "erf", "where", "cast", "less"} <= prims
    for op in REGISTRY:
        if op.elementwise and not op.variadic:
            body = lower(call(op.name, *[arg(i) for i in range(len(op.inputs))],
                              **({"dtype": "f32"} if op.name == "cast" else {})))
            assert {x.op for x in _nodes(body)} - {"arg", "const"} <= prims, op.name


def _nodes(e):
    from rlx.ir.expr import nodes
    return nodes(e)


# ---------------------------------------------------------------------------- regions
def test_region_nodes_compute_in_their_own_dtype():
    """add(cast(cast(x, i32), f32), 1) is 1.0 for x = 0.4, not 1.4; bool and integer results
    run; an integer chain keeps its scalar integral; inf and nan literals compile."""
    x = np.full((3, 5), 0.4, np.float32)
    cases = [
        (call("add", call("cast", call("cast", arg(0), dtype="i32"), dtype="f32"), 1.0), "f32", np.full((3, 5), 1.0)),
        (call("less", arg(0), 0.5), "bool", np.ones((3, 5), bool)),
        (call("add", call("cast", call("mul", arg(0), 10.0), dtype="i32"), 3), "i32", np.full((3, 5), 7)),
        (call("minimum", arg(0), const(float("inf"))), "f32", x),
        (call("where", call("less", arg(0), 0.0), const(float("nan")), arg(0)), "f32", x),
    ]
    for body, dtype, want in cases:
        g = Graph("r")
        y = g.region(g.input("x", x.shape), body=body)
        assert str(y.dtype) == dtype
        g.output(y=y)
        got, ref, program = run_graph(g, {"x": x})
        assert program.dispatch[y.node.name] == "generated"
        np.testing.assert_array_equal(got["y"], want.astype(got["y"].dtype))
        np.testing.assert_array_equal(ref["y"].astype(got["y"].dtype), got["y"])
        assert from_json(to_json(body)) == body


_LEAF_DTYPES = ("f32", "f16", "i32", "bool")


@st.composite
def region_bodies(draw, depth=4):
    """A random well-typed body over inputs of the four dtypes (arg i has dtype i)."""
    def expr(level) -> Expr:
        if level == 0 or draw(st.integers(0, 3)) == 0:
            return arg(draw(st.integers(0, 3)))
        kind = draw(st.sampled_from(["unary", "binary", "cast", "compare", "where"]))
        a = expr(level - 1)
        dt = typed(a, tuple(DType(d) for d in _LEAF_DTYPES)).dtype
        if kind == "cast" or dt == DType.bool:
            return call("cast", a, dtype=draw(st.sampled_from(_LEAF_DTYPES)))
        b = call("cast", expr(level - 1), dtype=str(dt))
        if kind == "unary":
            ops = ["neg", "abs", "relu"] + (["exp", "tanh", "sigmoid", "gelu", "silu", "erf"] if dt.is_float else [])
            op = draw(st.sampled_from(ops))
            return call(op, call("minimum", call("maximum", a, -8), 8) if op == "exp" else a)
        if kind == "binary":
            op = draw(st.sampled_from(["add", "sub", "mul", "maximum", "minimum"]))
            return call(op, a, draw(st.sampled_from([b, const(draw(st.integers(-3, 3)))])))
        if kind == "compare":
            return call(draw(st.sampled_from(["less", "greater", "equal"])), a, b)
        return call("where", call("less", a, b), a, b)
    return expr(depth)


@given(body=region_bodies(), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=40)
def test_random_regions_mixing_dtypes_match_the_reference(body, seed):
    rng = np.random.default_rng(seed)
    shapes = [(4, 6), (6,), (4, 1), (4, 6)]
    g = Graph("r")
    ins = [g.input(f"x{i}", s, d) for i, (s, d) in enumerate(zip(shapes, _LEAF_DTYPES))]
    arrays = {f"x{i}": data(rng, s, d) for i, (s, d) in enumerate(zip(shapes, _LEAF_DTYPES))}
    y = g.region(*ins, body=body)
    g.output(y=y)
    got, want, program = run_graph(g, arrays)
    assert program.dispatch[y.node.name] == "generated"
    # the reference runs the same dtypes natively: exact for integers and bools
    native = interpret(g, {k: v for k, v in arrays.items()}, dtype="native")["y"]
    if y.dtype.is_float:
        tol = TOLERANCE[str(y.dtype)] * max(1.0, float(np.nanmax(np.abs(native.astype(np.float64)), initial=0)))
        np.testing.assert_allclose(got["y"].astype(np.float64), native.astype(np.float64), atol=tol, rtol=0,
                                   equal_nan=True, err_msg=str(body))
    else:
        np.testing.assert_array_equal(got["y"], native.astype(got["y"].dtype), err_msg=str(body))


# ---------------------------------------------------------------------------- users' fused ops
@pytest.fixture(scope="module")
def user_rules(tmp_path_factory) -> Path:
    return write_rules(tmp_path_factory.mktemp("user_rules"))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_user_fused_op_runs_as_one_generated_kernel(name, user_rules):
    g = MODELS[name]()
    r = rlx.compile(g, rules=[user_rules], validate=True)
    fused = name
    assert dict(r.graph.op_counts()) == {fused: 1}, r.graph.op_counts()
    assert r.report.kernels[fused].startswith("generated: ")
    arrays = rlx.ir.random_arrays(g, seed=3)
    ins = {n.name: arrays[n.name] for n in g.inputs}
    ps = {n.name: arrays[n.name] for n in g.params}
    got, want = r.run(ins, ps), interpret(g, ins, ps)
    for k in want:
        err, tol = max_error(got[k], want[k], "f32")
        assert err <= tol, (k, err)
    program = r.executor_for(ins)
    assert len(program.steps) == 1 and set(program.dispatch.values()) == {"generated"}


def test_a_user_op_no_skeleton_fits_is_priced_and_reported_as_its_definition(tmp_path):
    rules = write_rules(tmp_path, {"unfit.rlx": UNFIT})
    rs = load([rules])
    with rs.active():  # the rule set's fused op, outside a compile
        g = Graph("cn")
        x = g.input("x", (16, 32))
        g.output(y=g.column_normalize(x))
        s = saturate_program(g, "cpu", rs)
        (c,) = s.roots
        node = next(n for n in s.view.classes[c] if n.op == "column_normalize")
        t = TensorType((16, 32), DType.f32)
        one_kernel = s.target.cost.op_cost("column_normalize", {}, [t], [t], s.target.cost.binding([t]))
        priced = s.node_cost(c, node)
        assert priced > one_kernel and math.isfinite(priced)
        body = Graph("by hand")  # the definition, op by op, each op a launch of its own
        xb = body.input("x", (16, 32))
        ops = [body.sum(xb, (0,), True).node]
        ops.append(body.div(xb, ops[0].value()).node)
        cost, bind = s.target.cost, s.target.cost.binding([t])
        assert priced == pytest.approx(sum(cost.op_cost(n.op, n.attrs, [v.type for v in n.inputs], n.outputs, bind)
                                           for n in ops))
        # the report's kernel table, and the executor running it op by op
        summary = kernel_summary(g)["column_normalize"]
        assert summary.endswith("runs as its definition") and "sum is not over the last axis" in summary
        a = {"x": np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32)}
        got, want, program = run_graph(g, a)
        assert program.dispatch[g.outputs[0][1].node.name] == "definition"
        np.testing.assert_allclose(got["y"], want["y"], rtol=1e-5)
    r = rlx.compile(g, rules=rs, validate=True)  # the definition and the op cost the same: either is fine
    assert set(r.graph.op_counts()) in ({"column_normalize"}, {"sum", "div"})


@pytest.mark.parametrize("op", sorted(op.name for op in registry_definitions()))
@settings(max_examples=8)
@given(seed=st.integers(0, 2**31 - 1))
def test_a_registry_ops_definition_computes_its_reference(op, seed):
    """The definition (what decompositions and kernels follow from) against the NumPy
    reference, an independent oracle, on random instances."""
    g, arrays = _case(op, np.random.default_rng(seed), "f32")
    node = next(n for n in g.nodes if n.opdef.category != "source")
    if not applies(node.opdef, node.attrs):
        return  # e.g. a softmax over another axis: the definition does not claim it
    body, _ = body_graph(decl_of(op), [v.type for v in node.inputs], node.attrs)
    feeds = {name: arrays[v.node.name] for name, v in zip(decl_of(op).inputs, node.inputs)}
    (want,) = interpret(g, {n.name: arrays[n.name] for n in g.inputs}).values()
    (got,) = interpret(body, feeds).values()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)  # the body's literals are f32


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_attention_with_a_map_of_its_probabilities_is_one_kernel(dtype):
    """torch's exported attention zeroes the NaN probabilities of fully masked rows: the
    shipped sdpa_nan_zero runs as the attention skeleton with that map, and a row whose mask
    is all -inf gives zeros, as the definition says."""
    rng = np.random.default_rng()
    b, h, s, sk, d = 2, 3, 5, 7, 8
    g = Graph("nan_zero")
    q, k, v = (g.input(n, (b, h, x, d), dtype) for n, x in (("q", s), ("k", sk), ("v", sk)))
    m = g.input("m", (b, 1, s, sk), dtype)
    g.output(y=g.op("sdpa_nan_zero", q, k, v, m, scale=0.3))
    arrays = {n: data(rng, (b, h, x, d), dtype) for n, x in (("q", s), ("k", sk), ("v", sk))}
    mask = np.where(rng.random((b, 1, s, sk)) < 0.3, -np.inf, 0.0)
    mask[0, 0, 1, :] = -np.inf  # a fully masked row
    arrays["m"] = mask.astype(DType(dtype).np)
    kernel = kernel_for("sdpa_nan_zero", [x.type for x in (q, k, v, m)], {"scale": 0.3})
    assert kernel.kind == "attention" and kernel.skeleton.probs is not None
    check(g, arrays, generated=True)
    r = rlx.compile(g, rules=[])
    out = r.run({n: arrays[n] for n in ("q", "k", "v", "m")})["y"]
    assert np.all(out[0, :, 1, :] == 0) and np.isfinite(out).all()
