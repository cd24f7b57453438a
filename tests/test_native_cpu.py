"""Compiled CPU kernels (rlx.exec.cc + c_print): direct convolutions, the GEMM by packed
constant weights, pointwise and row kernels, attention's softmax and every op's primitives
match the float64 reference on random shapes (edge sizes included), run where the NumPy
executor dispatches them, and give way to the NumPy printer's kernels without a compiler;
the vectorizable f32 math; the compiler's cache and its errors."""
import ctypes
from unittest import mock

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st
from scipy import special

from rlx.exec import c_print, cc, native_runs, numpy_exec, numpy_print, winograd
from rlx.exec.base import get_executor
from rlx.ir import Graph, interpret
from rlx.ir.dtypes import DType
from rlx.ir.expr import arg
from rlx.kernels.skeletons import Conv
from rlx.pipeline import TOLERANCE, max_error
from rlx.plan import plan
from test_kernels import _case, _dtypes, _ops, check, data, run_graph

needs_cc = pytest.mark.skipif(cc.available() is not None, reason=f"no native kernels here: {cc.available()}")


@pytest.fixture(autouse=True)
def compile_every_step(monkeypatch):
    """These tests compile steps of any size (outside them, steps too small to repay the
    compiler keep the NumPy kernels)."""
    monkeypatch.setattr(numpy_print, "NATIVE_MIN", 0)


def _conv_case(rng, dtype: str, rank: int, depthwise: bool, groups: tuple[int, int] = (1, 9),
               multipliers: tuple[int, int] = (1, 3)):
    """A random depthwise or thin grouped convolution with bias, activation and maybe a residual
    (``groups`` and channel ``multipliers``: ranges to draw from)."""
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    b, group = r(1, 3), r(*groups)
    cin, cout = (group, group * r(*multipliers)) if depthwise else (group * r(2, 4), group * r(*multipliers))
    kernel = tuple(r(1, 6) for _ in range(rank))
    strides = tuple(r(1, 4) for _ in range(rank))
    dil = tuple(r(1, 3) for _ in range(rank))
    pads = tuple(r(0, k * d) for k, d in zip(kernel, dil)) + tuple(r(0, 3) for _ in range(rank))
    size = tuple(max((k - 1) * d + 1 - p - q, 1) + r(0, 40) for k, d, p, q in zip(kernel, dil, pads, pads[rank:]))
    out = tuple((n + p + q - (k - 1) * d - 1) // s + 1 for n, p, q, k, d, s in
                zip(size, pads, pads[rank:], kernel, dil, strides))
    g, arrays = Graph("conv"), {}

    def inp(name, shape):
        arrays[name] = data(rng, shape, dtype)
        return g.input(name, shape, dtype)
    x, w = inp("x", (b, cin) + size), inp("w", (cout, cin // group) + kernel)
    win = dict(strides=strides, pads=pads, dilations=dil, group=group)
    act = str(rng.choice(["none", "relu", "hard_swish", "silu"]))
    if r(0, 2):
        y = g.op("conv_residual_act", x, w, inp("bias", (cout,)), inp("res", (b, cout) + out), act=act, **win)
    else:
        y = g.op("conv_bias_act", x, w, inp("bias", (cout,)), act=act, **win)
    g.output(y=y)
    return g, arrays


def _native(program, g) -> bool:
    """Whether the graph's one op runs a compiled kernel."""
    node = next(n for n in g.nodes if n.opdef.category != "source")
    fn = dict((s.node, f) for s, f in program.steps)[node.name]
    return any(isinstance(call[0], (cc.NativeFunction, numpy_print.Threaded)) for call in getattr(fn, "calls", ()))


@needs_cc
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rank=st.sampled_from([1, 2]), dtype=st.sampled_from(["f32", "f64"]),
       depthwise=st.booleans())
def test_direct_convolutions_match_the_reference(seed, rank, dtype, depthwise):
    """Strides, dilations, asymmetric pads, 1-D and 2-D, depthwise (channel multiplier 1 or 2)
    and grouped over 2 or 3 channels, every epilogue: within the dtype's tolerance of the
    float64 reference (f32 {f32}, f64 {f64}); the direct loop nest runs where ``runs_direct``
    says (few products, or a spatial kernel over few channels), else the conv GEMM."""
    rng = np.random.default_rng(seed)
    g, arrays = _conv_case(rng, dtype, rank, depthwise)
    w = arrays["w"]
    check(g, arrays, generated=True)
    _, _, program = run_graph(g, arrays)
    direct = numpy_print.runs_direct(w.shape)
    assert _native(program, g) == (direct or dtype == "f32")  # else the conv GEMM, weights packed per run


test_direct_convolutions_match_the_reference.__doc__ = test_direct_convolutions_match_the_reference.__doc__.format(
    f32=TOLERANCE["f32"], f64=TOLERANCE["f64"])


@needs_cc
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rank=st.sampled_from([1, 2]))
def test_depthwise_convolutions_run_with_channels_as_lanes(seed, rank):
    """A depthwise convolution of 8 channels or more (a last block of fewer among them) with
    output rows up to ``LANES_MAX_WIDTH`` wide runs ``conv_lanes``: planes transposed into
    registers 8 channels at a time, rows of 8 pixels transposed back (a short last run among
    them); strides, dilations, asymmetric pads, 1-D and 2-D, every epilogue (a residual
    read only where there are pixels): within f32's tolerance ({f32})."""
    rng = np.random.default_rng(seed)
    g, arrays = _conv_case(rng, "f32", rank, True, groups=(8, 30), multipliers=(1, 2))
    made = []
    real = c_print.conv_lanes

    def spy(*a, **k):
        made.append(real(*a, **k))
        return made[-1]
    with mock.patch.object(c_print, "conv_lanes", spy):
        check(g, arrays, generated=True)
    assert made and all(src is not None for src in made)


test_depthwise_convolutions_run_with_channels_as_lanes.__doc__ = \
    test_depthwise_convolutions_run_with_channels_as_lanes.__doc__.format(f32=TOLERANCE["f32"])


@needs_cc
def test_without_a_compiler_the_numpy_kernels_run(monkeypatch):
    rng = np.random.default_rng(7)
    g, arrays = _conv_case(rng, "f32", 2, True)
    monkeypatch.setenv("RLX_CC", "0")
    assert "RLX_CC=0" in cc.available()
    _, _, program = run_graph(g, arrays)
    assert not _native(program, g)
    check(g, arrays, generated=True)
    monkeypatch.setenv("RLX_CC", "/no/such/compiler")
    assert "no C++ compiler" in cc.available()


@needs_cc
def test_a_compile_error_names_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("RLX_CACHE_DIR", str(tmp_path))
    with pytest.raises(cc.CompileError) as err:
        cc.build('extern "C" void broken( {')
    assert str(tmp_path) in str(err.value) and ".cpp" in str(err.value)


@needs_cc
def test_libraries_are_cached_by_source(tmp_path, monkeypatch):
    monkeypatch.setenv("RLX_CACHE_DIR", str(tmp_path))
    src = c_print.PRELUDE + 'extern "C" long rlx_test_cache(long a) { return a + 1; }\n'
    lib = cc.build(src)
    assert lib.rlx_test_cache(41) == 42
    assert len(list((tmp_path / "cc").glob("*.so"))) == 1
    cc._loaded.clear()  # a new process: found on disk, not compiled again
    monkeypatch.setattr(cc.subprocess, "run", lambda *a, **k: pytest.fail("compiled again"))
    assert cc.build(src).rlx_test_cache(1) == 2


# ---------------------------------------------------------------------------- GEMM
def _gemm_case(rng, op: str):
    """``op`` of a random f32 activation (batch and rows) with random constant weights."""
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    lead = tuple(r(1, 4) for _ in range(r(0, 3))) + (r(1, 70),)
    k, n = r(1, 300), r(1, 100)
    g, feeds, params = Graph(op), {}, {}

    def inp(name, shape):
        feeds[name] = data(rng, shape, "f32")
        return g.input(name, shape, "f32")

    def param(name, shape):
        params[name] = data(rng, shape, "f32")
        return g.param(name, shape, "f32")
    x = inp("x", lead + (k,))
    if op == "matmul":
        y = g.matmul(x, param("w", (k, n)))
    elif op == "matmul_bias_act":
        y = g.matmul_bias_act(x, param("w", (k, n)), param("bias", (n,)),
                              act=str(rng.choice(["none", "relu", "gelu", "gelu_tanh", "silu"])))
    elif op == "matmul_residual":
        y = g.matmul_residual(x, param("w", (k, n)), inp("res", lead + (n,)))
    else:
        y = g.swiglu(x, param("wg", (k, n)), param("wu", (k, n)), act=str(rng.choice(["silu", "gelu"])))
    g.output(y=y)
    return g, feeds, params


@needs_cc
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), op=st.sampled_from(["matmul", "matmul_bias_act", "matmul_residual", "swiglu"]),
       vector_bytes=st.sampled_from([32, 64]), chunk_bytes=st.sampled_from([c_print.A_CHUNK_BYTES, 1 << 13]))
def test_gemms_by_constant_weights_match_the_reference(seed, op, vector_bytes, chunk_bytes):
    """Rows not a multiple of the micro-kernel's, columns not a multiple of a panel's, K from
    1, either micro-kernel (AVX2's 6×16 or AVX-512's 8×32), A's rows packed at once or in
    chunks of a few blocks: the compiled GEMM (weights packed once, epilogue in registers)
    is within f32's tolerance of the float64 reference, and is what runs."""
    rng = np.random.default_rng(seed)
    g, feeds, params = _gemm_case(rng, op)
    with mock.patch.object(cc, "vector_bytes", lambda: vector_bytes), \
            mock.patch.object(c_print, "A_CHUNK_BYTES", chunk_bytes):
        program = get_executor("numpy").prepare(plan(g), params)
    got = program.run(feeds)["y"]
    want = interpret(g, feeds, params)["y"]
    err, tol = max_error(got, want, "f32")
    assert err <= tol, (g.to_text(), err, tol)
    assert _native(program, g)


@needs_cc
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), vector_bytes=st.sampled_from([32, 64]), threads=st.sampled_from([1, 2]))
def test_matrix_vector_products_run_the_compiled_gemm(seed, vector_bytes, threads):
    """Fewer rows than the micro-kernel's (a classifier at batch 1): the tile of only those
    rows, its sum split over alternate products (any K, so a remainder too), on one thread
    or split by columns, is within f32's tolerance of the float64 reference."""
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(1, c_print.tile(vector_bytes).rows))
    k = int(rng.integers(60, 700))
    n = int(rng.integers(numpy_print.NATIVE_MIN // (rows * k) + 1, 400))
    g = Graph("gemv")
    x = g.input("x", (rows, k), "f32")
    w, b = g.param("w", (k, n), "f32"), g.param("b", (n,), "f32")
    g.output(y=g.matmul_bias_act(x, w, b, act="relu"))
    feeds, params = {"x": data(rng, (rows, k), "f32")}, {"w": data(rng, (k, n), "f32"), "b": data(rng, (n,), "f32")}
    with mock.patch.object(cc, "vector_bytes", lambda: vector_bytes), \
            mock.patch.dict("os.environ", {"RLX_NUM_THREADS": str(threads)}):
        program = get_executor("numpy").prepare(plan(g), params)
        got = program.run(feeds)["y"]
    err, tol = max_error(got, interpret(g, feeds, params)["y"], "f32")
    assert err <= tol, (rows, k, n, err, tol)
    assert _native(program, g)


@needs_cc
def test_a_gemm_by_an_activation_runs_on_blas():
    """A right operand that changes per run is not packed: BLAS runs it."""
    rng = np.random.default_rng(3)
    g = Graph("mm")
    g.output(y=g.matmul(g.input("a", (5, 7)), g.input("b", (7, 3))))
    arrays = {"a": data(rng, (5, 7), "f32"), "b": data(rng, (7, 3), "f32")}
    check(g, arrays)
    _, _, program = run_graph(g, arrays)
    assert not _native(program, g)


@needs_cc
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rank=st.sampled_from([1, 2]))
def test_convolutions_by_constant_weights_run_the_compiled_conv_gemm(seed, rank):
    """A convolution by constant f32 weights that does not run direct (``runs_direct``)
    (any group count, strides, dilations, asymmetric pads, several images): the
    weights packed in blocks of output channels times the image's phase planes read in
    place, bias and epilogue on the tile; within f32's tolerance of the reference."""
    rng = np.random.default_rng(seed)
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    group = r(1, 4)
    b, cin, cout = r(1, 3), group * r(1, 24), group * r(1, 24)
    kernel = tuple(r(1, 4) for _ in range(rank))
    while numpy_print.runs_direct((cout, cin // group) + kernel):  # those run direct
        cin += group
    strides, dil = tuple(r(1, 4) for _ in range(rank)), tuple(r(1, 3) for _ in range(rank))
    pads = tuple(r(0, 3) for _ in range(2 * rank)) if r(0, 3) else (0,) * (2 * rank)
    size = tuple((k - 1) * d + 1 + r(0, 30) for k, d in zip(kernel, dil))
    out = tuple((n + p + q - (k - 1) * d - 1) // st + 1 for n, p, q, k, d, st in
                zip(size, pads, pads[rank:], kernel, dil, strides))
    g, feeds, params = Graph("conv"), {}, {}
    feeds["x"] = data(rng, (b, cin) + size, "f32")
    params["w"], params["bias"] = data(rng, (cout, cin // group) + kernel, "f32"), data(rng, (cout,), "f32")
    x, w, bias = g.input("x", feeds["x"].shape), g.param("w", params["w"].shape), g.param("bias", (cout,))
    win = dict(strides=strides, pads=pads, dilations=dil, group=group)
    if r(0, 2):
        feeds["res"] = data(rng, (b, cout) + out, "f32")
        y = g.op("conv_residual_act", x, w, bias, g.input("res", feeds["res"].shape), act="relu", **win)
    else:
        y = g.op("conv_bias_act", x, w, bias, act=str(rng.choice(["none", "relu", "hard_swish", "silu"])), **win)
    g.output(y=y)
    program = get_executor("numpy").prepare(plan(g), params)
    err, tol = max_error(program.run(feeds)["y"], interpret(g, feeds, params)["y"], "f32")
    assert err <= tol, (g.to_text(), err, tol)
    assert _native(program, g)


@needs_cc
@pytest.mark.parametrize("shape, kernel, strides, pads, dilations", [
    ((2, 8, 9, 11), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),     # padded: phase planes
    ((1, 40, 7, 7), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),     # 1×1: the image itself
    ((1, 12, 10, 13), (3, 2), (1, 1), (0, 0, 0, 0), (2, 1)),   # unpadded, dilated: junk columns
    ((1, 40, 15, 15), (1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),   # 1×1 strided: one of four phases
    ((1, 4, 31, 29), (5, 5), (3, 2), (2, 1, 0, 2), (1, 2)),    # every phase, asymmetric pads
])
def test_conv_gemm_layouts(shape, kernel, strides, pads, dilations):
    """Each way ``conv_gemm`` reads an image: in place where it is one phase plane (its
    rows, with the junk columns past each row's last output, read past the image's end
    when its memory goes on), else copied into phase planes (all, or those a tap reads);
    with chunks of weight blocks, spans of panels and slices of the sums of each size (a
    short last one among them): within f32's tolerance."""
    rng = np.random.default_rng(7)
    cout, n_in = 20, 3
    x = data(rng, shape, "f32")
    w, bias = data(rng, (cout, shape[1]) + kernel, "f32"), data(rng, (cout,), "f32")
    g = Graph("conv")
    y = g.op("conv_bias_act", g.input("x", shape), g.input("w", w.shape), g.input("bias", (cout,)),
             act="none", strides=strides, pads=pads, dilations=dilations, group=1)
    g.output(y=y)
    want = interpret(g, {"x": x, "w": w, "bias": bias})["y"]
    conv = Conv(0, 1, 2, strides, pads, dilations, 1, (arg(n_in, DType.f32),))
    in_place = strides == (1, 1) and not any(pads)
    roomy = np.zeros(x.size + 4096, np.float32)  # the image with memory after it
    roomy[:x.size] = x.ravel()
    for image in (x, roomy[:x.size].reshape(shape)):
        whole = c_print.conv_slice
        # a panel packed per block, per two (a group's last chunk short), once; spans of one
        # panel, of three (the last one short) and of eight; sums whole or in slices (of 5
        # and 7 products: the last one short)
        for chunk, span, kc in ((1, 1, None), (2, 3, None), (64, 8, None), (2, 3, 5), (64, 2, 7)):
            with mock.patch.object(c_print, "conv_chunk", lambda g, t, *a, chunk=chunk: chunk), \
                    mock.patch.object(c_print, "conv_span", lambda g, t, *a, span=span: span), \
                    mock.patch.object(c_print, "conv_slice", lambda g, t, kc=kc: kc or whole(g, t)), \
                    mock.patch.object(numpy_print, "PIXEL_ROWS_GAIN", float("inf")):  # conv_gemm, not pixel rows
                out = np.full(want.shape, np.nan, np.float32)
                kernel_ = numpy_print._native_conv_gemm(conv, [image, w, bias], [out], frozenset({1}))
            copies = len(kernel_.phases) - 1
            assert copies == (0 if in_place and image.base is roomy else 1), (copies, image.base is roomy)
            kernel_()
            err, tol = max_error(out, want, "f32")
            assert err <= tol, (chunk, span, kc, err, tol)


@needs_cc
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rank=st.sampled_from([1, 2]), op=st.sampled_from(["conv", "bias_act", "residual"]),
       vector_bytes=st.sampled_from([32, 64]), by_rows=st.sampled_from([None, False, True]))
def test_small_convolutions_run_as_pixel_rows(seed, rank, op, vector_bytes, by_rows):
    """A single image's convolution with a small output (where conv_gemm's panels of plane
    pixels would waste a quarter of their columns) runs as the GEMM with output pixels as
    rows, its windows gathered from the phase planes as A is packed: strides, dilations,
    asymmetric pads, 1-D and 2-D, with and without bias, a residual, either micro-kernel,
    on one thread or two splitting the pixels or the output channels; within f32's
    tolerance of the reference."""
    rng = np.random.default_rng(seed)
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    cin, cout = r(2, 40), r(1, 70)
    kernel = tuple(r(1, 4) for _ in range(rank))
    while numpy_print.runs_direct((cout, cin) + kernel):  # those run direct
        cin += 1
    strides, dil = tuple(r(1, 3) for _ in range(rank)), tuple(r(1, 3) for _ in range(rank))
    pads = tuple(r(0, 3) for _ in range(2 * rank)) if r(0, 2) else (0,) * (2 * rank)
    out = (r(1, 4), r(4, 9)) if rank == 2 else (r(2, 12),)
    size = tuple(max((o - 1) * st + (k - 1) * d + 1 - p - q, (k - 1) * d + 1) for o, st, k, d, p, q in
                 zip(out, strides, kernel, dil, pads, pads[rank:]))
    out = tuple((n + p + q - (k - 1) * d - 1) // st + 1 for n, p, q, k, d, st in
                zip(size, pads, pads[rank:], kernel, dil, strides))
    geo = c_print.conv_geometry((1, cin) + size, (cout, cin) + kernel, (1, cout) + out, strides, pads, dil, 1)
    assume(numpy_print._by_pixel_rows(geo, c_print.tile(vector_bytes)))
    g, feeds, params = Graph("conv"), {}, {}
    feeds["x"] = data(rng, (1, cin) + size, "f32")
    params["w"] = data(rng, (cout, cin) + kernel, "f32")
    x, w = g.input("x", feeds["x"].shape), g.param("w", params["w"].shape)
    win = dict(strides=strides, pads=pads, dilations=dil, group=1)
    if op == "conv":
        y = g.op("conv", x, w, **win)
    else:
        params["bias"] = data(rng, (cout,), "f32")
        bias = g.param("bias", (cout,))
        if op == "residual":
            shape = g.op("conv", x, w, **win).type.shape
            feeds["res"] = data(rng, shape, "f32")
            y = g.op("conv_residual_act", x, w, bias, g.input("res", shape), act="relu", **win)
        else:
            y = g.op("conv_bias_act", x, w, bias, act=str(rng.choice(["none", "relu", "silu"])), **win)
    g.output(y=y)
    threads = 1 if by_rows is None else 2
    with mock.patch.object(cc, "vector_bytes", lambda: vector_bytes), \
            mock.patch.object(numpy_print, "gemm_parts", lambda *a: threads), \
            mock.patch.object(numpy_print, "split_rows", lambda *a: bool(by_rows)), \
            mock.patch.dict("os.environ", {"RLX_NUM_THREADS": str(threads)}):
        program = get_executor("numpy").prepare(plan(g), params)
        got = program.run(feeds)["y"]
    err, tol = max_error(got, interpret(g, feeds, params)["y"], "f32")
    assert err <= tol, (g.to_text(), err, tol)
    assert "static const long taps[" in dict((s.node, f) for s, f in program.steps)[y.node.name].source


def test_winograd_matrices_compute_the_correlation():
    """Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A is the 4×4 correlation of a 6×6 patch with a 3×3 kernel, in
    f64 to rounding (the matrices are exact: rationals)."""
    rng = np.random.default_rng()
    bt, gm, at = (np.array(m, dtype=np.float64) for m in (winograd.BT, winograd.G, winograd.AT))
    for _ in range(20):
        d, k = rng.standard_normal((6, 6)), rng.standard_normal((3, 3))
        want = np.array([[np.sum(d[i:i + 3, j:j + 3] * k) for j in range(4)] for i in range(4)])
        np.testing.assert_allclose(at @ ((gm @ k @ gm.T) * (bt @ d @ bt.T)) @ at.T, want, rtol=0, atol=1e-12)


@needs_cc
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_winograd_convolutions_match_the_reference(seed):
    """A 3×3 unit-stride convolution by constant weights runs as Winograd F(4×4, 3×3): any
    image size (partial tiles at the edges; small images too, here), pads up to 2 on each
    side, several images, a strided image, bias and activation or residual; within f32's
    tolerance of the reference."""
    rng = np.random.default_rng(seed)
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    b, cin, cout = r(1, 3), r(16, 40), r(16, 40)
    pads = tuple(r(0, 3) for _ in range(4))
    size = (r(3, 20), r(3, 20))
    out = tuple(n + p + q - 2 for n, p, q in zip(size, pads, pads[2:]))
    g, feeds, sliced = Graph("conv"), {}, r(0, 2)  # sliced: a strided image, channels 2 .. cin+1 of a larger one
    feeds["x"] = data(rng, (b, cin + 3 * sliced) + size, "f32")
    x = g.input("x", feeds["x"].shape)
    if sliced:
        x = g.op("slice", x, starts=(2,), ends=(cin + 2,), axes=(1,), steps=(1,))
    params = {"w": data(rng, (cout, cin, 3, 3), "f32"), "bias": data(rng, (cout,), "f32")}
    w, bias = g.param("w", params["w"].shape), g.param("bias", (cout,))
    win = dict(strides=(1, 1), pads=pads, dilations=(1, 1), group=1)
    if r(0, 2):
        feeds["res"] = data(rng, (b, cout) + out, "f32")
        y = g.op("conv_residual_act", x, w, bias, g.input("res", feeds["res"].shape), act="relu", **win)
    else:
        y = g.op("conv_bias_act", x, w, bias, act=str(rng.choice(["none", "relu", "silu"])), **win)
    g.output(y=y)
    made = []
    spy = lambda *a, real=numpy_print._native_winograd: made.append(real(*a)) or made[-1]  # noqa: E731
    with mock.patch.object(numpy_print, "_native_winograd", spy), mock.patch.object(numpy_print, "WINOGRAD_MIN_TILES", 1):
        program = get_executor("numpy").prepare(plan(g), params)
    assert made and all(k is not None for k in made)
    err, tol = max_error(program.run(feeds)["y"], interpret(g, feeds, params)["y"], "f32")
    assert err <= tol, (g.to_text(), err, tol)


@needs_cc
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rank=st.sampled_from([1, 2]), dtype=st.sampled_from(["f32", "f64"]))
def test_max_pool_runs_compiled_and_matches_the_reference(seed, rank, dtype):
    """A 1-D or 2-D max pool (any kernel, strides, dilations, asymmetric pads, ceil mode, a
    strided input, NaN and -inf in it) runs the compiled loop nest and equals the
    reference exactly (a maximum rounds nothing; NaN propagates)."""
    rng = np.random.default_rng(seed)
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    kernel, dil = tuple(r(1, 5) for _ in range(rank)), tuple(r(1, 3) for _ in range(rank))
    pads = tuple(r(0, k) for k in kernel) + tuple(r(0, k) for k in kernel)
    size = tuple((k - 1) * d + 1 + r(0, 20) for k, d in zip(kernel, dil))
    x = data(rng, (r(1, 3), r(1, 5) + 2) + size, dtype)
    x.flat[rng.integers(0, x.size, 3)] = [np.nan, -np.inf, np.inf]
    g = Graph("pool")
    xs = g.op("slice", g.input("x", x.shape, dtype), starts=(1,), ends=(x.shape[1] - 1,), axes=(1,), steps=(1,))
    g.output(y=g.op("max_pool", xs, kernel=kernel, strides=tuple(r(1, 4) for _ in range(rank)), pads=pads,
                    dilations=dil, ceil_mode=bool(r(0, 2))))
    made = []
    spy = lambda *a, real=numpy_print.native_max_pool: made.append(real(*a)) or made[-1]  # noqa: E731
    with mock.patch.object(numpy_exec, "native_max_pool", spy):
        program = get_executor("numpy").prepare(plan(g), {})
    assert made and all(k is not None for k in made)
    np.testing.assert_array_equal(program.run({"x": x})["y"], interpret(g, {"x": x})["y"])


@needs_cc
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), op=st.sampled_from(["sum", "mean", "max"]), dtype=st.sampled_from(["f32", "f64"]))
def test_trailing_reductions_run_compiled_and_match_the_reference(seed, op, dtype):
    """A sum, mean or max over an array's trailing axes (a global pool; rows longer than a
    vector sum's block among them, NaN sometimes) runs the compiled pass and matches the
    reference: a maximum exactly, sums within the dtype's tolerance."""
    rng = np.random.default_rng(seed)
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    rank = r(1, 5)
    shape = tuple(r(1, 6) for _ in range(rank - 1)) + (r(1, 3000) if r(0, 2) else r(1, 40),)
    x = data(rng, shape, dtype)
    if r(0, 3) == 0:
        x.flat[rng.integers(0, x.size)] = np.nan
    axes = tuple(range(rank - r(1, rank + 1), rank))
    g = Graph("reduce")
    g.output(y=g.op(op, g.input("x", shape, dtype), axes=axes, keepdims=bool(r(0, 2))))
    made = []
    spy = lambda *a, real=numpy_print.native_reduce: made.append(real(*a)) or made[-1]  # noqa: E731
    with mock.patch.object(numpy_exec, "native_reduce", spy):
        program = get_executor("numpy").prepare(plan(g), {})
    assert made and all(k is not None for k in made)
    got, want = program.run({"x": x})["y"], interpret(g, {"x": x})["y"]
    if op == "max":
        np.testing.assert_array_equal(got, want)
    else:
        err, tol = max_error(got, want, dtype)
        assert err <= tol, (shape, axes, err, tol)


@needs_cc
def test_kernels_run_without_an_openmp_runtime(monkeypatch, tmp_path):
    """A compiler without OpenMP (a clang without libomp) is found out by a probe; kernels
    built without it run their chunks one after another, with the same results."""
    path = cc._compiler("")[0]
    monkeypatch.setattr(cc, "OPENMP", ("-fno-such-openmp-flag",))
    cc._openmp.cache_clear()
    try:
        assert cc._openmp(path) == cc.NO_OPENMP
        monkeypatch.setenv("RLX_CACHE_DIR", str(tmp_path))
        monkeypatch.setenv("RLX_NUM_THREADS", "2")
        x = np.random.default_rng().standard_normal((1, 8, 40, 40)).astype(np.float32)
        out = np.empty((1, 8, 20, 20), np.float32)
        kernel = numpy_print.native_max_pool(x, out, (2, 2), (2, 2), (1, 1), (0, 0))
        kernel()
        np.testing.assert_array_equal(out, x.reshape(1, 8, 20, 2, 20, 2).max(axis=(3, 5)))
        assert any(p.suffix == ".so" for p in (tmp_path / "cc").iterdir())
    finally:
        cc._openmp.cache_clear()


def test_readable_bounds_a_view_by_its_allocation():
    """A kernel may read junk past a view's end, never past the memory it lives in."""
    base = np.zeros(100, np.float32)
    assert numpy_print._readable(base[10:20], 90) and not numpy_print._readable(base[10:20], 91)
    assert numpy_print._readable(base, 100) and not numpy_print._readable(base, 101)


@needs_cc
def test_the_vectorizable_f32_math_is_accurate():
    """The prelude's exp, tanh and erf (arithmetic only, so loops calling them vectorize):
    within a few ulp of float64's rounded to f32 over their ranges, exact at the specials."""
    lib = cc.build(c_print.PRELUDE + "".join(
        f'extern "C" void f_{f}(const float* x, float* y, long n) {{ for (long i = 0; i < n; ++i) y[i] = {f}f(x[i]); }}\n'
        for f in ("exp", "tanh", "erf")))
    x = np.concatenate([np.linspace(-110, 110, 100_001), np.linspace(-3, 3, 100_001), np.geomspace(1e-30, 1, 500),
                        -np.geomspace(1e-30, 1, 500), [0.0, -0.0, np.inf, -np.inf, np.nan]]).astype(np.float32)
    for name, ref, ulps in (("exp", np.exp, 2), ("tanh", np.tanh, 2), ("erf", special.erf, 8)):
        fn = getattr(lib, f"f_{name}")
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
        y = np.empty_like(x)
        fn(x.ctypes.data, y.ctypes.data, x.size)
        with np.errstate(over="ignore"):
            want = ref(x.astype(np.float64)).astype(np.float32)
        normal = np.isfinite(want) & (np.abs(want) >= np.finfo(np.float32).tiny)
        err = np.abs(y[normal].astype(np.float64) - want[normal]) / np.spacing(np.abs(want[normal]))
        assert err.max() <= ulps, (name, err.max(), x[normal][err.argmax()])
        exact = ~np.isfinite(x) | (x == 0) | ~np.isfinite(want)  # NaN, ±inf, ±0 and overflow
        np.testing.assert_array_equal(y[exact], want[exact], err_msg=name)
        tiny = ~normal & ~exact  # results below f32's normal range: absolutely close
        assert np.all(np.abs(y[tiny] - want[tiny]) <= 2e-45), name


# ---------------------------------------------------------------------------- rows
@needs_cc
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), op=st.sampled_from(["softmax", "layer_norm", "rms_norm", "add_rms_norm",
                                                           "gelu", "region"]),
       dtype=st.sampled_from(["f32", "f64"]))
def test_rows_and_pointwise_kernels_compile_and_match_the_reference(seed, op, dtype):
    """Norms, softmax, activations and regions over broadcast operands: one compiled loop
    nest (a pass per reduction, one for the outputs), within the dtype's tolerance."""
    rng = np.random.default_rng(seed)
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    b, s, d = r(1, 4), r(1, 20), r(1, 300)
    g, arrays = Graph(op), {}

    def inp(name, shape):
        arrays[name] = data(rng, shape, dtype)
        return g.input(name, shape, dtype)
    x = inp("x", (b, s, d))
    if op == "softmax":
        y = g.softmax(x, axis=-1)
    elif op == "layer_norm":
        y = g.layer_norm(x, inp("w", (d,)), inp("bb", (d,)))
    elif op == "rms_norm":
        y = g.rms_norm(x, inp("w", (d,)))
    elif op == "add_rms_norm":
        y = g.add_rms_norm(x, inp("res", (s, d)), inp("w", (d,)))[1]
    elif op == "gelu":
        y = g.op("gelu", x)
    else:
        from rlx.ir.expr import arg
        y = g.region(x, inp("c", (s, 1)), body=(arg(0).exp() * arg(1) + 1.0).tanh())
    g.output(y=y)
    check(g, arrays, generated=True)
    _, _, program = run_graph(g, arrays)
    assert _native(program, g)


@needs_cc
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_row_max_is_vectorized_and_keeps_nan_and_infinities(dtype):
    """A row's max (softmax's first pass) runs as a vector max with a NaN flag beside it: a
    NaN anywhere in a row makes the row NaN, -inf rows and +inf entries stay as NumPy's."""
    rng = np.random.default_rng(11)
    x = data(rng, (9, 37), dtype)
    x[1, 5] = np.nan
    x[2, 36] = np.nan
    x[3, :] = -np.inf
    x[4, 7] = np.inf
    x[5, 0] = np.nan
    x[5, 1] = np.inf
    g = Graph("rowmax")
    xi = g.input("x", x.shape, dtype)
    g.output(s=g.softmax(xi, axis=-1), m=g.op("max", xi, axes=(-1,), keepdims=True))
    got, _, program = run_graph(g, {"x": x})
    assert _native(program, g)
    with np.errstate(invalid="ignore"):
        want = interpret(g, {"x": x})
    for name in ("s", "m"):
        np.testing.assert_array_equal(np.isnan(got[name]), np.isnan(want[name]), err_msg=name)
        ok = ~np.isnan(want[name])
        np.testing.assert_allclose(got[name][ok], want[name][ok], rtol=1e-6, err_msg=name)


@needs_cc
def test_an_in_place_pointwise_kernel_reads_each_element_before_writing_it():
    """The planner gives an elementwise step the buffer of an input that dies there: the
    compiled loop then reads and writes one array (printed without restrict)."""
    rng = np.random.default_rng(5)
    g = Graph("inplace")
    x = g.input("x", (64, 33))
    t = g.op("tanh", g.op("exp", x))  # tanh overwrites exp's buffer
    g.output(y=g.op("neg", t))
    arrays = {"x": data(rng, (64, 33), "f32")}
    _, _, program = run_graph(g, arrays)
    assert any(s.in_place for s, _ in program.steps)
    check(g, arrays)


def _attention_source(program, g) -> str:
    node = next(n for n in g.nodes if n.opdef.category != "source")
    return dict((s.node, f) for s, f in program.steps)[node.name].source


@needs_cc
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["plain", "causal", "mask", "nan_zero", "shared_kv"]),
       vector_bytes=st.sampled_from([32, 64]))
def test_attention_runs_as_one_compiled_kernel(seed, kind, vector_bytes):
    """The whole f32 attention as one compiled kernel (both products by the micro-kernel,
    the score expression, causal mask, softmax and map of the probabilities between them,
    per block of query rows): query and key counts apart and past one block of rows, value
    width apart from the key width, one head of k and v shared by every head (broadcast),
    an additive mask broadcast over batch and heads, torch's zeroing of fully masked rows,
    either micro-kernel; within f32's tolerance of the float64 reference."""
    rng = np.random.default_rng(seed)
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    b, h, s, sk, d, dv = r(1, 3), r(1, 4), r(1, 150), r(1, 150), r(1, 40), r(1, 40)
    g, arrays = Graph("attn"), {}

    def inp(name, shape, dtype="f32"):
        arrays[name] = data(rng, shape, dtype)
        return g.input(name, shape, dtype)
    kv_heads = 1 if kind == "shared_kv" else h
    q, k, v = inp("q", (b, h, s, d)), inp("k", (b, kv_heads, sk, d)), inp("v", (b, kv_heads, sk, dv))
    if kind == "mask":
        y = g.sdpa(q, k, v, inp("m", (s, sk)), scale=0.3)
    elif kind == "nan_zero":
        arrays["m"] = np.where(rng.random((b, 1, s, sk)) < 0.3, -np.inf, 0.0).astype(np.float32)
        arrays["m"][..., 0, :] = -np.inf  # a fully masked row: NaN probabilities, zeroed
        y = g.op("sdpa_nan_zero", q, k, v, g.input("m", (b, 1, s, sk)), scale=0.3)
    else:
        y = g.sdpa(q, k, v, causal=kind in ("causal", "shared_kv"))
    g.output(y=y)
    with mock.patch.object(cc, "vector_bytes", lambda: vector_bytes):
        check(g, arrays, generated=True)
        _, _, program = run_graph(g, arrays)
    assert "// q·kᵀ" in _attention_source(program, g)


@needs_cc
@pytest.mark.parametrize("causal", [False, True])
def test_compiled_attention_keeps_hidden_keys_a_map_sends_off_zero(causal):
    """A map of the probabilities that does not send 0 to 0: the keys the causal mask hides
    then count (their probability maps to the map's value at 0), so the kernel must not skip
    them; strided q (a transposed view) and a row block shorter than a tile."""
    from rlx.ir.expr import arg, const, typed
    from rlx.kernels.skeletons import Attention
    rng = np.random.default_rng(7)
    b, h, s, sk, d, dv = 2, 3, 45, 50, 12, 20
    q = rng.standard_normal((b, h, d, s)).astype(np.float32).swapaxes(-1, -2)  # strided rows
    k = rng.standard_normal((b, h, sk, d)).astype(np.float32)
    v = rng.standard_normal((b, h, sk, dv)).astype(np.float32)
    out = np.empty((b, h, s, dv), np.float32)
    spec = Attention(0, 1, 2, typed(arg(0) * const(0.3), (DType.f32,)), causal, typed(arg(0) + const(0.25), (DType.f32,)))
    kernel = numpy_print._attention(spec, [q, k, v], [out])
    assert "// q·kᵀ" in kernel.source
    kernel()
    scores = (q.astype(np.float64) @ k.astype(np.float64).swapaxes(-1, -2)) * 0.3
    if causal:
        scores = np.where(np.triu(np.ones((s, sk), bool), 1), -np.inf, scores)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    want = (p / p.sum(-1, keepdims=True) + 0.25) @ v.astype(np.float64)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# ---------------------------------------------------------------------------- every op, compiled
@needs_cc
@pytest.mark.parametrize("op", _ops())
@settings(max_examples=2)
@given(seed=st.integers(0, 2**31 - 1), pick=st.integers(0, 10))
def test_every_op_matches_the_reference_through_the_cpu_printer(op, seed, pick):
    """test_kernels' every-op test with every step compiled where the CPU printer applies:
    each primitive's C code, in every dtype it takes, against the float64 reference."""
    dtypes = _dtypes(op)
    g, arrays = _case(op, np.random.default_rng(seed), dtypes[pick % len(dtypes)])
    check(g, arrays)


@needs_cc
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from(["f32", "f64"]), even=st.booleans())
def test_rotary_half_runs_as_compiled_halves(seed, dtype, even):
    """Hugging Face's rotary (x·cos + rotate_half(x)·sin, tables broadcast over batch and
    heads) as two compiled pointwise kernels, one per half of the output, split in half or
    unevenly; within the dtype's tolerance of the float64 reference. An uneven split whose
    narrow half is too small to compile runs NumPy's passes, as correct."""
    rng = np.random.default_rng(seed)
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    b, n, s, dd = r(1, 3), r(4, 9), r(64, 160), 2 * r(16, 48)
    half = dd // 2 if even else r(1, dd)
    g, feeds = Graph("rotary"), {}

    def inp(name, shape):
        feeds[name] = data(rng, shape, dtype)
        return g.input(name, shape, dtype)
    g.output(y=g.op("rotary_half", inp("x", (b, n, s, dd)), inp("c", (1, 1, s, dd)), inp("s", (s, dd)),
                    half=[half], end=[dd], dim=[-1]))
    program = get_executor("numpy").prepare(plan(g), {})
    err, tol = max_error(program.run(feeds)["y"], interpret(g, feeds, {})["y"], dtype)
    assert err <= tol, (b, n, s, dd, half, err, tol)
    rows = b * n * s
    assert _native(program, g) == (min(dd - half, half) * rows >= numpy_print.NATIVE_MIN)


@needs_cc
def test_runs_of_compiled_steps_are_one_call_with_numpy_steps_between(monkeypatch):
    """Consecutive compiled loops run as one ``NativeRun`` (one OpenMP region, a barrier
    between loops, so each reads what the one before wrote); a NumPy step ends a run and runs
    between two; a lone compiled step stays as it is. Same results as step by step."""
    monkeypatch.setenv("RLX_NUM_THREADS", "2")
    rng = np.random.default_rng()
    x = rng.standard_normal((2, 8, 64, 64)).astype(np.float32)
    y1, y2, y3 = (np.empty((2, 8, 64 >> i, 64 >> i), np.float32) for i in (1, 2, 3))
    pool = lambda a, b: numpy_print.native_max_pool(a, b, (2, 2), (2, 2), (1, 1), (0, 0))  # noqa: E731
    double = lambda: np.multiply(y2, 2.0, out=y2)  # noqa: E731
    steps = [pool(x, y1), pool(y1, y2), double, pool(y2, y3)]
    program = native_runs.fused(steps)
    assert [type(s) for s in program] == [native_runs.NativeRun, type(double), numpy_print.ChunkedKernel]
    assert program[0].loops == [s.calls[0][0] for s in steps[:2]]
    for step in program:
        step()
    half = lambda a: a.reshape(a.shape[0], a.shape[1], a.shape[2] // 2, 2, a.shape[3] // 2, 2).max(axis=(3, 5))  # noqa: E731
    np.testing.assert_array_equal(y3, half(2 * half(half(x))))


@needs_cc
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_a_program_run_as_native_runs_equals_its_steps_one_by_one(seed):
    """A chain of convolutions (Winograd's three phases, the pixel GEMM, a depthwise one) and
    a pool, run as native runs, gives the step-by-step results bit for bit at 1, 2 and 3
    threads, and the reference's within f32's tolerance."""
    rng = np.random.default_rng(seed)
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    b, c, m, size = r(1, 3), r(16, 33), r(16, 33), (r(12, 30), r(12, 30))
    g, feeds = Graph("chain"), {"x": data(rng, (b, c) + size, "f32")}
    params = {"w3": data(rng, (m, c, 3, 3), "f32"), "b3": data(rng, (m,), "f32"),
              "w1": data(rng, (m, m, 1, 1), "f32"), "b1": data(rng, (m,), "f32"),
              "wd": data(rng, (m, 1, 3, 3), "f32"), "bd": data(rng, (m,), "f32")}
    p = {k: g.param(k, v.shape) for k, v in params.items()}
    one = dict(strides=(1, 1), dilations=(1, 1))
    y = g.op("conv_bias_act", g.input("x", feeds["x"].shape), p["w3"], p["b3"], act="relu", pads=(1, 1, 1, 1),
             group=1, **one)
    y = g.op("max_pool", y, kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0), dilations=(1, 1))
    y = g.op("conv_bias_act", y, p["w1"], p["b1"], act="silu", pads=(0, 0, 0, 0), group=1, **one)
    y = g.op("conv_bias_act", y, p["wd"], p["bd"], act="none", pads=(1, 1, 1, 1), group=m, **one)
    g.output(y=y)
    want = interpret(g, feeds, params)["y"]
    for threads in ("1", "2", "3"):
        with mock.patch.dict("os.environ", {"RLX_NUM_THREADS": threads}):
            with mock.patch.object(numpy_print, "WINOGRAD_MIN_TILES", 1):
                program = get_executor("numpy").prepare(plan(g), params)
            got = program.run(feeds)["y"]
            runs = [s for s in program._program if isinstance(s, native_runs.NativeRun)]
            assert runs and sum(len(run.loops) for run in runs) >= 6, program._program  # Winograd is three loops
            for _, fn in program.steps:
                fn()
            np.testing.assert_array_equal(got, program._outputs()["y"])
        err, tol = max_error(got, want, "f32")
        assert err <= tol, (threads, err, tol)


@needs_cc
@pytest.mark.parametrize("chunks", [1, 2, 3, 16])
def test_a_native_run_runs_every_chunk_of_every_loop_once(monkeypatch, chunks):
    """Each loop of a run hands out each chunk to one thread (a chunk per thread, or as
    threads come free), and loops run in order: an in-place +1 twice, then ×3, gives
    ((x + 1) + 1)·3 everywhere, at any chunk count."""
    monkeypatch.setenv("RLX_NUM_THREADS", "2")
    x = np.random.default_rng().standard_normal(4099).astype(np.float32)
    y = x.copy()

    def step(body: str) -> numpy_print.ChunkedKernel:
        src = c_print._finish(["float* __restrict__ o0"], [f"for (long i = lo; i < hi; ++i) {body};"])
        return numpy_print._native_kernel(src, [y], y.size, chunks)
    program = native_runs.fused([step("o0[i] += 1.0f"), step("o0[i] += 1.0f"), step("o0[i] *= 3.0f")])
    assert len(program) == 1 and len(program[0].loops) == 3
    program[0]()
    np.testing.assert_array_equal(y, ((x + np.float32(1)) + np.float32(1)) * np.float32(3))
