"""NumPy kernels that write into a preallocated output: ``kernel(args, out, attrs)``.

One table for single-op steps and for the code generated for elementwise regions. Ops
without a kernel here run their registry reference and copy into the slot.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import special

Kernel = Callable[..., None]  # kernel(args, out, attrs, scratch=None)


class Scratch:
    """Temporaries of one step, allocated on first use and reused by every later run."""

    def __init__(self) -> None:
        self.arrays: dict[object, np.ndarray] = {}

    def __call__(self, key: object, shape: tuple, dtype) -> np.ndarray:
        arr = self.arrays.get(key)
        if arr is None or arr.shape != tuple(shape) or arr.dtype != dtype:
            arr = self.arrays[key] = np.empty(shape, dtype)
        return arr


def _pool(scratch: Scratch | None) -> Scratch:
    return scratch if scratch is not None else Scratch()
SQRT1_2 = 1.0 / math.sqrt(2.0)
TANH_C = math.sqrt(2.0 / math.pi)


def _ufunc(f) -> Kernel:
    return lambda a, out, attrs, scratch=None: f(*a, out=out)


def _rsqrt(a, out, attrs, scratch=None):
    np.sqrt(a[0], out=out)
    np.divide(1.0, out, out=out)


# float32 erf: SciPy's erf is a scalar loop (about 12 ns per element here, a third of a
# BERT layer's time in its gelu epilogue). Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7;
# 6e-7 measured in f32, within f32 rounding of gelu) evaluated with vectorized ufuncs in
# cache-sized chunks with reused scratch: 1.05 ms instead of 5.9 ms for 128 x 3072.
_AS = [np.float32(c) for c in (0.3275911, 1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)]
_CHUNK = 65536
_SCRATCH = [np.empty(_CHUNK, np.float32) for _ in range(3)]


def erf_f32(x: np.ndarray, out: np.ndarray, scale: float = 1.0) -> None:
    """out = erf(scale * x) for float32 arrays of one shape (out may be x)."""
    xf, of = np.ascontiguousarray(x).reshape(-1), out.reshape(-1) if out.flags.c_contiguous else None
    target = of if of is not None else np.empty(xf.size, np.float32)
    s1, s2, s3 = _SCRATCH
    for i in range(0, xf.size, _CHUNK):
        xs = xf[i:i + _CHUNK]
        n = xs.size
        a, t, y, o = s1[:n], s2[:n], s3[:n], target[i:i + _CHUNK]
        np.multiply(xs, np.float32(scale), out=a)
        np.copysign(np.float32(1.0), a, out=o)  # the sign, before out (maybe x) is overwritten
        np.abs(a, out=a)
        np.multiply(a, _AS[0], out=t)
        t += 1
        np.reciprocal(t, out=t)
        np.multiply(t, _AS[1], out=y)
        for c in _AS[2:]:
            y += c
            y *= t
        np.multiply(a, a, out=a)
        np.negative(a, out=a)
        np.exp(a, out=a)
        y *= a
        np.subtract(1, y, out=y)
        o *= y
    if of is None:
        np.copyto(out, target.reshape(out.shape))


def _erf(a, out, attrs, scratch=None):
    x = a[0]
    if x.dtype == np.float32 and out.dtype == np.float32 and x.shape == out.shape:
        erf_f32(x, out)
    else:
        special.erf(x, out=out)


def _gelu(a, out, attrs, scratch=None):
    x = a[0]
    if x.dtype == np.float32 and out.dtype == np.float32 and x.shape == out.shape:
        t = _pool(scratch)("gelu", x.shape, x.dtype)
        erf_f32(x, t, SQRT1_2)
    else:
        t = special.erf(x * SQRT1_2)
    t += 1.0
    t *= 0.5
    np.multiply(x, t, out=out)


def _gelu_tanh(a, out, attrs, scratch=None):
    x = a[0]
    t = _pool(scratch)("gelu_tanh", np.shape(x), out.dtype)
    np.multiply(x, x, out=t)
    t *= x
    t *= 0.044715
    t += x
    t *= TANH_C
    np.tanh(t, out=t)
    t += 1.0
    t *= 0.5
    np.multiply(x, t, out=out)


def _silu(a, out, attrs, scratch=None):
    t = _pool(scratch)("silu", np.shape(a[0]), out.dtype)
    special.expit(a[0], out=t)
    np.multiply(a[0], t, out=out)


ELEMENTWISE: dict[str, Kernel] = {
    "neg": _ufunc(np.negative), "abs": _ufunc(np.abs), "exp": _ufunc(np.exp), "log": _ufunc(np.log),
    "sqrt": _ufunc(np.sqrt), "tanh": _ufunc(np.tanh), "erf": _erf,
    "sigmoid": _ufunc(special.expit), "rsqrt": _rsqrt,
    "reciprocal": lambda a, out, attrs, scratch=None: np.divide(1.0, a[0], out=out),
    "relu": lambda a, out, attrs, scratch=None: np.maximum(a[0], 0, out=out),
    "gelu": _gelu, "gelu_tanh": _gelu_tanh, "silu": _silu,
    "add": _ufunc(np.add), "sub": _ufunc(np.subtract), "mul": _ufunc(np.multiply), "div": _ufunc(np.divide),
    "pow": _ufunc(np.power), "maximum": _ufunc(np.maximum), "minimum": _ufunc(np.minimum),
    "equal": _ufunc(np.equal), "less": _ufunc(np.less), "greater": _ufunc(np.greater),
    "cast": lambda a, out, attrs, scratch=None: np.copyto(out, a[0], casting="unsafe"),
    "where": lambda a, out, attrs, scratch=None: np.copyto(out, np.where(*a)),
}


def activate(act: str, out: np.ndarray, scratch: Scratch | None = None) -> None:
    """Apply a unary elementwise op in place (``none`` is the identity)."""
    if act != "none":
        ELEMENTWISE[act]([out], out, {}, scratch)


def _matmul(a, out, attrs, scratch=None):
    np.matmul(a[0], a[1], out=out)


def _reduce(f):
    def k(a, out, attrs, scratch=None):
        axes = attrs["axes"]
        axes = tuple(range(a[0].ndim)) if axes is None else tuple(x % a[0].ndim for x in axes)
        f(a[0], axis=axes, keepdims=attrs["keepdims"], out=out)
    return k


def _softmax(a, out, attrs, scratch=None):
    ax = attrs["axis"]
    np.subtract(a[0], a[0].max(axis=ax, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=ax, keepdims=True)


def _rms_norm(x, w, eps, out):
    ms = np.einsum("...i,...i->...", x, x)[..., None] / x.shape[-1]
    np.multiply(x, 1.0 / np.sqrt(ms + eps), out=out)
    out *= w


def _layer_norm(a, out, attrs, scratch=None):
    x, w, b = a
    axes = tuple(range(attrs["axis"] % x.ndim, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    np.subtract(x, mu, out=out)
    var = np.mean(out * out, axis=axes, keepdims=True)
    out /= np.sqrt(var + attrs["eps"])
    out *= w
    out += b


def _sdpa(a, out, attrs, scratch=None):
    q, k, v = a[:3]
    scale = attrs["scale"] if attrs["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
    kt = np.swapaxes(k, -1, -2)
    s = _pool(scratch)("scores", np.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], k.shape[-2]), out.dtype)
    np.matmul(q, kt, out=s)
    s *= scale
    if len(a) > 3:
        s += a[3]
    if attrs["causal"]:
        rows, cols = np.triu_indices(s.shape[-2], 1, s.shape[-1])
        s[..., rows, cols] = -np.inf
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    np.matmul(s, v, out=out)


def _matmul_bias_act(a, out, attrs, scratch=None):
    np.matmul(a[0], a[1], out=out)
    out += a[2]
    activate(attrs["act"], out, scratch)


def _matmul_residual(a, out, attrs, scratch=None):
    np.matmul(a[0], a[1], out=out)
    out += a[2]


def _swiglu(a, out, attrs, scratch=None):
    gate = _pool(scratch)("gate", out.shape, out.dtype)
    np.matmul(a[0], a[1], out=gate)
    activate(attrs["act"], gate, scratch)
    np.matmul(a[0], a[2], out=out)
    out *= gate


KERNELS: dict[str, Kernel] = {
    **ELEMENTWISE, "matmul": _matmul, "sum": _reduce(np.sum), "mean": _reduce(np.mean), "max": _reduce(np.max),
    "softmax": _softmax, "rms_norm": lambda a, out, attrs, scratch=None: _rms_norm(a[0], a[1], attrs["eps"], out),
    "layer_norm": _layer_norm, "sdpa": _sdpa,
    "matmul_bias_act": _matmul_bias_act, "matmul_residual": _matmul_residual, "swiglu": _swiglu,
    "gather": lambda a, out, attrs, scratch=None: np.take(a[0], a[1], axis=attrs["axis"], out=out),
    "concat": lambda a, out, attrs, scratch=None: np.concatenate(a, axis=attrs["axis"], out=out),
    # a reshape that is not a view (its input is strided): copy through a view of the slot
    "reshape": lambda a, out, attrs, scratch=None: np.copyto(out.reshape(a[0].shape), a[0]),
}


def add_rms_norm(a: list[np.ndarray], outs: list[np.ndarray], attrs: dict, scratch=None) -> None:
    """The two-output residual + norm kernel."""
    np.add(a[0], a[1], out=outs[0])
    _rms_norm(outs[0], a[2], attrs["eps"], outs[1])


MULTI: dict[str, Callable[..., None]] = {"add_rms_norm": add_rms_norm}
