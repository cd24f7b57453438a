"""The CPU printer: kernel skeletons as C++ loop nests for this machine's compiler (``cc``).

Where NumPy has no single call for a skeleton, its NumPy program is many passes of small
ufunc calls; here each is one loop nest: the GEMM by constant weights packed into column
panels, with a register micro-kernel and its epilogue applied in registers (``gemm``);
pointwise and row-reduction kernels, a pass per reduction and one for the outputs
(``rows``); direct convolutions over zero-bordered, stride-phase-split planes
(``conv_direct``), or, depthwise over narrow planes, with channels as the vector lanes
(``conv_lanes``); the whole of attention per block of query rows, its scores in L1
(``attention``). Kernels are specialized to sizes and strides like the CUDA printer's,
so the compiler sees constant trip counts and unit strides and vectorizes; the scalar code
(literals, conversions, primitives, expression DAGs) is the CUDA printer's, which is plain
C for every dtype but the half ones (those kernels stay with the NumPy printer).

A kernel's last two parameters are a range ``[lo, hi)`` of its outer loop: the executor's
threads each run one range (ctypes releases the GIL for the length of a call).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rlx.exec.cuda_print import (CTYPE, HALF, SCALAR_HELPERS, AttnOperand, Emitter, Operand, convert, kernel_name,
                                  reduction_identity)
from rlx.ir.dtypes import DType
from rlx.ir.expr import Expr, nodes

PRELUDE = r"""
#include <math.h>
#include <stdlib.h>
#include <string.h>
#define RLX_FN static inline
// the CUDA printer's names for reading a literal's bits (non-finite constants)
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, sizeof f); return f; }
static inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, sizeof d); return d; }
// A thread's scratch buffers, kept from call to call (slot: buffers a kernel holds at once),
// 64-byte aligned, grown as needed and freed with the thread. A call's own malloc of a large
// buffer is an mmap: its pages are faulted in on every call and unmapped after, with a TLB
// shootdown across threads, and at times that took several times the kernel's work.
struct rlx_scratch_set { void* p[4] = {}; size_t n[4] = {}; ~rlx_scratch_set() { for (void* q : p) free(q); } };
static void* rlx_scratch(int slot, size_t bytes) {
  static thread_local rlx_scratch_set s;
  if (bytes > s.n[slot]) {
    free(s.p[slot]);
    s.n[slot] = (bytes + 63) / 64 * 64;
    s.p[slot] = aligned_alloc(64, s.n[slot]);
  }
  return s.p[slot];
}
""" + SCALAR_HELPERS + r"""
// exp, tanh and erf in f32 from arithmetic alone, so that loops calling them vectorize (libm's
// are calls the compiler cannot vectorize without -ffast-math, which would also drop NaNs):
// Cody-Waite range reduction and Cephes' polynomials (about 1 ulp; erf within 3e-7).
static inline float rlx_bits2f(int i) { float f; memcpy(&f, &i, sizeof f); return f; }
static inline float rlx_expf(float x) {
  const float c = x < -104.0f ? -104.0f : (x > 89.0f ? 89.0f : x);  // fminf/fmaxf do not vectorize
  const float n = floorf(fmaf(c, 1.44269504089f, 0.5f));
  float r = fmaf(n, -0.693359375f, c);
  r = fmaf(n, 2.12194440e-4f, r);
  float p = fmaf(1.9875691500e-4f, r, 1.3981999507e-3f);
  p = fmaf(p, r, 8.3334519073e-3f); p = fmaf(p, r, 4.1665795894e-2f);
  p = fmaf(p, r, 1.6666665459e-1f); p = fmaf(p, r, 5.0000001201e-1f);
  const float e = fmaf(p, r * r, r) + 1.0f;
  const int k = (int)n, h = k >> 1;  // 2^k in two normal halves: k runs from -150 to 128
  const float y = e * rlx_bits2f((h + 127) << 23) * rlx_bits2f((k - h + 127) << 23);
  return x != x ? x : y;
}
static inline float rlx_tanhf(float x) {
  const float a = fabsf(x), z = x * x;
  float p = fmaf(-5.70498872745e-3f, z, 2.06390887954e-2f);
  p = fmaf(p, z, -5.37397155531e-2f); p = fmaf(p, z, 1.33314422036e-1f); p = fmaf(p, z, -3.33332819422e-1f);
  const float small = fmaf(p * z, x, x);
  const float big = copysignf(1.0f - 2.0f / (rlx_expf(2.0f * a) + 1.0f), x);
  return a < 0.625f ? small : big;
}
static inline float rlx_erff(float x) {
  const float a = fabsf(x), z = x * x;
  float p = fmaf(-1.4925650e-5f, z, 1.2055333e-4f);  // 2/sqrt(pi) (x - x^3/3 + x^5/10 - ...) below 0.5
  p = fmaf(p, z, -8.5483270e-4f); p = fmaf(p, z, 5.2239776e-3f); p = fmaf(p, z, -2.6866171e-2f);
  p = fmaf(p, z, 1.1283792e-1f); p = fmaf(p, z, -3.7612639e-1f); p = fmaf(p, z, 1.1283792e+0f);
  const float t = 1.0f / fmaf(0.3275911f, a, 1.0f);  // Abramowitz and Stegun 7.1.26 beyond
  float q = fmaf(1.061405429f, t, -1.453152027f);
  q = fmaf(q, t, 1.421413741f); q = fmaf(q, t, -0.284496736f); q = fmaf(q, t, 0.254829592f);
  const float big = copysignf(1.0f - q * t * rlx_expf(-z), x);
  return a < 0.5f ? x * p : big;
}
#define expf rlx_expf
#define tanhf rlx_tanhf
#define erff rlx_erff
// explicit vectors (GCC and Clang): unaligned loads and stores; a scalar operand is broadcast
#define RLX_VECTOR(T, N) \
  typedef T rlx_##T##x##N __attribute__((vector_size(sizeof(T) * N))); \
  static inline rlx_##T##x##N rlx_ld_##T##x##N(const T* p) { rlx_##T##x##N v; memcpy(&v, p, sizeof v); return v; }
RLX_VECTOR(float, 8)
RLX_VECTOR(float, 16)
RLX_VECTOR(double, 4)
RLX_VECTOR(double, 8)
#if defined(__clang__)
#define RLX_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
typedef int rlx_intx8 __attribute__((vector_size(32)));
#define RLX_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (rlx_intx8){__VA_ARGS__})
#endif
// an 8×8 block of floats transposed in registers: r[i][j] becomes r[j][i]
static inline void rlx_transpose8(rlx_floatx8 r[8]) {
  rlx_floatx8 t[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = RLX_SHUFFLE(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = RLX_SHUFFLE(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4)
    for (int h = 0; h < 2; ++h) {
      s[i + 2 * h] = RLX_SHUFFLE(t[i + h], t[i + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      s[i + 2 * h + 1] = RLX_SHUFFLE(t[i + h], t[i + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int j = 0; j < 4; ++j) {
    r[j] = RLX_SHUFFLE(s[j], s[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[j + 4] = RLX_SHUFFLE(s[j], s[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}
"""

VECTOR_BYTES = 32  # AVX2's registers (an AVX-512 machine runs them too)
MAX_CHAINS = 6     # accumulators in flight: an FMA's latency times the FMA units


def supported(dtype: DType) -> bool:
    return dtype not in HALF


def accumulates(dtype: DType) -> bool:
    """Whether a loop nest can accumulate in ``dtype`` (it has a vector type)."""
    return dtype in (DType.f32, DType.f64)


@dataclass(frozen=True)
class CSource:
    """One printed kernel: its name (a hash of its text), text and parameter count."""
    name: str
    text: str
    params: int


def _finish(signature: list[str], body: list[str]) -> CSource:
    params = signature + ["long lo", "long hi"]
    text = ("extern \"C\" void KERNEL(" + ", ".join(params) + ") {\n" + "\n".join("  " + ln for ln in body) + "\n}\n")
    name = kernel_name(text)
    return CSource(name, text.replace("KERNEL", name), len(params))


def _signature(ins: Sequence[Operand | None], outs: Sequence[Operand]) -> list[str]:
    ps = [f"const {CTYPE[o.dtype]}* __restrict__ a{i}" for i, o in enumerate(ins) if o is not None]
    return ps + [f"{CTYPE[o.dtype]}* __restrict__ o{k}" for k, o in enumerate(outs)]


def _dot(strides: Sequence[int], index: Sequence[str]) -> str:
    return " + ".join(f"{i} * {s}" if s != 1 else i for i, s in zip(index, strides) if s) or "0"


def _direct_used(outputs: Sequence[Expr], conv: int, x: int, w: int, bias: int | None) -> list[int]:
    """The inputs a direct convolution kernel reads: its image, weights, bias and epilogue's."""
    return sorted({e.value for o in outputs for e in nodes(o) if e.op == "arg" and e.value != conv}
                  | {x, w} | ({bias} if bias is not None else set()))


def _two_d(seq: Sequence[int], fill: int, nsp: int) -> list[int]:
    """A 1-D convolution's shape or strides as 2-D, with one row (``fill`` on the row axis)."""
    return list(seq[:2]) + [fill] + list(seq[2:]) if nsp == 1 else list(seq)


def _window_2d(strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int],
               nsp: int) -> list[list[int]]:
    """The (row, column) strides, leading pads and dilations of a 1-D or 2-D convolution."""
    return [[fill] * (2 - nsp) + list(v[:nsp]) for v, fill in ((strides, 1), (pads, 0), (dilations, 1))]


def conv_direct(outputs: Sequence[Expr], ins: Sequence[Operand | None], outs: Sequence[Operand],
                out_shape: Sequence[int], conv: int, x: int, x_shape: Sequence[int], w: int, w_shape: Sequence[int],
                bias: int | None, strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int],
                group: int, acc: DType) -> CSource | None:
    """A 1-D or 2-D convolution and its epilogue, for every output plane (image n, channel
    m) of ``[lo, hi)`` (plane = n·M + m): the group's C/group input planes are copied once
    per group into a zero-bordered buffer split into the column stride's phases (so every
    tap reads a unit-stride run and no loop tests bounds); each block of output rows ×
    columns accumulates over the channels and taps in ``acc`` vector registers, from the
    bias (rows in the block, so that a narrow row still has independent FMA chains), then
    each output expression of the inputs and the convolution (``arg(conv)``) over the
    block. Operands as in ``cuda_print.conv_direct``; None where this printer has no loop
    nest (rank or dtype)."""
    nsp = len(x_shape) - 2
    used = _direct_used(outputs, conv, x, w, bias)
    if nsp not in (1, 2) or not accumulates(acc) or \
            any(not supported(ins[i].dtype) for i in used) or any(not supported(o.dtype) for o in outs):
        return None
    xs, ws = _two_d(ins[x].strides, 0, nsp), _two_d(ins[w].strides, 0, nsp)
    xsh, osh = _two_d(x_shape, 1, nsp), _two_d(out_shape, 1, nsp)
    kh, kw = _two_d(w_shape, 1, nsp)[2:]
    (sh, sw), (ph, pw), (dh, dw) = _window_2d(strides, pads, dilations, nsp)
    m_all, oh_n, ow_n = osh[1:]
    height, width = xsh[2], xsh[3]
    cg, mg = w_shape[1], w_shape[0] // group
    lanes = VECTOR_BYTES // acc.itemsize
    blocks = -(-ow_n // (MAX_CHAINS * lanes))           # output columns per block: whole vectors, at most
    nv = -(-ow_n // blocks // lanes)                    # MAX_CHAINS of them (independent FMA chains)
    vb = nv * lanes
    hp = (oh_n - 1) * sh + (kh - 1) * dh + 1            # the padded plane: every row and column a tap
    wp = (blocks * vb - 1) * sw + (kw - 1) * dw + 1     # reads, through the last block's unused columns,
    wq = -(-wp // sw)                                   # split into the column stride's phases so that
    rows = [r for r in range(hp) if 0 <= r - ph < height]  # every tap reads a unit-stride run
    ct = CTYPE[acc]
    vt = f"rlx_{ct}x{lanes}"
    copies = []  # per phase: the columns i whose padded column i·stride + phase is in the image
    for phase in range(sw):
        first = max(0, -(-(pw - phase) // sw))
        last = min(wq, -(-(pw + width - phase) // sw))
        if first < last:
            src = convert(f"xc[(r - {ph}) * {xs[2]} + (i * {sw} + {phase - pw}) * {xs[3]}]", ins[x].dtype, acc)
            copies.append(f"      for (long i = {first}; i < {last}; ++i) xq[{phase * wq} + i] = {src};")
    wload = convert(f"wc[kh * {ws[2]} + {{k}} * {ws[3]}]", ins[w].dtype, acc)
    init = convert(f"a{bias}[m * {ins[bias].strides[0]}]", ins[bias].dtype, acc) if bias is not None else f"({ct})0"
    rb = max(1, min(oh_n, MAX_CHAINS // nv))            # output rows per block: each vector a chain
    taps = []
    for k in range(kw):
        phase, shift = divmod(k * dw, sw)[::-1]
        taps += [f"          {{ const {ct} wk = {wload.format(k=k)};",
                 f"            for (int b = 0; b < {rb}; ++b) {{",
                 f"              const {ct}* xt = xr + rr[b] * {sh * sw * wq} + {phase * wq + shift};",
                 f"              for (int v = 0; v < {nv}; ++v) acc[b][v] += wk * rlx_ld_{ct}x{lanes}(xt + v * {lanes});",
                 "            } }"]
    body = [f"{ct}* xp = ({ct}*)rlx_scratch(0, {cg * hp * sw * wq} * sizeof({ct}));  // the image copied per plane",
            f"memset(xp, 0, {cg * hp * sw * wq} * sizeof({ct}));  // its borders stay zero",
            "long filled = -1;  // the image and group whose planes xp holds: output channels of a group share them",
            "for (long p = lo; p < hi; ++p) {",
            f"  const long n = p / {m_all}, m = p % {m_all}, cb = (m / {mg}) * {cg};",
            f"  if (n * {group} + cb / {cg} != filled) {{ filled = n * {group} + cb / {cg};",
            f"  for (long c = 0; c < {cg}; ++c) {{",
            f"    const {CTYPE[ins[x].dtype]}* xc = a{x} + n * {xs[0]} + (cb + c) * {xs[1]};",
            f"    for (long r = {rows[0] if rows else 0}; r < {rows[-1] + 1 if rows else 0}; ++r)",
            f"    {{ {ct}* xq = xp + (c * {hp} + r) * {sw * wq};", *copies, "    }",
            "  } }",
            f"  const {ct} b0 = {init};",
            f"  for (long o0h = 0; o0h < {oh_n}; o0h += {rb}) {{",  # rows past the last recompute it
            f"    long rr[{rb}];",
            f"    for (int b = 0; b < {rb}; ++b) rr[b] = o0h + b < {oh_n} ? b : {oh_n - 1} - o0h;",
            f"    for (long q0 = 0; q0 < {blocks * vb}; q0 += {vb}) {{",
            f"      {vt} acc[{rb}][{nv}];",
            f"      for (int b = 0; b < {rb}; ++b) for (int v = 0; v < {nv}; ++v) acc[b][v] = ({vt}){{}} + b0;",
            f"      for (long c = 0; c < {cg}; ++c) {{",
            f"        const {CTYPE[ins[w].dtype]}* wc = a{w} + m * {ws[0]} + c * {ws[1]};",
            f"        for (long kh = 0; kh < {kh}; ++kh) {{",
            f"          const {ct}* xr = xp + (c * {hp} + o0h * {sh} + kh * {dh}) * {sw * wq} + q0;",
            *taps,
            "        }", "      }",
            f"      {ct} rows_[{rb}][{vb}];",
            "      memcpy(rows_, acc, sizeof rows_);",
            f"      const long nj = q0 + {vb} <= {ow_n} ? {vb} : {ow_n} - q0;",
            f"      for (int b = 0; b < {rb} && o0h + b < {oh_n}; ++b) {{",
            "      const long oh = o0h + b;",
            f"      const {ct}* row = rows_[b];",
            ]
    index = ["n", "m", "oh", "q"]
    epi = [i for i in used if i not in (x, w, bias)]
    per = [f"const long off{i} = {_dot(_two_d(ins[i].strides, 0, nsp), index)};" for i in epi]

    def leaf(e: Expr) -> str:
        if e.value == conv:
            return convert("row[j]", acc, e.dtype)
        return convert(f"a{e.value}[off{e.value}]", ins[e.value].dtype, e.dtype)
    em = Emitter(leaf)
    names = [em.value(e) for e in outputs]
    per += em.lines
    per += [f"o{k}[{_dot(_two_d(o.strides, 0, nsp), index)}] = {convert(nm, e.dtype, o.dtype)};"
            for k, (o, e, nm) in enumerate(zip(outs, outputs, names))]
    body += ["      #pragma omp simd", "      for (long j = 0; j < nj; ++j) {", "        const long q = q0 + j;"]
    body += ["        " + ln for ln in per] + ["      }", "      }", "    }", "  }", "}"]
    sig_ins = [ins[i] if i in used else None for i in range(len(ins))]
    return _finish(_signature(sig_ins, outs), body)


LANE_CHANNELS = 8  # channels per block of ``conv_lanes``: the lanes of its 8-float vectors (``rlx_transpose8``)


def lane_units(x_shape: Sequence[int]) -> int:
    """The outer loop's extent of ``conv_lanes``: images × blocks of ``LANE_CHANNELS`` channels."""
    return x_shape[0] * -(-x_shape[1] // LANE_CHANNELS)


def conv_lanes(outputs: Sequence[Expr], ins: Sequence[Operand | None], outs: Sequence[Operand],
               out_shape: Sequence[int], conv: int, x: int, x_shape: Sequence[int], w: int, w_shape: Sequence[int],
               bias: int | None, strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int]) -> CSource | None:
    """A depthwise convolution (one input channel per output channel) and its epilogue with
    channels as the lanes of 8-float vectors, for the units ``[lo, hi)`` of (image, block of 8
    channels): the block's planes are interleaved (8×8 transposes in registers) into a
    zero-bordered buffer, pixel-major, so every tap of an output pixel is one vector load at
    any stride or dilation; runs of 8 output pixels of a row accumulate in registers over the
    taps (a tap's weights one vector), are transposed back to a row of 8 pixels per channel,
    and each output expression of the inputs and the convolution (``arg(conv)``) is stored
    along it. Where output rows are narrow (a 7-wide row is one vector of 7 lanes and its
    plane a few short FMA chains) this fills every lane. None for an f32 image whose rows are
    not unit-stride, other dtypes or ranks (``conv_direct`` runs them)."""
    nsp = len(x_shape) - 2
    used = _direct_used(outputs, conv, x, w, bias)
    if nsp not in (1, 2) or ins[x].dtype != DType.f32 or ins[x].strides[-1] != 1 or \
            any(not supported(ins[i].dtype) for i in used) or any(not supported(o.dtype) for o in outs):
        return None
    xs, ws = _two_d(ins[x].strides, 0, nsp), _two_d(ins[w].strides, 0, nsp)
    _, c_n, height, width = _two_d(x_shape, 1, nsp)
    _, _, oh_n, ow_n = _two_d(out_shape, 1, nsp)
    kh_n, kw_n = _two_d(w_shape, 1, nsp)[2:]
    (sh, sw), (ph, pw), (dh, dw) = _window_2d(strides, pads, dilations, nsp)
    runs = -(-ow_n // 8)                                 # runs of 8 output pixels per row
    hp = (oh_n - 1) * sh + (kh_n - 1) * dh + 1           # the padded plane every tap reads (the last
    wp = (runs * 8 - 1) * sw + (kw_n - 1) * dw + 1       # run's unused pixels included)
    r0, r1 = max(0, ph), min(hp, ph + height)            # padded rows inside the image
    cols = max(0, min(width, wp - pw))                   # image columns some tap reads
    blocks = lane_units((1, c_n))
    wload = convert(f"a{w}[(c0 + l) * {ws[0]} + (t / {kw_n}) * {ws[2]} + (t % {kw_n}) * {ws[3]}]", ins[w].dtype,
                    DType.f32)
    bload = convert(f"a{bias}[(c0 + l) * {ins[bias].strides[0]}]", ins[bias].dtype, DType.f32) if bias is not None \
        else "0.0f"
    index = ["n", "m", "oh", "ow"]

    def leaf(e: Expr) -> str:
        if e.value == conv:
            return convert("tb[l][j]", DType.f32, e.dtype)
        return convert(f"a{e.value}[{_dot(_two_d(ins[e.value].strides, 0, nsp), index)}]", ins[e.value].dtype,
                       e.dtype)
    em = Emitter(leaf)
    names = [em.value(e) for e in outputs]
    stores = [f"o{k}[{_dot(_two_d(o.strides, 0, nsp), index)}] = {{}};" for k, o in enumerate(outs)]
    if set(used) <= {x, w, bias}:  # outputs of the convolution alone: computed for all 8 pixels, stored for nj
        epilogue = [f"{CTYPE[o.dtype]} tr{k}[8];" for k, o in enumerate(outs)] + [
            "#pragma omp simd", "for (long j = 0; j < 8; ++j) {", *["  " + ln for ln in em.lines],
            *[f"  tr{k}[j] = {convert(nm, e.dtype, o.dtype)};" for k, (o, e, nm) in enumerate(zip(outs, outputs, names))],
            "}", "#pragma GCC unroll 8",  # stores the compiler cannot turn into a call (rep movs: slow to start)
            "for (long j = 0; j < 8; ++j) {", "  const long ow = ow0 + j;", "  if (j < nj) {",
            *["    " + st.format(f"tr{k}[j]") for k, st in enumerate(stores)], "  }", "}"]
    else:  # an epilogue reading inputs reads only the nj pixels there are
        epilogue = ["#pragma omp simd", "for (long j = 0; j < nj; ++j) {", "  const long ow = ow0 + j;",
                    *["  " + ln for ln in em.lines],
                    *["  " + st.format(convert(nm, e.dtype, o.dtype)) for st, o, e, nm in zip(stores, outs, outputs, names)],
                    "}"]
    size = hp * wp * 32
    body = [f"float* xb = (float*)rlx_scratch(0, {size});  // the block's planes, interleaved",
            f"memset(xb, 0, {size});  // the borders stay zero: blocks write only the image",
            f"alignas(64) float wv[{kh_n * kw_n}][8], bv[8];",
            "for (long u = lo; u < hi; ++u) {",
            f"  const long n = u / {blocks}, c0 = (u % {blocks}) * 8;",
            f"  const long nl = {c_n} - c0 < 8 ? {c_n} - c0 : 8;  // channels in the block",
            f"  for (long r = {r0}; r < {r1}; ++r) {{",
            f"    const float* xr = a{x} + n * {xs[0]} + c0 * {xs[1]} + (r - {ph}) * {xs[2]};",
            f"    float* dst = xb + (r * {wp} + {pw}) * 8;",
            "    long i = 0;",
            f"    for (; i + 8 <= {cols}; i += 8) {{",
            "      rlx_floatx8 v[8];",
            f"      for (int l = 0; l < 8; ++l) v[l] = l < nl ? rlx_ld_floatx8(xr + l * {xs[1]} + i) : (rlx_floatx8){{}};",
            "      rlx_transpose8(v);",
            "      memcpy(dst + i * 8, v, sizeof v);",
            "    }",
            f"    for (; i < {cols}; ++i)",
            f"      for (int l = 0; l < 8; ++l) dst[i * 8 + l] = l < nl ? xr[l * {xs[1]} + i] : 0.0f;",
            "  }",
            f"  for (long t = 0; t < {kh_n * kw_n}; ++t)",
            f"    for (long l = 0; l < 8; ++l) wv[t][l] = l < nl ? {wload} : 0.0f;",
            f"  for (long l = 0; l < 8; ++l) bv[l] = l < nl ? {bload} : 0.0f;",
            "  const rlx_floatx8 b0 = rlx_ld_floatx8(bv);",
            f"  for (long oh = 0; oh < {oh_n}; ++oh)",
            f"  for (long ow0 = 0; ow0 < {ow_n}; ow0 += 8) {{",
            "    rlx_floatx8 acc[8];",
            "    for (int j = 0; j < 8; ++j) acc[j] = b0;",
            f"    for (long kh = 0; kh < {kh_n}; ++kh) {{",
            f"      const float* xq = xb + ((oh * {sh} + kh * {dh}) * {wp} + ow0 * {sw}) * 8;",
            f"      #pragma GCC unroll {kw_n}",
            f"      for (long kw = 0; kw < {kw_n}; ++kw) {{",
            f"        const rlx_floatx8 wk = rlx_ld_floatx8(wv[kh * {kw_n} + kw]);",
            "        #pragma GCC unroll 8",
            f"        for (int j = 0; j < 8; ++j) acc[j] += wk * rlx_ld_floatx8(xq + (j * {sw} + kw * {dw}) * 8);",
            "      }",
            "    }",
            "    rlx_transpose8(acc);  // a row of 8 pixels per channel",
            "    float tb[8][8];",
            "    memcpy(tb, acc, sizeof tb);",
            f"    const long nj = ow0 + 8 <= {ow_n} ? 8 : {ow_n} - ow0;",
            "    for (long l = 0; l < nl; ++l) {",
            "      const long m = c0 + l;",
            *["      " + ln for ln in epilogue],
            "    }", "  }", "}"]
    sig_ins = [ins[i] if i in used else None for i in range(len(ins))]
    return _finish(_signature(sig_ins, outs), body)


def max_pool(x: Operand, out: Operand, x_shape: Sequence[int], out_shape: Sequence[int], kernel: Sequence[int],
             strides: Sequence[int], dilations: Sequence[int], pads: Sequence[int]) -> CSource | None:
    """A 1-D or 2-D max pool over the planes ``[lo, hi)`` (plane = n·C + c): per output row,
    each input row a tap reads is copied into a row bordered with -inf and split into the
    column stride's phases (so that every tap reads a unit-stride run, without bounds
    tests), then folded into the row's maxima in explicit vectors, NaN-propagating like
    ``np.maximum``. None for other ranks or dtypes."""
    nsp = len(x_shape) - 2
    if nsp not in (1, 2) or x.dtype not in (DType.f32, DType.f64) or out.dtype != x.dtype:
        return None
    two = (lambda v, fill: [fill] + list(v)) if nsp == 1 else (lambda v, fill: list(v))
    (h, w), (oh_n, ow_n), (kh, kw) = two(x_shape[2:], 1), two(out_shape[2:], 1), two(kernel, 1)
    (sh, sw), (dh, dw), (ph, pw) = two(strides, 1), two(dilations, 1), two(pads[:nsp], 0)
    xs = list(x.strides[:2]) + two(x.strides[2:], 0)
    os_ = list(out.strides[:2]) + two(out.strides[2:], 0)
    ct = CTYPE[x.dtype]
    lanes = VECTOR_BYTES // x.dtype.itemsize
    vt = f"rlx_{ct}x{lanes}"
    nq = -(-ow_n // lanes) * lanes                      # output columns computed: whole vectors
    wq = nq + ((kw - 1) * dw) // sw                     # a phase's columns: every tap's run
    copies = []  # per phase f: its columns i whose bordered column i·sw + f is in the image
    for f in range(sw):
        lo_i, hi_i = max(0, -(-(pw - f) // sw)), min(wq, -(-(pw + w - f) // sw))
        if lo_i < hi_i:
            copies.append(f"      for (long i = {lo_i}; i < {hi_i}; ++i) "
                          f"row[{f}][i] = xc[r * {xs[2]} + (i * {sw} + {f - pw}) * {xs[3]}];")
    body = [f"{ct} row[{sw}][{wq}], acc[{nq}];",
            f"for (long j = 0; j < {sw * wq}; ++j) row[j % {sw}][j / {sw}] = -INFINITY;",
            "for (long p = lo; p < hi; ++p) {",
            f"  const {ct}* xc = a0 + (p / {x_shape[1]}) * {xs[0]} + (p % {x_shape[1]}) * {xs[1]};",
            f"  {ct}* oc = o0 + (p / {x_shape[1]}) * {os_[0]} + (p % {x_shape[1]}) * {os_[1]};",
            f"  for (long oh = 0; oh < {oh_n}; ++oh) {{",
            f"    for (long q = 0; q < {nq}; ++q) acc[q] = -INFINITY;",
            f"    for (long i = 0; i < {kh}; ++i) {{",
            f"      const long r = oh * {sh} + i * {dh} - {ph};",
            f"      if (r < 0 || r >= {h}) continue;",
            *copies,
            f"      for (long k = 0; k < {kw}; ++k) {{",
            f"        const {ct}* run = row[(k * {dw}) % {sw}] + (k * {dw}) / {sw};",
            f"        for (long q = 0; q < {nq}; q += {lanes}) {{",
            f"          const {vt} v = rlx_ld_{ct}x{lanes}(run + q);",
            f"          {vt} a = rlx_ld_{ct}x{lanes}(acc + q);",
            "          a = (v > a) | (v != v) ? v : a;",
            "          memcpy(acc + q, &a, sizeof a);",
            "        }",
            "      }",
            "    }",
            f"    for (long q = 0; q < {ow_n}; ++q) oc[oh * {os_[2]} + q * {os_[3]}] = acc[q];",
            "  }",
            "}"]
    return _finish([f"const {ct}* __restrict__ a0", f"{ct}* __restrict__ o0"], body)


SUM_BLOCK = 1024  # elements a vector sum adds up before its total moves to f64 (long rows stay accurate)


def reduce_rows(kind: str, dtype: DType, length: int) -> CSource | None:
    """``sum``, ``mean`` or ``max`` of each row ``[lo, hi)`` of a contiguous (rows, ``length``)
    array: a sum in vector lanes over blocks of ``SUM_BLOCK`` elements, the blocks added in
    f64; a maximum in explicit vectors, NaN-propagating like ``np.max``. None for other
    kinds or dtypes."""
    if kind not in ("sum", "mean", "max") or dtype not in (DType.f32, DType.f64):
        return None
    ct = CTYPE[dtype]
    lanes = VECTOR_BYTES // dtype.itemsize
    vt = f"rlx_{ct}x{lanes}"
    if kind == "max":
        per_row = [f"  {vt} a;",
                   f"  for (int l = 0; l < {lanes}; ++l) a[l] = -INFINITY;",
                   "  long j = 0;",
                   f"  for (; j + {lanes} <= {length}; j += {lanes}) {{",
                   f"    const {vt} v = rlx_ld_{ct}x{lanes}(x + j);",
                   "    a = (v > a) | (v != v) ? v : a;",
                   "  }",
                   f"  {ct} m = -INFINITY;",
                   f"  for (int l = 0; l < {lanes}; ++l) m = a[l] > m || a[l] != a[l] ? a[l] : m;",
                   f"  for (; j < {length}; ++j) m = x[j] > m || x[j] != x[j] ? x[j] : m;",
                   "  o0[r] = m;"]
    else:
        per_row = ["  double total = 0.0;",
                   f"  for (long b = 0; b < {length}; b += {SUM_BLOCK}) {{",
                   f"    const long e = b + {SUM_BLOCK} < {length} ? b + {SUM_BLOCK} : {length};",
                   f"    {ct} s = 0;",
                   "    #pragma omp simd reduction(+:s)",
                   "    for (long j = b; j < e; ++j) s += x[j];",
                   "    total += s;",
                   "  }",
                   f"  o0[r] = ({ct})(total{f' / {length}' if kind == 'mean' else ''});"]
    body = ["for (long r = lo; r < hi; ++r) {", f"  const {ct}* x = a0 + r * {length};", *per_row, "}"]
    return _finish([f"const {ct}* __restrict__ a0", f"{ct}* __restrict__ o0"], body)


def threaded(src: CSource) -> CSource:
    """``src`` as the form ``LOOPS`` runs: the kernel becomes a static function over a
    range ``[lo, hi)`` of its outer loop, and the export ``<name>_chunk(args, a, b)`` runs
    one range with the arguments read from an array. ``rlx_loops`` cuts the range into
    chunks that OpenMP's threads share, one kernel (``numpy_print.Threaded``) or a run of
    them (``native_runs``) per call."""
    start = src.text.index(f" {src.name}(") + len(src.name) + 2
    params = [p.strip() for p in src.text[start:src.text.index(")", start)].split(",")][:-2]  # without lo, hi
    types = [p[:p.rindex(" ")].strip() for p in params]
    body = src.text.replace('extern "C" ', "static ", 1).replace(f" {src.name}(", f" {src.name}_range(", 1)
    from_array = ", ".join([f"({t})p[{i}]" for i, t in enumerate(types)] + ["a", "b"])
    chunk = f'extern "C" void {src.name}_chunk(const long* p, long a, long b) {{ {src.name}_range({from_array}); }}\n'
    return CSource(src.name, body + chunk, src.params)


LOOPS = r"""
typedef void (*rlx_chunk_fn)(const long*, long, long);
/* Parallel loops run one after another inside one parallel region: row s of ``table`` is
   (a kernel's _chunk function, its arguments, lo, hi, chunks). The loop's end is a barrier,
   so loop s + 1 reads what loop s wrote. One region instead of one per loop: no return to
   Python between them, and the threads meet at a barrier instead of a fork and a join. A
   loop of at most one chunk per thread gives chunk c to thread c: consecutive loops cut
   alike then find their operands in the L2 of the core that wrote them; longer loops hand
   their chunks out as threads come free (a slow core's share moves). OpenMP's threads wait
   for work spinning, so a loop starts on every core at once (a Python thread woken per
   step starts 100 µs or more late on a VM). */
#define RLX_CHUNKS(kind)                                                     \
  _Pragma(kind)                                                              \
  for (long c = 0; c < chunks; ++c) {                                        \
    const long a = lo + (hi - lo) * c / chunks, b = lo + (hi - lo) * (c + 1) / chunks; \
    if (a < b) fn(args, a, b);                                               \
  }
extern "C" void rlx_loops(const long* table, long count, long threads) {
  #pragma omp parallel num_threads(threads) if(threads > 1)
  for (long s = 0; s < count; ++s) {
    const long* row = table + 5 * s;
    const rlx_chunk_fn fn = (rlx_chunk_fn)row[0];
    const long* args = (const long*)row[1];
    const long lo = row[2], hi = row[3], chunks = row[4];
    if (chunks <= threads) {  /* every thread takes the same branch: the row is shared */
      RLX_CHUNKS("omp for schedule(static, 1)")
    } else {
      RLX_CHUNKS("omp for schedule(dynamic, 1)")
    }
  }
}
"""


def unvectorized(src: CSource) -> CSource:
    """``src`` with GCC's loop vectorizer off (straight-line code is still vectorized): GCC
    12.2's at -O3 miscompiles some short guarded loops (a 6×6 patch read with its borders
    zeroed; a NaN-propagating running maximum, now in explicit vectors); the tests that
    caught it cover these kernels. Other compilers ignore the attribute."""
    text = src.text.replace('extern "C" void', 'extern "C" __attribute__((optimize("no-tree-loop-vectorize"))) void', 1)
    return CSource(src.name, text, src.params)


def planes(out_shape: Sequence[int]) -> int:
    """The outer loop's extent of ``conv_direct``: images × output channels."""
    return math.prod(out_shape[:2])


# ---------------------------------------------------------------------------- GEMM
@dataclass(frozen=True)
class Tile:
    """The GEMM micro-kernel: ``rows`` × ``vectors`` accumulator registers of ``lanes`` f32."""
    rows: int
    lanes: int
    vectors: int

    @property
    def width(self) -> int:
        return self.lanes * self.vectors


def tile(vector_bytes: int) -> Tile:
    """8×2 registers of 16 lanes with AVX-512's 32 registers; 6×2 of 8 with AVX2's 16."""
    return Tile(8, 16, 2) if vector_bytes >= 64 else Tile(6, 8, 2)


A_CHUNK_BYTES = 1 << 22  # rows of A packed at a time: read from L3 per panel, while each panel streams from memory once per chunk


def gemm(outputs: Sequence[Expr], ins: Sequence[Operand | None], outs: Sequence[Operand], products: Sequence[int],
         n_in: int, a: Operand, m: int, k: int, n: int, t: Tile, split_rows: bool = False,
         a_at: tuple[list[str], Callable[[str], str], Callable[[str], str]] | None = None) -> CSource:
    """``len(products)`` GEMMs of one left operand ``a`` (M×K, its strides over rows and
    columns) with constant matrices packed side by side (``pack_panels``), and the epilogue,
    for the column panels ``[lo, hi)`` (``split_rows``: for the blocks of ``t.rows`` rows
    ``[lo, hi)``, every panel: a thread then packs only its own rows of A). Per chunk of A's rows (packed, ``t.rows`` at a time,
    k-major, into this call's scratch), per panel, per block of rows: the block's products
    accumulate in ``t.rows × t.vectors`` registers over all of K (the panel streams from L2,
    the block from L1), then each output of the block is its epilogue expression of the
    inputs (``ins``: strides over the M×N output) and the products (``arg(n_in + j)``).
    ``a_at`` (declarations, a row's offset, a column's offset) prints where A's element is
    when A is not a strided matrix (a convolution's windows gathered from its phase planes:
    ``conv_rows``); a block's row offsets are computed once, before it is packed."""
    r, lanes, width = t.rows, t.lanes, t.width
    wg = width // len(products)                 # output columns per panel
    blocks = -(-m // r)
    chunk = max(1, min(blocks, A_CHUNK_BYTES // (4 * r * k)))
    chunk = -(-blocks // -(-blocks // chunk))  # chunks of even size: a short last one would stream every panel for a few rows
    decls, row_at, col_at = a_at or ([], lambda row: f"{row} * {a.strides[0]}", lambda col: f"{col} * {a.strides[1]}")
    aload = convert(f"xa[ro[i] + {col_at('kk')}]", a.dtype, DType.f32)
    bound = {"i": r, "kk": k}
    outer, inner = ("kk", "i") if abs(a.strides[0]) < abs(a.strides[1]) else ("i", "kk")
    o0 = outs[0].strides
    by_rows = abs(o0[0]) < abs(o0[1])  # the output's rows adjacent (a transposed product): rows inside
    used = sorted({e.value for o in outputs for e in nodes(o) if e.op == "arg" and e.value < n_in})
    slot = {n_in + j: g for g, j in enumerate(products)}

    def leaf(e: Expr) -> str:
        if e.value in slot:
            return convert(f"tl[i][{slot[e.value] * wg} + c]", DType.f32, e.dtype)
        return convert(f"a{e.value}[{_dot(ins[e.value].strides, ['row', 'col'])}]", ins[e.value].dtype, e.dtype)
    em = Emitter(leaf)
    names = [em.value(e) for e in outputs]
    # the output's rows adjacent (a transposed product): the epilogue still runs along the
    # tile's columns (it vectorizes), into a block then stored column by column
    at = (lambda q, o: f"ot{q}[i][c]") if by_rows else (lambda q, o: f"o{q}[{_dot(o.strides, ['row', 'col'])}]")
    per = em.lines + [f"{at(q, o)} = {convert(nm, e.dtype, o.dtype)};"
                      for q, (o, e, nm) in enumerate(zip(outs, outputs, names))]
    store = ["      for (long c = 0; c < cols; ++c)", "        for (long i = 0; i < rows; ++i) {",
             f"          const long row = b * {r} + i, col = p * {wg} + c;",
             *[f"          o{q}[{_dot(o.strides, ['row', 'col'])}] = ot{q}[i][c];" for q, o in enumerate(outs)],
             "        }"]
    b_lo, b_hi, p_lo, p_hi = ("lo", "hi", "0", str(panels(n, len(products), t))) if split_rows else \
        ("0", str(blocks), "lo", "hi")
    body = [*decls, f"float* ap = (float*)rlx_scratch(0, {chunk * r * k} * sizeof(float));  // this call's packed rows of A",
            f"for (long b0 = {b_lo}; b0 < {b_hi}; b0 += {chunk}) {{",
            f"  const long b1 = b0 + {chunk} < {b_hi} ? b0 + {chunk} : {b_hi};",
            "  for (long b = b0; b < b1; ++b) {",
            f"    float* dst = ap + (b - b0) * {r * k};",
            f"    const long rows = {m} - b * {r} < {r} ? {m} - b * {r} : {r};",
            f"    long ro[{r}];",
            f"    for (long i = 0; i < {r}; ++i) ro[i] = i < rows ? {row_at(f'(b * {r} + i)')} : 0;",
            f"    for (long {outer} = 0; {outer} < {bound[outer]}; ++{outer})",  # along A's smaller stride inside
            f"      for (long {inner} = 0; {inner} < {bound[inner]}; ++{inner})",
            f"        dst[kk * {r} + i] = i < rows ? {aload} : 0.0f;",
            "  }",
            f"  for (long p = {p_lo}; p < {p_hi}; ++p) {{",
            f"    const float* bq = bp + p * {k * width};",
            "    for (long b = b0; b < b1; ++b) {",
            f"      const float* aq = ap + (b - b0) * {r * k};",
            *["      " + ln for ln in _product_tile(t, f"aq[kk * {r} + i]", "bq", k, min(r, m))],
            f"      float tl[{min(r, m)}][{width}];",
            "      memcpy(tl, acc, sizeof tl);",
            f"      const long rows = {m} - b * {r} < {r} ? {m} - b * {r} : {r};",
            f"      const long cols = {n} - p * {wg} < {wg} ? {n} - p * {wg} : {wg};",
            *([f"      {CTYPE[o.dtype]} ot{q}[{min(r, m)}][{wg}];" for q, o in enumerate(outs)] if by_rows else []),
            "      for (long i = 0; i < rows; ++i)",
            *(["        #pragma omp simd"] if by_rows else []),
            "        for (long c = 0; c < cols; ++c) {",
            f"          const long row = b * {r} + i, col = p * {wg} + c;",
            *["          " + ln for ln in per],
            "        }",
            *(store if by_rows else []),
            "    }", "  }", "}"]
    sig = [f"const {CTYPE[a.dtype]}* __restrict__ xa", "const float* __restrict__ bp"]
    sig += _signature([ins[i] if i in used else None for i in range(n_in)], outs)
    return _finish(sig, body)


def panels(n: int, products: int, t: Tile) -> int:
    """How many column panels ``gemm`` runs over."""
    return -(-n // (t.width // products))


def pack_panels(matrices: Sequence, t: Tile):
    """Constant K×N matrices side by side as ``gemm`` reads them: panel p holds, for each k,
    ``t.width / len(matrices)`` columns of each matrix in turn (zero past N), as f32."""
    g = len(matrices)
    kk, n = matrices[0].shape
    wg = t.width // g
    p = -(-n // wg)
    out = np.zeros((p, kk, g, wg), np.float32)
    for j, mat in enumerate(matrices):
        padded = np.zeros((kk, p * wg), np.float32)
        padded[:, :n] = mat
        out[:, :, j, :] = padded.reshape(kk, p, wg).transpose(1, 0, 2)
    return out.reshape(p, kk, g * wg)


# ---------------------------------------------------------------------------- attention
SCORE_BYTES = 1 << 15  # a block's scores: they stay in L1 from q·kᵀ through the softmax to their product with v


def attention_rows(sq: int, sk: int, units_min: int, batch: int, t: Tile) -> int:
    """Query rows per block of ``attention``: as many tile rows as keep the block's scores
    in ``SCORE_BYTES``, fewer while the blocks would number under ``units_min``."""
    width = -(-sk // t.width) * t.width
    most = max(t.rows, min(-(-sq // t.rows) * t.rows, SCORE_BYTES // (4 * width) // t.rows * t.rows))
    while most > t.rows and batch * -(-sq // most) < units_min:
        most -= t.rows
    return most


def _product_tile(t: Tile, a: str, b_panel: str, k: int | str, rows: int | None = None,
                  resume: str | None = None) -> list[str]:
    """The register micro-kernel: a ``rows`` (default ``t.rows``) × ``t.width`` tile of a
    product into registers ``acc`` over ``k`` products, A's element (i, kk) at ``a``, B a
    panel of ``t.width`` columns per kk. A tile of fewer rows than ``MAX_CHAINS`` chains
    (a matrix-vector product) sums alternate kk into separate registers, added at the end:
    one set would wait on its own FMAs' latency. ``resume``, a statement, may load ``acc``
    with the sums of earlier products first (a long sum run in slices)."""
    vt, lanes, rows = f"rlx_floatx{t.lanes}", t.lanes, rows or t.rows
    splat = f"({vt}){{{', '.join(['s'] * lanes)}}}"
    unroll = max(1, -(-MAX_CHAINS // (rows * t.vectors)))

    def step(into: str) -> list[str]:
        return [f"  {vt} bv[{t.vectors}];",
                f"  for (int v = 0; v < {t.vectors}; ++v) bv[v] = rlx_ld_floatx{lanes}({b_panel} + kk * {t.width} + v * {lanes});",
                f"  #pragma GCC unroll {rows}",
                f"  for (int i = 0; i < {rows}; ++i) {{",
                f"    const float s = {a};",
                f"    const {vt} ai = {splat};",
                f"    for (int v = 0; v < {t.vectors}; ++v) {into}[i][v] += ai * bv[v];",
                "  }"]
    start = [resume] if resume else []
    if unroll == 1:
        return [f"{vt} acc[{rows}][{t.vectors}] = {{}};", *start, f"for (long kk = 0; kk < {k}; ++kk) {{",
                *step("acc"), "}"]
    return [f"{vt} acc[{rows}][{t.vectors}] = {{}}, alt[{unroll}][{rows}][{t.vectors}] = {{}};", *start,
            f"for (long k0 = 0; k0 + {unroll} <= {k}; k0 += {unroll}) {{",
            f"  #pragma GCC unroll {unroll}",
            f"  for (int u = 0; u < {unroll}; ++u) {{",
            "  const long kk = k0 + u;",
            *["  " + ln for ln in step("alt[u]")], "  }", "}",
            f"for (long kk = ({k}) / {unroll} * {unroll}; kk < {k}; ++kk) {{", *step("acc"), "}",
            f"for (int u = 0; u < {unroll}; ++u) for (int i = 0; i < {rows}; ++i)",
            f"  for (int v = 0; v < {t.vectors}; ++v) acc[i][v] += alt[u][i][v];"]


def attention(score: Expr, probs: Expr | None, q: AttnOperand, k: AttnOperand, v: AttnOperand, out: AttnOperand,
              masks: Sequence[AttnOperand], batch: Sequence[int], sq: int, sk: int, d: int, dv: int, causal: bool,
              t: Tile, rb: int) -> CSource:
    """softmax(score)·v for the units ``[lo, hi)`` of (batch index, block of ``rb`` query
    rows), f32, the block's scores never leaving the cache: kᵀ and v packed into panels of
    ``t.width`` keys and columns (once per batch index a call meets); per block q·kᵀ by the
    register micro-kernel into scratch; per row the score expression (``arg(0)`` the
    product, ``arg(1 + j)`` mask j), its max, exp and sum, the probabilities and their map
    ``probs`` (of ``arg(0)``) in place; then their product with v into the output. Keys the
    causal mask hides are skipped, as flash attention skips them, where the map sends 0 to
    0 (their probabilities are exactly 0): a NaN in such a key's row of v stays out."""
    r, w = t.rows, t.width
    pk, pv, skp = -(-sk // w), -(-dv // w), -(-sk // w) * w
    blocks, rows_pad = -(-sq // rb), -(-rb // r) * r
    at = f"S[i * {skp} + t]"

    def boff(op: AttnOperand) -> str:
        return " + ".join([f"b{j} * {st}" for j, st in enumerate(op.batch) if st] or ["0"])

    def leaf(e: Expr) -> str:
        if e.value == 0:
            return convert(at, DType.f32, e.dtype)
        m = masks[e.value - 1]
        return convert(f"m{e.value - 1}[mo{e.value - 1}{f' + t * {m.col}' if m.col else ''}]", m.dtype, e.dtype)
    em = Emitter(leaf)
    x = em.value(score)
    score_lines = em.lines
    em = Emitter(lambda e: "p")
    mapped = em.value(probs) if probs is not None else "p"
    map_lines = em.lines
    em = Emitter(lambda e: "0.0f")
    zero = em.value(probs) if probs is not None else "0.0f"
    zero_lines = em.lines
    head = [f"const long bi = u / {blocks}, r0 = (u % {blocks}) * {rb}, rb = {sq} - r0 < {rb} ? {sq} - r0 : {rb};",
            "long rest = bi;"]
    for j in range(len(batch) - 1, -1, -1):
        head.append(f"const long b{j} = rest % {batch[j]}; rest /= {batch[j]};")
    head.append(f"const long qo = {boff(q)}, ko = {boff(k)}, vo = {boff(v)}, oo = {boff(out)};")
    head.append(f"const long kb = {'skip && r0 + rb < %d ? r0 + rb : %d' % (sk, sk) if causal else sk};  // keys in play")
    tile_keys = (f"  const long kt = skip && r0 + i0 + {r} < kb ? r0 + i0 + {r} : kb;  // the keys a tile's rows see"
                 if causal else "  const long kt = kb;")
    pack = ["if (bi != packed) {  // kᵀ and v of this batch index, in panels",
            f"  for (long p = 0; p < {pk}; ++p)",
            f"    for (long c = 0; c < {w}; ++c)",
            f"      for (long dd = 0; dd < {d}; ++dd)",
            f"        kp[(p * {d} + dd) * {w} + c] = p * {w} + c < {sk} ? "
            f"a1[ko + (p * {w} + c) * {k.row} + dd * {k.col}] : 0.0f;",
            f"  for (long p = 0; p < {pv}; ++p)",
            f"    for (long key = 0; key < {sk}; ++key)",
            f"      for (long c = 0; c < {w}; ++c)",
            f"        vp[(p * {sk} + key) * {w} + c] = p * {w} + c < {dv} ? "
            f"a2[vo + key * {v.row} + (p * {w} + c) * {v.col}] : 0.0f;",
            "  packed = bi;", "}"]
    scores = [f"for (long i0 = 0; i0 < rb; i0 += {r}) {{  // q·kᵀ",
              f"  const float* ar[{r}];",
              f"  for (int i = 0; i < {r}; ++i) ar[i] = a0 + qo + (r0 + (i0 + i < rb ? i0 + i : rb - 1)) * {q.row};",
              tile_keys,
              f"  for (long p = 0; p < (kt + {w - 1}) / {w}; ++p) {{",
              *["    " + ln for ln in _product_tile(t, f"ar[i][{'kk' if q.col == 1 else f'kk * {q.col}'}]",
                                                  f"(kp + p * {d * w})", d)],
              f"    for (int i = 0; i < {r}; ++i) memcpy(S + (i0 + i) * {skp} + p * {w}, acc[i], sizeof acc[i]);",
              "  }", "}"]
    softmax = ["for (long i = 0; i < rb; ++i) {  // each row's softmax, in place",
               "  const long qrow = r0 + i;",
               f"  const long kn = {'qrow + 1 < kb ? qrow + 1 : kb' if causal else 'kb'};",
               *[f"  const long mo{j} = {boff(m)} + qrow * {m.row};" for j, m in enumerate(masks)],
               "  float mx = -INFINITY;", "  int nan = 0;",
               "  #pragma omp simd reduction(max:mx) reduction(|:nan)",
               "  for (long t = 0; t < kn; ++t) {", *["    " + ln for ln in score_lines],
               f"    {at} = {x};", f"    mx = mx > {x} ? mx : {x}; nan |= {x} != {x};", "  }",
               "  if (nan) mx = NAN;", "  float sum = 0.0f;",
               "  #pragma omp simd reduction(+:sum)",
               "  for (long t = 0; t < kn; ++t) {", f"    const float e = expf({at} - mx);", f"    {at} = e;",
               "    sum += e;", "  }",
               "  const float inv = 1.0f / sum;",
               "  for (long t = 0; t < kn; ++t) {", f"    const float p = {at} * inv;", *["    " + ln for ln in map_lines],
               f"    {at} = {mapped};", "  }",
               f"  for (long t = kn; t < kb; ++t) {at} = zero;",
               "}"]
    product = [f"for (long i0 = 0; i0 < rb; i0 += {r}) {{  // ·v",
               f"  const float* ar[{r}];",
               f"  for (int i = 0; i < {r}; ++i) ar[i] = S + (i0 + i < rb ? i0 + i : rb - 1) * {skp};",
               f"  const long rows = rb - i0 < {r} ? rb - i0 : {r};",
               tile_keys,
               f"  for (long p = 0; p < {pv}; ++p) {{",
               *["    " + ln for ln in _product_tile(t, "ar[i][kk]", f"(vp + p * {sk * w})", "kt")],
               f"    float tl[{r}][{w}];",
               "    memcpy(tl, acc, sizeof tl);",
               f"    const long cols = {dv} - p * {w} < {w} ? {dv} - p * {w} : {w};",
               "    #pragma GCC unroll 1",
               "    for (long i = 0; i < rows; ++i) {",
               "      #pragma omp simd",
               "      for (long c = 0; c < cols; ++c)",
               f"        o0[oo + (r0 + i0 + i) * {out.row} + (p * {w} + c) * {out.col}] = tl[i][c];",
               "    }", "  }", "}"]
    body = [*zero_lines, f"const float zero = {zero};  // the map of a hidden key's probability",
            "const int skip = zero == 0.0f;",
            f"float* kp = (float*)rlx_scratch(0, {pk * d * w} * sizeof(float));",
            f"float* vp = (float*)rlx_scratch(1, {pv * sk * w} * sizeof(float));",
            f"float* S = (float*)rlx_scratch(2, {rows_pad * skp} * sizeof(float));",
            "long packed = -1;",
            "for (long u = lo; u < hi; ++u) {",
            *["  " + ln for ln in head + pack + scores + softmax + product],
            "}"]
    sig = ["const float* __restrict__ a0", "const float* __restrict__ a1", "const float* __restrict__ a2"]
    sig += [f"const {CTYPE[m.dtype]}* __restrict__ m{j}" for j, m in enumerate(masks)]
    return _finish(sig + ["float* __restrict__ o0"], body)


# ---------------------------------------------------------------------------- convolution as a GEMM
@dataclass(frozen=True)
class ConvGeometry:
    """A 1-D (as one row) or 2-D convolution laid out for ``conv_gemm``: each channel of the
    zero-bordered image split into the phases of its strides that some tap reads, each phase
    an ``hq`` × ``wq`` plane, so that tap t of output pixel q = oh·wq + ow reads
    ``plane(t)[q + shift(t)]`` (a strided, dilated, padded convolution is a unit-stride one
    of its phase planes). Columns ``ow ≥ out_w`` of a plane row are junk: computed, never
    stored."""
    n: int
    c: int
    height: int
    width: int
    m: int
    out_h: int
    out_w: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int]
    dilations: tuple[int, int]
    group: int
    hq: int
    wq: int

    def _tap(self, th: int, tw: int) -> tuple[tuple[int, int], int]:
        """A tap's phase (row, column) and its shift within the phase's plane."""
        (sh, sw), (dh, dw) = self.strides, self.dilations
        (rh, ph), (rw, pw) = divmod(th * dh, sh), divmod(tw * dw, sw)
        return (ph, pw), rh * self.wq + rw

    @property
    def phases(self) -> list[tuple[int, int]]:
        """The phases some tap reads, in order."""
        return sorted({self._tap(th, tw)[0] for th in range(self.kernel[0]) for tw in range(self.kernel[1])})

    @property
    def channel(self) -> int:
        """Elements per channel: its phase planes one after another."""
        return len(self.phases) * self.hq * self.wq

    @property
    def pixels(self) -> int:
        """Output pixels in plane coordinates (junk columns included)."""
        return self.out_h * self.wq

    @property
    def products(self) -> int:
        """Products summed per output: a group's channels times the taps."""
        return self.c // self.group * self.kernel[0] * self.kernel[1]

    def panels(self, width: int) -> int:
        """``conv_gemm``'s panels of ``width`` pixels (plane coordinates)."""
        return -(-self.pixels // width)

    def taps(self) -> list[int]:
        """Each tap's offset in a channel's planes, in the weights' (row, column) order."""
        index = {f: i for i, f in enumerate(self.phases)}
        return [index[f] * self.hq * self.wq + shift for f, shift in
                (self._tap(th, tw) for th in range(self.kernel[0]) for tw in range(self.kernel[1]))]


def conv_geometry(x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int], strides: Sequence[int],
                  pads: Sequence[int], dilations: Sequence[int], group: int) -> ConvGeometry | None:
    """The geometry of a 1-D or 2-D convolution (``pads``: the leading ones); None for other ranks."""
    nsp = len(x_shape) - 2
    if nsp not in (1, 2):
        return None
    two = (lambda v, fill: (fill,) + tuple(v)) if nsp == 1 else (lambda v, fill: tuple(v))
    (h, w), (oh, ow), kernel = two(x_shape[2:], 1), two(out_shape[2:], 1), two(w_shape[2:], 1)
    st, pd, dl = two(strides, 1), two(pads[:nsp], 0), two(dilations, 1)
    reach = [((k - 1) * d) // s for k, d, s in zip(kernel, dl, st)]  # a tap's furthest shift in its phase
    return ConvGeometry(x_shape[0], x_shape[1], h, w, out_shape[1], oh, ow, kernel, st, pd, dl, group,
                        oh + reach[0], ow + reach[1])


def conv_rows(g: ConvGeometry) -> tuple[list[str], Callable[[str], str], Callable[[str], str]]:
    """A single image's convolution as a GEMM with output pixels as rows (``gemm``'s
    ``a_at``): the window element (pixel, channel·taps + tap) read from the phase planes at
    the pixel's offset plus the channel's and tap's, junk columns left out."""
    taps = g.taps()
    return ([f"static const long taps[{len(taps)}] = {{{', '.join(map(str, taps))}}};  // each tap's offset"],
            lambda row: f"({row} / {g.out_w}) * {g.wq} + {row} % {g.out_w}",
            lambda col: f"({col} / {len(taps)}) * {g.channel} + taps[{col} % {len(taps)}]")


def conv_planes(g: ConvGeometry, x: Operand) -> CSource:
    """Copy the image into ``conv_gemm``'s phase planes (zero where a plane reads padding),
    for the channels ``[lo, hi)`` of all images (channel n·C + c)."""
    xs = list(x.strides) if len(x.strides) == 4 else [x.strides[0], x.strides[1], 0, x.strides[2]]
    (sh, sw), (ph, pw) = g.strides, g.pads
    src = convert(f"xc[r * {xs[2]} + col * {xs[3]}]", x.dtype, DType.f32)
    fs = g.phases
    body = [f"static const int fh[{len(fs)}] = {{{', '.join(str(a) for a, _ in fs)}}};",
            f"static const int fw[{len(fs)}] = {{{', '.join(str(b) for _, b in fs)}}};",
            "for (long p = lo; p < hi; ++p) {",
            f"  const {CTYPE[x.dtype]}* xc = a0 + (p / {g.c}) * {xs[0]} + (p % {g.c}) * {xs[1]};",
            f"  float* dst = o0 + p * {g.channel};",
            f"  for (long i = 0; i < {g.hq}; ++i)",  # every phase of a row at once: it is read from L1
            f"    for (long f = 0; f < {len(fs)}; ++f) {{",
            f"      const long r = i * {sh} + fh[f] - {ph};",
            f"      float* row = dst + (f * {g.hq} + i) * {g.wq};",
            f"      if (r < 0 || r >= {g.height}) {{ memset(row, 0, {g.wq} * sizeof(float)); continue; }}",
            # the columns j whose image column j·sw + fw - pw is inside the image, copied
            # without a test (the loop vectorizes); zeros either side
            f"      const long j0 = {pw} - fw[f] <= 0 ? 0 : ({pw} - fw[f] + {sw - 1}) / {sw};",
            f"      const long j1e = ({pw} + {g.width} - fw[f] + {sw - 1}) / {sw};",
            f"      const long j1 = j1e < {g.wq} ? (j1e > j0 ? j1e : j0) : {g.wq};",
            "      for (long j = 0; j < j0; ++j) row[j] = 0.0f;",
            "      for (long j = j0; j < j1; ++j) {",
            f"        const long col = j * {sw} + fw[f] - {pw};",
            f"        row[j] = {src};",
            "      }",
            f"      for (long j = j1; j < {g.wq}; ++j) row[j] = 0.0f;",
            "    }", "}"]
    return _finish([f"const {CTYPE[x.dtype]}* __restrict__ a0", "float* __restrict__ o0"], body)


def conv_gemm(outputs: Sequence[Expr], ins: Sequence[Operand | None], outs: Sequence[Operand], conv: int,
              bias: int | None, g: ConvGeometry, planes: tuple[int, int], t: Tile, chunk: int,
              span: int = 1, kc: int | None = None) -> CSource:
    """The convolution as a GEMM of the weights (packed by ``pack_conv_weights``: blocks of
    ``t.rows`` output channels, k-major) with panels of ``t.width`` output pixels, and its
    epilogue, for the tiles ``[lo, hi)``. ``span`` panels at a time are packed k-major from
    the image's phase planes (tap t of channel c is the run at ``c·channel + tap offset``:
    an im2col of those pixels only, read as runs of ``span`` panels: one stream per channel
    and tap, long enough for the prefetchers), so the micro-kernel streams both operands
    from contiguous memory. A tile is ``t.rows`` output channels × ``t.width`` pixels
    accumulated in registers over all channels and taps (the pixels as vector lanes, the
    weights broadcast), then each output of the tile, for runs of pixels that are not junk,
    is its epilogue expression of the inputs (``ins``: strides over the output) and the
    convolution plus bias (``arg(conv)``). Tiles run image by image, group by group, by
    ``chunk`` blocks of weights (read from L3), span by span, block by block (its weights
    stay in L1), panel by panel (a block's rows are stored and read as runs of ``span``
    panels): a span is packed once per chunk. With ``kc`` under the products per output
    (long sums, ``conv_slice``), threads share units of a chunk × a span instead, and each
    unit runs its sums ``kc`` products at a time: per slice, the span's slice is packed
    (it stays in L1) and every tile of the unit adds its share to its partial sums, kept
    aside until the last slice's epilogue. ``planes``: the images' and channels' strides
    of the planes read."""
    r, width = t.rows, t.width
    mg, cg = g.m // g.group, g.c // g.group
    bpg = -(-mg // r)                         # weight blocks per group
    chunks = -(-bpg // chunk)
    panels = g.panels(width)
    spans = -(-panels // span)
    taps = g.taps()
    kg = g.products
    kc = min(kc or kg, kg)
    sliced = kc < kg
    used = sorted({e.value for o in outputs for e in nodes(o) if e.op == "arg" and e.value != conv}
                  | ({bias} if bias is not None else set()))
    four = (lambda st: list(st)) if len(outs[0].strides) == 4 else (lambda st: [st[0], st[1], 0, st[2]])
    # flat: plane coordinates are the output's (no junk columns) and every operand's rows
    # follow on from each other, so a tile's pixels are consecutive elements: its epilogue
    # is one loop of constant length (it vectorizes)
    operands = [four(o.strides) for o in outs] + [four(ins[i].strides) for i in used if i != bias]
    flat = g.wq == g.out_w and all(st[2] == g.out_w * st[3] or g.out_h == 1 for st in operands)

    per = epilogue(outputs, ins, outs, conv, "tr[j]", ["n", "m", "oh", "ow"], four)
    whole = epilogue(outputs, ins, outs, conv, "tr[j]", ["n", "m", "q"],
                     lambda st: [four(st)[0], four(st)[1], four(st)[3]]) if flat else []
    bias_at = convert(f"a{bias}[m * {ins[bias].strides[0]}]", ins[bias].dtype, DType.f32) if bias is not None \
        else "0.0f"
    tile_ = [f"  const long m0 = gi * {mg} + bg * {r}, rows = {mg} - bg * {r} < {r} ? {mg} - bg * {r} : {r};",
             *["  " + ln for ln in _product_tile(t, f"aw[kk * {r} + i]", "pq", "kn", resume=(
                 "if (k0 > 0) memcpy(acc, pt, sizeof acc);  // the slices before this one" if sliced else None))],
             *([f"  if (k0 + kn < {kg}) {{ memcpy(pt, acc, sizeof acc); continue; }}"] if sliced else []),
             f"  float tl[{r}][{width}];",
             "  memcpy(tl, acc, sizeof tl);",
             *([f"  if (q0 + {width} <= {g.pixels}) {{  // a whole tile of consecutive output pixels",
                "    #pragma GCC unroll 1",  # else GCC unrolls the rows into scalar stores
                "    for (long i = 0; i < rows; ++i) {",
                "      const long m = m0 + i;",
                f"      float tr[{width}];",
                "      #pragma omp simd",
                f"      for (long j = 0; j < {width}; ++j) tr[j] = tl[i][j] + {bias_at};",
                "      #pragma omp simd",
                f"      for (long j = 0; j < {width}; ++j) {{",
                "        const long q = q0 + j;",
                *["        " + ln for ln in whole],
                "      }",
                "    }",
                "    continue;",
                "  }"] if flat else []),
             f"  const long qend = q0 + {width} < {g.pixels} ? q0 + {width} : {g.pixels};",
             "  #pragma GCC unroll 1",
             "  for (long i = 0; i < rows; ++i) {",
             "    const long m = m0 + i;",
             f"    const float bm = {bias_at};",
             "    for (long q = q0; q < qend;) {",
             f"      const long oh = q / {g.wq}, ow0 = q - oh * {g.wq};",
             f"      const long run = qend - q < {g.wq} - ow0 ? qend - q : {g.wq} - ow0;",
             f"      const long valid = ow0 < {g.out_w} ? (run < {g.out_w} - ow0 ? run : {g.out_w} - ow0) : 0;",
             f"      float tr[{width}];",
             "      #pragma omp simd",
             "      for (long j = 0; j < valid; ++j) tr[j] = tl[i][q - q0 + j] + bm;",
             "      #pragma omp simd",
             "      for (long j = 0; j < valid; ++j) {",
             "        const long ow = ow0 + j;",
             *["        " + ln for ln in per],
             "      }",
             "      q += run;",
             "    }", "  }"]
    head = [f"static const long tap[{len(taps)}] = {{{', '.join(map(str, taps))}}};",
            f"float* pk = (float*)rlx_scratch(0, {kc * width * span * 4});  // this call's packed span",
            f"float* part = (float*)rlx_scratch(1, {chunk * span * r * width * 4});  // its tiles' sums"
            if sliced else "long packed = -1;"]
    pack = [f"    const float* xb = xp + n * {planes[0]} + gi * {cg * planes[1]} + s0 * {width};",
            "    for (long kk = k0; kk < k0 + kn; ++kk) {",
            f"      const long c = kk / {len(taps)}, k = kk % {len(taps)};",
            "      for (long v = 0; v < ns; ++v)",
            f"        memcpy(pk + (v * kn + kk - k0) * {width}, xb + c * {planes[1]} + tap[k] + v * {width}, "
            f"{width * 4});",
            "    }"]
    decode = [f"  const long n = ng / {g.group}, gi = ng % {g.group}, s0 = si * {span};",
              f"  const long ns = {panels} - s0 < {span} ? {panels} - s0 : {span};  // the span's panels"]
    if not sliced:  # tile by tile: (image, group, chunk, span, block, panel)
        body = head + [
            "for (long t = lo; t < hi; ++t) {",
            f"  const long u = t % {span}, bi = t / {span} % {chunk}, sp = t / {span * chunk};",
            f"  const long si = sp % {spans}, ch = sp / {spans} % {chunks}, ng = sp / {spans * chunks};",
            *decode,
            f"  const long bg = ch * {chunk} + bi, qp = si * {span} + u, q0 = qp * {width}, k0 = 0, kn = {kg};",
            f"  if (bg >= {bpg} || qp >= {panels}) continue;",
            "  if (sp != packed) {",
            "    packed = sp;",
            *pack,
            "  }",
            f"  const float* pq = pk + u * {kg * width};",
            f"  const float* aw = wp + (gi * {bpg} + bg) * {kg * r};",
            *tile_, "}"]
    else:  # unit by unit (image, group, chunk, span): slice by slice, its panels, its blocks
        body = head + [
            "for (long t = lo; t < hi; ++t) {",
            f"  const long si = t % {spans}, ch = t / {spans} % {chunks}, ng = t / {spans * chunks};",
            *decode,
            f"  for (long k0 = 0; k0 < {kg}; k0 += {kc}) {{",
            f"    const long kn = {kg} - k0 < {kc} ? {kg} - k0 : {kc};",
            *pack,
            "    for (long u = 0; u < ns; ++u)",
            f"    for (long bi = 0; bi < {chunk}; ++bi) {{",
            f"  const long bg = ch * {chunk} + bi, q0 = (s0 + u) * {width};",
            f"  if (bg >= {bpg}) break;",
            f"  const float* pq = pk + u * kn * {width};",
            f"  const float* aw = wp + (gi * {bpg} + bg) * {kg * r} + k0 * {r};",
            f"  float* pt = part + (bi * {span} + u) * {r * width};",
            *tile_, "    }", "  }", "}"]
    sig = ["const float* __restrict__ xp", "const float* __restrict__ wp"]
    sig += _signature([ins[i] if i in used else None for i in range(len(ins))], outs)
    return _finish(sig, body)


def epilogue(outputs: Sequence[Expr], ins: Sequence[Operand | None], outs: Sequence[Operand], conv: int,
             value: str, index: Sequence[str], strides=lambda st: st) -> list[str]:
    """C statements storing each output's epilogue expression at the element ``index`` names:
    ``arg(conv)`` reads the f32 ``value`` (the convolution plus bias), other args their input
    (``strides`` maps an operand's strides onto ``index``)."""
    def leaf(e: Expr) -> str:
        if e.value == conv:
            return convert(value, DType.f32, e.dtype)
        return convert(f"a{e.value}[{_dot(strides(ins[e.value].strides), index)}]", ins[e.value].dtype, e.dtype)
    em = Emitter(leaf)
    names = [em.value(e) for e in outputs]
    return em.lines + [f"o{k}[{_dot(strides(o.strides), index)}] = {convert(nm, e.dtype, o.dtype)};"
                       for k, (o, e, nm) in enumerate(zip(outs, outputs, names))]


CHUNK_BYTES = 1 << 20  # weights per chunk of conv_gemm's blocks (from L3): every chunk packs the image's spans again
MIN_CHUNK = 2          # blocks per chunk at least: a panel's packing is then under 1/12 of its products
SPAN_BYTES = 1 << 16   # a packed span of panels at most: it stays in L2 while the chunk's blocks pass
MAX_SPAN = 8           # panels per span at most: runs of 8 cache lines per channel are long enough
SLICE = 256            # products per slice of a long sum: a panel's slice (16 KiB) stays in L1
SLICED = 1536          # products per output from which the sum runs in slices


def conv_slice(g: ConvGeometry, t: Tile) -> int:
    """Products per slice of ``conv_gemm``'s sums: all of them, or ``SLICE`` from ``SLICED``
    on (a panel of more streams from L2 into every tile; in slices it stays in L1 while a
    chunk of blocks passes, their partial sums kept aside)."""
    return SLICE if g.products >= SLICED else g.products


def conv_chunk(g: ConvGeometry, t: Tile, kc: int | None = None, parts: int = 1) -> int:
    """Weight blocks per chunk of ``conv_gemm``: as many as fit ``CHUNK_BYTES`` (of their
    slices of ``kc`` products), at least ``MIN_CHUNK``, at most a group's; sliced, at most so
    many that the units number ``parts`` (threads share units, not tiles)."""
    bpg = -(-(g.m // g.group) // t.rows)
    chunk = max(1, min(bpg, max(MIN_CHUNK, CHUNK_BYTES // (4 * t.rows * (kc or g.products)))))
    if kc is not None and kc < g.products:
        others = g.n * g.group * -(-g.panels(t.width) // conv_span(g, t, kc))
        chunk = max(1, min(chunk, -(-bpg // -(-parts // others))))
    return chunk


def conv_span(g: ConvGeometry, t: Tile, kc: int | None = None) -> int:
    """Panels per packed span of ``conv_gemm`` (of slices of ``kc`` products): as many as fit
    ``SPAN_BYTES``, 1 to ``MAX_SPAN``."""
    per_panel = 4 * t.width * (kc or g.products)
    return max(1, min(MAX_SPAN, g.panels(t.width), SPAN_BYTES // per_panel))


def conv_tiles(g: ConvGeometry, t: Tile, chunk: int, span: int = 1, kc: int | None = None) -> int:
    """How many tiles ``conv_gemm`` runs over (a group's last chunk, and the last span, may
    have empty ones); sliced (``kc`` under the products per output), how many units of
    ``chunk`` blocks × ``span`` panels."""
    bpg = -(-(g.m // g.group) // t.rows)
    units = g.n * g.group * -(-bpg // chunk) * -(-g.panels(t.width) // span)
    return units if kc is not None and kc < g.products else units * chunk * span


def conv_weight_blocks(w_shape: Sequence[int], group: int, t: Tile) -> np.ndarray:
    """Zeros shaped as ``conv_gemm`` reads the weights (M, C/group, *kernel): per group, blocks
    of ``t.rows`` output channels (zero past the group's last), each (C/group · taps) × rows,
    in f32; ``pack_conv_weights`` fills them."""
    mg, k = w_shape[0] // group, math.prod(w_shape[1:])
    return np.zeros((group, -(-mg // t.rows), k, t.rows), np.float32)


def pack_conv_weights(w: np.ndarray, blocks: np.ndarray) -> None:
    """Copy the weights into ``blocks`` (made by ``conv_weight_blocks``) in their layout."""
    group, bpg, k, rows = blocks.shape
    mg = w.shape[0] // group
    wg = w.reshape(group, mg, k)
    whole = mg // rows  # blocks of all rows, then the last one's rows (its others stay zero)
    np.copyto(blocks[:, :whole], wg[:, :whole * rows].reshape(group, whole, rows, k).transpose(0, 1, 3, 2),
              casting="unsafe")
    if whole < bpg:
        np.copyto(blocks[:, whole, :, :mg - whole * rows], wg[:, whole * rows:].transpose(0, 2, 1), casting="unsafe")


# ---------------------------------------------------------------------------- rows
def row_loops(outputs: Sequence[Expr], reductions: Sequence[tuple[str, Expr]], leaf: Callable[[Expr], str],
              stores: Sequence[Callable[[str], str]], length: int) -> list[str]:
    """The loops over one row of ``length`` elements (index ``t``): each reduction in order
    (sums vectorized through OpenMP's simd reduction, a max with NaN tracked beside it),
    then one loop computing every output. ``leaf`` prints an ``arg`` leaf at element ``t``
    (converted to its dtype); ``stores[k]`` the statement storing output k's value."""
    red_names: dict[int, str] = {}

    def emitter() -> Emitter:
        return Emitter(lambda e: red_names[e.value] if e.op == "red" else leaf(e))
    body: list[str] = []
    for j, (kind, e) in enumerate(reductions):
        em = emitter()
        v = em.value(e)
        name = f"R{j}"
        ct = CTYPE[e.dtype]
        body.append(f"{ct} {name} = {reduction_identity(kind, e.dtype)};")
        if kind == "max":  # a vector max, NaN tracked beside it (a NaN anywhere is the row's max)
            body += [f"int nan{j} = 0;", f"#pragma omp simd reduction(max:{name}) reduction(|:nan{j})"]
            update = f"{name} = {name} > {v} ? {name} : {v}; nan{j} |= {v} != {v};"
        else:
            body.append(f"#pragma omp simd reduction(+:{name})")
            update = f"{name} += {v};"
        body += [f"for (long t = 0; t < {length}; ++t) {{"] + ["  " + ln for ln in em.lines] + [f"  {update}", "}"]
        if kind == "max" and e.dtype.is_float:
            body.append(f"if (nan{j}) {name} = ({ct})NAN;")
        if kind == "mean":
            body.append(f"{name} *= ({CTYPE[e.dtype]})(1.0 / {length});")
        red_names[j] = name
    em = emitter()
    names = [em.value(e) for e in outputs]
    return body + [f"for (long t = 0; t < {length}; ++t) {{"] + ["  " + ln for ln in em.lines] + \
        ["  " + store(nm) for store, nm in zip(stores, names)] + ["}"]


def rows(outputs: Sequence[Expr], reductions: Sequence[tuple[str, Expr]], ins: Sequence[Operand | None],
         outs: Sequence[Operand], shape: Sequence[int], restrict: bool = True) -> CSource | None:
    """Pointwise and row-reduction kernels over the rows ``[lo, hi)`` of ``shape`` (its last
    axis a row; operands' strides over ``shape``): per row, each reduction in order, a loop
    over the row, then one loop computing every output (``row_loops``). None where an
    expression or a reduction is in a dtype without C code here."""
    exprs = list(outputs) + [e for _, e in reductions]
    used = sorted({x.value for e in exprs for x in nodes(e) if x.op == "arg"})
    if any(not supported(x.dtype) for e in exprs for x in nodes(e)) or \
            any(not supported(o.dtype) for o in outs) or any(not accumulates(e.dtype) for _, e in reductions):
        return None
    outer, length = list(shape[:-1]), shape[-1]
    head = ["long rest = r;"]
    for d in range(len(outer) - 1, -1, -1):
        head.append(f"const long d{d} = rest % {outer[d]}; rest /= {outer[d]};")
    index = [f"d{d}" for d in range(len(outer))]
    head += [f"const long off{i} = {_dot(ins[i].strides[:-1], index)};" for i in used]
    head += [f"const long offo{k} = {_dot(o.strides[:-1], index)};" for k, o in enumerate(outs)]

    def leaf(e: Expr) -> str:
        st = ins[e.value].strides[-1]
        return convert(f"a{e.value}[off{e.value}{f' + t * {st}' if st else ''}]", ins[e.value].dtype, e.dtype)

    def store(k: int, o: Operand, e: Expr) -> Callable[[str], str]:
        at = f"o{k}[offo{k}{f' + t * {o.strides[-1]}' if o.strides[-1] else ''}]"
        return lambda nm: f"{at} = {convert(nm, e.dtype, o.dtype)};"
    body = head + row_loops(outputs, reductions, leaf, [store(k, o, e) for k, (o, e) in enumerate(zip(outs, outputs))],
                            length)
    body = ["for (long r = lo; r < hi; ++r) {"] + ["  " + ln for ln in body] + ["}"]
    sig = _signature([ins[i] if i in used else None for i in range(len(ins))], outs)
    if not restrict:
        sig = [p.replace(" __restrict__", "") for p in sig]
    return _finish(sig, body)
