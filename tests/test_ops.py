"""Every registry op: shape/dtype inference, the interpreter against hand-written NumPy
(written here, independently of the registry's references), and FLOP/byte counts."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlx.errors import BindingError, DTypeError, ShapeError
from rlx.ir import REGISTRY, DimBinding, DType, Graph, interpret
from rlx.ir.expr import arg

SYMS = {"B": 3, "S": 5}
_verf = np.vectorize(math.erf)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


UNARY = {
    "neg": lambda x: -x, "abs": np.abs, "exp": np.exp, "log": np.log, "sqrt": np.sqrt,
    "rsqrt": lambda x: x ** -0.5, "reciprocal": lambda x: 1 / x, "tanh": np.tanh,
    "erf": _verf, "sigmoid": _sig, "relu": lambda x: np.where(x > 0, x, 0.0),
    "gelu": lambda x: 0.5 * x * (1 + _verf(x / math.sqrt(2))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    "silu": lambda x: x * _sig(x),
    "floor": np.floor, "ceil": np.ceil, "sin": np.sin, "cos": np.cos, "sign": np.sign,
    "softplus": lambda x: np.log1p(np.exp(x)),
    "hard_sigmoid": lambda x: np.minimum(np.maximum(0.2 * x + 0.5, 0.0), 1.0),
    "hard_swish": lambda x: x * np.minimum(np.maximum(x / 6 + 0.5, 0.0), 1.0),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.01 * x),
}
POSITIVE = {"log", "sqrt", "rsqrt", "reciprocal"}
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
          "pow": lambda a, b: a ** b, "maximum": np.maximum, "minimum": np.minimum,
          "mod": lambda a, b: a - np.floor(a / b) * b, "fmod": lambda a, b: a - np.trunc(a / b) * b}
COMPARE = {"equal": np.equal, "less": np.less, "greater": np.greater}


def rand(rng, shape, positive=False):
    x = rng.standard_normal(shape)
    x[x == 0] = 0.5
    return np.abs(x) + 0.5 if positive else x


def run(g, **arrays):
    return list(interpret(g, arrays).values())


def conc(s):
    return tuple(SYMS.get(d, d) for d in s)


dims = st.one_of(st.integers(1, 4), st.sampled_from(list(SYMS)))
shapes = st.lists(dims, min_size=0, max_size=4).map(tuple)


@st.composite
def broadcast_pair(draw):
    base = draw(st.lists(dims, min_size=0, max_size=4))
    out = []
    for _ in range(2):
        drop = draw(st.integers(0, len(base)))
        out.append(tuple(1 if draw(st.integers(0, 3)) == 0 else d for d in base[drop:]))
    return out


# ----------------------------------------------------------------------------- elementwise
@pytest.mark.parametrize("op", sorted(UNARY))
@given(s=shapes, seed=st.integers(0, 2**31))
def test_unary(op, s, seed):
    g = Graph()
    x = g.input("x", s, "f32")
    y = g.op(op, x)
    assert y.shape == s and y.dtype == DType.f32
    g.output(y)
    xv = rand(np.random.default_rng(seed), conc(s), op in POSITIVE)
    got, = run(g, x=xv)
    np.testing.assert_allclose(got, UNARY[op](xv.astype(np.float32).astype(np.float64)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", sorted(UNARY.keys() - {"neg", "abs", "relu", "sign"}))
def test_float_only_unary_rejects_ints(op):
    g = Graph()
    with pytest.raises(DTypeError, match=f"\\({op}\\).*floating"):
        g.op(op, g.input("i", (3,), "i64"))


@pytest.mark.parametrize("op", sorted(BINARY))
@given(pair=broadcast_pair(), seed=st.integers(0, 2**31))
def test_binary_broadcasting(op, pair, seed):
    g = Graph()
    a, b = g.input("a", pair[0], "f64"), g.input("b", pair[1], "f64")
    y = g.op(op, a, b)
    assert conc(y.shape) == np.broadcast_shapes(conc(pair[0]), conc(pair[1]))
    g.output(y)
    rng = np.random.default_rng(seed)
    av, bv = rand(rng, conc(pair[0]), op == "pow"), rand(rng, conc(pair[1]))
    got, = run(g, a=av, b=bv)
    np.testing.assert_allclose(got, BINARY[op](av, bv), rtol=1e-12)


@pytest.mark.parametrize("op", sorted(COMPARE))
def test_compare(op):
    rng = np.random.default_rng(1)
    g = Graph()
    y = g.op(op, g.input("a", (4, 1), "i32"), g.input("b", (3,), "i32"))
    assert y.shape == (4, 3) and y.dtype == DType.bool
    g.output(y)
    av, bv = rng.integers(-2, 3, (4, 1)).astype(np.int32), rng.integers(-2, 3, (3,)).astype(np.int32)
    np.testing.assert_array_equal(run(g, a=av, b=bv)[0], COMPARE[op](av, bv))


def test_float_classes_and_logic():
    g = Graph()
    x = g.input("x", (6,), "f32")
    nan, inf = g.op("isnan", x), g.op("isinf", x)
    assert nan.dtype == inf.dtype == DType.bool
    a, b = g.input("a", (2, 1), "bool"), g.input("b", (3,), "bool")
    g.output(nan=nan, inf=inf, n=g.op("logical_not", a), both=g.op("logical_and", a, b),
             either=g.op("logical_or", a, b), one=g.op("logical_xor", a, b))
    xv = np.array([0.0, np.nan, np.inf, -np.inf, 1.5, -2.0], np.float32)
    av, bv = np.array([[True], [False]]), np.array([True, False, True])
    got = interpret(g, {"x": xv, "a": av, "b": bv})
    want = {"nan": [False, True, False, False, False, False], "inf": [False, False, True, True, False, False],
            "n": [[False], [True]], "both": [[True, False, True], [False] * 3],
            "either": [[True] * 3, [True, False, True]], "one": [[False, True, False], [True, False, True]]}
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], np.array(v), err_msg=k)
    with pytest.raises(DTypeError, match="bool operands"):
        g.op("logical_and", x, x)


def test_integer_mod_follows_the_divisor_and_fmod_the_dividend():
    g = Graph()
    a, b = g.input("a", (4,), "i32"), g.input("b", (4,), "i32")
    g.output(m=g.op("mod", a, b), f=g.op("fmod", a, b))
    got = interpret(g, {"a": np.array([7, -7, 7, -7], np.int32), "b": np.array([3, 3, -3, -3], np.int32)},
                    dtype="native")
    np.testing.assert_array_equal(got["m"], [1, 2, -2, -1])
    np.testing.assert_array_equal(got["f"], [1, -1, 1, -1])


def test_cumsum_gather_elements_argmax_arange():
    rng = np.random.default_rng(4)
    g = Graph()
    x = g.input("x", (3, 4), "f32")
    idx = g.input("i", (2, 4), "i64")
    g.output(c=g.op("cumsum", x, axis=1), ce=g.op("cumsum", x, axis=0, exclusive=True, reverse=True),
             ge=g.op("gather_elements", x, idx, axis=0), am=g.op("argmax", x, axis=-1, keepdims=False),
             an=g.op("argmin", x, axis=0, select_last_index=True),
             r=g.op("arange", start=(2,), length=("S",), step=3))
    xv = np.round(rng.standard_normal((3, 4)), 0).astype(np.float32)  # ties, for select_last_index
    iv = np.array([[0, 2, -1, 1], [2, 2, 0, -3]])
    got = interpret(g.bind({"S": 5}), {"x": xv, "i": iv}, dtype="native")
    np.testing.assert_allclose(got["c"], np.array([[xv[r, :j + 1].sum() for j in range(4)] for r in range(3)]),
                               rtol=1e-6)
    np.testing.assert_allclose(got["ce"], np.array([[xv[r + 1:, j].sum() for j in range(4)] for r in range(3)]),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got["ge"], np.array([[xv[iv[r, j] % 3, j] for j in range(4)] for r in range(2)]))
    np.testing.assert_array_equal(got["am"], [int(np.argmax(row)) for row in xv])
    np.testing.assert_array_equal(got["an"], [[max(i for i in range(3) if xv[i, j] == xv[:, j].min())
                                               for j in range(4)]])
    np.testing.assert_array_equal(got["r"], [2, 5, 8, 11, 14])
    assert g.op("arange", start=(0,), length=("S",)).shape == ("S",)
    with pytest.raises(BindingError, match="out of range for axis 0 of size 3"):
        interpret(g.bind({"S": 5}), {"x": xv, "i": iv + 3}, dtype="native")
    with pytest.raises(ShapeError, match="larger than data"):
        g.op("gather_elements", x, g.input("j", (2, 5), "i64"), axis=0)


def _conv_loops(x, w, b, stride, pad, dil, group):
    """A direct loop convolution (2-D), as the textbook writes it."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[2]), (pad[1], pad[3])))
    oh = (h + pad[0] + pad[2] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + pad[1] + pad[3] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, m, oh, ow))
    for o in range(m):
        g = o // (m // group)
        for i in range(oh):
            for j in range(ow):
                for ci in range(cg):
                    for p in range(kh):
                        for q in range(kw):
                            y[:, o, i, j] += xp[:, g * cg + ci, i * stride[0] + p * dil[0],
                                                j * stride[1] + q * dil[1]] * w[o, ci, p, q]
    return y + b[None, :, None, None]


@given(seed=st.integers(0, 2**31), group=st.sampled_from([1, 2]), stride=st.sampled_from([(1, 1), (2, 1)]),
       dil=st.sampled_from([(1, 1), (1, 2)]), pad=st.sampled_from([(0, 0, 0, 0), (1, 0, 2, 1)]))
def test_conv_against_loops(seed, group, stride, dil, pad):
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 4 // group, 3, 2)), rng.standard_normal(6)
    g = Graph()
    y = g.op("conv", g.input("x", ("B", 4, 7, 6), "f64"), g.input("w", w.shape, "f64"), g.input("b", (6,), "f64"),
             strides=stride, pads=pad, dilations=dil, group=group)
    g.output(y=y)
    got = interpret(g.bind({"B": 2}), {"x": x, "w": w, "b": b})["y"]
    np.testing.assert_allclose(got, _conv_loops(x, w, b, stride, pad, dil, group), rtol=1e-10, atol=1e-10)
    assert y.shape == ("B", 6) + got.shape[2:]


def test_gather_nd_with_and_without_batch_dims():
    rng = np.random.default_rng(6)
    data = rng.standard_normal((2, 3, 4))
    g = Graph()
    d = g.input("d", (2, 3, 4), "f64")
    i1, i2 = g.input("i1", (5, 2), "i64"), g.input("i2", (2, 1), "i64")
    g.output(a=g.op("gather_nd", d, i1), b=g.op("gather_nd", d, i2, batch_dims=1))
    idx1 = np.stack([rng.integers(0, 2, 5), rng.integers(-3, 3, 5)], axis=1)
    idx2 = np.array([[2], [-1]])
    got = interpret(g, {"d": data, "i1": idx1, "i2": idx2})
    np.testing.assert_array_equal(got["a"], np.array([data[i, j] for i, j in idx1]))
    np.testing.assert_array_equal(got["b"], np.array([data[0, 2], data[1, -1]]))
    with pytest.raises(BindingError, match="out of range"):
        interpret(g, {"d": data, "i1": idx1 + 5, "i2": idx2})
    with pytest.raises(ShapeError, match="batch_dims"):
        g.op("gather_nd", d, g.input("i3", (2, 3), "i64"), batch_dims=1)


def test_pools_against_loops():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 5, 5))
    g = Graph()
    xi = g.input("x", x.shape, "f64")
    g.output(m=g.op("max_pool", xi, kernel=(2, 2), strides=(2, 2), ceil_mode=True),
             a=g.op("avg_pool", xi, kernel=(3, 3), pads=(1, 1, 1, 1)),
             ai=g.op("avg_pool", xi, kernel=(3, 3), pads=(1, 1, 1, 1), count_include_pad=True))
    got = interpret(g, {"x": x})
    m = np.array([[[x[0, c, i:i + 2, j:j + 2].max() for j in range(0, 5, 2)] for i in range(0, 5, 2)]
                  for c in range(2)])
    np.testing.assert_allclose(got["m"][0], m)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    inside = np.pad(np.ones((5, 5)), 1)
    a = np.array([[[xp[0, c, i:i + 3, j:j + 3].sum() / inside[i:i + 3, j:j + 3].sum() for j in range(5)]
                   for i in range(5)] for c in range(2)])
    np.testing.assert_allclose(got["a"][0], a)
    np.testing.assert_allclose(got["ai"][0], a * np.array([[inside[i:i + 3, j:j + 3].sum() for j in range(5)]
                                                           for i in range(5)]) / 9)
    with pytest.raises(ShapeError, match="do not fit group=3"):
        g.op("conv", xi, g.input("w", (3, 1, 1, 1), "f64"), group=3)
    with pytest.raises(ShapeError, match="ceil_mode needs static spatial dims"):
        g.op("max_pool", g.input("s", (1, 2, "H", 4), "f64"), kernel=(2, 2), ceil_mode=True)


@pytest.mark.parametrize("h", [7, 8, 31])
def test_strided_windows_over_symbolic_dims_resolve_to_the_static_sizes(h):
    """A strided window's output over a symbolic dim is a floor division: the same size the
    static shape rule gives, for odd and even inputs, through a chain (a ResNet stem)."""
    def stem(d):
        g = Graph()
        x = g.input("x", (1, 2, d, d), "f64")
        y = g.op("conv", x, g.input("w", (3, 2, 7, 7), "f64"), strides=(2, 2), pads=(3, 3, 3, 3))
        return g.op("max_pool", y, kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    symbolic, static = stem("H").shape, stem(h).shape
    assert "//" in symbolic[2]
    assert DimBinding(H=h).resolve_shape(symbolic) == static


def test_resize_matches_its_definitions():
    """Nearest upsampling by 2 repeats; linear with align_corners hits the corners and the
    midpoints; asymmetric nearest downsampling takes every other sample; cubic of a linear
    ramp away from the edges is the ramp (Keys' kernel with a = -0.5 reproduces linear functions)."""
    x = np.arange(12, dtype=np.float64).reshape(1, 1, 3, 4)
    g = Graph()
    xi = g.input("x", (1, 1, "H", 4), "f64")
    g.output(n=g.op("resize", xi, sizes=(1, 1, "2*H", 8), scales=(1.0, 1.0, 2.0, 2.0), mode="nearest",
                    coordinates="asymmetric", nearest_mode="floor"),
             l=g.op("resize", xi, sizes=(1, 1, "2*H", 7), mode="linear", coordinates="align_corners"),
             d=g.op("resize", g.input("z", (1, 1, 4, 8), "f64"), sizes=(1, 1, 2, 4), scales=(1.0, 1.0, 0.5, 0.5),
                    mode="nearest", coordinates="asymmetric"),
             c=g.op("resize", g.input("r", (1, 1, 1, 16), "f64"), sizes=(1, 1, 1, 32), mode="cubic",
                    cubic_coeff_a=-0.5))
    z = np.arange(32.0).reshape(1, 1, 4, 8)
    ramp = np.arange(16.0).reshape(1, 1, 1, 16)
    got = interpret(g, {"x": x, "z": z, "r": ramp})
    np.testing.assert_array_equal(got["n"], x.repeat(2, axis=2).repeat(2, axis=3))
    assert got["l"].shape == (1, 1, 6, 7)
    np.testing.assert_allclose(got["l"][0, 0, 0], np.linspace(0, 3, 7))
    np.testing.assert_allclose(got["l"][0, 0, :, 0], np.linspace(0, 8, 6))
    np.testing.assert_array_equal(got["d"], z[:, :, ::2, ::2])
    np.testing.assert_allclose(got["c"][0, 0, 0, 4:-4], (np.arange(32.0)[4:-4] + 0.5) / 2 - 0.5, atol=1e-12)


def test_binary_dtype_mismatch_names_node_and_dtypes():
    g = Graph()
    with pytest.raises(DTypeError, match=r"node 'add_1' \(add\): dtypes differ: f32, f16"):
        g.add(g.input("a", (2,), "f32"), g.input("b", (2,), "f16"))


def test_scalar_operands_become_constants_of_the_tensor_dtype():
    g = Graph()
    x = g.input("x", (3,), "f16")
    y = 2.0 * x - 1
    assert y.dtype == DType.f16 and g.op_counts()["mul"] == 1
    assert sum(n.op == "constant" for n in g.nodes) == 2


def test_where():
    rng = np.random.default_rng(2)
    g = Graph()
    y = g.where(g.input("c", ("S", 1), "bool"), g.input("a", (4,), "f32"), g.input("b", ("S", 4), "f32"))
    assert y.shape == ("S", 4)
    g.output(y)
    c, a, b = rng.random((5, 1)) < 0.5, rand(rng, (4,)), rand(rng, (5, 4))
    np.testing.assert_allclose(run(g, c=c, a=a, b=b)[0], np.where(c, a.astype(np.float32), b.astype(np.float32)))
    with pytest.raises(DTypeError, match="condition must be bool"):
        g.where(g.input("c2", (4,), "f32"), g.input("a2", (4,), "f32"), g.input("b2", (4,), "f32"))


@pytest.mark.parametrize("src,dst", [("f32", "f16"), ("f32", "bf16"), ("f64", "i32"), ("i64", "f32"), ("f32", "bool")])
def test_cast(src, dst):
    g = Graph()
    y = g.cast(g.input("x", ("B", 3), src), dst)
    assert y.dtype == DType(dst) and y.shape == ("B", 3)
    g.output(y)
    xv = (np.random.default_rng(3).standard_normal((3, 3)) * 4).astype(DType(src).np)
    got = interpret(g, {"x": xv}, dtype="native")["cast_1"]
    np.testing.assert_array_equal(got.astype(DType(dst).np), xv.astype(DType(dst).np))


# ----------------------------------------------------------------------------- matmul
@st.composite
def matmul_shapes(draw):
    m, k, n = draw(dims), draw(dims), draw(dims)
    base = draw(st.lists(dims, max_size=2))
    ab = tuple(1 if draw(st.booleans()) else d for d in base)
    bb = tuple(base[draw(st.integers(0, len(base))):])
    return ab + (m, k), bb + (k, n)


@given(ab=matmul_shapes(), seed=st.integers(0, 2**31))
def test_matmul_batched_broadcast(ab, seed):
    g = Graph()
    y = g.matmul(g.input("a", ab[0], "f64"), g.input("b", ab[1], "f64"))
    assert conc(y.shape) == np.matmul(np.ones(conc(ab[0])), np.ones(conc(ab[1]))).shape
    g.output(y)
    rng = np.random.default_rng(seed)
    av, bv = rand(rng, conc(ab[0])), rand(rng, conc(ab[1]))
    np.testing.assert_allclose(run(g, a=av, b=bv)[0], av @ bv, rtol=1e-10)


def test_matmul_vector_operands_and_mismatch():
    g = Graph()
    assert g.matmul(g.input("v", (4,)), g.input("m", (4, 3))).shape == (3,)
    assert g.matmul(g.input("m2", (2, 4)), g.input("v2", (4,))).shape == (2,)
    with pytest.raises(ShapeError, match=r"\(matmul\): contraction dims differ: 4 vs 5.*\(2, 4\), \(5, 3\)"):
        g.matmul(g.input("a", (2, 4)), g.input("b", (5, 3)))


# ----------------------------------------------------------------------------- layout
@given(s=st.lists(dims, min_size=1, max_size=4).map(tuple), data=st.data())
def test_transpose(s, data):
    perm = tuple(data.draw(st.permutations(range(len(s)))))
    g = Graph()
    y = g.transpose(g.input("x", s), perm)
    assert y.shape == tuple(s[p] for p in perm)
    assert g.transpose(g.input("z", s)).shape == tuple(reversed(s))
    g.output(y)
    xv = rand(np.random.default_rng(0), conc(s))
    got = interpret(g, {"x": xv, "z": xv})[y.name]
    np.testing.assert_array_equal(got, xv.astype(np.float32).transpose(perm))


def test_reshape_static_symbolic_and_errors():
    g = Graph()
    x = g.input("x", ("B", "S", 12))
    flat = g.reshape(x, (-1, 12))
    assert flat.shape == ("B*S", 12)
    heads = g.reshape(x, ("B", "S", 3, 4))
    assert heads.shape == ("B", "S", 3, 4)
    back = g.reshape(flat, ("B", "S", 12))
    assert back.shape == x.shape
    g.output(flat, heads, back)
    xv = rand(np.random.default_rng(1), (3, 5, 12))
    out = interpret(g, {"x": xv})
    np.testing.assert_array_equal(out[flat.name], xv.astype(np.float32).reshape(15, 12))
    np.testing.assert_array_equal(out[heads.name], xv.astype(np.float32).reshape(3, 5, 3, 4))
    with pytest.raises(ShapeError, match=r"reshape_\d+' \(reshape\): cannot reshape \(B, S, 12\)"):
        g.reshape(x, ("B", 12))
    with pytest.raises(ShapeError, match="more than one -1"):
        g.reshape(x, (-1, -1))


def test_expand():
    g = Graph()
    y = g.expand(g.input("x", (1, "S", 1)), ("B", "S", 4))
    assert y.shape == ("B", "S", 4)
    g.output(y)
    xv = rand(np.random.default_rng(2), (1, 5, 1))
    got = interpret(g, {"x": xv}, binding={"B": 3})[y.name]
    np.testing.assert_array_equal(got, np.broadcast_to(xv.astype(np.float32), (3, 5, 4)))
    with pytest.raises(ShapeError, match="cannot broadcast"):
        g.expand(g.input("z", (3,)), (4,))


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ((1,), (3,), (0,), None), ((0, 2), (2, 2**63 - 1), (0, 1), None), ((-3,), (-1,), (1,), None),
    ((4,), (0,), (0,), (-1,)), ((0,), (6,), (1,), (2,)),
])
def test_slice_static(starts, ends, axes, steps):
    g = Graph()
    y = g.slice(g.input("x", (5, 6)), starts, ends, axes, steps)
    g.output(y)
    xv = rand(np.random.default_rng(3), (5, 6))
    idx = [slice(None)] * 2
    for s, e, a, st_ in zip(starts, ends, axes, steps or (1,) * len(starts)):
        idx[a] = slice(s, e, st_)
    want = xv.astype(np.float32)[tuple(idx)]
    assert y.shape == want.shape
    np.testing.assert_array_equal(run(g, x=xv)[0], want)


def test_slice_symbolic():
    g = Graph()
    x = g.input("x", ("B", "S"))
    assert g.slice(x, (1,), (2**63 - 1,), (1,)).shape == ("B", "S-1")
    assert g.slice(x, (0,), (2,), (1,)).shape == ("B", 2)
    assert g.slice(x, (-2,), (2**63 - 1,), (1,)).shape == ("B", 2)
    with pytest.raises(ShapeError, match="step 1"):
        g.slice(x, (0,), (4,), (1,), (2,))
    # symbolic bounds, as exporters slice a position table: table[:S], table[S-1:S]
    table = g.input("t", (64, 16), "f64")
    assert g.slice(table, (0,), ("S",), (0,)).shape == ("S", 16)
    assert g.slice(table, ("S-1",), ("S",), (0,)).shape == (1, 16)
    g.output(g.slice(table, (0,), ("S",), (0,)))
    tv = rand(np.random.default_rng(12), (64, 16))
    np.testing.assert_array_equal(interpret(g, {"x": rand(np.random.default_rng(1), (2, 5)), "t": tv})[g.outputs[0][0]],
                                  tv[:5])


def test_concat_and_split():
    g = Graph()
    a, b = g.input("a", ("B", 2)), g.input("b", ("B", 3))
    c = g.concat(a, b, axis=1)
    assert c.shape == ("B", 5)
    assert g.concat([a, a], axis=0).shape == ("2*B", 2)
    p, q = g.split(c, 1, (1, 4))
    assert p.shape == ("B", 1) and q.shape == ("B", 4)
    g.output(c, p, q)
    rng = np.random.default_rng(4)
    av, bv = rand(rng, (3, 2)), rand(rng, (3, 3))
    cv, pv, qv = run(g, a=av, b=bv)
    want = np.concatenate([av, bv], 1).astype(np.float32)
    np.testing.assert_array_equal(cv, want)
    np.testing.assert_array_equal(pv, want[:, :1])
    np.testing.assert_array_equal(qv, want[:, 1:])
    with pytest.raises(ShapeError, match="differ off axis"):
        g.concat(a, g.input("z", ("S", 2)), axis=1)
    with pytest.raises(ShapeError, match="do not sum"):
        g.split(c, 1, (2, 2))


# ----------------------------------------------------------------------------- reductions
@pytest.mark.parametrize("op,fn", [("sum", np.sum), ("mean", np.mean), ("max", np.max)])
@given(s=st.lists(dims, min_size=1, max_size=4).map(tuple), keep=st.booleans(), data=st.data())
def test_reductions(op, fn, s, keep, data):
    axes = tuple(data.draw(st.lists(st.integers(-len(s), len(s) - 1), max_size=len(s), unique_by=lambda a: a % len(s))))
    axes = axes or None
    g = Graph()
    y = g.op(op, g.input("x", s, "f64"), axes, keep)
    g.output(y)
    xv = rand(np.random.default_rng(5), conc(s))
    want = fn(xv, axis=axes, keepdims=keep)
    assert conc(y.shape) == np.shape(want)
    np.testing.assert_allclose(run(g, x=xv)[0], want, rtol=1e-12)


# ----------------------------------------------------------------------------- composites
@given(s=st.lists(dims, min_size=1, max_size=3).map(tuple), seed=st.integers(0, 2**31))
def test_softmax(s, seed):
    g = Graph()
    y = g.softmax(g.input("x", s, "f64"), axis=0)
    g.output(y)
    xv = rand(np.random.default_rng(seed), conc(s)) * 10
    np.testing.assert_allclose(run(g, x=xv)[0], _softmax(xv, 0), rtol=1e-12)


def test_layer_norm_and_rms_norm():
    rng = np.random.default_rng(6)
    g = Graph()
    x = g.input("x", ("B", 8), "f64")
    w, b = g.param("w", (8,), "f64"), g.param("b", (8,), "f64")
    ln, rn = g.layer_norm(x, w, b, eps=1e-5), g.rms_norm(x, w, eps=1e-6)
    g.output(ln, rn)
    xv, wv, bv = rand(rng, (3, 8)), rand(rng, (8,)), rand(rng, (8,))
    out = interpret(g, {"x": xv}, {"w": wv, "b": bv})
    mu, var = xv.mean(-1, keepdims=True), xv.var(-1, keepdims=True)
    np.testing.assert_allclose(out[ln.name], (xv - mu) / np.sqrt(var + 1e-5) * wv + bv, rtol=1e-12)
    np.testing.assert_allclose(out[rn.name], xv / np.sqrt((xv ** 2).mean(-1, keepdims=True) + 1e-6) * wv, rtol=1e-12)
    with pytest.raises(ShapeError, match="weight shape"):
        g.rms_norm(x, g.param("w7", (7,), "f64"))


def test_gather_embedding():
    rng = np.random.default_rng(7)
    g = Graph()
    y = g.gather(g.param("table", (10, 4)), g.input("ids", ("B", "S"), "i64"))
    assert y.shape == ("B", "S", 4)
    g.output(y)
    tv, iv = rand(rng, (10, 4)), rng.integers(0, 10, (3, 5))
    np.testing.assert_array_equal(interpret(g, {"ids": iv}, {"table": tv})[y.name], tv.astype(np.float32)[iv])
    with pytest.raises(DTypeError, match="indices must be integer"):
        g.gather(g.param("t2", (10, 4)), g.input("f", (3,), "f32"))


def test_rotary():
    rng = np.random.default_rng(8)
    g = Graph()
    y = g.rotary(g.input("x", ("B", 2, "S", 8), "f64"), g.input("c", ("S", 4), "f64"), g.input("s", ("S", 4), "f64"))
    g.output(y)
    xv, cv, sv = rand(rng, (3, 2, 5, 8)), rand(rng, (5, 4)), rand(rng, (5, 4))
    x1, x2 = xv[..., :4], xv[..., 4:]
    want = np.concatenate([x1 * cv - x2 * sv, x1 * sv + x2 * cv], -1)
    np.testing.assert_allclose(run(g, x=xv, c=cv, s=sv)[0], want, rtol=1e-12)
    with pytest.raises(ShapeError, match="must be even"):
        g.rotary(g.input("x2", (5, 7)), g.input("c2", (5, 3)), g.input("s2", (5, 3)))


def test_causal_mask():
    g = Graph()
    y = g.causal_mask(g.input("x", ("S", "S"), "f64"))
    g.output(y)
    xv = rand(np.random.default_rng(9), (5, 5))
    want = xv.copy()
    want[np.triu_indices(5, 1)] = -np.inf
    np.testing.assert_array_equal(run(g, x=xv)[0], want)


@pytest.mark.parametrize("upper,k", [(False, 0), (True, 0), (True, 1), (False, -1)])
def test_trilu(upper, k):
    g = Graph()
    g.output(g.trilu(g.input("x", ("B", "S", "S"), "f64"), upper=upper, k=k))
    xv = rand(np.random.default_rng(11), (2, 5, 5))
    want = np.triu(xv, k) if upper else np.tril(xv, k)
    np.testing.assert_array_equal(run(g, x=xv)[0], want)
    with pytest.raises(ShapeError, match="rank >= 2"):
        g.trilu(g.input("v", (4,)))


@pytest.mark.parametrize("causal,mask,scale", [(False, False, None), (True, False, 0.3), (False, True, None), (True, True, 1.0)])
def test_sdpa(causal, mask, scale):
    rng = np.random.default_rng(10)
    g = Graph()
    q, k, v = (g.input(n, ("B", 2, "S", 4), "f64") for n in "qkv")
    m = [g.input("m", ("S", "S"), "f64")] if mask else []
    y = g.sdpa(q, k, v, *m, causal=causal, scale=scale)
    assert y.shape == ("B", 2, "S", 4)
    g.output(y)
    qv, kv, vv, mv = (rand(rng, s) for s in [(3, 2, 5, 4)] * 3 + [(5, 5)])
    s = qv @ kv.swapaxes(-1, -2) * (scale if scale is not None else 0.5)
    if mask:
        s = s + mv
    if causal:
        s = s + np.triu(np.full((5, 5), -np.inf), 1)
    want = _softmax(s) @ vv
    arrays = dict(q=qv, k=kv, v=vv, **({"m": mv} if mask else {}))
    np.testing.assert_allclose(run(g, **arrays)[0], want, rtol=1e-12)


def test_constant():
    g = Graph()
    c = g.constant([[1.0, 2.0]], "f16")
    assert c.shape == (1, 2) and c.dtype == DType.f16
    g.output(c)
    np.testing.assert_array_equal(interpret(g, {})[c.name], [[1.0, 2.0]])


# ----------------------------------------------------------------------------- costs
def _cost(build):
    g = Graph()
    return build(g).node.cost()


def test_flop_and_byte_counts_on_known_cases():
    assert _cost(lambda g: g.matmul(g.input("a", (2, 3)), g.input("b", (3, 4)))) == (48.0, (6 + 12 + 8) * 4)
    assert _cost(lambda g: g.matmul(g.input("a", (5, 2, 3), "f16"), g.input("b", (3, 4), "f16"))) == (240.0, (30 + 12 + 40) * 2)
    assert _cost(lambda g: g.add(g.input("a", (8, 4)), g.input("b", (4,)))) == (32.0, (32 + 4 + 32) * 4)
    assert _cost(lambda g: g.exp(g.input("a", (10,), "f64"))) == (40.0, 160)
    assert _cost(lambda g: g.sum(g.input("a", (6, 5)), (1,))) == (30.0, (30 + 6) * 4)
    assert _cost(lambda g: g.reshape(g.input("a", (6, 5)), (30,))) == (0.0, 0)  # a view moves nothing
    b, h, s, d = 1, 2, 8, 4
    flops, nbytes = _cost(lambda g: g.sdpa(*(g.input(n, (b, h, s, d)) for n in "qkv")))
    assert flops == b * h * (2 * s * s * d * 2 + 10 * s * s)
    assert nbytes == 4 * b * h * s * d * 4


def test_cost_of_symbolic_node_needs_binding():
    from rlx.errors import BindingError
    g = Graph()
    y = g.relu(g.input("x", ("B", 4)))
    assert y.node.cost({"B": 2}) == (8.0, 64)
    with pytest.raises(BindingError, match="B"):
        y.node.cost()


# ----------------------------------------------------------------------------- coverage
TESTED = (set(UNARY) | set(BINARY) | set(COMPARE) | {
    "input", "param", "constant", "cast", "where", "matmul", "transpose", "reshape", "expand",
    "slice", "concat", "split", "sum", "mean", "max", "softmax", "layer_norm", "rms_norm",
    "gather", "rotary", "causal_mask", "trilu", "sdpa", "isnan", "isinf", "logical_not", "logical_and",
    "logical_or", "logical_xor", "cumsum", "gather_elements", "argmax", "argmin", "arange", "conv", "max_pool",
    "avg_pool", "gather_nd", "resize"})


def test_every_registry_op_is_tested_here():
    shipped = {op.name for op in REGISTRY if op.category != "fused"}
    assert shipped - TESTED == set(), "add tests for these ops"


def test_every_op_declares_its_contract():
    for op in REGISTRY:
        assert op.doc, op.name
        assert callable(op.shape) and callable(op.dtype) and callable(op.flops), op.name
        if op.category != "source" or op.name == "constant":
            assert callable(op.reference), op.name


def test_an_op_registered_at_load_time_gets_a_builder_and_runs():
    from rlx.ir import OpDef, register
    from rlx.ir.registry import REGISTRY as R
    op = OpDef(name="square_plus", inputs=("x", "y"), shape=lambda s, a: [s[0]], dtype=lambda d, a: [d[0]],
               reference=lambda ins, a: ins[0] ** 2 + ins[1], flops=lambda i, o, a: 2 * math.prod(o[0]),
               category="fused", doc="test op")
    register(op)
    try:
        g = Graph()
        y = g.square_plus(g.input("x", (3,), "f64"), g.input("y", (3,), "f64"))
        g.output(y)
        got = interpret(g, {"x": np.array([1.0, 2, 3]), "y": np.array([1.0, 1, 1])})[y.name]
        np.testing.assert_array_equal(got, [2, 5, 10])
        assert y.node.cost() == (6.0, 72)
        with pytest.raises(Exception, match="already registered"):
            register(OpDef(name="square_plus", inputs=("x",), shape=op.shape, dtype=op.dtype,
                           reference=op.reference, flops=op.flops))
    finally:
        R.unregister("square_plus")


# Hand-counted (FLOPs, bytes) for every op on a small f32 case (4 bytes per element).
# Elementwise: FLOPs = per-element count x elements; bytes = inputs read + output written.
_X = (2, 3)  # 6 elements
PER_ELEM = {"neg": 1, "abs": 1, "exp": 4, "log": 4, "sqrt": 2, "rsqrt": 3, "reciprocal": 1, "tanh": 6,
            "erf": 6, "sigmoid": 5, "relu": 1, "gelu": 10, "gelu_tanh": 12, "silu": 6, "floor": 1, "ceil": 1,
            "sin": 8, "cos": 8, "sign": 1, "hard_sigmoid": 4, "hard_swish": 5, "leaky_relu": 2, "softplus": 10}
COST_CASES = {
    **{op: (lambda g, op=op: g.op(op, g.input("x", _X)), (6 * k, 48)) for op, k in PER_ELEM.items()},
    **{op: (lambda g, op=op: g.op(op, g.input("a", _X), g.input("b", (3,))),
            (6 * {"pow": 4, "mod": 2, "fmod": 2}.get(op, 1), 24 + 12 + 24)) for op in BINARY},
    **{op: (lambda g, op=op: g.op(op, g.input("x", _X)), (6, 24 + 6)) for op in ("isnan", "isinf")},
    "logical_not": (lambda g: g.op("logical_not", g.input("x", _X, "bool")), (6, 12)),
    **{op: (lambda g, op=op: g.op(op, g.input("a", _X, "bool"), g.input("b", _X, "bool")), (6, 18))
       for op in ("logical_and", "logical_or", "logical_xor")},
    "cumsum": (lambda g: g.op("cumsum", g.input("x", _X), axis=1), (6, 48)),
    "gather_elements": (lambda g: g.op("gather_elements", g.input("x", _X), g.input("i", _X, "i64")), (0, 24 + 48 + 24)),
    **{op: (lambda g, op=op: g.op(op, g.input("x", _X)), (6, 24 + 24)) for op in ("argmax", "argmin")},
    "arange": (lambda g: g.op("arange", start=(0,), length=(5,)), (0, 40)),
    "gather_nd": (lambda g: g.op("gather_nd", g.input("t", (10, 3)), g.input("i", (4, 1), "i64")), (0, 120 + 32 + 48)),
    # (1, 2, 4, 4) * (3, 2, 3, 3) -> (1, 3, 2, 2): 12 outputs x 18 taps x 2, + 12 for the bias
    "conv": (lambda g: g.op("conv", g.input("x", (1, 2, 4, 4)), g.input("w", (3, 2, 3, 3)), g.input("b", (3,))),
             (2 * 12 * 18 + 12, 128 + 216 + 12 + 48)),
    **{op: (lambda g, op=op: g.op(op, g.input("x", (1, 2, 4, 4)), kernel=(2, 2), strides=(2, 2)), (8 * 4, 128 + 32))
       for op in ("max_pool", "avg_pool")},
    # (1, 2, 4, 4) -> (1, 2, 8, 8): 128 outputs, 4 taps each for linear over 2 spatial axes
    "resize": (lambda g: g.op("resize", g.input("x", (1, 2, 4, 4)), sizes=(1, 2, 8, 8), mode="linear"),
               (128 * 4, 128 + 512)),
    **{op: (lambda g, op=op: g.op(op, g.input("a", _X), g.input("b", _X)), (6, 24 + 24 + 6)) for op in COMPARE},
    "cast": (lambda g: g.cast(g.input("x", _X), "f16"), (0, 24 + 12)),
    "where": (lambda g: g.where(g.input("c", _X, "bool"), g.input("a", _X), g.input("b", _X)), (6, 6 + 24 + 24 + 24)),
    "matmul": (lambda g: g.matmul(g.input("a", _X), g.input("b", (3, 5))), (2 * 2 * 5 * 3, 24 + 60 + 40)),
    "transpose": (lambda g: g.transpose(g.input("x", _X)), (0, 0)),
    "reshape": (lambda g: g.reshape(g.input("x", _X), (6,)), (0, 0)),
    "expand": (lambda g: g.expand(g.input("x", (1, 3)), (4, 3)), (0, 0)),
    "slice": (lambda g: g.slice(g.input("x", _X), (0,), (1,)), (0, 0)),
    "concat": (lambda g: g.concat(g.input("a", _X), g.input("b", _X), axis=0), (0, 48 + 48)),
    "split": (lambda g: g.split(g.input("x", _X), 1, (1, 2))[0], (0, 0)),  # a view, as slice
    "sum": (lambda g: g.sum(g.input("x", _X), (1,)), (6, 24 + 8)),
    "mean": (lambda g: g.mean(g.input("x", _X), (1,)), (6, 24 + 8)),
    "max": (lambda g: g.max(g.input("x", _X)), (6, 24 + 4)),
    "softmax": (lambda g: g.softmax(g.input("x", _X)), (48, 48)),
    "layer_norm": (lambda g: g.layer_norm(g.input("x", _X), g.input("w", (3,)), g.input("b", (3,))), (48, 24 + 12 + 12 + 24)),
    "rms_norm": (lambda g: g.rms_norm(g.input("x", _X), g.input("w", (3,))), (30, 24 + 12 + 24)),
    "gather": (lambda g: g.gather(g.input("t", (10, 3)), g.input("i", (4,), "i64")), (0, 120 + 32 + 48)),
    "rotary": (lambda g: g.rotary(g.input("x", (5, 4)), g.input("c", (5, 2)), g.input("s", (5, 2))), (60, 80 + 40 + 40 + 80)),
    "causal_mask": (lambda g: g.causal_mask(g.input("x", (3, 3))), (9, 72)),
    "trilu": (lambda g: g.trilu(g.input("x", (3, 3))), (0, 72)),
    "sdpa": (lambda g: g.sdpa(g.input("q", (2, 4)), g.input("k", (3, 4)), g.input("v", (3, 5))),
             (2 * 2 * 3 * 4 + 2 * 2 * 3 * 5 + 10 * 2 * 3, 32 + 48 + 60 + 40)),
    "region": (lambda g: g.region(g.input("a", _X), g.input("b", (3,)), body=arg(0).exp() * arg(1)), (6 * 5, 24 + 12 + 24)),
    "constant": (lambda g: g.constant(1.0), (0, 0)),
    "input": (lambda g: g.input("x", _X), (0, 0)),
    "param": (lambda g: g.param("p", _X), (0, 0)),
}


@pytest.mark.parametrize("op", sorted(COST_CASES))
def test_flop_and_byte_count_of_every_op(op):
    build, want = COST_CASES[op]
    v = build(Graph())
    assert v.node.op == op
    assert v.node.cost() == (float(want[0]), want[1])


def test_every_op_has_a_cost_case():
    assert {op.name for op in REGISTRY if op.category != "fused" or op.name == "region"} <= set(COST_CASES)
