"""Each shipped rule fires on its pattern and not on near misses; every compiled program
equals its source on random inputs.

Tolerance: both programs run in the float64 reference interpreter; fusion may replace an
f32-rounded constant (f32(sqrt 2) in an exported gelu) by the exact one, so rtol = atol =
1e-6 for f32 graphs."""
import dataclasses
import math

import numpy as np
import pytest

import rlx
from rlx.egraph.saturate import Limits
from rlx.extract.cost import DEFAULT
from rlx.ir import Graph, interpret, random_arrays
from rlx.ir.expr import nodes
from rlx.report import FusionNotClean
from rlx.rules import load

RULES = load()


def same(g: Graph, h: Graph, binding=None, seed=0, tol=1e-6):
    a = random_arrays(g, binding or {}, seed=seed)
    ins = {n.name: a[n.name] for n in g.inputs}
    ps = {n.name: a[n.name] for n in g.params}
    want, got = interpret(g, ins, ps), interpret(h, ins, ps)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=tol, atol=tol, err_msg=k)


def opt(g: Graph, binding=None, **kw):
    r = rlx.compile(g, rules=kw.pop("rules", RULES), **kw)
    same(g, r.graph, binding)
    return r


def dense(g, x, n_out, name, bias=True):
    w = g.param(f"{name}.w", (x.shape[-1], n_out))
    y = g.matmul(x, w)
    return g.add(y, g.param(f"{name}.b", (n_out,))) if bias else y


def gelu_erf(g, x):
    return g.mul(g.mul(x, g.add(g.erf(g.div(x, math.sqrt(2.0))), 1.0)), 0.5)


# ----------------------------------------------------------------------------- matmul + bias + act
@pytest.mark.parametrize("act", ["relu", "gelu", "gelu_tanh", "silu", "gelu_decomposed", "silu_decomposed"])
def test_matmul_bias_act_fires(act):
    g = Graph()
    y = dense(g, g.input("x", ("B", 8)), 16, "fc")
    y = {"gelu_decomposed": lambda: gelu_erf(g, y), "silu_decomposed": lambda: g.mul(y, g.sigmoid(y))}.get(
        act, lambda: g.op(act, y))()
    g.output(y)
    r = opt(g, {"B": 3})
    assert r.graph.op_counts() == {"matmul_bias_act": 1}
    node = next(n for n in r.graph.nodes if n.op == "matmul_bias_act")
    assert node.attrs["act"] == act.split("_decomposed")[0]
    assert r.report.rule("matmul_bias_act").applied == 1 and not r.report.missed


def test_bias_on_the_left_fuses_too():
    g = Graph()
    x = g.input("x", (4, 8))
    y = g.relu(g.add(g.param("b", (16,)), g.matmul(x, g.param("w", (8, 16)))))
    g.output(y)
    assert opt(g).graph.op_counts() == {"matmul_bias_act": 1}


def test_wrong_bias_shape_does_not_fuse_and_says_why():
    g = Graph()
    x = g.input("x", (4, 8))
    y = g.relu(g.add(g.matmul(x, g.param("w", (8, 16))), g.param("b", (4, 16))))
    g.output(y)
    r = opt(g)
    assert "matmul_bias_act" not in r.graph.op_counts()
    (m,) = [m for m in r.report.missed if m.rule == "matmul_bias_act"]
    assert "bias rank too high" in m.reason and "rank(b)=2" in m.reason and m.node == y.name


def test_wrong_activation_is_a_reported_near_miss():
    g = Graph()
    y = g.tanh(dense(g, g.input("x", (4, 8)), 16, "fc"))
    g.output(y)
    r = opt(g)
    assert all(n.attrs.get("act") != "tanh" for n in r.graph.nodes if n.op == "matmul_bias_act")
    assert len(r.graph.nodes) == len(g.nodes) - 1  # bias and tanh share one kernel
    (m,) = [m for m in r.report.missed if m.rule == "matmul_bias_act"]
    assert "unsupported epilogue activation" in m.reason and "act=tanh" in m.reason


def test_matmul_with_another_consumer_is_not_recomputed():
    g = Graph()
    x = g.input("x", (64, 256))
    mm = g.matmul(x, g.param("w", (256, 256)))
    y = g.relu(g.add(mm, g.param("b", (256,))))
    g.output(y, other=g.exp(mm))
    r = opt(g)
    assert r.graph.op_counts()["matmul"] == 1
    assert "matmul_bias_act" not in r.graph.op_counts()
    assert any("extra consumer" in m.reason for m in r.report.missed)


def test_matmul_residual_fires_on_cuda_and_not_on_a_broadcast_residual():
    g = Graph()
    x = g.input("x", (2, 8, 16))
    y = g.add(g.matmul(x, g.param("w", (16, 16))), g.input("r", (2, 8, 16)))
    z = g.add(g.matmul(x, g.param("w2", (16, 16))), g.input("s", (16,)))
    g.output(y=g.exp(y), z=g.exp(z))
    r = opt(g, target="cuda")
    assert r.graph.op_counts()["matmul_residual"] == 1
    assert r.report.rule("matmul_residual").applied == 1


# ----------------------------------------------------------------------------- gated units
@pytest.mark.parametrize("order", ["gate_first", "up_first"])
@pytest.mark.parametrize("act,rule", [("silu", "swiglu"), ("gelu", "geglu")])
def test_gated_units_fire_in_either_operand_order(order, act, rule):
    g = Graph()
    x = g.input("x", ("S", 16))
    gate = g.op(act, g.matmul(x, g.param("wg", (16, 32))))
    up = g.matmul(x, g.param("wu", (16, 32)))
    y = g.mul(gate, up) if order == "gate_first" else g.mul(up, gate)
    g.output(g.matmul(y, g.param("wd", (32, 16))))
    r = opt(g, {"S": 5})
    assert r.graph.op_counts()["swiglu"] == 1
    assert next(n for n in r.graph.nodes if n.op == "swiglu").attrs["act"] == act
    assert r.report.rule(rule).applied == 1


def test_gated_unit_needs_a_shared_input():
    g = Graph()
    gate = g.silu(g.matmul(g.input("x1", (4, 16)), g.param("wg", (16, 32))))
    up = g.matmul(g.input("x2", (4, 16)), g.param("wu", (16, 32)))
    g.output(g.mul(gate, up))
    assert "swiglu" not in opt(g).graph.op_counts()


# ----------------------------------------------------------------------------- attention
def _attention(g, causal=False, mask=False, perm=(0, 1, 3, 2)):
    q, k, v = (g.input(n, (2, 4, "S", 8)) for n in "qkv")
    s = g.mul(g.matmul(q, g.transpose(k, perm)), 1 / math.sqrt(8))
    if causal:
        s = g.causal_mask(s)
    if mask:
        s = g.add(s, g.input("m", ("S", "S")))
    g.output(g.matmul(g.softmax(s, axis=-1), v))


@pytest.mark.parametrize("causal,mask,rule", [(False, False, "attention"), (True, False, "attention_causal"),
                                              (False, True, "attention_masked")])
def test_attention_fires(causal, mask, rule):
    g = Graph()
    _attention(g, causal, mask)
    r = opt(g, {"S": 6})
    (node,) = [n for n in r.graph.nodes if n.op == "sdpa"]
    assert node.attrs["causal"] == causal and len(node.inputs) == (4 if mask else 3)
    assert r.report.rule(rule).applied == 1


def test_attention_needs_k_transposed_on_its_last_axes():
    g = Graph()
    q, k, v = g.input("q", (4, 4, 4)), g.input("k", (4, 4, 4)), g.input("v", (4, 4, 4))
    s = g.mul(g.matmul(q, g.transpose(k, (2, 1, 0))), 0.5)
    g.output(g.matmul(g.softmax(s, axis=-1), v))
    r = opt(g)
    assert "sdpa" not in r.graph.op_counts()
    assert any(m.rule == "attention" and "not transposed" in m.reason for m in r.report.missed)


# ----------------------------------------------------------------------------- norms
def test_layer_norm_and_rms_norm_from_exporter_decompositions():
    for block, op in (("layer_norm", "layer_norm"), ("rms_norm", "rms_norm")):
        m = rlx.hir.Module()
        m.output(getattr(m, block)(m.input("x", ("B", 16))))
        r = opt(m.lower("fusable"), {"B": 3})
        assert r.graph.op_counts() == {op: 1}, r.graph.op_counts()


@pytest.mark.parametrize("form", ["div", "rsqrt"])
def test_rms_norm_variants(form):
    g = Graph()
    x, w = g.input("x", (4, 16)), g.param("w", (16,))
    if form == "div":
        y = g.mul(g.div(x, g.sqrt(g.add(g.mean(g.pow(x, 2.0), (-1,), True), 1e-6))), w)
    else:
        y = g.mul(g.mul(x, g.rsqrt(g.add(g.mean(g.mul(x, x), (-1,), True), 1e-6))), w)
    g.output(y)
    assert opt(g).graph.op_counts() == {"rms_norm": 1}


def test_residual_add_rms_norm_keeps_both_results():
    g = Graph()
    x, r_ = g.input("x", (4, 16)), g.input("r", (4, 16))
    s = g.add(x, r_)
    n = g.rms_norm(s, g.param("w", (16,)), eps=1e-5)
    g.output(normed=g.matmul(n, g.param("wo", (16, 16))), residual=s)
    r = opt(g)
    assert r.graph.op_counts().get("add_rms_norm") == 1 and "add" not in r.graph.op_counts()
    assert r.report.rule("residual_rms_norm").applied == 1


# ----------------------------------------------------------------------------- activations, algebra
@pytest.mark.parametrize("form", ["erf", "erf_half_first", "erf_mul", "tanh"])
def test_gelu_from_decompositions(form):
    g = Graph()
    x = g.input("x", (4, 16))
    if form == "erf":
        y = gelu_erf(g, x)
    elif form == "erf_half_first":
        y = g.mul(g.mul(x, 0.5), g.add(g.erf(g.div(x, math.sqrt(2.0))), 1.0))
    elif form == "erf_mul":
        y = g.mul(g.mul(x, 0.5), g.add(g.erf(g.mul(x, 1 / math.sqrt(2.0))), 1.0))
    else:
        inner = g.mul(g.add(x, g.mul(g.pow(x, 3.0), 0.044715)), math.sqrt(2 / math.pi))
        y = g.mul(g.mul(x, 0.5), g.add(g.tanh(inner), 1.0))
    g.output(y)
    assert opt(g).graph.op_counts() == {"gelu_tanh" if form == "tanh" else "gelu": 1}


def test_transpose_of_transpose_and_reshape_of_reshape():
    g = Graph()
    x = g.input("x", (4, 6))
    y = g.exp(g.transpose(g.transpose(x, (1, 0)), (1, 0)))
    z = g.reshape(g.reshape(x, (24,)), (2, 12))
    g.output(y, z)
    counts = opt(g).graph.op_counts()
    assert "transpose" not in counts and counts["reshape"] == 1


# ----------------------------------------------------------------------------- regions
def test_elementwise_chain_becomes_one_region():
    g = Graph()
    x, y = g.input("x", ("B", 32)), g.input("y", (32,))
    z = g.tanh(g.add(g.mul(g.exp(x), y), 1.0))
    g.output(g.sum(z, (1,)))
    r = opt(g, {"B": 4})
    assert r.graph.op_counts() == {"region": 1, "sum": 1}
    (reg,) = [n for n in r.graph.nodes if n.op == "region"]
    assert str(reg.attrs["body"]) == "tanh(add(mul(exp($0), $1), 1.0))" and len(reg.inputs) == 2


def test_an_op_with_several_attributes_joins_a_region_keeping_them():
    """hard_sigmoid's alpha and beta both travel in the region body's op spelling (a
    squeeze-and-excitation gate: the gate broadcast over the image it scales); ``opt``
    checks the region computes what the two ops did."""
    g = Graph()
    x, s = g.input("x", (2, 8, 5, 5)), g.input("s", (2, 8, 1, 1))
    g.output(g.mul(g.op("hard_sigmoid", s, alpha=0.125, beta=0.375), x))
    r = opt(g)
    assert r.graph.op_counts() == {"region": 1}
    (reg,) = [n for n in r.graph.nodes if n.op == "region"]
    (hs,) = [e for e in nodes(reg.attrs["body"]) if e.op == "hard_sigmoid"]
    assert hs.attr_dict() == {"alpha": 0.125, "beta": 0.375}


def test_region_respects_the_targets_input_limit():
    g = Graph()
    xs = [g.input(f"x{i}", (64,)) for i in range(6)]
    acc = xs[0]
    for x in xs[1:]:
        acc = g.exp(g.add(acc, x))
    g.output(acc)
    small = dataclasses.replace(DEFAULT, region_max_inputs=3)
    r = opt(g, target=small)
    assert all(len(n.inputs) <= 3 for n in r.graph.nodes if n.op == "region")
    assert sum(r.graph.op_counts().values()) >= 3  # six inputs need at least three 3-input kernels
    assert opt(g).graph.op_counts() == {"region": 1}


# ----------------------------------------------------------------------------- models, limits, reports
@pytest.mark.parametrize("build,binding,expect", [
    (lambda: rlx.models.mlp(layers=3, d_in=16, d_hidden=32, batch="B"), {"B": 3}, {"matmul_bias_act": 3}),
    (lambda: rlx.models.llama(layers=2, d_model=32, n_heads=4, seq="S", batch="B"), {"B": 2, "S": 5},
     {"norm": 4, "sdpa": 2, "swiglu": 2}),
    (lambda: rlx.models.llama(layers=1, d_model=32, n_heads=2, seq=8, vocab=40), None,
     {"norm": 3, "sdpa": 1}),
    (lambda: rlx.models.bert(layers=2, d_model=32, n_heads=4, seq="S"), {"S": 7},
     {"layer_norm": 4, "sdpa": 2, "matmul_bias_act": 8}),
])
def test_every_model_builder_compiles_to_an_equal_fused_program(build, binding, expect):
    g = build()
    r = opt(g, binding)
    counts = r.graph.op_counts()
    counts["norm"] = counts.get("rms_norm", 0) + counts.get("add_rms_norm", 0)
    assert {k: counts.get(k, 0) for k in expect} == expect, counts
    assert r.report.nodes_after < r.report.nodes_before and not r.report.missed
    assert r.report.cost_after < r.report.cost_before


def test_direct_policy_graphs_compile_unchanged_in_meaning():
    g = rlx.models.llama(layers=1, d_model=32, n_heads=2, seq=8, policy="direct")
    opt(g)


def test_user_rule_file_declaring_a_fused_op_is_applied_and_reported(tmp_path):
    (tmp_path / "mine.rlx").write_text(
        'ruleset fusion\n'
        'fused exp_scale(x, s) "exp(x) * s in one kernel" { mul(exp(x), s) }\n'
        'rule exp_scale "exp then scale": mul(exp(x), s) => exp_scale(x, s) where rank(s) == 1 "scale is not a vector"\n')
    g = Graph()
    g.output(a=g.mul(g.exp(g.input("x", (4, 8))), g.param("s", (8,))),
             b=g.mul(g.exp(g.input("y", (4, 8))), g.param("m", (4, 8))))
    r = opt(g, rules=load([tmp_path]))
    assert r.graph.op_counts()["exp_scale"] == 1
    assert r.report.rule("exp_scale").applied == 1 and r.report.fused["exp_scale"] == 1
    (m,) = r.report.missed
    assert m.rule == "exp_scale" and "scale is not a vector" in m.reason


def test_a_variadic_op_matches_on_the_left_with_exactly_its_operands(tmp_path):
    """concat(a, b) on the left side matches a two-operand concat, each operand in place,
    not a three-operand one (its operands are an e-graph vector)."""
    (tmp_path / "cat.rlx").write_text(
        'ruleset fusion\n'
        'fused neg_cat(a, b) "concat of a negated and a plain half" { concat(neg(a), b; axis=-1) }\n'
        'rule neg_cat: concat(neg(a), b; axis=-1) => neg_cat(a, b)\n')
    g = Graph()
    x, y, z, w = (g.input(n, (3, 4 if n != "y" else 2)) for n in "xyzw")
    g.output(two=g.concat(g.neg(x), y, axis=-1), three=g.concat(g.neg(z), y, y, axis=-1),
             swapped=g.concat(y, g.neg(w), axis=-1))
    r = opt(g, rules=load([tmp_path]))
    assert r.report.fused == {"neg_cat": 1}
    assert r.report.rule("neg_cat").matches == 1
    rng = np.random.default_rng(1)
    arrays = {n: rng.standard_normal((3, 4)) for n in "xzw"} | {"y": np.ones((3, 2))}
    want = interpret(g, arrays)
    got = interpret(r.graph, arrays)
    for k in want:
        np.testing.assert_allclose(got[k], want[k])


def test_identical_subterms_are_shared(tmp_path):
    (tmp_path / "none.rlx").write_text("rule neg_neg: neg(neg(x)) => x\n")
    g = Graph()
    x = g.input("x", (4, 8))
    g.output(a=g.mul(g.exp(x), g.param("s", (8,))), b=g.mul(g.exp(x), g.param("m", (4, 8))))
    r = opt(g, rules=load([tmp_path]))
    assert r.graph.op_counts() == {"exp": 1, "mul": 2}  # the e-graph merged the two exp(x)


@pytest.mark.parametrize("limits,stop", [(Limits(iterations=1), "iterations"), (Limits(enodes=10), "enodes"),
                                         (Limits(seconds=0.0), "seconds")])
def test_saturation_stopped_by_each_limit_still_yields_a_valid_program(limits, stop):
    g = rlx.models.llama(layers=2, d_model=32, n_heads=4, seq=8)
    r = opt(g, limits=limits)
    assert r.report.egraph.stop == stop
    assert r.report.cost_after <= r.report.cost_before


def test_assert_fusion_clean_fails_with_the_report():
    g = Graph()
    y = g.tanh(dense(g, g.input("x", (4, 8)), 16, "fc"))
    g.output(y)
    with pytest.raises(FusionNotClean, match="matmul_bias_act at .*unsupported epilogue activation"):
        rlx.compile(g, assert_fusion_clean=True)
    rlx.compile(rlx.models.llama(layers=1, d_model=32, n_heads=2, seq=8), assert_fusion_clean=True)


def test_report_prints_and_serializes():
    r = rlx.compile(rlx.models.bert(layers=1, d_model=32, n_heads=2, seq=8))
    text = str(r.report)
    assert "fused ops by kind" in text and "layer_norm" in text and "e-graph" in text
    d = r.report.to_dict()
    assert d["fused"]["layer_norm"] == 2 and d["egraph"]["stop"] == "saturated"
    assert d["matmuls_before"] > d["matmuls_after"]
    assert set(d["times"]) == {"rules", "load", "saturate", "freeze", "extract"}


def test_compile_accepts_hir_modules_and_rejects_other_things():
    r = rlx.compile(rlx.models.mlp(layers=2, d_in=8, d_hidden=16, hir=True))
    assert r.graph.op_counts() == {"matmul_bias_act": 2}
    with pytest.raises(rlx.RlxError, match="expects a Graph"):
        rlx.compile("model.onnx")
    with pytest.raises(rlx.RlxError, match="unknown target"):
        rlx.compile(r.graph, target="tpu")


def test_deep_graphs_extract_without_recursion():
    g = rlx.models.mlp(layers=300, d_in=8, d_hidden=8, activation="relu")
    r = rlx.compile(g)
    assert r.graph.op_counts() == {"matmul_bias_act": 300}
