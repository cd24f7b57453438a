"""The NumPy executor: compiled programs run and match the reference; buffers are reused."""
import numpy as np
import pytest

import rlx
from rlx.exec.base import overrides
from rlx.exec.cupy_exec import CupyExecutor
from rlx.ir import interpret, random_arrays
from rlx.pipeline import ValidationError
from rlx.rules import load

RULES = load()
F32 = dict(rtol=1e-4, atol=1e-4)  # f32 execution against the float64 reference


@pytest.mark.parametrize("build,binding", [
    (lambda: rlx.models.mlp(layers=3, d_in=32, d_hidden=64, batch="B"), {"B": 5}),
    (lambda: rlx.models.mlp(layers=2, d_in=16, d_hidden=32, activation="relu"), {}),
    (lambda: rlx.models.llama(layers=2, d_model=64, n_heads=4, seq="S", batch="B"), {"B": 2, "S": 12}),
    (lambda: rlx.models.llama(layers=1, d_model=32, n_heads=2, seq=8, vocab=50), {}),
    (lambda: rlx.models.bert(layers=2, d_model=64, n_heads=4, seq=16), {}),
    (lambda: rlx.models.bert(layers=1, d_model=32, n_heads=2, seq=8, vocab=30, policy="direct"), {}),
])
@pytest.mark.parametrize("target", ["cpu", "vulkan-basic"])
def test_every_model_builder_runs_and_matches_the_reference(build, binding, target):
    g = build()
    r = rlx.compile(g, target=target, rules=RULES)
    r.executor = "numpy"  # vulkan-basic programs run here on NumPy to check what legalization made
    a = random_arrays(g, binding, seed=11)
    ins, ps = {n.name: a[n.name] for n in g.inputs}, {n.name: a[n.name] for n in g.params}
    want = interpret(g, ins, ps)
    got = r.run(ins, ps)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], **F32)


def test_a_second_run_reuses_the_arena_and_params():
    g = rlx.models.llama(layers=2, d_model=64, n_heads=4, seq=16)
    r = rlx.compile(g, rules=RULES)
    a = random_arrays(g, seed=1)
    ins, ps = {n.name: a[n.name] for n in g.inputs}, {n.name: a[n.name] for n in g.params}
    first = r.run(ins, ps)
    ex = r.executor_for(ins)
    regions = {k: v.ctypes.data for k, v in ex.regions.items()}
    views = {k: v.ctypes.data for k, v in ex.arrays.items()}
    ins2 = {k: v * 0.5 for k, v in ins.items()}
    second = r.run(ins2)  # params stay bound
    assert r.executor_for(ins2) is ex
    assert {k: v.ctypes.data for k, v in ex.regions.items()} == regions
    assert {k: v.ctypes.data for k, v in ex.arrays.items()} == views
    want = interpret(g, ins2, ps)
    for k in want:
        np.testing.assert_allclose(second[k], want[k], **F32)
        assert not np.shares_memory(first[k], second[k])


def test_validate_checks_against_the_reference_and_names_the_broken_op(monkeypatch):
    g = rlx.models.llama(layers=1, d_model=32, n_heads=2, seq=8)
    rlx.compile(g, rules=RULES, validate=True)

    def broken(ins, outs, attrs):
        np.multiply(ins[0], 1.5, out=outs[0])
    monkeypatch.setitem(overrides("numpy"), "rms_norm", broken)
    with pytest.raises(ValidationError, match=r"validation failed at op rms_norm .*max error"):
        rlx.compile(g, rules=RULES, validate=True)


def test_run_errors_are_clear():
    g = rlx.models.mlp(layers=1, d_in=4, d_hidden=8, batch=2)
    r = rlx.compile(g, rules=RULES)
    with pytest.raises(rlx.RlxError, match="no params bound"):
        r.run({"x": np.ones((2, 4), np.float32)})
    ps = {n.name: np.ones(n.outputs[0].shape, np.float32) for n in g.params}
    with pytest.raises(rlx.RlxError, match="missing input 'x'"):
        r.run({}, ps)
    with pytest.raises(rlx.RlxError, match=r"input 'x': expected shape \(2, 4\), got \(3, 4\)"):
        r.run({"x": np.ones((3, 4), np.float32)})
    if CupyExecutor().available() is not None:  # on a machine without CuPy and a GPU
        cuda = rlx.compile(g, target="cuda", rules=RULES)
        with pytest.raises(rlx.RlxError, match="executor 'cupy' is not available"):
            cuda.run({"x": np.ones((2, 4), np.float32)}, ps)


def test_generated_region_code_is_shared_and_safe_in_place(monkeypatch):
    from rlx.exec import cc, numpy_print
    from rlx.exec.numpy_print import build
    from rlx.ir import TensorType
    from rlx.ir.expr import arg
    from rlx.kernels.lower import kernel_for
    body = arg(0).exp() * arg(1) + 1.0
    types = [TensorType((3, 4), rlx.DType.f32)] * 2
    x, y = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)

    def kernels():
        out = x.copy()
        k = build(kernel_for("region", types, {"body": body}), [out, y], [out])  # the output aliases an input
        k2 = build(kernel_for("region", types, {"body": body}), [x, y], [np.empty_like(x)])
        k3 = build(kernel_for("region", types, {"body": body}), [y, x], [np.empty_like(x)])
        k()
        np.testing.assert_allclose(out, np.exp(x) * y + 1.0, rtol=1e-6)
        return k, k2, k3
    with monkeypatch.context() as m:  # the NumPy printer's generated Python
        m.setenv("RLX_CC", "0")
        k, k2, k3 = kernels()
        assert "np.copyto(o0" in k.source and "np.copyto(o0" not in k2.source  # aliasing: the result is written last
        assert k2.calls[0][0] is k3.calls[0][0]  # one compiled function per source
    if cc.available() is None:  # the CPU printer's C++: in place, element for element, without restrict
        monkeypatch.setattr(numpy_print, "NATIVE_MIN", 0)  # compiled at any size
        k, k2, _ = kernels()
        assert "__restrict__" not in k.source and "__restrict__" in k2.source


def test_a_second_run_makes_no_large_allocations():
    import tracemalloc
    g = rlx.models.llama(layers=2, d_model=256, n_heads=4, seq=128)
    r = rlx.compile(g, rules=RULES)
    a = random_arrays(g, seed=0)
    ins = {n.name: a[n.name].astype(np.float32) for n in g.inputs}
    r.run(ins, {n.name: a[n.name].astype(np.float32) for n in g.params})
    arena = r.executor_for(ins).lir.arena_bytes
    tracemalloc.start()
    out = r.run(ins)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    returned = sum(v.nbytes for v in out.values())
    # what remains is the returned copies and NumPy's own small iteration buffers
    assert peak - returned < arena / 2, (peak, returned, arena)


def test_ops_that_depend_on_no_input_run_once_at_bind():
    """Constant folding: scaled weights and positions arange(S) are computed in the prologue
    (once per bind and specialization), into buffers beside the params; every run reads them."""
    from rlx.ir import Graph
    g = Graph("fold")
    x, w, b = g.input("x", ("S", 8)), g.param("w", (16, 8)), g.param("b", (16,))
    pos = g.reshape(g.op("arange", start=(0,), length=("S",), dtype="f32"), ("S", 1))
    g.output(y=g.matmul(x, g.transpose(g.op("mul", w, 2.0))) + b + pos)
    r = rlx.compile(g, rules=RULES)
    assert r.report.folded >= 3 and "folded" in str(r.report)
    rng = np.random.default_rng()
    ps = {"w": rng.standard_normal((16, 8)).astype(np.float32), "b": rng.standard_normal(16).astype(np.float32)}
    r.bind(ps)
    for s in (5, 3, 5):
        xv = rng.standard_normal((s, 8)).astype(np.float32)
        want = xv @ (2 * ps["w"]).T + ps["b"] + np.arange(s, dtype=np.float32)[:, None]
        np.testing.assert_allclose(r.run({"x": xv})["y"], want, **F32)
        program = r.executor_for({"x": xv})
        body = {step.op for step, _ in program.steps}
        assert "arange" not in body and not any(step.op == "region" and "w" in step.inputs for step, _ in program.steps)
        folded = [s for s in program.lir.steps if s.phase == "prologue" and s.op in ("arange", "region")]
        assert len(folded) == 2 and all(program.lir.buffers[program.lir.values[s.outputs[0]].buffer].region == "param"
                                         for s in folded)
