"""NumPy kernels that write into a preallocated output: ``kernel(args, out, attrs)``.

One table for single-op steps and for the code generated for elementwise regions. Ops
without a kernel here run their registry reference and copy into the slot.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import special

Kernel = Callable[[list[np.ndarray], np.ndarray, dict], None]
SQRT1_2 = 1.0 / math.sqrt(2.0)
TANH_C = math.sqrt(2.0 / math.pi)


def _ufunc(f) -> Kernel:
    return lambda a, out, attrs: f(*a, out=out)


def _rsqrt(a, out, attrs):
    np.sqrt(a[0], out=out)
    np.divide(1.0, out, out=out)


def _gelu(a, out, attrs):
    x = a[0]
    t = special.erf(x * SQRT1_2)
    t += 1.0
    t *= 0.5
    np.multiply(x, t, out=out)


def _gelu_tanh(a, out, attrs):
    x = a[0]
    t = np.tanh(TANH_C * (x + 0.044715 * x * x * x))
    t += 1.0
    t *= 0.5
    np.multiply(x, t, out=out)


def _silu(a, out, attrs):
    np.multiply(a[0], special.expit(a[0]), out=out)


ELEMENTWISE: dict[str, Kernel] = {
    "neg": _ufunc(np.negative), "abs": _ufunc(np.abs), "exp": _ufunc(np.exp), "log": _ufunc(np.log),
    "sqrt": _ufunc(np.sqrt), "tanh": _ufunc(np.tanh), "erf": _ufunc(special.erf),
    "sigmoid": _ufunc(special.expit), "rsqrt": _rsqrt,
    "reciprocal": lambda a, out, attrs: np.divide(1.0, a[0], out=out),
    "relu": lambda a, out, attrs: np.maximum(a[0], 0, out=out),
    "gelu": _gelu, "gelu_tanh": _gelu_tanh, "silu": _silu,
    "add": _ufunc(np.add), "sub": _ufunc(np.subtract), "mul": _ufunc(np.multiply), "div": _ufunc(np.divide),
    "pow": _ufunc(np.power), "maximum": _ufunc(np.maximum), "minimum": _ufunc(np.minimum),
    "equal": _ufunc(np.equal), "less": _ufunc(np.less), "greater": _ufunc(np.greater),
    "cast": lambda a, out, attrs: np.copyto(out, a[0], casting="unsafe"),
    "where": lambda a, out, attrs: np.copyto(out, np.where(*a)),
}


def activate(act: str, out: np.ndarray) -> None:
    """Apply a unary elementwise op in place (``none`` is the identity)."""
    if act != "none":
        ELEMENTWISE[act]([out], out, {})


def _matmul(a, out, attrs):
    np.matmul(a[0], a[1], out=out)


def _reduce(f):
    def k(a, out, attrs):
        axes = attrs["axes"]
        axes = tuple(range(a[0].ndim)) if axes is None else tuple(x % a[0].ndim for x in axes)
        f(a[0], axis=axes, keepdims=attrs["keepdims"], out=out)
    return k


def _softmax(a, out, attrs):
    ax = attrs["axis"]
    np.subtract(a[0], a[0].max(axis=ax, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=ax, keepdims=True)


def _rms_norm(x, w, eps, out):
    ms = np.einsum("...i,...i->...", x, x)[..., None] / x.shape[-1]
    np.multiply(x, 1.0 / np.sqrt(ms + eps), out=out)
    out *= w


def _layer_norm(a, out, attrs):
    x, w, b = a
    axes = tuple(range(attrs["axis"] % x.ndim, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    np.subtract(x, mu, out=out)
    var = np.mean(out * out, axis=axes, keepdims=True)
    out /= np.sqrt(var + attrs["eps"])
    out *= w
    out += b


def _sdpa(a, out, attrs):
    q, k, v = a[:3]
    scale = attrs["scale"] if attrs["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
    s = np.matmul(q, np.swapaxes(k, -1, -2))
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


def _matmul_bias_act(a, out, attrs):
    np.matmul(a[0], a[1], out=out)
    out += a[2]
    activate(attrs["act"], out)


def _matmul_residual(a, out, attrs):
    np.matmul(a[0], a[1], out=out)
    out += a[2]


def _swiglu(a, out, attrs):
    gate = np.matmul(a[0], a[1])
    activate(attrs["act"], gate)
    np.matmul(a[0], a[2], out=out)
    out *= gate


KERNELS: dict[str, Kernel] = {
    **ELEMENTWISE, "matmul": _matmul, "sum": _reduce(np.sum), "mean": _reduce(np.mean), "max": _reduce(np.max),
    "softmax": _softmax, "rms_norm": lambda a, out, attrs: _rms_norm(a[0], a[1], attrs["eps"], out),
    "layer_norm": _layer_norm, "sdpa": _sdpa,
    "matmul_bias_act": _matmul_bias_act, "matmul_residual": _matmul_residual, "swiglu": _swiglu,
    "gather": lambda a, out, attrs: np.take(a[0], a[1], axis=attrs["axis"], out=out),
    "concat": lambda a, out, attrs: np.concatenate(a, axis=attrs["axis"], out=out),
}


def add_rms_norm(a: list[np.ndarray], outs: list[np.ndarray], attrs: dict) -> None:
    """The two-output residual + norm kernel."""
    np.add(a[0], a[1], out=outs[0])
    _rms_norm(outs[0], a[2], attrs["eps"], outs[1])


MULTI: dict[str, Callable[[list[np.ndarray], list[np.ndarray], dict], None]] = {"add_rms_norm": add_rms_norm}
