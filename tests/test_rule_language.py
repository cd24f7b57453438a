"""Parsing and checking rule files: every error names path:line:col and shows a caret."""
import textwrap

import numpy as np
import pytest

import rlx
from rlx.ir import REGISTRY, Graph, interpret
from rlx.rules import RuleError, load


def write(tmp_path, text, name="r.rlx"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


@pytest.mark.parametrize("text,line,col,message", [
    ("rule a: relu(x => x\n", 1, 16, "syntax error: unexpected '=>'; expected"),
    ("rule a: relu(x) => x where rank(x) ==\n", 1, 36, "unexpected end of file"),
    ("ruleset fusion\nrule a: relux(x) => x\n", 2, 9, "unknown op 'relux'; did you mean 'relu'?"),
    ("rule a: matmul(x) => x\n", 1, 9, "matmul expects 2 inputs (a, b), got 1"),
    ("rule a: relu(x) => exp(y)\n", 1, 24, "variable 'y' on the right is not bound on the left"),
    ("rule a: softmax(x; axes=1) => x\n", 1, 9, "softmax has no attribute 'axes'; did you mean 'axis'?"),
    ("rule a: softmax(x; axis=\"z\") => x\n", 1, 9, "attribute 'axis' expects int"),
    ("rule a: relu(x) => x where rank(x) == f32\n", 1, 28, "cannot compare int with str"),
    ("rule a: relu(x) => x where x > 1\n", 1, 28, "'x' is a tensor"),
    ("rule a: relu(x) => x where dim(x) == 1\n", 1, 28, "dim takes a tensor and an axis"),
    ("rule a: relu(x) => x where size(x) == 1\n", 1, 28, "unknown guard function 'size'"),
    ("rule a: act(x) => x\n", 1, 9, "unknown op 'act'"),
    ("rule a: relu(x) => x\nrule a: exp(x) => x\n", 2, 1, "duplicate rule name 'a' (first at"),
    ("fused relu(x) { exp(x) }\n", 1, 1, "would shadow the registry op 'relu'"),
    ("fused f(x; a: complex) { exp(x) }\n", 1, 1, "unknown kind 'complex'"),
    ("fused f(x) { exp(y) }\n", 1, 18, "'y' is not an input"),
    ("include \"missing.rlx\"\n", 1, 1, "cannot include"),
])
def test_errors_name_file_line_column_and_cause(tmp_path, text, line, col, message):
    p = write(tmp_path, text)
    with pytest.raises(RuleError) as e:
        load(p)
    err = e.value
    assert (err.span.line, err.span.col) == (line, col), str(err)
    assert str(err).startswith(f"{p}:{line}:{col}: ")
    assert message in str(err)
    if line:
        assert "^" in str(err).splitlines()[-1]


def test_duplicate_fused_declarations_are_rejected(tmp_path):
    write(tmp_path, "fused twice_exp(x) { exp(exp(x)) }\n", "a.rlx")
    write(tmp_path, "fused twice_exp(x) { exp(x) }\n", "b.rlx")
    with pytest.raises(RuleError, match="fused op 'twice_exp' is already declared"):
        load(tmp_path)


def test_shipped_rules_load():
    rs = load()
    names = {r.name for r in rs.rules}
    assert {"matmul_bias_act", "swiglu", "geglu", "attention", "attention_causal", "rms_norm", "layer_norm",
            "residual_rms_norm", "gelu_erf", "gelu_tanh", "silu", "transpose_transpose", "reshape_reshape"} <= names
    assert {"add", "mul"} <= rs.commutative
    assert rs.regions and rs.sets() == ["algebra", "fusion", "legalize", "regions"]
    for op in ("matmul_bias_act", "swiglu", "add_rms_norm", "matmul_residual"):
        assert REGISTRY.get(op).category == "fused"


def test_includes_and_rule_sets(tmp_path):
    write(tmp_path, 'include "sub/more.rlx"\nruleset mine\nrule neg_neg "double negation": neg(neg(x)) => x\n')
    (tmp_path / "sub").mkdir()
    write(tmp_path, "ruleset mine\nrule abs_abs: abs(abs(x)) => abs(x)\n", "sub/more.rlx")
    rs = load(tmp_path / "r.rlx")
    assert [r.name for r in rs.rules] == ["abs_abs", "neg_neg"] and rs.sets() == ["mine"]
    assert rs.rule("neg_neg").doc == "double negation"


def test_fused_op_definition_is_its_semantics_types_and_flops(tmp_path):
    write(tmp_path, """
        fused scaled_softplus(x; k: float = 2.0) "k * log(1 + exp(x))" { mul(log(add(exp(x), 1.0)), k) }
        """)
    rs = load(tmp_path)
    op = rs.ops["scaled_softplus"]
    assert op.category == "fused" and rs.fused[0].name == "scaled_softplus"
    assert "scaled_softplus" not in REGISTRY  # a rule set is a value: its ops are seen where it is active
    g = Graph()
    with rs.active():
        y = g.scaled_softplus(g.input("x", ("B", 3), "f64"), k=3.0)
    assert y.shape == ("B", 3) and y.dtype == rlx.DType.f64
    g.output(y)
    xv = np.random.default_rng(0).standard_normal((2, 3))
    np.testing.assert_allclose(interpret(g, {"x": xv})[y.name], 3.0 * np.log1p(np.exp(xv)), rtol=1e-12)
    flops, nbytes = y.node.cost({"B": 2})
    assert flops == 6 * (4 + 1 + 4 + 1) and nbytes == 2 * 6 * 8


def test_bidirectional_rules_need_calls_on_both_sides(tmp_path):
    with pytest.raises(RuleError, match="both sides of '<=>' must be op calls"):
        load(write(tmp_path, "rule a: neg(neg(x)) <=> x\n"))


def test_multi_output_rules_check_their_outputs(tmp_path):
    with pytest.raises(RuleError, match="one of the outputs must be 'root'"):
        load(write(tmp_path, "rule a: rms_norm(add(x, r) as s, w; eps=e) => add_rms_norm(x, r, w; eps=e) -> (s, s)\n"))
    with pytest.raises(RuleError, match="output 'q' is not bound"):
        load(write(tmp_path, "rule a: rms_norm(add(x, r) as s, w; eps=e) => add_rms_norm(x, r, w; eps=e) -> (q, root)\n"))
