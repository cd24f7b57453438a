"""Native CPU kernels (rlx.exec.cc + c_print): the loop nests the CPU printer prints for
depthwise and thin grouped convolutions match the float64 reference on random shapes, run
where the NumPy executor dispatches them, and give way to the NumPy printer's kernels
without a compiler; the compiler's cache and its errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rlx.exec import c_print, cc
from rlx.exec.numpy_print import DIRECT_CONV_DEPTH
from rlx.ir import Graph
from rlx.pipeline import TOLERANCE
from test_kernels import check, data, run_graph

needs_cc = pytest.mark.skipif(cc.available() is not None, reason=f"no native kernels here: {cc.available()}")


def _conv_case(rng, dtype: str, rank: int, depthwise: bool):
    """A random depthwise or thin grouped convolution with bias, activation and maybe a residual."""
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    b, group = r(1, 3), r(1, 9)
    cin, cout = (group, group * r(1, 3)) if depthwise else (group * r(2, 4), group * r(1, 3))
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
    """Whether the convolution step runs a printed C++ kernel."""
    node = next(n for n in g.nodes if n.opdef.category != "source")
    fn = dict((s.node, f) for s, f in program.steps)[node.name]
    return getattr(fn, "source", "").startswith('extern "C"')


@needs_cc
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rank=st.sampled_from([1, 2]), dtype=st.sampled_from(["f32", "f64"]),
       depthwise=st.booleans())
def test_direct_convolutions_match_the_reference(seed, rank, dtype, depthwise):
    """Strides, dilations, asymmetric pads, 1-D and 2-D, depthwise (channel multiplier 1 or 2)
    and grouped with fewer than DIRECT_CONV_DEPTH products per output, every epilogue: within the dtype's
    tolerance of the float64 reference (f32 {f32}, f64 {f64})."""
    rng = np.random.default_rng(seed)
    g, arrays = _conv_case(rng, dtype, rank, depthwise)
    w = arrays["w"]
    check(g, arrays, generated=True)
    _, _, program = run_graph(g, arrays)
    direct = w.shape[1] == 1 or w[0].size < DIRECT_CONV_DEPTH
    assert _native(program, g) == direct


test_direct_convolutions_match_the_reference.__doc__ = test_direct_convolutions_match_the_reference.__doc__.format(
    f32=TOLERANCE["f32"], f64=TOLERANCE["f64"])


@needs_cc
def test_without_a_compiler_the_numpy_kernels_run(monkeypatch):
    rng = np.random.default_rng(7)
    g, arrays = _conv_case(rng, "f32", 2, True)
    monkeypatch.setenv("RLX_CC", "0")
    assert "RLX_CC=0" in cc.available()
    got, want, program = run_graph(g, arrays)
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
