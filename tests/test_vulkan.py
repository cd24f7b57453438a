"""The Vulkan executor on a real Vulkan device (lavapipe on CPU machines): every op the
Vulkan targets claim, every shipped fused op and every model builder match the float64
reference at their dtype's tolerance; users' fused ops run as one generated shader; a run
is one submission; what no shader covers runs on the host, said so."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import special

import rlx
from rlx.exec import vulkan_exec, wgsl_print
from rlx.exec.base import ExecutorError, check_claims
from rlx.ir import DType, Graph, interpret, random_arrays
from rlx.kernels.lower import kernel_for
from rlx.pipeline import TOLERANCE, max_error
from rlx.plan import plan
from rlx.rules import load
from rlx.extract.target import load_target
from test_kernels import _case, _dtypes, _ops, data
from user_ops import MODELS, write_rules

REASON = vulkan_exec.VulkanExecutor().available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no Vulkan device: {REASON}")

RULES = load()
SHADER = {"native", "generated", "view"}
# Ops with no shader: arange depends on nothing, so it is folded at bind (on the host).
HOST_OPS = {"arange"}
SHADER_DTYPES = {"f32", "f16", "i32", "bool"}


def run_on_vulkan(g: Graph, arrays: dict):
    ins = {n.name: arrays[n.name] for n in g.inputs}
    program = vulkan_exec.VulkanExecutor().prepare(plan(g, alignment=256), {})
    return program.run(ins), interpret(g, ins), program


def check(g: Graph, arrays: dict) -> object:
    got, want, program = run_on_vulkan(g, arrays)
    outputs = dict(g.outputs)
    for name, ref in want.items():
        dt = str(outputs[name].dtype)
        if dt in TOLERANCE:
            err, tol = max_error(got[name], ref, dt)
            assert err <= tol, (g.to_text(), name, err, tol, program.dispatch)
        else:
            np.testing.assert_array_equal(got[name], ref.astype(got[name].dtype), err_msg=g.to_text())
    return program


def _vulkan_dtypes(op: str) -> list[str]:
    """The dtypes the kernel tests use that shaders hold (bf16 runs on the host)."""
    return [d for d in _dtypes(op) if d in SHADER_DTYPES]


# ---------------------------------------------------------------------------- every op
@pytest.mark.parametrize("op", _ops())
@settings(max_examples=3)
@given(seed=st.integers(0, 2**31 - 1), pick=st.integers(0, 10))
def test_every_claimed_op_matches_the_reference_on_vulkan(op, seed, pick):
    """Every op (the Vulkan targets claim them all) on random shapes: through a shader
    unless it is one of the host ops, or a value has a dtype WGSL lacks here."""
    dtypes = _vulkan_dtypes(op)
    rng = np.random.default_rng(seed)
    g, arrays = _case(op, rng, dtypes[pick % len(dtypes)])
    program = check(g, arrays)
    node = next(n for n in g.nodes if n.opdef.category != "source")
    values = [*node.inputs, *node.outputs]
    index = {"gather": node.inputs[1:], "gather_elements": node.inputs[1:], "gather_nd": node.inputs[1:],
             "argmax": node.outputs, "argmin": node.outputs}.get(op, [])  # i64 indices: the i32 low word
    shader_types = all(str(v.dtype) in SHADER_DTYPES or any(v is i for i in index) for v in values)
    fits = kernel_for(op, [v.type for v in node.inputs], node.attrs) is not None
    kind = program.dispatch[node.name]
    native = op in vulkan_exec.NATIVE or op in vulkan_exec.SECOND and not fits
    if op not in HOST_OPS and shader_types and (fits or native):
        # a native shader where one is registered, else the skeleton; a view needs neither
        assert kind in (("native", "view") if native else ("generated",)), (op, program.dispatch, program.host_reasons)
    else:
        assert kind in ("reference", "definition"), (op, program.dispatch)
        step = next(s for s in program.lir.steps if s.node == node.name)
        assert step.phase == "prologue" or program.host_reasons[node.name]


def test_signed_integer_division_and_remainders_follow_the_reference():
    """Every sign combination (NVIDIA's Vulkan driver once gave an unsigned remainder)."""
    a = np.array([-17, 17, -17, 17, 7, -7, 0, -2147483647, 5, -5], np.int32)
    b = np.array([-13, -13, 13, 13, 3, 3, 5, -1, -5, 5], np.int32)
    g = Graph("intdiv")
    x, y = g.input("a", a.shape, "i32"), g.input("b", b.shape, "i32")
    g.output(**{op: g.op(op, x, y) for op in ("div", "mod", "fmod")})
    program = check(g, {"a": a, "b": b})
    assert set(program.dispatch.values()) <= SHADER, program.dispatch


RESIZES = [("nearest", "asymmetric", "floor", False), ("nearest", "half_pixel", "round_prefer_ceil", False),
           ("nearest", "tf_half_pixel_for_nn", "ceil", False), ("linear", "half_pixel", None, False),
           ("linear", "align_corners", None, False), ("linear", "pytorch_half_pixel", None, False),
           ("cubic", "half_pixel", None, False), ("cubic", "half_pixel_symmetric", None, True),
           ("cubic", "asymmetric", None, True)]


@pytest.mark.parametrize("mode,coords,nearest,exclude", RESIZES)
@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_resize_runs_as_one_shader_in_every_mode(mode, coords, nearest, exclude, dtype):
    """Up- and downsampling of two axes (one by scales, one by sizes), through the shader
    reading the reference's per-axis tables, against the float64 reference."""
    if dtype == "f16" and not vulkan_exec.context()["f16"]:
        pytest.skip("the adapter lacks shader-f16")
    g = Graph("resize")
    attrs = dict(mode=mode, coordinates=coords, exclude_outside=exclude)
    if nearest:
        attrs["nearest_mode"] = nearest
    y = g.op("resize", g.input("x", (2, 3, 7, 10), dtype), sizes=(2, 3, 12, 4), **attrs)
    z = g.op("resize", g.input("u", (1, 2, 5, 6), dtype), sizes=(1, 2, 9, 6), scales=(1.0, 1.0, 1.8, 1.0), **attrs)
    g.output(y=y, z=z)
    program = check(g, random_arrays(g, seed=len(mode + coords)))
    steps = [s for s in program.lir.steps if s.op == "resize"]
    assert len(steps) == 2 and all(program.dispatch[s.node] == "native" for s in steps), program.host_reasons


def test_an_integer_resize_runs_on_the_device_when_nearest_and_on_the_host_when_interpolating():
    g = Graph("iresize")
    g.output(y=g.op("resize", g.input("x", (1, 1, 4, 5), "i32"), sizes=(1, 1, 7, 3), mode="nearest"),
             z=g.op("resize", g.input("u", (1, 1, 4, 5), "i32"), sizes=(1, 1, 7, 3), mode="linear"))
    a = {"x": np.arange(20, dtype=np.int32).reshape(1, 1, 4, 5), "u": np.arange(20, dtype=np.int32).reshape(1, 1, 4, 5)}
    program = check(g, a)
    kinds = {s.node: program.dispatch[s.node] for s in program.lir.steps if s.op == "resize"}
    assert sorted(kinds.values()) == ["native", "reference"], kinds
    assert any("interpolation" in r for r in program.host_reasons.values()), program.host_reasons


def test_the_vulkan_targets_claim_what_the_executor_runs(monkeypatch):
    full, basic = (load_target(t).resolve_claims() for t in ("vulkan", "vulkan-basic"))
    for t in (full, basic):
        check_claims(t.executor, t.cost.claimed)
    assert basic.cost.claimed < full.cost.claimed
    # a primitive the printer lacks is a claim the executor cannot honour
    monkeypatch.setattr(wgsl_print, "printable", lambda: {"add"})
    with pytest.raises(ExecutorError, match="executor 'vulkan' cannot run"):
        check_claims("vulkan", frozenset({"add", "erf"}))


def _erf_graph(n: int) -> Graph:
    g = Graph("erf")
    g.output(y=g.op("erf", g.input("x", (n,), "f32")))
    return g


def test_erf_is_accurate_to_f32_tolerance():
    """WGSL has no erf: the printer's approximation against SciPy's over a dense grid."""
    # (more elements than one sweep of workgroups covers: invocations loop, the last partly)
    x = np.concatenate([np.linspace(-6, 6, 600001), [-np.inf, np.inf, 0.0, -0.0]]).astype(np.float32)
    g = _erf_graph(x.size)
    got, _, _ = run_on_vulkan(g, {"x": x})
    want = special.erf(x.astype(np.float64))
    assert np.max(np.abs(got["y"] - want)) <= 1e-6
    tiny = np.geomspace(1e-30, 0.5, 1001).astype(np.float32)  # relative accuracy near zero
    near = run_on_vulkan(_erf_graph(tiny.size), {"x": tiny})[0]["y"]
    assert np.max(np.abs(near / special.erf(tiny.astype(np.float64)) - 1)) <= 1e-6
    assert np.isnan(run_on_vulkan(g, {"x": np.full(x.shape, np.nan, np.float32)})[0]["y"]).all()


# ---------------------------------------------------------------------------- models
MODEL_CASES = [
    (lambda: rlx.models.mlp(layers=3, d_in=32, d_hidden=64, batch="B"), {"B": 5}),
    (lambda: rlx.models.mlp(layers=2, d_in=16, d_hidden=32, activation="relu"), {}),
    (lambda: rlx.models.llama(layers=2, d_model=64, n_heads=4, seq="S", batch="B"), {"B": 2, "S": 12}),
    (lambda: rlx.models.llama(layers=1, d_model=32, n_heads=2, seq=8, vocab=50), {}),
    (lambda: rlx.models.bert(layers=2, d_model=64, n_heads=4, seq=16), {}),
    (lambda: rlx.models.bert(layers=1, d_model=32, n_heads=2, seq=8, vocab=30, policy="direct"), {}),
]


@pytest.mark.parametrize("case", range(len(MODEL_CASES)))
@pytest.mark.parametrize("target", ["vulkan", "vulkan-basic"])
def test_every_model_builder_runs_on_vulkan_and_matches_the_reference(case, target):
    build, binding = MODEL_CASES[case]
    g = build()
    r = rlx.compile(g, target=target, rules=RULES)
    assert r.executor == "vulkan"
    a = random_arrays(g, binding, seed=11)
    ins, ps = {n.name: a[n.name] for n in g.inputs}, {n.name: a[n.name] for n in g.params}
    want, got = interpret(g, ins, ps), r.run(ins, ps)
    assert got.keys() == want.keys()
    for k in want:
        err, tol = max_error(got[k], want[k], "f32")
        assert err <= tol, (k, err, tol)
    program = r.executor_for(ins)
    assert set(program.dispatch.values()) <= SHADER, program.host_reasons
    ops = dict(r.graph.op_counts())
    if target == "vulkan-basic":  # legalized: what it does not claim is gone
        assert not {"sdpa", "swiglu", "rms_norm", "layer_norm", "add_rms_norm"} & set(ops), ops


def test_a_model_in_f16_runs_where_the_adapter_has_shader_f16():
    g = rlx.models.llama(layers=1, d_model=32, n_heads=2, seq=8, dtype="f16")
    r = rlx.compile(g, target="vulkan", rules=RULES)
    a = random_arrays(g, seed=5)
    ins, ps = {n.name: a[n.name] for n in g.inputs}, {n.name: a[n.name] for n in g.params}
    if not vulkan_exec.context()["f16"]:
        with pytest.raises(rlx.RlxError, match="lacks shader-f16"):
            r.run(ins, ps)
        return
    want, got = interpret(g, ins, ps), r.run(ins, ps)
    for k in want:
        err, tol = max_error(got[k], want[k], "f16")
        assert err <= tol, (k, err, tol)


def test_f16_without_shader_f16_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(vulkan_exec.context(), "f16", False)
    g = Graph("half")
    g.output(y=g.op("exp", g.input("x", (4,), "f16")))
    with pytest.raises(ExecutorError, match="lacks shader-f16"):
        vulkan_exec.VulkanExecutor().prepare(plan(g, alignment=256), {})


# ---------------------------------------------------------------------------- the runtime
class _CountingQueue:
    def __init__(self, queue) -> None:
        self.queue, self.submits = queue, 0

    def submit(self, buffers) -> None:
        self.submits += 1
        self.queue.submit(buffers)

    def __getattr__(self, name):
        return getattr(self.queue, name)


class _Device:
    def __init__(self, device) -> None:
        self.device, self.queue = device, _CountingQueue(device.queue)

    def __getattr__(self, name):
        return getattr(self.device, name)


def _count_submits(program) -> _CountingQueue:
    device = _Device(program.ctx["device"])
    program.ctx = {**program.ctx, "device": device}
    return device.queue


def test_a_run_is_one_submission_params_stay_bound_and_layers_share_pipelines():
    g = rlx.models.llama(layers=2, d_model=64, n_heads=4, seq=16)
    r = rlx.compile(g, target="vulkan", rules=RULES)
    a = random_arrays(g, seed=1)
    ins, ps = {n.name: a[n.name] for n in g.inputs}, {n.name: a[n.name] for n in g.params}
    r.run(ins, ps)
    program = r.executor_for(ins)
    buffers = dict(program.buffers)
    queue = _count_submits(program)
    ins2 = {k: v * 0.5 for k, v in ins.items()}
    second = r.run(ins2)  # params stay bound on the device
    assert queue.submits == 1
    assert program.buffers == buffers
    want = interpret(g, ins2, ps)
    for k in want:
        err, tol = max_error(second[k], want[k], "f32")
        assert err <= tol
    # the second layer's steps reuse the first layer's shaders
    g4 = rlx.models.llama(layers=4, d_model=64, n_heads=4, seq=16)
    a4 = random_arrays(g4, seed=1)
    deeper = rlx.compile(g4, target="vulkan", rules=RULES)
    deeper.run({n.name: a4[n.name] for n in g4.inputs}, {n.name: a4[n.name] for n in g4.params})
    p4 = deeper.executor_for({n.name: a4[n.name] for n in g4.inputs})
    # (a middle layer may differ from the first only in reading the arena, not the input)
    assert len(set(p4.sources.values())) <= len(set(program.sources.values())) + 1
    assert len(set(p4.sources.values())) * 2 < len(p4.sources)


@pytest.mark.parametrize("timestamps", [True, False])
def test_read_and_profile_go_through_the_device(timestamps, monkeypatch):
    """profile times each step with timestamp queries in one submission where the adapter
    has them (lavapipe does), else one waited submission per step."""
    if timestamps and not vulkan_exec.context().get("timestamps"):
        pytest.skip("the adapter has no timestamp queries")
    monkeypatch.setitem(vulkan_exec.context(), "timestamps", timestamps)
    g = rlx.models.mlp(layers=2, d_in=16, d_hidden=32)
    r = rlx.compile(g, target="vulkan", rules=RULES)
    a = random_arrays(g, seed=2)
    ins, ps = {n.name: a[n.name] for n in g.inputs}, {n.name: a[n.name] for n in g.params}
    out = r.run(ins, ps)
    program = r.executor_for(ins)
    queue = _count_submits(program)
    timings = program.profile(ins)
    assert queue.submits == (1 if timestamps else len(timings) + 1)
    assert [t.node for t in timings] == [s.node for s in program.lir.steps if s.phase == "body" and not s.view]
    assert all(t.seconds >= 0 and t.dispatch in SHADER for t in timings) and sum(t.seconds for t in timings) > 0
    (name,) = out
    last = next(s for s in program.lir.steps if s.phase == "epilogue").inputs[0]
    np.testing.assert_array_equal(program.read(last), out[name])


def test_what_no_shader_covers_runs_on_the_host_and_says_so():
    """gather_elements of indices computed on the device: only the host checks their range."""
    rng = np.random.default_rng(0)
    g = Graph("computed_indices")
    x, i = g.input("x", (3, 7), "f32"), g.input("i", (3, 5), "i32")
    g.output(y=g.op("relu", g.op("gather_elements", g.op("exp", x), g.op("neg", i), axis=1)))
    arrays = {"x": data(rng, (3, 7), "f32"), "i": rng.integers(-6, 7, size=(3, 5)).astype(np.int32)}
    program = check(g, arrays)
    host = next(n for n in g.nodes if n.op == "gather_elements")
    assert program.dispatch[host.name] == "reference" and "computed on the device" in program.host_reasons[host.name]
    queue = _count_submits(program)
    program.run(arrays)
    assert queue.submits == 2  # the host step splits the run


def test_gathers_of_input_indices_are_shaders_and_check_their_range():
    rng = np.random.default_rng(3)
    g = Graph("gathers")
    x, i, j = g.input("x", (4, 6, 5), "f32"), g.input("i", (4, 6, 3), "i64"), g.input("j", (2, 2), "i64")
    g.output(a=g.op("gather_elements", x, i, axis=-1), b=g.op("gather_nd", x, j))
    arrays = {"x": data(rng, (4, 6, 5), "f32"), "i": rng.integers(-5, 5, size=(4, 6, 3)),
              "j": np.stack([rng.integers(-4, 4, size=2), rng.integers(-6, 6, size=2)], axis=1)}
    program = check(g, arrays)
    assert set(program.dispatch.values()) == {"native"}
    bad = dict(arrays, i=np.full((4, 6, 3), 5))
    with pytest.raises(rlx.RlxError, match="gather_elements .* out of range"):
        program.run(bad)


@pytest.mark.parametrize("dtype", ["i32", "i64"])
def test_gather_reads_i32_and_i64_indices(dtype):
    rng = np.random.default_rng(2)
    g = Graph("embed")
    g.output(y=g.gather(g.input("t", (11, 6), "f32"), g.input("i", (2, 5), dtype)))
    arrays = {"t": data(rng, (11, 6), "f32"), "i": rng.integers(-11, 11, size=(2, 5)).astype(DType(dtype).np)}
    program = check(g, arrays)
    assert set(program.dispatch.values()) == {"native"}


def test_a_convolution_with_its_epilogue_is_one_shader():
    rng = np.random.default_rng(1)
    g = Graph("conv_relu")
    x, w, b = g.input("x", (2, 4, 9, 7), "f32"), g.input("w", (6, 2, 3, 2), "f32"), g.input("b", (6,), "f32")
    g.output(y=g.op("relu", g.op("conv", x, w, b, strides=(2, 1), pads=(1, 0, 1, 1), dilations=(1, 2), group=2)))
    arrays = {"x": data(rng, (2, 4, 9, 7), "f32"), "w": data(rng, (6, 2, 3, 2), "f32"), "b": data(rng, (6,), "f32")}
    check(g, arrays)
    r = rlx.compile(g, target="vulkan", rules=RULES)
    got, want = r.run(arrays), interpret(g, arrays)
    err, tol = max_error(got["y"], want["y"], "f32")
    assert err <= tol
    program = r.executor_for(arrays)
    body = [s for s in program.lir.steps if s.phase == "body"]
    assert len(body) == 1 and program.dispatch[body[0].node] == "generated", r.graph.op_counts()


@pytest.mark.parametrize("schedule", ["tiled", "registers"])
def test_attention_zeroes_fully_masked_rows_as_its_definition_says(schedule, monkeypatch):
    """Both attention schedules (a workgroup per query row, or an invocation per row)."""
    monkeypatch.setitem(vulkan_exec.context(), "schedule", schedule)
    rng = np.random.default_rng(4)
    b, h, s, sk, d = 2, 3, 5, 70, 8  # more keys than a workgroup: the online softmax merges blocks
    g = Graph("nan_zero")
    q, k, v = (g.input(n, (b, h, x, d), "f32") for n, x in (("q", s), ("k", sk), ("v", sk)))
    m = g.input("m", (b, 1, s, sk), "f32")
    g.output(y=g.op("sdpa_nan_zero", q, k, v, m, scale=0.3))
    arrays = {n: data(rng, (b, h, x, d), "f32") for n, x in (("q", s), ("k", sk), ("v", sk))}
    mask = np.where(rng.random((b, 1, s, sk)) < 0.3, -np.inf, 0.0)
    mask[0, 0, 1, :] = -np.inf
    arrays["m"] = mask.astype(np.float32)
    assert kernel_for("sdpa_nan_zero", [x.type for x in (q, k, v, m)], {"scale": 0.3}).kind == "attention"
    program = check(g, arrays)
    assert set(program.dispatch.values()) == {"generated"}
    out = program.run(arrays)["y"]
    assert np.all(out[0, :, 1, :] == 0) and np.isfinite(out).all()
    g = Graph("causal")  # causal, more keys than queries, a fully masked row gives NaN in plain sdpa
    q, k, v = (g.input(n, (2, x, d), "f32") for n, x in (("q", s), ("k", sk), ("v", sk)))
    m = g.input("m", (s, sk), "f32")
    g.output(y=g.sdpa(q, k, v, m, causal=True))
    arrays = {n: data(rng, (2, x, d), "f32") for n, x in (("q", s), ("k", sk), ("v", sk))}
    arrays["m"] = np.where(rng.random((s, sk)) < 0.2, -np.inf, 0.0).astype(np.float32)
    arrays["m"][:, 0] = 0.0  # every causal row sees key 0 ...
    arrays["m"][2, :] = -np.inf  # ... but row 2
    out = check(g, arrays).run(arrays)["y"]
    assert np.isnan(out[:, 2]).all() and np.isfinite(np.delete(out, 2, axis=1)).all()


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (65, 17, 130), (3, 200, 7)])
@pytest.mark.parametrize("schedule", ["tiled", "registers"])
def test_gemm_schedules_at_tile_edges(m, k, n, schedule, monkeypatch):
    """Both GEMM schedules (workgroup-memory tiles for GPUs, register blocks for CPU drivers)
    on sizes that are not multiples of the 64x64 tile or the depth step, batched too."""
    monkeypatch.setitem(vulkan_exec.context(), "schedule", schedule)
    rng = np.random.default_rng(m * k * n)
    g = Graph("mm")
    g.output(y=g.matmul_bias_act(g.input("x", (2, m, k), "f32"), g.input("w", (k, n), "f32"),
                                 g.input("b", (n,), "f32"), act="gelu"))
    check(g, {"x": data(rng, (2, m, k), "f32"), "w": data(rng, (k, n), "f32"), "b": data(rng, (n,), "f32")})
    g = Graph("bmm")  # a batched product with a broadcast left operand and a transposed right one
    a, bt = g.input("a", (1, 3, m, k), "f32"), g.input("bt", (2, 1, n, k), "f32")
    g.output(y=g.matmul(a, g.transpose(bt, (0, 1, 3, 2))))
    program = check(g, {"a": data(rng, (1, 3, m, k), "f32"), "bt": data(rng, (2, 1, n, k), "f32")})
    (source,) = program.sources.values()
    assert ("var<workgroup> As" in source) == (schedule == "tiled")


# ---------------------------------------------------------------------------- users' fused ops
@pytest.fixture(scope="module")
def user_rules(tmp_path_factory):
    return write_rules(tmp_path_factory.mktemp("user_rules"))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_user_fused_op_runs_as_one_generated_shader(name, user_rules):
    g = MODELS[name]()
    r = rlx.compile(g, target="vulkan", rules=[user_rules])
    assert dict(r.graph.op_counts()) == {name: 1}, r.graph.op_counts()
    arrays = random_arrays(g, seed=3)
    ins = {n.name: arrays[n.name] for n in g.inputs}
    ps = {n.name: arrays[n.name] for n in g.params}
    got, want = r.run(ins, ps), interpret(g, ins, ps)
    for k in want:
        err, tol = max_error(got[k], want[k], "f32")
        assert err <= tol, (k, err)
    program = r.executor_for(ins)
    body = [s for s in program.lir.steps if s.phase == "body" and not s.view]
    assert len(body) == 1 and program.dispatch[body[0].node] == "generated"
    assert len(program.segments) == 1 and len(program.segments[0]) == 1  # one dispatch


def test_no_vulkan_adapter_is_a_clear_error_naming_what_was_found(monkeypatch):
    class Fake:
        info = {"device": "SwiftShader Device", "backend_type": "OpenGL", "adapter_type": "CPU"}
    monkeypatch.setattr(vulkan_exec, "_enumerate", lambda: [Fake()])
    adapter, reason = vulkan_exec._find_adapter()
    assert adapter is None and "no Vulkan adapter" in reason and "SwiftShader Device (OpenGL)" in reason


def test_calibrate_measures_the_vulkan_shaders(tmp_path, capsys):
    from rlx.cli import main
    path = tmp_path / "my-vulkan.toml"
    assert main(["calibrate", "--target", "vulkan", "--out", str(path), "--quick"]) == 0
    t = load_target(path)
    assert t.executor == "vulkan" and t.name == "my-vulkan"
    assert t.cost.peak_flops["f32"] > 1e7 and t.cost.bandwidth > 1e7 and t.cost.launch_overhead > 0
    assert t.alignment == load_target("vulkan").alignment


def test_regions_larger_than_one_binding_are_split_across_buffers(monkeypatch):
    """An adapter binds at most max_storage_buffer_binding_size bytes at once (128 MiB on
    lavapipe, less than a 1B model's params): a region past it is several device buffers."""
    ctx = vulkan_exec.context()
    monkeypatch.setitem(ctx, "limits", {**dict(ctx["limits"]), "max-storage-buffer-binding-size": 64 * 1024})
    g = rlx.models.llama(layers=2, d_model=64, n_heads=4, seq=16)  # 100+ KiB of params
    r = rlx.compile(g, target="vulkan", rules=RULES)
    a = random_arrays(g, seed=8)
    ins, ps = {n.name: a[n.name] for n in g.inputs}, {n.name: a[n.name] for n in g.params}
    got, want = r.run(ins, ps), interpret(g, ins, ps)
    program = r.executor_for(ins)
    assert sum(1 for c in program.chunks if c.startswith("param")) > 1
    for k in want:
        err, tol = max_error(got[k], want[k], "f32")
        assert err <= tol
    too_big = Graph("big")
    too_big.output(y=too_big.op("exp", too_big.input("x", (128, 1024), "f32")))
    with pytest.raises(ExecutorError, match="exceeds what adapter"):
        vulkan_exec.VulkanExecutor().prepare(plan(too_big, alignment=256), {})


def test_threads_run_their_own_programs_on_one_device():
    """A compiled program runs from several threads at once (a program per thread, one
    device and pipeline cache between them)."""
    from concurrent.futures import ThreadPoolExecutor
    g = rlx.models.bert(layers=1, d_model=32, n_heads=2, seq=8)
    r = rlx.compile(g, target="vulkan", rules=RULES)
    a = random_arrays(g, seed=9)
    ps = {n.name: a[n.name] for n in g.params}
    r.bind(ps)
    feeds = [{n.name: a[n.name] * (1 + k) for n in g.inputs} for k in range(4)]

    def go(k):
        return [r.run(feeds[k]) for _ in range(3)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(go, range(4)))
    for k, runs in enumerate(results):
        want = interpret(g, feeds[k], ps)
        for out in runs:
            for name in want:
                err, tol = max_error(out[name], want[name], "f32")
                assert err <= tol


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_models_exported_from_pytorch_run_on_vulkan_and_match_onnxruntime(kind, tmp_path):
    """Imported ONNX (symbolic batch and sequence) compiled for vulkan: every body step a
    shader, outputs as ONNX Runtime's."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from onnx_models import export
    from rlx.frontends.onnx import load as load_onnx
    path = str(tmp_path / f"{kind}.onnx")
    export(kind, path, layers=1, seq=8)
    g = load_onnx(path)
    r = rlx.compile(g, target="vulkan", binding={"B": 2, "S": 8})
    rng = np.random.default_rng(0)
    feeds = {n.name: rng.standard_normal(tuple({"B": 2, "S": 8}.get(d, d) for d in n.outputs[0].shape))
             .astype(n.outputs[0].dtype.np) for n in g.inputs}
    got = r.run(feeds)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    for a, b in zip(got.values(), want):
        err, tol = max_error(a, b, "f32")
        assert err <= tol
    program = r.executor_for(feeds)
    assert not program.host_reasons
    body = {s.node for s in program.lir.steps if s.phase == "body"}
    assert {program.dispatch[n] for n in body} <= SHADER
