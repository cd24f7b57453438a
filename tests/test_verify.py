"""rlx.verify, `rlx rules check` and rlx.testing."""
import textwrap

import pytest

import rlx
from rlx.cli import main
from rlx.rules import load
from rlx.testing import assert_equivalent, assert_rule_sound, assert_rules_sound
from rlx.verify import fuzz, prove
from rlx.verify.lint import lint

RULES = load()


def rule_file(tmp_path, text, name="r.rlx"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


@pytest.mark.parametrize("rule", RULES.rules, ids=lambda r: r.name)
def test_every_shipped_rule_is_fuzzed_sound_and_proved_where_the_axioms_reach(rule):
    f = fuzz(rule, trials=15, seed=1)
    assert f.instances > 0, f.note
    assert not f.failures, f.failures[0]
    p = prove(rule, RULES)
    if rule.name.startswith("sdpa") and rule.ruleset == "legalize":  # sdpa's meaning: it has no definition
        assert not p.proved and "sdpa has no definition" in p.reason
        return
    expected_unproved = {"transpose_transpose", "reshape_reshape", "gelu_erf_mul", "attention", "attention_causal",
                         "attention_masked", "attention_prescaled", "attention_prescaled_masked",
                         # layout algebra (perm composition, reshape regrouping, elementwise ops
                         # commuting with a reshape) is beyond the axioms
                         "batched_swap_via_3d", "scale_through_transpose", "split_heads_then_swap",
                         "activation_through_reshape",
                         # a convolution's linearity in its weight and bias is beyond the axioms
                         "conv_batch_norm_fold", "conv_batch_norm_fold_nobias"}
    # the rest need perm composition, constant folding, or per-rank instances
    assert p.proved or rule.name in expected_unproved, p.reason


def test_a_planted_unsound_rule_is_rejected_with_a_counterexample(tmp_path):
    path = rule_file(tmp_path, "rule relu_split \"wrong\": relu(add(a, b)) => add(relu(a), relu(b))\n")
    (rule,) = load([path]).rules
    f = fuzz(rule, trials=20, seed=3)
    assert f.failures and f.failures[0].max_abs > 0 and f.failures[0].seed == 3
    assert "shapes" in str(f.failures[0]) and f.failures[0].shapes
    assert not prove(rule).proved
    with pytest.raises(AssertionError, match="relu_split .* is unsound: shapes"):
        assert_rule_sound(path)


def test_a_bias_fusion_missing_its_shape_guard_is_caught(tmp_path):
    """A bias epilogue that adds the bias row-wise through a transpose is right only for a
    vector bias: with the guard the rule is sound, without it the fuzzer finds a matrix bias."""
    path = rule_file(tmp_path, """
        fused mm_bias(x, w, b) "matmul + row bias" { add(matmul(x, w), transpose(b)) }
        rule guarded "bias fusion": add(matmul(x, w), b) => mm_bias(x, w, b) where rank(b) == 1 "bias is not a vector"
        rule unguarded "bias fusion, shape check forgotten": add(matmul(x, w), b) => mm_bias(x, w, b)
        """)
    rs = load([path])
    ok = fuzz(rs.rule("guarded"), trials=20, seed=4, rules=rs)
    assert ok.instances and not ok.failures
    bad = fuzz(rs.rule("unguarded"), trials=40, seed=4, rules=rs)
    assert bad.failures and len(bad.failures[0].shapes["b"]) >= 2, bad.failures[:1]


def test_a_sound_rule_the_axioms_cannot_prove_is_reported_as_such_and_passes_the_fuzzer(tmp_path):
    path = rule_file(tmp_path, 'rule half "x / 2 = x * 0.5": div(x, 2.0) => mul(x, 0.5)\n')
    (rule,) = load([path]).rules
    p = prove(rule)
    assert not p.proved and ("sides differ" in p.reason or "limits" in p.reason)
    f = fuzz(rule, trials=10)
    assert f.instances == 10 and not f.failures


def test_proofs_say_when_limits_stopped_them(tmp_path):
    # Reassociating seven terms grows the e-graph fast; the sides never meet (the rule is false).
    path = rule_file(tmp_path, "rule big: add(add(add(add(add(add(a, b), c), d), e), f), g) => add(a, b)\n")
    (rule,) = load([path]).rules
    assert prove(rule, iterations=8, enodes=500).reason == "limits hit (e-nodes)"
    assert prove(rule, iterations=1).reason == "limits hit (iterations)"
    near = rule_file(tmp_path, "rule assoc: add(add(add(a, b), c), d) => add(d, add(c, add(b, a)))\n", "ok.rlx")
    p = prove(load([near]).rules[0])
    assert p.proved and {"add_assoc_ax", "add_comm_ax"} <= set(p.used)


def test_lint_flags_unused_variables_and_duplicates(tmp_path):
    path = rule_file(tmp_path, """
        rule a: add(x, y) => x
        rule b: add(x, y) => x
        rule c: add(x, _y) => x
        """)
    w = lint(load([path]))
    assert w["a"] == ["variable 'y' is bound and never used"]
    assert "duplicate of rule 'a'" in w["b"] and w["c"] == []


def test_rules_check_command(tmp_path, capsys):
    good = rule_file(tmp_path, "rule neg_neg: neg(neg(x)) => x\n", "good.rlx")
    assert main(["rules", "check", str(good), "--trials", "5"]) == 0
    out = capsys.readouterr().out
    assert "neg_neg" in out and "ok (5 instances" in out
    bad = rule_file(tmp_path, "rule relu_split: relu(add(a, b)) => add(relu(a), relu(b))\n", "bad.rlx")
    assert main(["rules", "check", str(bad), "--trials", "10"]) == 1
    assert "unsound relu_split" in capsys.readouterr().out
    broken = rule_file(tmp_path, "rule x: relu(a => a\n", "broken.rlx")
    assert main(["rules", "check", str(broken)]) == 2


def test_user_rule_directory_from_a_temporary_path(tmp_path):
    (tmp_path / "mine").mkdir()
    rule_file(tmp_path / "mine", """
        fused exp_scale(x, s) "exp(x) * s" { mul(exp(x), s) }
        rule exp_scale: mul(exp(x), s) => exp_scale(x, s) where rank(s) == 1
        """)
    assert_rules_sound(tmp_path / "mine")


def test_assert_equivalent_compares_graphs():
    g = rlx.models.mlp(layers=2, d_in=8, d_hidden=16)
    assert_equivalent(g, rlx.compile(g).graph, rtol=1e-5, atol=1e-5)
    other = rlx.models.mlp(layers=2, d_in=8, d_hidden=16, activation="relu")
    with pytest.raises(AssertionError):
        assert_equivalent(g, other)


def test_the_pytest_plugin_provides_fixtures(pytester):
    pytester.makepyfile("""
        def test_uses_fixtures(rlx_rules, rule_checker):
            assert any(r.name == "swiglu" for r in rlx_rules.rules)
            assert callable(rule_checker)
    """)
    result = pytester.runpytest()  # the entry point loads rlx.testing
    result.assert_outcomes(passed=1)
