"""Winograd F(4×4, 3×3) for the CPU printer: a 3×3 unit-stride convolution in 36 GEMMs.

Each 4×4 block of output pixels (a tile) is the correlation of a 6×6 patch of the image
with the 3×3 kernel; in Winograd's transformed domain it is an elementwise product:
``Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A``. Over all channels the products sum, so the 36
elements of the transformed domain are 36 independent GEMMs (tiles × channels by channels
× output channels) with 4× fewer multiplications than the direct convolution. The kernels:
``input_transform`` (the image's patches into ``V``: channel, element, tile), the GEMMs
(``c_print.gemm`` of each element's ``V`` by its packed ``U = G g Gᵀ``, into ``M``:
tile, element, output channel), and ``output_transform`` (``M`` back to pixels, with the
convolution's bias and epilogue). The matrices are Lavin and Gray's (2015) for the points
0, ±1, ±2, ∞; tests prove the identity in f64.
"""
from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from rlx.exec.c_print import ConvGeometry, CSource, _finish, _signature, epilogue, unvectorized
from rlx.exec.cuda_print import CTYPE, Operand, convert
from rlx.ir.dtypes import DType
from rlx.ir.expr import Expr, nodes

F = Fraction
BT = [[4, 0, -5, 0, 1, 0],
      [0, -4, -4, 1, 1, 0],
      [0, 4, -4, -1, 1, 0],
      [0, -2, -1, 2, 1, 0],
      [0, 2, -1, -2, 1, 0],
      [0, 4, 0, -5, 0, 1]]
G = [[F(1, 4), 0, 0],
     [F(-1, 6), F(-1, 6), F(-1, 6)],
     [F(-1, 6), F(1, 6), F(-1, 6)],
     [F(1, 24), F(1, 12), F(1, 6)],
     [F(1, 24), F(-1, 12), F(1, 6)],
     [0, 0, 1]]
AT = [[1, 1, 1, 1, 1, 0],
      [0, 1, -1, 2, -2, 0],
      [0, 1, 1, 4, 4, 0],
      [0, 1, -1, 8, -8, 1]]
TILE, PATCH = 4, 6                 # output pixels and image pixels on a tile's side
ELEMENTS = PATCH * PATCH           # GEMMs per convolution


def applies(g: ConvGeometry) -> bool:
    """A 2-D 3×3 convolution of unit stride and dilation, one group (the image is then read
    as overlapping 6×6 patches)."""
    return g.kernel == (3, 3) and g.strides == (1, 1) and g.dilations == (1, 1) and g.group == 1 and g.height > 1


def tiles(g: ConvGeometry) -> tuple[int, int]:
    """Tiles down and across an output plane."""
    return -(-g.out_h // TILE), -(-g.out_w // TILE)


def transform_weights(w: np.ndarray) -> np.ndarray:
    """``U``: each 3×3 kernel as ``G g Gᵀ`` (computed in f64), element-major: (36, C, M)."""
    gm = np.array(G, dtype=np.float64)
    u = np.einsum("ik,mckl,jl->ijcm", gm, w.astype(np.float64), gm)
    return u.reshape(ELEMENTS, w.shape[1], w.shape[0]).astype(np.float32)


def _combine(coef: Sequence, terms: Sequence[str]) -> str:
    """Σ coef·term over the nonzero coefficients, as C."""
    parts = []
    for c, t in zip(coef, terms):
        if c == 0:
            continue
        parts.append(t if c == 1 else f"-{t}" if c == -1 else f"{float(c)!r}f * {t}")
    return " + ".join(parts).replace("+ -", "- ") or "0.0f"


def _sandwich(mat: Sequence[Sequence], src: str, dst: str, n: int, ctype: str = "float") -> list[str]:
    """``dst = mat · src · matᵀ`` for an n×n ``src``, as straight-line C over arrays of
    ``ctype`` (a float, or a vector of them: the same arithmetic on every lane)."""
    rows = len(mat)
    lines = [f"{ctype} {dst}_h[{rows}][{n}], {dst}[{rows}][{rows}];"]
    lines += [f"{dst}_h[{i}][{j}] = {_combine(mat[i], [f'{src}[{k}][{j}]' for k in range(n)])};"
              for i in range(rows) for j in range(n)]
    lines += [f"{dst}[{i}][{j}] = {_combine(mat[j], [f'{dst}_h[{i}][{k}]' for k in range(n)])};"
              for i in range(rows) for j in range(rows)]
    return lines


LANES = 8  # tiles (input transform) or output channels (output transform) per vector
VEC = f"rlx_floatx{LANES}"


def input_transform(g: ConvGeometry, x: Operand) -> CSource:
    """``V[c][e][t] = (Bᵀ d B)[e]`` for each channel and tile (``d``: the tile's 6×6 patch,
    zero where it reads padding), for the channels ``[lo, hi)`` of all images (n·C + c).
    ``LANES`` consecutive tiles at a time, one per vector lane: each lane's patch is read
    into its place, the transform is vector arithmetic, and each element's row of ``V``
    is stored as one vector (the tiles are consecutive there)."""
    xs = x.strides
    th_n, tw_n = tiles(g)
    per_image, t_all = th_n * tw_n, g.n * th_n * tw_n
    ph, pw = g.pads
    src = convert(f"xc[r * {xs[2]} + col * {xs[3]}]", x.dtype, DType.f32)
    body = ["for (long p = lo; p < hi; ++p) {",
            f"  const long n = p / {g.c}, c = p % {g.c};",
            f"  const {CTYPE[x.dtype]}* xc = a0 + n * {xs[0]} + c * {xs[1]};",
            f"  float* dst = o0 + c * {ELEMENTS * t_all} + n * {per_image};",
            f"  for (long t0 = 0; t0 < {per_image}; t0 += {LANES}) {{",
            f"    const long nl = {per_image} - t0 < {LANES} ? {per_image} - t0 : {LANES};",
            f"    float dl[{PATCH}][{PATCH}][{LANES}];",
            f"    for (long l = 0; l < {LANES}; ++l) {{",
            "      const long t = t0 + (l < nl ? l : 0);  // past the last tile: the first one again, never stored",
            f"      const long r0 = t / {tw_n} * {TILE} - {ph}, c0 = t % {tw_n} * {TILE} - {pw};",
            f"      if (r0 >= 0 && r0 + {PATCH} <= {g.height} && c0 >= 0 && c0 + {PATCH} <= {g.width}) {{  // inside",
            f"        for (int i = 0; i < {PATCH}; ++i)",
            f"          for (int j = 0; j < {PATCH}; ++j) {{",
            "            const long r = r0 + i, col = c0 + j;",
            f"            dl[i][j][l] = {src};",
            "          }",
            "      } else {",
            f"        for (int i = 0; i < {PATCH}; ++i)",
            f"          for (int j = 0; j < {PATCH}; ++j) {{",
            "            const long r = r0 + i, col = c0 + j;",
            f"            dl[i][j][l] = r >= 0 && r < {g.height} && col >= 0 && col < {g.width} ? {src} : 0.0f;",
            "          }",
            "      }",
            "    }",
            f"    {VEC} d[{PATCH}][{PATCH}];",
            "    memcpy(d, dl, sizeof d);",
            *["    " + ln for ln in _sandwich(BT, "d", "v", PATCH, VEC)],
            f"    if (nl == {LANES}) {{",
            *[f"      memcpy(dst + {(i * PATCH + j) * t_all} + t0, &v[{i}][{j}], sizeof(v[0][0]));"
              for i in range(PATCH) for j in range(PATCH)],
            "    } else {",
            "      for (long l = 0; l < nl; ++l) {",
            *[f"        dst[{(i * PATCH + j) * t_all} + t0 + l] = v[{i}][{j}][l];"
              for i in range(PATCH) for j in range(PATCH)],
            "      }",
            "    }",
            "  }",
            "}"]
    return unvectorized(_finish([f"const {CTYPE[x.dtype]}* __restrict__ a0", "float* __restrict__ o0"], body))


def gemms(gemm: CSource, g: ConvGeometry, packed: int) -> CSource:
    """The 36 GEMMs in one call: ``gemm`` (``c_print.gemm`` of one element's ``V`` by its
    packed ``U``, ``packed`` floats apart, into its ``M``) for each element in turn, over
    the same range ``[lo, hi)`` of its panels or rows."""
    th_n, tw_n = tiles(g)
    t_all = g.n * th_n * tw_n
    inner = gemm.text.replace(f'extern "C" void {gemm.name}(', f"static void {gemm.name}(")
    body = [f"for (long e = 0; e < {ELEMENTS}; ++e)",
            f"  {gemm.name}(vp + e * {t_all}, up + e * {packed}, mp + e * {g.m}, lo, hi);"]
    outer = _finish(["const float* __restrict__ vp", "const float* __restrict__ up", "float* __restrict__ mp"], body)
    text = inner + outer.text
    return CSource(outer.name, text, outer.params)


def output_transform(outputs: Sequence[Expr], ins: Sequence[Operand | None], outs: Sequence[Operand], conv: int,
                     bias: int | None, g: ConvGeometry) -> CSource:
    """For the tiles ``[lo, hi)``: each output channel's ``Aᵀ M A`` (``M[t][e][m]``, the
    GEMMs' products) plus bias, then each output pixel of the tile inside the plane is its
    epilogue expression of the inputs (``ins``: strides over the output) and the
    convolution plus bias (``arg(conv)``). ``LANES`` output channels at a time, one per
    vector lane (they are consecutive in ``M``): the transform is vector arithmetic."""
    th_n, tw_n = tiles(g)
    used = sorted({e.value for o in outputs for e in nodes(o) if e.op == "arg" and e.value != conv}
                  | ({bias} if bias is not None else set()))
    per = epilogue(outputs, ins, outs, conv, "tr", ["n", "m", "oh", "ow"])
    bias_at = convert(f"a{bias}[m * {ins[bias].strides[0]}]", ins[bias].dtype, DType.f32) if bias is not None \
        else "0.0f"
    body = ["for (long t = lo; t < hi; ++t) {",
            f"  const long n = t / {th_n * tw_n}, th = (t / {tw_n}) % {th_n}, tw = t % {tw_n};",
            f"  const float* src = mp + t * {ELEMENTS * g.m};",
            f"  for (long m0 = 0; m0 < {g.m}; m0 += {LANES}) {{",
            f"    const long nl = {g.m} - m0 < {LANES} ? {g.m} - m0 : {LANES};",
            f"    {VEC} e[{PATCH}][{PATCH}];",
            f"    if (nl == {LANES}) {{",
            *[f"      e[{i}][{j}] = rlx_ld_floatx{LANES}(src + {(i * PATCH + j) * g.m} + m0);"
              for i in range(PATCH) for j in range(PATCH)],
            "    } else {  // the last channels: lanes past them stay zero",
            f"      float el[{PATCH}][{PATCH}][{LANES}] = {{}};",
            f"      for (int i = 0; i < {ELEMENTS}; ++i)",
            f"        for (long l = 0; l < nl; ++l) el[i / {PATCH}][i % {PATCH}][l] = src[i * {g.m} + m0 + l];",
            "      memcpy(e, el, sizeof e);",
            "    }",
            *["    " + ln for ln in _sandwich(AT, "e", "y", PATCH, VEC)],
            "    for (long l = 0; l < nl; ++l) {",
            "      const long m = m0 + l;",
            f"      const float bm = {bias_at};",
            f"      for (int a = 0; a < {TILE}; ++a)",
            f"        for (int b = 0; b < {TILE}; ++b) {{",
            f"          const long oh = th * {TILE} + a, ow = tw * {TILE} + b;",
            f"          if (oh >= {g.out_h} || ow >= {g.out_w}) continue;",
            "          const float tr = y[a][b][l] + bm;",
            *["          " + ln for ln in per],
            "        }",
            "    }",
            "  }",
            "}"]
    sig = ["const float* __restrict__ mp"] + _signature([ins[i] if i in used else None for i in range(len(ins))], outs)
    return _finish(sig, body)


__all__ = ["applies", "tiles", "transform_weights", "input_transform", "gemms", "output_transform", "BT", "G", "AT",
           "TILE", "PATCH", "ELEMENTS"]
