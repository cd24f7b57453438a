import json

import pytest

import rlx
from rlx.cli import main


def test_demo_runs_and_checks(capsys):
    assert main(["demo", "--layers", "1", "--d-model", "32", "--heads", "2", "--seq", "8"]) == 0
    out = capsys.readouterr().out
    assert "fused ops by kind" in out and "memory plan" in out and " ok" in out and "time (median)" in out


def test_ops_lists_the_registry(capsys):
    assert main(["ops"]) == 0
    assert "sdpa" in capsys.readouterr().out


def test_bad_arguments_exit_2():
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.json"
    assert main(["model", "llama", "--layers", "1", "--d-model", "32", "--heads", "2", "--seq", "8", "--out", str(path)]) == 0
    return path


def test_compile_writes_report_picture_and_every_stage(model, tmp_path, capsys):
    rep, dot, dump = tmp_path / "r.json", tmp_path / "g.dot", tmp_path / "dump"
    assert main(["compile", str(model), "--report", "--json", str(rep), "--dot", str(dot), "--dump", str(dump)]) == 0
    out = capsys.readouterr().out
    assert "fused" in out and "sdpa" in out
    assert json.loads(rep.read_text())["fused"]["sdpa"] == 1
    assert dot.read_text().startswith('digraph "llama1"') and "fillcolor" in dot.read_text()
    names = {p.name for p in dump.iterdir()}
    assert {"1-input.mir.json", "2-egraph.json", "4-optimized.mir.txt", "5-lir.json", "5-lir.txt"} <= names
    assert rlx.Graph.from_json((dump / "4-optimized.mir.json").read_text()).op_counts()["sdpa"] == 1


def test_user_rules_from_the_command_line(model, tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "x.rlx").write_text("ruleset fusion\nfused twice(x) { add(x, x) }\nrule twice: add(x, x) => twice(x)\n")
    assert main(["compile", str(model), "--rules", str(tmp_path / "r"), "--report"]) == 0
    assert "twice" in capsys.readouterr().out


def test_run_and_check_exit_codes(model, tmp_path, capsys):
    assert main(["run", str(model)]) == 0
    assert "mean" in capsys.readouterr().out
    assert main(["run", str(model), "--check", "--seed", "3"]) == 0
    assert " ok" in capsys.readouterr().out
    assert main(["run", str(tmp_path / "missing.json")]) == 2
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["compile", str(tmp_path / "bad.json")]) == 2
    assert main(["compile", str(model), "--target", "tpu"]) == 2
    out = capsys.readouterr().out
    assert "no such file" in out and "malformed MIR JSON" in out and "unknown target 'tpu'" in out
    assert "Traceback" not in out


def test_a_failed_check_exits_1(model, monkeypatch, capsys):
    import numpy as np

    from rlx.exec.base import overrides
    monkeypatch.setitem(overrides("numpy"), "sdpa", lambda ins, outs, attrs: np.copyto(outs[0], 0.0))
    assert main(["run", str(model), "--check"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
