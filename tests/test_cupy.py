"""The CuPy executor on an NVIDIA GPU: every op and fused op, every model builder and the
exported ONNX models compiled for ``cuda`` match the float64 reference; CUDA graph replay
gives the first run's outputs; a second process hits the kernel cache; symbolic sizes
re-specialize. Skipped, with the reason, where CuPy or a GPU is missing (CI).

Tolerances (relative to the reference's largest magnitude, ``rlx.pipeline.TOLERANCE``):
f32 1e-4 (exact f32 GEMMs), f32 with TF32 GEMMs 5e-3, f16 2e-2, bf16 6e-2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rlx
from rlx.errors import RlxError
from rlx.exec.base import get_executor
from rlx.exec.cupy_exec import CupyExecutor, CupyProgram
from rlx.ir import interpret, random_arrays
from rlx.pipeline import TOLERANCE, max_error
from rlx.plan import plan
from rlx.rules import load

REASON = CupyExecutor().available()


def gpu(test):
    """A test that runs on the GPU: marked, and skipped with the reason where there is none."""
    return pytest.mark.gpu(pytest.mark.skipif(REASON is not None, reason=f"needs CuPy and a GPU: {REASON}")(test))

RULES = load()
TF32_TOL = 5e-3
ROOT = Path(__file__).resolve().parents[1]


def _check(got: dict, want: dict, dtypes: dict, where: str, tf32: bool = False) -> None:
    assert got.keys() == want.keys(), where
    for name, ref in want.items():
        dt = dtypes[name]
        if dt in TOLERANCE:
            err, tol = max_error(got[name], ref, dt)
            if tf32 and dt == "f32":
                tol = max(tol, TF32_TOL * tol / TOLERANCE["f32"])
            assert err <= tol, (where, name, dt, err, tol)
        else:
            np.testing.assert_array_equal(got[name], ref.astype(got[name].dtype), err_msg=where)


# ---------------------------------------------------------------------------- every op
# seen on the lent H200 (cuBLAS 13) in 2 of 4 runs: capturing this 5x12x3 f16 GEMM (odd leading
# dimensions) invalidated the stream capture; the program then runs eagerly and graph_error says why
CAPTURE_XFAIL = {("matmul", "f16", 1)}


def _op_cases():
    from test_kernels import _dtypes, _ops
    out = []
    for op in _ops():
        for dt in _dtypes(op):
            for seed in ((1, 2) if dt == "f32" else (1,)):
                mark = [pytest.mark.xfail(strict=False, reason="intermittent: cuBLAS may invalidate the graph "
                                          "capture of a 5x12x3 f16 GEMM; the program falls back to eager runs")] \
                    if (op, dt, seed) in CAPTURE_XFAIL else []
                out.append(pytest.param(op, dt, seed, marks=mark))
    return out


@gpu
@pytest.mark.parametrize("op,dtype,seed", _op_cases())
def test_every_op_matches_the_reference_on_the_gpu(op, dtype, seed):
    """Each registry op and shipped fused op through the GPU executor (its generated kernel,
    native kernel or reference) against the float64 interpreter."""
    from test_kernels import _case
    rng = np.random.default_rng(1000 * seed + sum(map(ord, op + dtype)))
    try:
        g, arrays = _case(op, rng, dtype)
    except RlxError as e:  # an op added to the registry before tests/test_kernels.py builds it
        pytest.skip(f"tests/test_kernels.py builds no valid {op} case yet: {e}")
    ins = {n.name: arrays[n.name] for n in g.inputs}
    program = get_executor("cupy").prepare(plan(g), {})
    got = program.run(ins)
    want = interpret(g, ins)
    _check(got, want, {k: str(v.dtype) for k, v in g.outputs}, f"{op} {dtype}\n{g.to_text()}")
    assert program.graph_error is None, program.graph_error
    again = program.run(ins)  # graph replay
    for k in got:
        np.testing.assert_array_equal(again[k], got[k], err_msg=f"{op}: replay differs from the first run")


@gpu
def test_ops_run_on_the_device_not_the_host():
    """The ops models are made of run as kernels: nothing falls back to the host."""
    from test_kernels import _case
    device_ops = ["matmul", "transpose", "reshape", "expand", "slice", "concat", "split", "sum", "mean", "max",
                  "softmax", "layer_norm", "rms_norm", "gather", "rotary", "sdpa", "sdpa_nan_zero", "region",
                  "matmul_bias_act", "matmul_residual", "swiglu", "add_rms_norm", "gelu", "silu", "add", "cast",
                  "conv", "conv_bias_act", "conv_residual_act", "max_pool", "avg_pool", "causal_mask", "trilu"]
    for op in device_ops:
        for dtype in ("f32", "f16", "bf16"):
            g, arrays = _case(op, np.random.default_rng(7), dtype)
            program = get_executor("cupy").prepare(plan(g), {})
            program.run({n.name: arrays[n.name] for n in g.inputs})
            assert not program.host_steps, (op, dtype, program.host_steps)
            kinds = {k for k in program.dispatch.values()}
            assert kinds <= {"native", "generated", "view"}, (op, dtype, program.dispatch)


@gpu
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("kind,sq,sk,d,dv", [("causal", 100, 100, 64, 64), ("plain", 70, 130, 128, 64),
                                             ("mask", 64, 200, 128, 128), ("masked-rows", 96, 80, 32, 48),
                                             ("causal", 160, 200, 128, 128)])
def test_flash_attention_matches_the_reference(kind, sq, sk, d, dv, dtype):
    """The generated tensor-core kernel (enough query rows, f16/bf16): causal, additive masks
    broadcast over batch and heads, fully masked rows (NaN, as the reference's softmax),
    ragged tiles, head dims 32 to 128."""
    from rlx.ir import DType, Graph
    rng = np.random.default_rng(sq * sk + d)
    g = Graph("attn")
    b, h = 2, 3
    npd = DType(dtype).np
    arrays = {"q": rng.standard_normal((b, h, sq, d)), "k": rng.standard_normal((b, h, sk, d)),
              "v": rng.standard_normal((b, h, sk, dv))}
    q, k, v = (g.input(n, arrays[n].shape, dtype) for n in "qkv")
    if kind in ("mask", "masked-rows"):
        m = rng.standard_normal((b, 1, sq, sk))
        if kind == "masked-rows":
            m[:, :, ::7, :] = -np.inf
        arrays["m"] = m
        y = g.sdpa(q, k, v, g.input("m", m.shape, dtype), scale=0.2)
    else:
        y = g.sdpa(q, k, v, causal=kind == "causal")
    g.output(y=y)
    ins = {n: a.astype(npd) for n, a in arrays.items()}
    program = get_executor("cupy").prepare(plan(g), {})
    got = program.run(ins)
    assert "mma.sync" in program.module_source
    _check(got, interpret(g, ins), {"y": dtype}, f"flash {kind} {dtype}")


# ---------------------------------------------------------------------------- models
MODELS = [
    ("mlp", lambda dt: rlx.models.mlp(layers=3, d_in=64, d_hidden=256, batch="B", dtype=dt), {"B": 24}),
    ("mlp-relu", lambda dt: rlx.models.mlp(layers=2, d_in=32, d_hidden=64, activation="relu", dtype=dt), {}),
    ("llama", lambda dt: rlx.models.llama(layers=2, d_model=128, n_heads=4, seq="S", batch="B", dtype=dt),
     {"B": 2, "S": 24}),
    ("llama-vocab", lambda dt: rlx.models.llama(layers=1, d_model=64, n_heads=2, seq=16, vocab=100, dtype=dt), {}),
    ("bert", lambda dt: rlx.models.bert(layers=2, d_model=128, n_heads=4, seq=32, batch=2, dtype=dt), {}),
    ("bert-direct", lambda dt: rlx.models.bert(layers=1, d_model=64, n_heads=2, seq=8, vocab=30, policy="direct",
                                               dtype=dt), {}),
    ("llama-decode", lambda dt: rlx.models.llama_decode(layers=2, d_model=128, n_heads=4, cache="T", batch=1,
                                                        dtype=dt), {"T": 40}),
]


def _model_case(build, dtype, binding, seed=11):
    g = build(dtype)
    a = random_arrays(g, binding, seed=seed)
    return g, {n.name: a[n.name] for n in g.inputs}, {n.name: a[n.name] for n in g.params}


@gpu
@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("name,build,binding", MODELS, ids=[m[0] for m in MODELS])
def test_every_model_builder_matches_the_reference(name, build, binding, dtype):
    g, ins, ps = _model_case(build, dtype, binding)
    r = rlx.compile(g, target="cuda", rules=RULES)
    got = r.run(ins, ps)
    want = interpret(g, ins, ps)
    _check(got, want, {k: str(v.dtype) for k, v in g.outputs}, f"{name} {dtype}")
    program = r.executor_for(ins)
    assert isinstance(program, CupyProgram)
    assert not program.host_steps, program.host_steps
    replay = r.run(ins)  # the first run captured the graphs; this one replays them
    assert program.graphs is not None
    for k in got:
        np.testing.assert_array_equal(replay[k], got[k])


@gpu
@pytest.mark.parametrize("name,build,binding", [m for m in MODELS if m[0] in ("llama", "bert", "mlp")],
                         ids=["mlp", "llama", "bert"])
def test_tf32_models_match_at_the_tf32_tolerance(name, build, binding, monkeypatch):
    monkeypatch.setenv("RLX_CUDA_TF32", "1")
    g, ins, ps = _model_case(build, "f32", binding)
    r = rlx.compile(g, target="cuda", rules=RULES)
    got = r.run(ins, ps)
    assert r.executor_for(ins).tf32
    _check(got, interpret(g, ins, ps), {k: str(v.dtype) for k, v in g.outputs}, f"{name} tf32", tf32=True)


@gpu
def test_symbolic_sizes_re_specialize_with_one_graph_set_each():
    g = rlx.models.llama(layers=1, d_model=64, n_heads=4, seq="S", batch="B")
    r = rlx.compile(g, target="cuda", rules=RULES)
    programs = []
    ps = {n.name: v for n in g.params for v in [random_arrays(g, {"B": 1, "S": 8}, seed=9)[n.name]]}
    r.bind(ps)
    for i, binding in enumerate(({"B": 1, "S": 8}, {"B": 3, "S": 20}, {"B": 1, "S": 8})):
        a = random_arrays(g, binding, seed=i)
        ins = {n.name: a[n.name] for n in g.inputs}
        got = r.run(ins)
        _check(got, interpret(g, ins, ps), {k: str(v.dtype) for k, v in g.outputs}, str(binding))
        programs.append(r.executor_for(ins))
        assert programs[-1].lir.planned and programs[-1].graphs is not None
    assert programs[0] is programs[2] and programs[0] is not programs[1]
    assert programs[0].memory.data.ptr != programs[1].memory.data.ptr


@gpu
def test_graph_replay_equals_the_first_run_and_eager_runs():
    g = rlx.models.llama(layers=2, d_model=128, n_heads=4, seq=32, batch=2, dtype="f16")
    r = rlx.compile(g, target="cuda", rules=RULES)
    a = random_arrays(g, seed=3)
    ins, ps = {n.name: a[n.name] for n in g.inputs}, {n.name: a[n.name] for n in g.params}
    first = r.run(ins, ps)
    program = r.executor_for(ins)
    assert program.graphs is not None and any(kind == "graph" for kind, _ in program.graphs)
    for _ in range(3):
        again = r.run(ins)
        for k in first:
            np.testing.assert_array_equal(again[k], first[k])
    ins2 = {k: (v * 0.5).astype(v.dtype) for k, v in ins.items()}
    replayed = r.run(ins2)  # new inputs through the same graphs
    eager = CupyProgram(program.lir, ps, graphs=False).run(ins2)
    for k in first:
        np.testing.assert_array_equal(replayed[k], eager[k])
        assert not np.array_equal(replayed[k], first[k])


@gpu
def test_params_are_uploaded_once_and_values_are_views_of_one_allocation():
    g = rlx.models.mlp(layers=2, d_in=32, d_hidden=64, batch=8)
    r = rlx.compile(g, target="cuda", rules=RULES)
    a = random_arrays(g, seed=5)
    ins, ps = {n.name: a[n.name] for n in g.inputs}, {n.name: a[n.name] for n in g.params}
    r.run(ins, ps)
    program = r.executor_for(ins)
    base = program.memory.data.mem
    assert all(v.data.mem is base for v in program.arrays.values())
    for name in ps:
        np.testing.assert_array_equal(program.read(name), ps[name])
    profile = program.profile(ins)
    assert len(profile) == len(program.body) and all(t.seconds >= 0 for t in profile)


# ---------------------------------------------------------------------------- convolutions
CONVS = [  # (name, x shape, w shape, bias, attrs)
    ("3x3 pad 1", (2, 8, 12, 10), (16, 8, 3, 3), True, dict(pads=(1, 1, 1, 1))),
    ("7x7 stride 2", (1, 3, 33, 30), (12, 3, 7, 7), True, dict(strides=(2, 2), pads=(3, 3, 3, 3))),
    ("1x1 in place", (3, 16, 7, 9), (24, 16, 1, 1), False, {}),
    ("1x1 stride 2", (2, 16, 9, 9), (8, 16, 1, 1), True, dict(strides=(2, 2))),
    ("dilated asymmetric pads", (2, 6, 11, 13), (4, 6, 3, 2), True, dict(pads=(2, 0, 1, 1), dilations=(2, 1))),
    ("grouped GEMM", (2, 8, 9, 9), (12, 4, 3, 3), True, dict(pads=(1, 1, 1, 1), group=2)),
    ("grouped thin", (2, 6, 9, 8), (9, 2, 2, 2), False, dict(group=3)),
    ("depthwise 3x3", (2, 16, 10, 10), (16, 1, 3, 3), True, dict(pads=(1, 1, 1, 1), group=16)),
    ("depthwise 5x5 stride 2", (1, 8, 15, 15), (8, 1, 5, 5), True, dict(strides=(2, 2), pads=(2, 2, 2, 2), group=8)),
    ("1-d", (2, 4, 20), (6, 4, 3), True, dict(pads=(1, 1))),
    ("3-d", (1, 3, 6, 7, 5), (4, 3, 2, 3, 2), True, dict(pads=(0, 1, 0, 1, 1, 1))),
]


@gpu
@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("name,xs,ws,bias,attrs", CONVS, ids=[c[0] for c in CONVS])
@pytest.mark.parametrize("op", ["conv", "conv_bias_act", "conv_residual_act"])
def test_convolutions_run_as_generated_kernels_and_match_the_reference(op, name, xs, ws, bias, attrs, dtype):
    """Each convolution shape (im2col + cuBLAS + epilogue, in place for 1x1, direct for
    depthwise and thin groups) plain and as the shipped fused ops, one generated step on
    the device, against the float64 reference; graph replay equals the first run."""
    from rlx.ir import Graph
    if op != "conv" and len(xs) != 4:
        pytest.skip("the shipped conv fusions are 2-D")
    rng = np.random.default_rng(len(name) + len(op))
    g = Graph("conv")
    x, w = g.input("x", xs, dtype), g.input("w", ws, dtype)
    full = dict(strides=None, pads=None, dilations=None, group=1)
    full.update(attrs)
    if op == "conv":
        args = [x, w] + ([g.input("b", (ws[0],), dtype)] if bias else [])
        y = g.op("conv", *args, **full)
    else:
        extra = []
        if op == "conv_residual_act":
            probe = Graph("probe")
            oshape = probe.op("conv", probe.input("x", xs), probe.input("w", ws), **full).shape
            extra = [g.input("r", tuple(oshape), dtype)]
        y = g.op(op, x, w, g.input("b", (ws[0],), dtype), *extra, act="relu" if op == "conv_bias_act" else "silu",
                 **full)
    g.output(y=y)
    arrays = random_arrays(g, seed=int(rng.integers(1 << 30)))
    ins = {n.name: arrays[n.name] for n in g.inputs}
    program = get_executor("cupy").prepare(plan(g), {})
    got = program.run(ins)
    _check(got, interpret(g, ins), {"y": dtype}, f"{op} {name} {dtype}")
    conv_steps = [s for s in program.lir.steps if s.op == op]
    assert conv_steps and all(program.dispatch[s.node] == "generated" for s in conv_steps), program.dispatch
    assert not program.host_steps and program.graph_error is None
    again = program.run(ins)
    np.testing.assert_array_equal(again["y"], got["y"])


@gpu
@pytest.mark.slow
@pytest.mark.parametrize("name,exporter", [("resnet50", "torchscript-bn"), ("resnet50", "dynamo"),
                                           ("mobilenet_v3", "dynamo")])
def test_vision_models_compiled_for_cuda_match_onnxruntime(name, exporter, tmp_path):
    """torchvision's ResNet-50 (batch norms folded into the weights at bind, on the device)
    and MobileNetV3-Large exported to ONNX, compiled for cuda: every convolution a generated
    step, the outputs as ONNX Runtime's at f32 tolerance, at two image sizes."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from real_models import assert_matches_onnxruntime, export
    from rlx.frontends.onnx import load as load_onnx
    path = tmp_path / f"{name}.onnx"
    export(name, path, exporter)
    graph = load_onnx(path)
    result = rlx.compile(graph, target="cuda", rules=RULES)
    rng = np.random.default_rng(5)
    for batch, size in ((1, 64), (2, 96)):
        feeds = {n.name: rng.standard_normal((batch, 3, size, size)).astype(np.float32) for n in graph.inputs}
        assert_matches_onnxruntime(result, str(path), feeds, f"{name} ({exporter}) on cuda, B={batch} {size}x{size}")
        program = result.executor_for(feeds)
        convs = [s for s in program.lir.steps if s.op.startswith("conv")]
        assert convs and all(program.dispatch[s.node] == "generated" for s in convs), \
            {s.op: program.dispatch[s.node] for s in convs}
        assert not program.host_steps, program.host_steps


# ---------------------------------------------------------------------------- ONNX
@gpu
@pytest.mark.parametrize("name", ["mlp", "llama", "bert"])
def test_exported_onnx_models_match_the_reference(name, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from onnx_models import export
    from rlx.frontends.onnx import load as load_onnx
    path = str(tmp_path / f"{name}.onnx")
    export(name, path, layers=2, seq=8)
    g = load_onnx(path)
    r = rlx.compile(g, target="cuda", rules=RULES)
    binding = {"B": 2, "S": 8}
    a = random_arrays(g, binding, seed=2)
    ins, ps = {n.name: a[n.name] for n in g.inputs}, {n.name: a[n.name] for n in g.params}
    got = r.run(ins, ps)
    _check(got, interpret(g, ins, ps), {k: str(v.dtype) for k, v in g.outputs}, f"onnx {name}")


# ---------------------------------------------------------------------------- kernel cache
_CHILD = """
import json, sys, time
import numpy as np
import rlx
from rlx.ir import random_arrays
from rlx.rules import load
g = rlx.models.llama(layers=1, d_model=64, n_heads=4, seq=16, dtype="f16")
r = rlx.compile(g, target="cuda", rules=load())
a = random_arrays(g, seed=1)
t = time.perf_counter()
out = r.run({n.name: a[n.name] for n in g.inputs}, {n.name: a[n.name] for n in g.params})
print(json.dumps({"seconds": time.perf_counter() - t,
                  "sum": float(sum(np.abs(v.astype(np.float64)).sum() for v in out.values()))}))
"""


@gpu
def test_a_second_process_hits_the_kernel_cache(tmp_path):
    cache = tmp_path / "kernels"
    env = {**os.environ, "CUPY_CACHE_DIR": str(cache), "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}

    def child() -> dict:
        res = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        return json.loads(res.stdout.strip().splitlines()[-1])

    first = child()
    files = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert files, "the first process wrote no compiled kernels"
    second = child()
    after = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert after == files, "the second process compiled again"
    assert second["sum"] == first["sum"]


# ---------------------------------------------------------------------------- the printer (no GPU)
def _nvrtc():
    """NVRTC through ctypes where the library is on this machine (it needs no GPU), else None."""
    import ctypes
    import ctypes.util
    import glob
    import site
    names = [ctypes.util.find_library("nvrtc")] + sorted(
        p for d in site.getsitepackages() + [site.getusersitepackages()]
        for p in glob.glob(f"{d}/nvidia/cu*/lib/libnvrtc.so*") + glob.glob(f"{d}/nvidia/cuda_nvrtc/lib/libnvrtc.so*"))
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _compiles(lib, text: str) -> tuple[int, str]:
    import ctypes
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), text.encode(), b"rlx.cu", 0, None, None) == 0
    opts = (ctypes.c_char_p * 2)(b"--gpu-architecture=compute_90", b"-std=c++17")
    status = lib.nvrtcCompileProgram(prog, 2, opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return status, log.value.decode(errors="replace")


def _contiguous(shape):
    out, acc = [], 1
    for d in reversed(shape):
        out.append(0 if d == 1 else acc)
        acc *= d
    return tuple(reversed(out))


def _conv_sources(k):
    """The CUDA kernels of a Conv skeleton instance over contiguous operands: the direct
    kernel with its epilogue, and the im2col kernel plus the epilogue over an f32 product."""
    from rlx.exec import cuda_print as P
    from rlx.ir import DType
    from rlx.ir.expr import Expr
    s = k.skeleton
    out = tuple(k.out_types[0].shape)
    x, w = k.in_types[s.x].shape, k.in_types[s.w].shape
    n_in, nsp = len(k.in_types), len(x) - 2
    acc = DType.f64 if k.in_types[s.x].dtype == DType.f64 else DType.f32

    def own(i):
        return P.Operand(k.in_types[i].dtype, tuple(_own(k.in_types[i].shape)))
    opers = [own(i) if i in (s.x, s.w, s.bias) else
             P.Operand(t.dtype, (0,) * (len(out) - len(t.shape)) + _contiguous(t.shape)) for i, t in enumerate(k.in_types)]
    outs = [P.Operand(t.dtype, _contiguous(out)) for t in k.out_types]
    direct = P.conv_direct(s.outputs, opers, outs, out, n_in, s.x, x, s.w, w, s.bias, s.strides, s.pads[:nsp],
                           s.dilations, s.group, acc)
    cols = P.im2col(own(s.x), x, w, out, s.strides, s.pads[:nsp], s.dilations)
    conv = Expr("arg", value=n_in, dtype=acc)
    if s.bias is not None:
        conv = Expr("add", (conv, Expr("arg", value=s.bias, dtype=acc)), dtype=acc)
    from rlx.ir.expr import fold
    outputs = [fold(e, lambda q, args: conv if q.op == "arg" and q.value == n_in else
                    Expr(q.op, tuple(args), q.value, q.attrs, q.dtype)) for e in s.outputs]
    epi = [o if i not in (s.x, s.w) else None for i, o in enumerate(opers)]
    if s.bias is not None:
        epi[s.bias] = P.Operand(k.in_types[s.bias].dtype, (0, 1) + (0,) * nsp)
    epi.append(P.Operand(acc, _contiguous(out)))
    epilogue = P.pointwise(outputs, epi, outs, out, align=[256] * (len(epi) + len(outs)))
    assert "acc +=" in direct.text and "o0[i] = (" in cols.text
    return [direct, cols, epilogue]


def _own(shape):
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def test_every_op_kernel_prints_and_compiles():
    """Every op's kernel (each skeleton this printer takes, every dtype its tests use) prints;
    where NVRTC is installed, the module of all of them compiles for sm_90."""
    from test_kernels import _case, _dtypes, _ops
    from rlx.exec import cuda_print as P
    from rlx.kernels.lower import kernel_for
    from rlx.kernels.skeletons import Conv, Gemm, Pointwise, RowReduce
    sources = []
    for op in _ops():
        for dt in _dtypes(op):
            try:
                g, _ = _case(op, np.random.default_rng(1), dt)
            except RlxError:
                continue
            node = next(n for n in g.nodes if n.opdef.category != "source")
            if node.op in ("max_pool", "avg_pool"):
                from rlx.ir.ops import window_params
                x, o = node.inputs[0].type, node.outputs[0]
                st, dil, lo, hi = window_params(len(x.shape), node.attrs, node.attrs["kernel"])
                sources.append(P.pool(node.op[:3], P.Operand(x.dtype, _own(x.shape)), x.shape,
                                      P.Operand(o.dtype, _own(o.shape)), o.shape, node.attrs["kernel"], st, dil, lo, hi,
                                      bool(node.attrs.get("count_include_pad", False))))
                continue
            if node.op in ("causal_mask", "trilu"):
                t, a = node.inputs[0].type, node.attrs
                sources.append(P.triangle(P.Operand(t.dtype, _own(t.shape)), P.Operand(t.dtype, _own(t.shape)), t.shape,
                                          bool(a.get("upper", False)), int(a.get("k", 0)),
                                          -np.inf if node.op == "causal_mask" else 0.0))
                continue
            k = kernel_for(node.op, [v.type for v in node.inputs], node.attrs)
            if k is None:
                continue
            out = tuple(k.out_types[0].shape)
            st = [(0,) * (len(out) - len(t.shape)) + _contiguous(t.shape) for t in k.in_types]
            al = [256] * (len(k.in_types) + len(k.out_types))
            s = k.skeleton
            if isinstance(s, Pointwise):
                sources.append(P.pointwise(s.outputs, [P.Operand(t.dtype, x) for t, x in zip(k.in_types, st)],
                                           [P.Operand(t.dtype, _contiguous(out)) for t in k.out_types], out, align=al))
            elif isinstance(s, RowReduce):
                sources.append(P.rows(s.reductions, s.outputs,
                                      [P.RowOperand(t.dtype, x[:-1], x[-1:]) for t, x in zip(k.in_types, st)],
                                      [P.RowOperand(t.dtype, _contiguous(out)[:-1], _contiguous(out)[-1:])
                                       for t in k.out_types], out[:-1], out[-1:], align=al))
            elif isinstance(s, Gemm):
                prods = [P.Operand(k.in_types[a].dtype, _contiguous(out)) for a, _ in s.gemms]
                sources.append(P.pointwise(s.outputs, [P.Operand(t.dtype, x) for t, x in zip(k.in_types, st)] + prods,
                                           [P.Operand(t.dtype, _contiguous(out)) for t in k.out_types], out,
                                           align=al + [256] * len(prods)))
            elif isinstance(s, Conv):
                sources += _conv_sources(k)
    assert len(sources) > 100
    assert any("acc +=" in src.text for src in sources)  # the convolutions and pools printed too
    lib = _nvrtc()
    if lib is None:
        pytest.skip("NVRTC is not installed here: printed only")
    status, log = _compiles(lib, P.module(sources))
    assert status == 0, log[-3000:]


def test_collapse_and_vector_width():
    from rlx.exec.cuda_print import _vector_width, collapse
    from rlx.ir import DType
    assert collapse((4, 8, 64), [(512, 64, 1), (0, 0, 1)]) == ((32, 64), [(64, 1), (0, 1)])
    assert collapse((4, 1, 8), [(8, 8, 1)]) == ((32,), [(1,)])
    assert collapse((2, 3), [(1, 2)]) == ((2, 3), [(1, 2)])  # a transposed operand keeps both axes
    f16, f32 = DType.f16, DType.f32
    assert _vector_width((64, 4096), [(4096, 1), (0, 1)], [f16, f16], [256, 256]) == 8
    assert _vector_width((64, 4096), [(4096, 1), (0, 1)], [f32, f16], [256, 256]) == 4
    assert _vector_width((64, 4096), [(4096, 1)], [f16], [2]) == 1           # a misaligned pointer
    assert _vector_width((64, 12), [(12, 1)], [f16], [256]) == 4             # 12 is not a multiple of 8
    assert _vector_width((64, 4096), [(4100, 1)], [f16], [256]) == 4         # rows 8 bytes apart


def test_literals_are_exact():
    from rlx.exec.cuda_print import c_const
    from rlx.ir import DType
    assert np.float32(float(c_const(0.1, DType.f32)[:-1])) == np.float32(0.1)
    assert float(c_const(0.1, DType.f64)) == 0.1
    assert c_const(float("inf"), DType.f32) == "__int_as_float(2139095040)"
    assert "__longlong_as_double" in c_const(float("nan"), DType.f64)
    assert c_const(-3, DType.i64) == "((long long)-3LL)" and c_const(True, DType.bool) == "true"


def test_flash_attention_prints_for_half_types_only():
    from rlx.exec import cuda_print as P
    from rlx.ir import DType
    from rlx.ir.registry import TensorType
    from rlx.kernels.lower import kernel_for
    f16 = DType.f16
    q = TensorType((2, 4, 100, 64), f16)
    k = kernel_for("sdpa", [q, q, q, TensorType((100, 100), f16)], {"causal": False, "scale": 0.125})
    A = P.AttnOperand
    ops = [A(f16, (25600, 6400), 64, 1)] * 4
    src = P.flash_attention(k.skeleton.score, *ops, {3: A(f16, (0, 0), 100, 1)}, (2, 4), 100, 100, 64, 64, False)
    assert src.grid == (8, 2) and src.block == 128 and "mma.sync.aligned.m16n8k16" in src.text
    assert "m3[mo3 + (long long)row * 100" in src.text  # the mask read at (query, key) inside the kernel
    with pytest.raises(RlxError, match="f16/bf16"):
        P.flash_attention(k.skeleton.score, *[A(DType.f32, (25600, 6400), 64, 1)] * 4, {}, (2, 4), 100, 100, 64, 64,
                          False)
    lib = _nvrtc()
    if lib is not None:
        status, log = _compiles(lib, P.module([src]))
        assert status == 0, log[-3000:]
