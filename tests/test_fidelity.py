"""Cost-model fidelity (rlx.extract.fidelity, `rlx calibrate --check`): the rank correlation
is computed right, a synthetic target's figures are recovered by the refit, and the CLI
runs on a tiny model on the cpu target."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

import rlx
from rlx.cli import main
from rlx.exec.base import StepTiming
from rlx.extract.fidelity import compare, measure, predict, rank, roofline, spearman
from rlx.extract.target import load_target


def test_rank_averages_ties():
    assert rank([10, 20, 20, 5]) == [2, 3.5, 3.5, 1]
    assert rank([7, 7, 7]) == [2, 2, 2]


def test_spearman_by_hand_with_ties():
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]; both means 2.5:
    # sum dx*dy = 2.25 + 0 + 0 + 2.25 = 4.5, sum dx^2 = 4.5, sum dy^2 = 5
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([1, 2, 3], [10, 200, 3000]) == pytest.approx(1.0)   # monotone, not linear
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))                  # a constant side


def test_spearman_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    x = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    y = [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4]
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


class FakeProgram:
    """An executor's program whose step times are a known function of the predictions."""

    def __init__(self, lir, seconds):
        self.lir, self.seconds, self.dispatch = lir, seconds, {}

    def run(self, inputs):
        return {}

    def profile(self, inputs):
        return [StepTiming(s.index, s.node, s.op, "view" if s.view else "generated", self.seconds(s.node))
                for s in self.lir.steps if s.phase == "body"]


@pytest.fixture(scope="module")
def compiled():
    # large enough that bandwidth, not launch overhead, prices the elementwise steps
    return rlx.compile(rlx.models.llama(layers=1, d_model=256, n_heads=4, seq=128), target="cpu")


def test_fake_executor_monotone_and_reversed(compiled):
    target = load_target("cpu")
    with compiled.ruleset.active():
        costs = predict(compiled.graph, target)
    up = compare(costs, measure(FakeProgram(compiled.lir, lambda n: 3 * costs[n].predicted), {}, 1), target)
    assert up.spearman == pytest.approx(1.0) and up.spearman_ops == pytest.approx(1.0)
    assert up.by_op["matmul"]["ratio"] == pytest.approx(3.0)
    curved = compare(costs, measure(FakeProgram(compiled.lir, lambda n: costs[n].predicted ** 0.5), {}, 1), target)
    assert curved.spearman == pytest.approx(1.0)   # ranks, not values
    assert len(up.steps) == sum(1 for s in compiled.lir.steps if s.phase == "body" and not s.view)
    down = compare(costs, measure(FakeProgram(compiled.lir, lambda n: 1 / costs[n].predicted), {}, 1), target)
    assert down.spearman == pytest.approx(-1.0)
    worst = down.worst(1)[0]
    assert abs(math.log(worst.ratio)) == max(abs(math.log(s.ratio)) for s in down.steps)


@pytest.mark.parametrize("shipped", [{}, {"sdpa": 0.8}, {"sdpa": 1.0}])
def test_refit_recovers_a_synthetic_target(compiled, shipped):
    """Measured = the cost model's own formula with other figures: the fit finds them,
    whatever the target file's own factors are."""
    target = load_target("cpu")
    target = replace(target, cost=replace(target.cost, efficiency=shipped))
    truth = replace(target.cost, launch_overhead=3 * target.cost.launch_overhead,
                    bandwidth=target.cost.bandwidth / 2, efficiency={"sdpa": 0.2})
    with compiled.ruleset.active():
        costs = predict(compiled.graph, target)
    program = FakeProgram(compiled.lir, lambda n: roofline(costs[n], truth) if costs[n].priced == "roofline"
                          else costs[n].predicted)
    f = compare(costs, measure(program, {}, 1), target)
    fitted, change = f.suggestions["fitted"], f.suggestions["change"]
    assert fitted["launch"] == pytest.approx(truth.launch_overhead, rel=0.05)
    assert fitted["bandwidth"] == pytest.approx(truth.bandwidth, rel=0.05)
    assert change["efficiency.sdpa"] == pytest.approx(0.2, rel=0.1)
    assert f.suggestions["after"]["median_abs_log10_error"] < 0.01


def test_cli_check_on_cpu(tmp_path, capsys):
    out = tmp_path / "fidelity.json"
    assert main(["calibrate", "--check", "--target", "cpu", "llama:layers=1,d_model=64,n_heads=2,seq=16",
                 "--repeats", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Spearman rank correlation" in text and "worst-predicted steps" in text
    d = json.loads(out.read_text())
    assert d["target"] == "cpu" and d["steps"] and -1 <= d["spearman"] <= 1


def test_cli_check_errors(capsys):
    assert main(["calibrate", "--check", "--target", "cpu", "gpt9:layers=1"]) == 2
    assert main(["calibrate", "--check", "--target", "cpu", "llama:depth=3"]) == 2
    assert main(["calibrate", "--check", "--target", "cpu"]) == 2
    assert main(["calibrate", "--target", "cpu"]) == 2   # neither --out nor --check
    assert "error" in capsys.readouterr().out
