import pytest

from rlx.cli import main


def test_demo_runs_and_checks(capsys):
    assert main(["demo", "--layers", "1", "--d-model", "32", "--heads", "2", "--seq", "8"]) == 0
    out = capsys.readouterr().out
    assert "equal" in out and "fused ops by kind" in out and "rms_norm" in out


def test_ops_lists_the_registry(capsys):
    assert main(["ops"]) == 0
    assert "sdpa" in capsys.readouterr().out


def test_bad_arguments_exit_2():
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
