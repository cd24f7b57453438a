"""HIR blocks lower under both policies to programs that compute the same thing."""
import numpy as np
import pytest

import rlx
from rlx.errors import RlxError, ShapeError
from rlx.hir import Module
from rlx.ir import interpret, random_arrays

NONPRIMITIVE = {"gelu", "gelu_tanh", "silu", "rms_norm", "layer_norm", "rotary", "sdpa"}


def _module(block):
    m = Module(block)
    x = m.input("x", ("B", "S", 16), "f64")
    if block in ("attention_rotary", "transformer_llama"):
        m.rope_inputs("S", 4, "f64")
    ids = m.input("ids", ("B", "S"), "i64") if block == "embedding" else None
    y = {
        "linear": lambda: m.linear(x, 24, activation="gelu_tanh"),
        "linear_nobias": lambda: m.linear(x, 24, bias=False),
        "mlp": lambda: m.mlp(x, 32, activation="gelu"),
        "mlp_relu": lambda: m.mlp(x, 32, 8, activation="relu"),
        "swiglu_ffn": lambda: m.swiglu_ffn(x, 40),
        "geglu_ffn": lambda: m.swiglu_ffn(x, 40, activation="gelu"),
        "attention": lambda: m.attention(x, 4, bias=True),
        "attention_causal": lambda: m.attention(x, 4, causal=True),
        "attention_rotary": lambda: m.attention(x, 4, causal=True, rotary=True),
        "layer_norm": lambda: m.layer_norm(x),
        "rms_norm": lambda: m.rms_norm(x),
        "embedding": lambda: m.add(m.embedding(ids, 11, 16, dtype="f64"), x),
        "transformer_llama": lambda: m.transformer_block(x, style="llama", n_heads=4, d_ff=40),
        "transformer_bert": lambda: m.transformer_block(x, style="bert", n_heads=4, d_ff=40),
    }[block]()
    m.output(y)
    return m


# (op counts expected under fusable, under direct) for the interesting ops of each block
EXPECTED = {
    "linear": ({"matmul": 1, "tanh": 1, "pow": 1}, {"matmul": 1, "add": 1, "gelu_tanh": 1}),
    "linear_nobias": ({"matmul": 1}, {"matmul": 1}),
    "mlp": ({"matmul": 2, "erf": 1}, {"matmul": 2, "gelu": 1}),
    "mlp_relu": ({"matmul": 2, "relu": 1}, {"matmul": 2, "relu": 1}),
    "swiglu_ffn": ({"matmul": 3, "sigmoid": 1, "mul": 2}, {"matmul": 3, "silu": 1, "mul": 1}),
    "geglu_ffn": ({"matmul": 3, "erf": 1}, {"matmul": 3, "gelu": 1, "mul": 1}),
    "attention": ({"matmul": 6, "softmax": 1}, {"matmul": 4, "sdpa": 1}),
    "attention_causal": ({"matmul": 6, "softmax": 1, "causal_mask": 1}, {"matmul": 4, "sdpa": 1}),
    "attention_rotary": ({"matmul": 6, "concat": 2, "slice": 4}, {"matmul": 4, "sdpa": 1, "rotary": 2}),
    "layer_norm": ({"mean": 2, "sqrt": 1, "div": 1}, {"layer_norm": 1}),
    "rms_norm": ({"mean": 1, "sqrt": 1, "reciprocal": 1}, {"rms_norm": 1}),
    "embedding": ({"gather": 1, "add": 1}, {"gather": 1, "add": 1}),
    "transformer_llama": ({"matmul": 9, "softmax": 1, "sigmoid": 1}, {"matmul": 7, "sdpa": 1, "rms_norm": 2, "silu": 1}),
    "transformer_bert": ({"matmul": 8, "softmax": 1, "erf": 1}, {"matmul": 6, "sdpa": 1, "layer_norm": 2, "gelu": 1}),
}


@pytest.mark.parametrize("block", sorted(EXPECTED))
def test_block_lowers_under_both_policies_to_equal_programs(block):
    m = _module(block)
    fus, dct = m.lower("fusable"), m.lower("direct")
    want_f, want_d = EXPECTED[block]
    cf, cd = fus.op_counts(), dct.op_counts()
    assert {k: cf.get(k, 0) for k in want_f} == want_f
    assert {k: cd.get(k, 0) for k in want_d} == want_d
    assert not NONPRIMITIVE & set(cf), "fusable lowering must emit primitives only"
    assert {n.name for n in fus.params} == {n.name for n in dct.params}
    arrays = random_arrays(fus, {"B": 2, "S": 6}, seed=hash(block) % 2**31)
    ins = {n.name: arrays[n.name] for n in fus.inputs}
    ps = {n.name: arrays[n.name] for n in fus.params}
    rf, rd = interpret(fus, ins, ps), interpret(dct, ins, ps)
    assert rf.keys() == rd.keys()
    for k in rf:
        assert rf[k].shape == (2, 6, m.outputs[0].shape[-1])
        np.testing.assert_allclose(rf[k], rd[k], rtol=1e-10, atol=1e-10)


def test_policy_and_block_errors():
    m = Module()
    x = m.input("x", ("S", 12))
    with pytest.raises(RlxError, match="unknown lowering policy"):
        m.lower("eager")
    with pytest.raises(ShapeError, match="not divisible by 5 heads"):
        m.attention(x, 5)
    with pytest.raises(ShapeError, match="even head dim, got 3"):
        m.attention(x, 4, rotary=True)
    with pytest.raises(RlxError, match="rope tables"):
        m.attention(x, 2, rotary=True)
    with pytest.raises(RlxError, match="unknown activation 'swish'"):
        m.linear(x, 4, activation="swish")
    with pytest.raises(RlxError, match="style must be"):
        m.transformer_block(x, style="gpt", n_heads=2, d_ff=8)
    with pytest.raises(RlxError, match="not a value of module"):
        m.rms_norm(Module().input("y", (2,)))


def test_models_accept_static_and_symbolic_sizes():
    g = rlx.models.llama(layers=2, d_model=64, n_heads=4, seq="S", batch="B")
    assert g.node("x").outputs[0].shape == ("B", "S", 64)
    assert rlx.models.llama(layers=1, d_model=64, n_heads=4).node("x").outputs[0].shape == (1, 128, 64)
    assert isinstance(rlx.models.bert(layers=1, hir=True), Module)
    with pytest.raises(RlxError, match="not divisible"):
        rlx.models.llama(d_model=100, n_heads=3)


def test_llama_with_vocab_produces_logits():
    g = rlx.models.llama(layers=1, d_model=32, n_heads=2, seq=4, vocab=50)
    a = random_arrays(g, seed=1)
    out = interpret(g, {n.name: a[n.name] for n in g.inputs}, {n.name: a[n.name] for n in g.params})
    (logits,) = out.values()
    assert logits.shape == (1, 4, 50) and np.isfinite(logits).all()


def test_llama_32_layers_builds():
    g = rlx.models.llama(layers=32, d_model=4096, n_heads=32, d_ff=11008)
    assert g.op_counts()["matmul"] == 32 * 9
    assert len(g.params) == 32 * 9


def test_native_dtype_interpretation_tracks_f64_reference():
    for dtype, tol in (("f32", 1e-4), ("f16", 5e-2), ("bf16", 2e-1)):
        g = rlx.models.bert(layers=1, d_model=32, n_heads=2, seq=8, dtype=dtype)
        a = random_arrays(g, seed=4)
        ins = {n.name: a[n.name] for n in g.inputs}
        ps = {n.name: a[n.name] for n in g.params}
        ref = next(iter(interpret(g, ins, ps).values()))
        got = next(iter(interpret(g, ins, ps, dtype="native").values()))
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
