"""The dispatch report (rlx.dispatch): per op kind, native kernel, generated from a
skeleton, legalized, or its definition, as the executor itself decides, on cpu and on
vulkan-basic; in `rlx compile --report` and its JSON."""
from __future__ import annotations

import json

import pytest

import rlx
from rlx.cli import main
from rlx.dispatch import dispatch_report
from rlx.exec import vulkan_exec
from rlx.rules import load

RULES = load()


def program() -> rlx.Graph:
    """A fused op with a NumPy kernel (rotary_half), fused ops the kernel layer generates
    (swiglu, matmul_residual), a composite op with a Vulkan shader (rotary), rms_norm."""
    with RULES.active():
        g = rlx.Graph("dispatch")
        x, c, s = g.input("x", (1, 2, 8, 16)), g.input("c", (1, 1, 8, 16)), g.input("s", (8, 16))
        rh = g.op("rotary_half", x, c, s, half=[8], end=[16], dim=[-1])
        cos, sin = g.input("cos", (8, 8)), g.input("sin", (8, 8))
        ro = g.op("rotary", x, cos, sin)
        a, res = g.input("a", (8, 16)), g.input("res", (8, 32))
        sw = g.swiglu(a, g.param("wg", (16, 32)), g.param("wu", (16, 32)), act="silu")
        mr = g.matmul_residual(a, g.param("w", (16, 32)), res)
        rn = g.rms_norm(a, g.param("wn", (16,)))
        g.output(rh=rh, ro=ro, sw=sw, mr=mr, rn=rn)
    return g


def how(report: dict, op: str) -> str:
    return report["ops"][op]["how"]


def test_cpu():
    result = rlx.compile(program(), target="cpu", rules=RULES)
    d = dispatch_report(result)
    assert d["status"] == "asked the executor" and d["executor"] == "numpy"
    assert how(d, "rotary_half") == "native"                       # a fused op with a hand-written kernel
    assert how(d, "swiglu") == "generated" and d["ops"]["swiglu"]["detail"] == "GEMM + epilogue"
    assert how(d, "rms_norm") == "generated"
    assert how(d, "matmul_residual") == "legalized"                # cpu does not claim it
    assert d["ops"]["matmul_residual"]["in_input"] == 1 and "matmul_residual" not in result.report.ops_after
    assert result.report.dispatch is d and "dispatch" in json.loads(result.report.to_json())
    assert "dispatch on executor numpy" in str(result.report)


@pytest.mark.skipif(vulkan_exec.VulkanExecutor().available() is not None, reason="no Vulkan device")
def test_vulkan_basic():
    result = rlx.compile(program(), target="vulkan-basic", rules=RULES)
    d = dispatch_report(result)
    assert d["executor"] == "vulkan" and d["status"] == "asked the executor"
    assert how(d, "rotary") == "native"                            # a shader of its own
    assert how(d, "matmul_residual") == "generated"
    assert d["ops"]["matmul_residual"]["detail"] == "GEMM + epilogue"
    assert how(d, "swiglu") == "legalized" and how(d, "rms_norm") == "legalized"   # excluded by vulkan-basic


def test_without_the_device(monkeypatch):
    """An executor that cannot run here says so, and still names the skeleton that fits."""
    from rlx.exec import base

    def unavailable(name):
        raise base.ExecutorError(f"executor {name!r} is not available on this machine: test")
    monkeypatch.setattr("rlx.dispatch.get_executor", unavailable)
    d = dispatch_report(rlx.compile(program(), target="cpu", rules=RULES))
    assert d["status"].startswith("needs the device")
    assert d["ops"]["swiglu"]["how"] == "needs the device" and d["ops"]["swiglu"]["detail"] == "GEMM + epilogue"
    assert how(d, "matmul_residual") == "legalized"


def test_cli_compile_report(tmp_path, capsys):
    model = tmp_path / "m.json"
    model.write_text(program().to_json())
    out = tmp_path / "r.json"
    assert main(["compile", str(model), "--report", "--json", str(out)]) == 0
    assert "dispatch on executor numpy" in capsys.readouterr().out
    assert json.loads(out.read_text())["dispatch"]["ops"]["rotary_half"]["how"] == "native"
