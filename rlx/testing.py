"""Test helpers for rule engineers, and a pytest plugin (entry point ``rlx``).

    from rlx.testing import assert_rules_sound
    def test_my_rules():
        assert_rules_sound("my_rules/")

A rule is sound when fuzzing finds no counterexample on valid instances; a proof in the
e-graph is reported too but not required (some sound rules need arithmetic the axioms do not
have). A rule for which no valid instance can be drawn fails: it could never be checked.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rlx.ir.graph import Graph
from rlx.ir.interpret import interpret, random_arrays
from rlx.rules import RuleSet, load
from rlx.rules.ast import Rule
from rlx.verify import FuzzResult, Proof, fuzz, prove


def check_rule(rule: Rule, rules: RuleSet | None = None, trials: int = 20, seed: int = 0) -> tuple[Proof, FuzzResult]:
    return prove(rule, rules), fuzz(rule, trials=trials, seed=seed, rules=rules)


def assert_rule_sound(rule: Rule | str | Path, trials: int = 20, seed: int = 0, rules: RuleSet | None = None) -> None:
    """Fail with a counterexample if ``rule`` (a Rule from ``rules``, or a file with exactly
    one) is unsound."""
    if not isinstance(rule, Rule):
        rules = load([rule])
        if len(rules.rules) != 1:
            raise AssertionError(f"{rule}: expected one rule, found {len(rules.rules)} (use assert_rules_sound)")
        rule = rules.rules[0]
    result = fuzz(rule, trials=trials, seed=seed, rules=rules)
    if result.failures:
        raise AssertionError(f"rule {rule.name} ({rule.span}) is unsound: {result.failures[0]}")
    if not result.instances:
        raise AssertionError(f"rule {rule.name} ({rule.span}): {result.note}")


def assert_rules_sound(paths: str | Path | list, trials: int = 20, seed: int = 0) -> None:
    """Every rule of the given files or directories is sound (see assert_rule_sound)."""
    rs = load(paths if isinstance(paths, list) else [paths])
    problems = []
    for rule in rs.rules:
        try:
            assert_rule_sound(rule, trials, seed, rs)
        except AssertionError as e:
            problems.append(str(e))
    if problems:
        raise AssertionError("\n".join(problems))


def assert_equivalent(a: Graph, b: Graph, binding: Mapping[str, int] | None = None, seed: int = 0,
                      rtol: float = 1e-6, atol: float = 1e-6) -> None:
    """Two graphs with the same inputs, params and output names compute the same values."""
    arrays = random_arrays(a, binding or {}, seed=seed)
    ins = {n.name: arrays[n.name] for n in a.inputs}
    ps = {n.name: arrays[n.name] for n in a.params}
    want, got = interpret(a, ins, ps), interpret(b, ins, ps)
    if want.keys() != got.keys():
        raise AssertionError(f"outputs differ: {sorted(want)} vs {sorted(got)}")
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=atol, err_msg=f"output {k}")


# ---------------------------------------------------------------------------- pytest plugin
@pytest.fixture
def rlx_rules() -> RuleSet:
    """The shipped rules, loaded once per test."""
    return load()


@pytest.fixture
def rule_checker():
    """``rule_checker(path_or_rule)`` asserts soundness (a fixture form of assert_rule_sound)."""
    return assert_rule_sound


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "rlx_rules: tests that check rlx rule files")
