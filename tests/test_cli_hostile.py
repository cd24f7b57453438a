"""The command line on hostile input: user text printed as written (never as rich markup),
DOT that names cannot break, no e-graph directories left behind, flags checked, ONNX
Runtime failures and non-finite results handled, and a fuzz of `rlx compile FILE`. Bad input
exits 2 with one line. Each test failed before the fix it pins."""
import contextlib
import io
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import rlx
from rlx.cli import main
from rlx.dot import to_dot
from rlx.ir import Graph
from rlx.rules import load

from test_mir_hostile import BASES, MUTATION, mutate


def error_line(out: str) -> str:
    """The one error line a failed command prints (and nothing like a traceback)."""
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    return errors[0]


@pytest.fixture
def mlp(tmp_path):
    path = tmp_path / "mlp.json"
    path.write_text(rlx.models.mlp(layers=1, d_in=4, d_hidden=8, batch="B").to_json())
    return path


# ---------------------------------------------------------------------------- no markup
def test_paths_with_markup_are_printed_as_written(tmp_path, mlp, capsys):
    odd = tmp_path / "a[" / "]b :thumbs_up: [bold]x.json"  # the path holds "[/]"
    odd.parent.mkdir()
    odd.write_text(mlp.read_text())
    rep = tmp_path / "[red]r :x: [bold].json"
    assert main(["compile", str(odd), "--json", str(rep)]) == 0
    out = capsys.readouterr().out
    assert str(odd) in out and f"wrote {rep}" in out
    assert main(["run", str(odd)]) == 0


def test_error_messages_echo_user_text_as_written(tmp_path, mlp, capsys):
    d = json.loads(mlp.read_text())
    d["nodes"][-1]["inputs"] = ["[/]", "[red]gone[/red]"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    assert main(["compile", str(bad)]) == 2
    assert "input '[/]' is not defined" in error_line(capsys.readouterr().out)
    rules = tmp_path / "r.rlx"
    rules.write_text("[bold]oops[/] this is no rule\n")
    assert main(["compile", str(mlp), "--rules", str(rules)]) == 2
    out = capsys.readouterr().out
    assert "syntax error" in error_line(out) and "[bold]oops[/] this is no rule" in out


def test_output_names_with_markup_are_printed_as_written(tmp_path, capsys):
    g = Graph("g")
    x = g.input("x", (2, 4), "f32")
    g.output(**{"[/]": g.relu(x), "[bold]y[/]": g.exp(x)})
    path = tmp_path / "g.json"
    path.write_text(g.to_json())
    assert main(["run", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert "output [/]:" in out and "output [bold]y[/]:" in out
    assert main(["run", str(path)]) == 0
    assert "  [bold]y[/]: float32[2, 4]" in capsys.readouterr().out


# ---------------------------------------------------------------------------- DOT
HOSTILE = ['a"b', 'x"] [color=red] [label="pwned', "back\\slash\\", "new\nline", "end]", "\\N \\G", "}"]
QUOTED = r'"((?:[^"\\\n]|\\.)*)"'


def _unquote(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), s)


def test_dot_escapes_names():
    g = Graph('gr"aph\\')
    v = g.input(HOSTILE[0], (2,), "f32")
    for name in HOSTILE[1:]:
        v = g.relu(v, name=name)
    g.output(**{'out"put\n': v})
    text = to_dot(g)
    assert text.startswith(r'digraph "gr\"aph\\" {')
    node = re.compile(rf"^  n\d+ \[label={QUOTED}, fillcolor=\"#[0-9a-f]{{6}}\", tooltip={QUOTED}\];$")
    tips = []
    for line in text.splitlines():
        if re.match(r"  n\d+ \[", line):
            m = node.match(line)
            assert m, line  # one statement per line: nothing ended a string early
            tips.append(_unquote(m.group(2)))
    assert tips == HOSTILE
    out = re.search(rf"out0 \[label={QUOTED}, shape=oval", text)
    assert _unquote(out.group(1)) == 'output out"put\n'


def test_dot_of_a_region_keeps_its_body_readable():
    from rlx.ir.expr import arg
    g = Graph("r")
    x = g.input("x", (2,), "f32")
    g.output(g.region(x, x, body=(arg(0).exp() * arg(1) + 1.0).tanh()))
    assert "tanh" in to_dot(g) and '\\"' not in to_dot(g)


# ---------------------------------------------------------------------------- e-graph directories
def _egraph_dirs() -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob("rlx-egraph-*"))


def test_compiles_and_proofs_leave_no_egraph_directories(tmp_path, monkeypatch, mlp, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    rules = load()
    rlx.compile(rlx.models.mlp(layers=1, d_in=4, d_hidden=8), rules=rules)
    assert main(["compile", str(mlp)]) == 0
    from rlx.verify import prove
    prove(next(r for r in rules.rules if r.name.startswith("matmul_bias_act")), rules)
    assert _egraph_dirs() == []

    def fails(*args, **kw):
        raise rlx.RlxError("saturation failed")
    monkeypatch.setattr("rlx.pipeline.load_graph", fails)
    with pytest.raises(rlx.RlxError, match="saturation failed"):
        rlx.compile(rlx.models.mlp(layers=1, d_in=4, d_hidden=8), rules=rules)
    assert _egraph_dirs() == []


# ---------------------------------------------------------------------------- flags
@pytest.mark.parametrize("args,match", [
    (["demo", "--heads", "0"], "--heads must be a positive integer, got 0"),
    (["demo", "--d-model", "32", "--heads", "3"], "--heads 3 does not divide --d-model 32"),
    (["demo", "--seq", "0"], "--seq must be a positive integer, got 0"),
    (["demo", "--layers", "-1"], "--layers must be a positive integer, got -1"),
    (["demo", "--seed", "-1"], "--seed must be a non-negative integer"),
    (["model", "llama", "--layers", "-1"], "--layers must be a positive integer, got -1"),
    (["model", "llama", "--layers", "0"], "--layers must be a positive integer, got 0"),
    (["model", "llama", "--d-model", "0"], "--d-model must be a positive integer, got 0"),
    (["model", "llama", "--heads", "0"], "--heads must be a positive integer, got 0"),
    (["model", "llama", "--heads", "5"], "--heads 5 does not divide --d-model 256"),
    (["model", "llama", "--seq", "0"], "--seq must be a positive integer, got 0"),
    (["model", "llama", "--seq", "-3"], "--seq must be a positive integer, got -3"),
    (["model", "llama", "--seq", "3.5"], "--seq expects a positive integer or a symbol name"),
    (["model", "bert", "--batch", "0"], "--batch must be a positive integer, got 0"),
    (["model", "mlp", "--d-model", "8"], "mlp takes --layers and --batch only"),
    (["rules", "check", "--trials", "0"], "--trials must be a positive integer"),
])
def test_bad_sizes_on_the_command_line_exit_2_naming_the_flag(args, match, tmp_path, capsys):
    if args[0] == "model":
        args = args + ["--out", str(tmp_path / "m.json")]
    assert main(args) == 2
    assert match in error_line(capsys.readouterr().out)
    assert not (tmp_path / "m.json").exists()


def test_bad_bindings_exit_2(mlp, capsys):
    for bind in ("B=0", "B=-2", "B=x", "=3", "B", "B=²"):
        assert main(["run", str(mlp), "--bind", bind]) == 2
        assert f"--bind expects SYMBOL=SIZE with a positive SIZE, got {bind!r}" in error_line(capsys.readouterr().out)


def test_a_file_that_is_not_text_exits_2(tmp_path, capsys):
    path = tmp_path / "m.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert main(["compile", str(path)]) == 2
    assert "not UTF-8 text" in error_line(capsys.readouterr().out)


# ---------------------------------------------------------------------------- --check
def _relu_onnx(path: Path, ir_version: int) -> Path:
    import onnx
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = ir_version
    onnx.save(model, str(path))
    return path


def test_check_when_onnxruntime_cannot_load_the_model_exits_2(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    assert main(["run", str(_relu_onnx(tmp_path / "ok.onnx", 8)), "--check"]) == 0
    capsys.readouterr()
    path = _relu_onnx(tmp_path / "m.onnx", 99)  # rlx reads it; ONNX Runtime refuses the IR version
    assert main(["run", str(path), "--check"]) == 2
    line = error_line(capsys.readouterr().out)
    assert "ONNX Runtime cannot run the model" in line and "IR version" in line


def test_check_with_nan_and_inf_in_the_reference(tmp_path, capsys):
    g = Graph("nonfinite")
    x = g.input("x", ("B", 4), "f32")
    g.output(logs=g.log(x), ratio=g.div(x, g.constant([0.0, 1.0, 2.0, 3.0])))  # NaN where x < 0; inf / 0
    path = tmp_path / "nf.json"
    path.write_text(g.to_json())
    assert main(["run", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    tolerances = [float(t) for t in re.findall(r"tolerance ([^)]+)\)", out)]
    assert len(tolerances) == 2 and all(np.isfinite(tolerances)) and out.count(" ok") == 2


# ---------------------------------------------------------------------------- fuzz
SMALL = [i for i, d in enumerate(BASES) if len(d["nodes"]) < 20]


@settings(max_examples=settings().max_examples * 2)  # 80; 800 with RLX_HYPOTHESIS_PROFILE=thorough
@given(st.sampled_from(SMALL + SMALL + [0]), st.lists(MUTATION, min_size=1, max_size=3), st.booleans())
def test_fuzz_compile_file_exits_0_or_2(base, mutations, strip):
    path = Path(tempfile.mkdtemp(prefix="rlx-fuzz-")) / "m.json"
    path.write_text(mutate(BASES[base], mutations, strip))
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(["compile", str(path)])
    assert code in (0, 2), out.getvalue()
    if code == 2:
        error_line(out.getvalue())
    assert time.perf_counter() - t < 20
    path.unlink()
    path.parent.rmdir()
