"""The CUDA printer: the scalar-op primitives and the kernel skeletons as CUDA C for NVRTC.

Everything here is text: no GPU and no CuPy are needed to print a kernel (the executor,
``cupy_exec``, compiles and launches what this prints). A kernel is specialized to its
sizes and strides: each operand is described by its storage dtype and its element strides
over the kernel's iteration space (0 along a broadcast axis), so broadcasting, transposed
and sliced views and packed GEMM products are all read in place, and adjacent axes that
every operand walks contiguously are merged before printing (fewer divisions per element).

Half-precision values are stored as 16-bit words and converted with PTX ``cvt`` (no CUDA
headers are needed); the kernel layer already computes half bodies in f32 and rounds once
(``rlx.kernels.scalar.finish``), so a half value appears only where it is loaded, rounded or
stored. Reductions accumulate in f32 (f64 for f64).

Printed skeletons: pointwise (grid-stride loop over the output), rows (one block per row:
the row reductions in order, each a block-wide tree, then the outputs; also the native
sum/mean/max over any axes), the softmax of attention scores (the middle of the attention
skeleton, whose two products run on cuBLAS), a flash-attention kernel on the tensor cores,
gather, and convolution: the windows as an im2col matrix (whose product with the weights
runs on cuBLAS, the epilogue as a pointwise kernel) or, for depthwise and thin grouped
convolutions, a direct kernel with its epilogue; max and average pooling.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rlx.errors import RlxError
from rlx.ir.dtypes import DType
from rlx.ir.expr import Expr, nodes

HALF = (DType.f16, DType.bf16)
CTYPE = {DType.f64: "double", DType.f32: "float", DType.f16: "unsigned short", DType.bf16: "unsigned short",
         DType.i64: "long long", DType.i32: "int", DType.i16: "short", DType.i8: "signed char",
         DType.u64: "unsigned long long", DType.u32: "unsigned int", DType.u16: "unsigned short",
         DType.u8: "unsigned char", DType.bool: "bool"}
THREADS = 256          # threads of a pointwise block
MAX_ROW_THREADS = 1024

# The scalar helpers every C printer's code calls (RLX_FN: how the printer's language
# declares an inline function); the CPU printer (c_print) shares them.
SCALAR_HELPERS = r"""
template <class T> RLX_FN T rlx_max(T a, T b) { return (a > b || a != a) ? a : b; }
template <class T> RLX_FN T rlx_min(T a, T b) { return (a < b || a != a) ? a : b; }
RLX_FN float rlx_fmodpy(float a, float b) { float r = fmodf(a, b); return (r != 0.0f && ((r < 0.0f) != (b < 0.0f))) ? r + b : r; }
RLX_FN double rlx_fmodpy(double a, double b) { double r = fmod(a, b); return (r != 0.0 && ((r < 0.0) != (b < 0.0))) ? r + b : r; }
template <class T> RLX_FN T rlx_imod(T a, T b) { if (b == 0) return (T)0; T r = a % b; return (r != 0 && ((r < 0) != (b < 0))) ? (T)(r + b) : r; }
template <class T> RLX_FN T rlx_ifmod(T a, T b) { return b == 0 ? (T)0 : (T)(a % b); }
template <class T> RLX_FN T rlx_idiv(T a, T b) { return b == 0 ? (T)0 : (T)(a / b); }
template <class T> RLX_FN T rlx_ipow(T a, T b) {
  if (b < 0) return a == 1 ? (T)1 : (a == (T)-1 ? ((b & 1) ? (T)-1 : (T)1) : (T)0);
  T r = 1; while (b) { if (b & 1) r *= a; a *= a; b >>= 1; } return r; }
"""

PRELUDE = r"""
#define RLX_INF __int_as_float(0x7f800000)
#define RLX_FN __device__ __forceinline__
__device__ __forceinline__ float rlx_h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short rlx_f2h(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float rlx_b2f(unsigned short b) { return __uint_as_float(((unsigned int)b) << 16); }
__device__ __forceinline__ unsigned short rlx_f2b(float f) { unsigned short h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
""" + SCALAR_HELPERS + r"""
template <class T> __device__ __forceinline__ T rlx_warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o); return v; }
template <class T> __device__ __forceinline__ T rlx_warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) v = rlx_max(v, __shfl_xor_sync(0xffffffffu, v, o)); return v; }
// a block-wide reduction; every thread gets the result (sh: 32 slots of T)
template <class T, bool MAX> __device__ __forceinline__ T rlx_block_reduce(T v, T identity, T* sh) {
  v = MAX ? rlx_warp_max(v) : rlx_warp_sum(v);
  if (blockDim.x > 32) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? sh[lane] : identity;
    v = MAX ? rlx_warp_max(v) : rlx_warp_sum(v);
  }
  return v;
}
"""


# ---------------------------------------------------------------------------- literals
def c_const(value, dtype: DType) -> str:
    """An exact C literal of ``value`` in ``dtype`` (non-finite floats by their bits)."""
    if dtype == DType.bool:
        return "true" if value else "false"
    if dtype.is_int:
        v = int(value)
        return f"(({CTYPE[dtype]}){v}{'ULL' if dtype == DType.u64 else 'LL'})"
    if dtype == DType.f64:
        v = float(value)
        if not math.isfinite(v):
            return f"__longlong_as_double({np.float64(v).view(np.int64)}LL)"
        s = repr(v)
        return s if any(c in s for c in ".en") else s + ".0"
    v32 = np.float32(value)  # f32, and half values computed in f32 (a half literal is exact in f32)
    if not np.isfinite(v32):
        return f"__int_as_float({int(v32.view(np.int32))})"
    s = repr(float(v32))
    return (s if any(c in s for c in ".e") else s + ".0") + "f"


# ---------------------------------------------------------------------------- primitives
def _fn(name: str, dtype: DType) -> str:
    return name + ("f" if dtype != DType.f64 else "")


def convert(code: str, src: DType, dst: DType) -> str:
    """C code converting a value of ``src`` (half as its 16-bit word) to ``dst``."""
    if src == dst:
        return code
    if src == DType.f16:
        code, src = f"rlx_h2f({code})", DType.f32
    elif src == DType.bf16:
        code, src = f"rlx_b2f({code})", DType.f32
    if src == dst:
        return code
    if dst == DType.f16:
        return f"rlx_f2h({code if src == DType.f32 else f'(float)({code})'})"
    if dst == DType.bf16:
        return f"rlx_f2b({code if src == DType.f32 else f'(float)({code})'})"
    if dst == DType.bool:
        return f"(({code}) != 0)"
    return f"(({CTYPE[dst]})({code}))"


def print_op(op: str, dtype: DType, args: Sequence[str], arg_dtypes: Sequence[DType], attrs: dict) -> str:
    """C code of one primitive whose result has ``dtype`` (not half: bodies compute in f32)."""
    if op == "cast":
        return convert(args[0], arg_dtypes[0], dtype)
    if dtype in HALF:
        raise RlxError(f"CUDA printer: {op} computed in {dtype} (half bodies are computed in f32)")
    ct = CTYPE[dtype]
    a = args[0]
    b = args[1] if len(args) > 1 else None
    xdt = arg_dtypes[0]
    flt = xdt.is_float
    if op in ("add", "sub", "mul"):
        sym = {"add": "+", "sub": "-", "mul": "*"}[op]
        if dtype == DType.bool:
            return f"({a} || {b})" if op == "add" else f"({a} && {b})" if op == "mul" else f"({a} != {b})"
        return f"(({ct})({a} {sym} {b}))"
    if op == "div":
        return f"({a} / {b})" if flt else f"rlx_idiv<{ct}>({a}, {b})"
    if op == "pow":
        return f"{_fn('pow', xdt)}({a}, {b})" if flt else f"rlx_ipow<{ct}>({a}, {b})"
    if op in ("maximum", "minimum"):
        return f"rlx_{op[:3]}<{ct}>({a}, {b})"
    if op in ("equal", "less", "greater"):
        return f"({a} {dict(equal='==', less='<', greater='>')[op]} {b})"
    if op == "neg":
        return f"(({ct})(-{a}))"
    if op == "abs":
        return f"{_fn('fabs', xdt)}({a})" if flt else f"(({ct})({a} < 0 ? -{a} : {a}))"
    if op in ("exp", "log", "sqrt", "tanh", "floor", "ceil", "sin", "cos", "erf"):
        if not flt:
            return f"(({ct}){op}((double){a}))"
        return f"{_fn(op, xdt)}({a})"
    if op == "reciprocal":
        return f"({c_const(1.0, xdt)} / {a})" if flt else f"rlx_idiv<{ct}>(({ct})1, {a})"
    if op == "sign":
        if flt:
            return f"({a} != {a} ? {a} : ({ct})(({a} > 0) - ({a} < 0)))"
        return f"(({ct})(({a} > 0) - ({a} < 0)))"
    if op == "isnan":
        return f"({a} != {a})" if flt else "false"
    if op == "isinf":
        return f"(isinf({a}) != 0)" if flt else "false"
    if op == "logical_not":
        return f"(!({a}))"
    if op in ("logical_and", "logical_or", "logical_xor"):
        sym = {"logical_and": "&&", "logical_or": "||", "logical_xor": "!="}[op]
        return f"(((bool)({a})) {sym} ((bool)({b})))"
    if op == "mod":
        return f"rlx_fmodpy({a}, {b})" if flt else f"rlx_imod<{ct}>({a}, {b})"
    if op == "fmod":
        return f"{_fn('fmod', xdt)}({a}, {b})" if flt else f"rlx_ifmod<{ct}>({a}, {b})"
    if op == "where":
        return f"({a} ? {args[1]} : {args[2]})"
    raise RlxError(f"CUDA printer has no code for primitive {op!r}")


PRINTABLE = frozenset({"cast", "add", "sub", "mul", "div", "pow", "maximum", "minimum", "equal", "less", "greater",
                       "neg", "abs", "exp", "log", "sqrt", "tanh", "floor", "ceil", "sin", "cos", "erf",
                       "reciprocal", "sign", "isnan", "isinf", "logical_not", "logical_and", "logical_or",
                       "logical_xor", "mod", "fmod", "where"})


def printable() -> frozenset[str]:
    """The primitives this printer has code for."""
    return PRINTABLE


class Emitter:
    """Straight-line C for expression DAGs: one ``const`` variable per node, leaves through
    ``leaf`` (which returns C code of the leaf's value in the leaf's dtype)."""

    def __init__(self, leaf: Callable[[Expr], str], prefix: str = "v") -> None:
        self.leaf = leaf
        self.prefix = prefix
        self.names: dict[Expr, str] = {}
        self.lines: list[str] = []

    def bind(self, e: Expr, name: str) -> None:
        self.names[e] = name

    def value(self, e: Expr) -> str:
        for x in nodes(e):
            if x in self.names:
                continue
            if x.op == "const":
                self.names[x] = c_const(x.value, x.dtype)
                continue
            code = self.leaf(x) if x.is_leaf else print_op(
                x.op, x.dtype, [self.names[a] for a in x.args], [a.dtype for a in x.args], x.attr_dict())
            name = f"{self.prefix}{len(self.lines)}"
            self.lines.append(f"const {CTYPE[x.dtype]} {name} = {code};")
            self.names[x] = name
        return self.names[e]


# ---------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class Operand:
    """A kernel operand: storage dtype and element strides over the iteration space."""
    dtype: DType
    strides: tuple[int, ...]


def elem_strides(a, itemsize: int | None = None) -> tuple[int, ...]:
    """An array's element strides, 0 along unit axes (NumPy or CuPy)."""
    size = itemsize or a.itemsize
    return tuple(0 if d == 1 else s // size for d, s in zip(a.shape, a.strides))


def own_strides(a) -> tuple[int, ...]:
    """An array's element strides as they are (unit axes keep theirs)."""
    return tuple(st // a.itemsize for st in a.strides)


def aligned_strides(a, shape: Sequence[int]) -> tuple[int, ...]:
    """``a``'s element strides over ``shape`` it broadcasts to (0 along broadcast axes)."""
    st = elem_strides(a)
    pad = len(shape) - a.ndim
    if pad < 0:
        raise RlxError(f"operand of rank {a.ndim} does not broadcast to {tuple(shape)}")
    return (0,) * pad + tuple(0 if a.shape[j] == 1 else st[j] for j in range(a.ndim))


def collapse(shape: Sequence[int], strides: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """Drop unit axes and merge adjacent axes that every operand walks as one."""
    keep = [d for d in range(len(shape)) if shape[d] != 1]
    shp = [shape[d] for d in keep]
    sts = [[s[d] for d in keep] for s in strides]
    d = len(shp) - 1
    while d > 0:
        if all(s[d - 1] == s[d] * shp[d] for s in sts):
            shp[d - 1] *= shp[d]
            for s in sts:
                del s[d - 1]  # the merged axis steps as the inner one
            del shp[d]
        d -= 1
    return tuple(shp), [tuple(s) for s in sts]


def _index_type(shape: Sequence[int], strides: Sequence[Sequence[int]]) -> str:
    n = math.prod(shape)
    span = max([sum((d - 1) * abs(s) for d, s in zip(shape, st)) for st in strides] + [n])
    return "long long" if span >= 2 ** 31 - 1 else "int"


def _contiguous(shape: Sequence[int]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def _decompose(var: str, shape: Sequence[int], prefix: str, idx: str) -> list[str]:
    """Lines splitting linear index ``var`` over ``shape`` into ``{prefix}{d}``."""
    if not shape:
        return []
    lines, cur = [], var
    for d in range(len(shape) - 1, 0, -1):
        lines.append(f"const {idx} {prefix}{d} = {cur} % {shape[d]};")
        nxt = f"{prefix}q{d}"
        lines.append(f"const {idx} {nxt} = {cur} / {shape[d]};")
        cur = nxt
    lines.append(f"const {idx} {prefix}0 = {cur};")
    return lines


def _offset(strides: Sequence[int], prefix: str, linear: str, shape: Sequence[int]) -> str:
    if tuple(strides) == _contiguous(shape) and shape:
        return linear
    terms = [f"{prefix}{d} * {s}" if s != 1 else f"{prefix}{d}" for d, s in enumerate(strides) if s]
    return " + ".join(terms) or "0"


def _params(ins: Sequence[Operand | None], outs: Sequence[Operand], restrict: bool) -> str:
    r = " __restrict__" if restrict else ""
    ps = [f"const {CTYPE[o.dtype]}*{r} a{i}" for i, o in enumerate(ins) if o is not None]
    ps += [f"{CTYPE[o.dtype]}*{r} o{k}" for k, o in enumerate(outs)]
    return ", ".join(ps)


def _load(op: Operand, code: str, want: DType) -> str:
    """A load of ``op`` as ``want`` (a product or a half input read in f32)."""
    if op.dtype == want:
        return code
    if op.dtype in HALF and want == DType.f32 or op.dtype == DType.f32 and want in HALF:
        return convert(code, op.dtype, want)
    raise RlxError(f"CUDA printer: operand stored as {op.dtype} read as {want}")


def kernel_name(body: str) -> str:
    return "rlx_" + hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Source:
    """One printed kernel: its name (a hash of its text), its text and launch shape."""
    name: str
    text: str
    grid: int | tuple[int, ...]
    block: int


def _finish_source(body_fn: Callable[[str], str], grid: int, block: int) -> Source:
    text = body_fn("KERNEL")
    name = kernel_name(text)
    return Source(name, text.replace("KERNEL", name), grid, block)


def _grid_stride(params: str, idx: str, bound: str, body: str, total: int, sms: int = 132) -> Source:
    """A kernel whose threads stride over ``total`` elements (``i`` below ``bound``), each
    running ``body``; at most 16 blocks per SM."""
    grid = max(1, min(-(-total // THREADS), sms * 16))

    def text(name: str) -> str:
        return (f'extern "C" __global__ void __launch_bounds__({THREADS}) {name}({params}) {{\n'
                f"  for ({idx} i = ({idx})blockIdx.x * blockDim.x + threadIdx.x; i < {bound}; "
                f"i += ({idx})gridDim.x * blockDim.x) {{\n    {body}\n  }}\n}}\n")
    return _finish_source(text, grid, THREADS)


# ---------------------------------------------------------------------------- pointwise
VEC_TYPE = {2: "unsigned short", 4: "unsigned int", 8: "uint2", 16: "uint4"}


def _vector_width(shp, sts, dtypes, aligns) -> int:
    """Elements per thread for 16-byte accesses: the largest V (8, 4 or 2) dividing the
    innermost axis such that every operand walking it contiguously is aligned to V
    elements (pointer and every other stride) in at most 16 bytes."""
    if not shp:
        return 1
    for v in (8, 4, 2):
        if shp[-1] % v:
            continue
        ok = True
        for st, dt, al in zip(sts, dtypes, aligns):
            if st[-1] != 1:
                continue
            nbytes = v * dt.itemsize
            if nbytes not in VEC_TYPE or al % nbytes or any(x % v for x in st[:-1]):
                ok = False
                break
        if ok and any(st[-1] == 1 for st in sts):
            return v
    return 1


def pointwise(outputs: Sequence[Expr], ins: Sequence[Operand | None], outs: Sequence[Operand],
              shape: Sequence[int], restrict: bool = True, sms: int = 132,
              align: Sequence[int] | None = None) -> Source:
    """Each output ``outputs[k]`` (over ``arg(i)`` = ``ins[i]``) at every point of ``shape``.
    With ``align`` (the byte alignment of each input's then each output's pointer), a
    thread takes V consecutive elements of the innermost axis and moves contiguous operands
    in 16-byte vectors."""
    used = sorted({x.value for e in outputs for x in nodes(e) if x.op == "arg"})
    for i in used:
        if ins[i] is None:
            raise RlxError(f"CUDA printer: expression reads input {i}, which has no operand")
    all_strides = [ins[i].strides for i in used] + [o.strides for o in outs]
    shp, sts = collapse(shape, all_strides)
    idx = _index_type(shp, sts)
    in_st = dict(zip(used, sts[:len(used)]))
    out_st = sts[len(used):]
    n = math.prod(shp)
    aligns = ([align[i] for i in used] + list(align[len(ins):])) if align is not None else [1] * len(sts)
    vec = _vector_width(shp, sts, [ins[i].dtype for i in used] + [o.dtype for o in outs], aligns)
    lines = _decompose("i", shp, "d", idx)
    lines += [f"const {idx} off{i} = {_offset(in_st[i], 'd', 'i', shp)};" for i in used]
    lines += [f"const {idx} offo{k} = {_offset(out_st[k], 'd', 'i', shp)};" for k in range(len(outs))]
    if vec == 1:
        em = Emitter(lambda x: _load(ins[x.value], f"a{x.value}[off{x.value}]", x.dtype))
        names = [em.value(e) for e in outputs]
        lines += em.lines
        for k, (e, nm) in enumerate(zip(outputs, names)):
            lines.append(f"o{k}[offo{k}] = {convert(nm, e.dtype, outs[k].dtype)};")
    else:
        contig = {i for i in used if in_st[i][-1] == 1}
        out_contig = {k for k in range(len(outs)) if out_st[k][-1] == 1}
        for i in sorted(contig):
            vt = VEC_TYPE[vec * ins[i].dtype.itemsize]
            lines.append(f"__align__(16) {CTYPE[ins[i].dtype]} a{i}v[{vec}];")
            lines.append(f"*({vt}*)a{i}v = *(const {vt}*)(a{i} + off{i});")
        for k in sorted(out_contig):
            lines.append(f"__align__(16) {CTYPE[outs[k].dtype]} o{k}v[{vec}];")

        def leaf(x: Expr) -> str:
            i = x.value
            if i in contig:
                return _load(ins[i], f"a{i}v[j]", x.dtype)
            step = in_st[i][-1]
            return _load(ins[i], f"a{i}[off{i}{f' + j * {step}' if step else ''}]", x.dtype)
        em = Emitter(leaf)
        names = [em.value(e) for e in outputs]
        lines.append("#pragma unroll")
        lines.append(f"for (int j = 0; j < {vec}; ++j) {{")
        lines += ["  " + ln for ln in em.lines]
        for k, (e, nm) in enumerate(zip(outputs, names)):
            val = convert(nm, e.dtype, outs[k].dtype)
            if k in out_contig:
                lines.append(f"  o{k}v[j] = {val};")
            else:
                step = out_st[k][-1]
                lines.append(f"  o{k}[offo{k}{f' + j * {step}' if step else ''}] = {val};")
        lines.append("}")
        for k in sorted(out_contig):
            vt = VEC_TYPE[vec * outs[k].dtype.itemsize]
            lines.append(f"*({vt}*)(o{k} + offo{k}) = *({vt}*)o{k}v;")
    groups = n // vec
    grid = max(1, min(-(-groups // THREADS), sms * 16))
    used_ins = [ins[i] if i in used else None for i in range(len(ins))]
    body = "\n    ".join(lines)

    def text(name: str) -> str:
        return (f'extern "C" __global__ void __launch_bounds__({THREADS}) {name}({_params(used_ins, outs, restrict)}) {{\n'
                f"  for ({idx} g = ({idx})blockIdx.x * blockDim.x + threadIdx.x; g < ({idx}){groups}; "
                f"g += ({idx})gridDim.x * blockDim.x) {{\n    const {idx} i = g{f' * {vec}' if vec > 1 else ''};\n"
                f"    {body}\n  }}\n}}\n")
    return _finish_source(text, grid, THREADS)


# ---------------------------------------------------------------------------- rows
@dataclass(frozen=True)
class RowOperand:
    """A row-kernel operand: storage dtype, strides over the rows' axes and over a row's."""
    dtype: DType
    outer: tuple[int, ...]
    inner: tuple[int, ...]


ACC = {DType.f64: DType.f64, DType.f32: DType.f32, DType.f16: DType.f32, DType.bf16: DType.f32,
       DType.i64: DType.i64, DType.u64: DType.u64, DType.u32: DType.u32}


def _acc(dtype: DType) -> DType:
    return ACC.get(dtype, DType.i32)


def reduction_identity(kind: str, dtype: DType) -> str:
    if kind != "max":
        return c_const(0, dtype)
    if dtype.is_float:
        return c_const(-math.inf, dtype)
    return c_const(int(np.iinfo(dtype.np).min), dtype)


def row_threads(length: int) -> int:
    t = 32
    while t < MAX_ROW_THREADS and t * 4 < length:
        t *= 2
    return t


def rows(reductions: Sequence[tuple[str, Expr]], outputs: Sequence[Expr], ins: Sequence[RowOperand | None],
         outs: Sequence[RowOperand], outer: Sequence[int], inner: Sequence[int], row_outputs: bool = False,
         restrict: bool = True, causal: int | None = None, sms: int = 132,
         align: Sequence[int] | None = None) -> Source:
    """One block per row of ``inner`` elements (the rows are indexed by ``outer``): the
    reductions in order (``red(j)`` reads the j-th; sum, mean or max), then the outputs,
    per element of the row, or once per row when ``row_outputs``. With ``causal`` (the
    number of query rows, the last outer axis), the expressions' ``arg(-1)`` (bool) is
    c > r % causal (top-left causal: the key is after the query). With ``align`` (byte
    alignment of each input's then each output's pointer), a thread takes V consecutive
    elements of the row per step and moves contiguous operands in 16-byte vectors."""
    used = sorted({x.value for e in list(outputs) + [e for _, e in reductions] for x in nodes(e)
                   if x.op == "arg" and x.value >= 0})
    oshape, osts = collapse(outer, [ins[i].outer for i in used] + [o.outer for o in outs])
    ishape, ists = collapse(inner, [ins[i].inner for i in used] + [o.inner for o in outs])
    idx = _index_type(tuple(oshape) + tuple(ishape),
                      [tuple(a) + tuple(b) for a, b in zip(osts, ists)])
    n_rows, length = math.prod(oshape), math.prod(ishape)
    in_o = dict(zip(used, osts[:len(used)]))
    in_i = dict(zip(used, ists[:len(used)]))
    out_o, out_i = osts[len(used):], ists[len(used):]
    vec = 1
    if align is not None and not row_outputs and ishape:
        aligns = [align[i] for i in used] + list(align[len(ins):])
        vec = _vector_width(tuple(oshape) + tuple(ishape), [tuple(a) + tuple(b) for a, b in zip(osts, ists)],
                            [ins[i].dtype for i in used] + [o.dtype for o in outs], aligns)
    elif align is not None and ishape:  # per-row outputs: vectors for the inputs only
        vec = _vector_width(tuple(oshape) + tuple(ishape), [tuple(a) + tuple(b) for a, b in
                                                            zip(osts[:len(used)], ists[:len(used)])],
                            [ins[i].dtype for i in used], [align[i] for i in used])
    threads = row_threads(length) if vec == 1 else row_threads_vec(length, vec)
    lines = _decompose("row", oshape, "r", idx)
    lines += [f"const {idx} ro{i} = {_offset(in_o[i], 'r', 'row', oshape)};" for i in used]
    if causal is not None:
        lines.append(f"const {idx} qi = row % {causal};")
    red_names: dict[int, str] = {}
    contig = {i for i in used if in_i[i] and in_i[i][-1] == 1} if vec > 1 else set()

    def element_pass(roots: Sequence[Expr], tag: str) -> tuple[list[str], list[str], list[str]]:
        """(code before the per-element loop, code per element, names of the roots)."""
        reads: set[int] = set()

        def leaf(x: Expr) -> str:
            if x.op == "red":
                return red_names[x.value]
            if x.value < 0:
                if causal is None:
                    raise RlxError("CUDA printer: the causal leaf outside an attention kernel")
                return "((c + j) > qi)" if vec > 1 else "(c > qi)"
            i = x.value
            reads.add(i)
            if i in contig:
                return _load(ins[i], f"a{i}v[j]", x.dtype)
            step = in_i[i][-1] if in_i[i] else 0
            extra = f" + j * {step}" if vec > 1 and step else ""
            return _load(ins[i], f"a{i}[ro{i} + co{i}{extra}]", x.dtype)
        em = Emitter(leaf, prefix=f"{tag}_")
        names = [em.value(e) for e in roots]
        pre = _decompose("c", ishape, "c", idx)
        pre += [f"const {idx} co{i} = {_offset(in_i[i], 'c', 'c', ishape)};" for i in sorted(reads)]
        for i in sorted(reads & contig):
            vt = VEC_TYPE[vec * ins[i].dtype.itemsize]
            pre.append(f"__align__(16) {CTYPE[ins[i].dtype]} a{i}v[{vec}];")
            pre.append(f"*({vt}*)a{i}v = *(const {vt}*)(a{i} + ro{i} + co{i});")
        return pre, em.lines, names

    def loop(pre: list[str], per: list[str], post_each: list[str], post: list[str]) -> list[str]:
        out = [f"for ({idx} c = threadIdx.x{f' * {vec}' if vec > 1 else ''}; c < ({idx}){length}; "
               f"c += {threads * vec}) {{"]
        out += ["  " + ln for ln in pre]
        if vec > 1:
            out += ["  #pragma unroll", f"  for (int j = 0; j < {vec}; ++j) {{"]
            out += ["    " + ln for ln in per + post_each] + ["  }"]
        else:
            out += ["  " + ln for ln in per + post_each]
        out += ["  " + ln for ln in post] + ["}"]
        return out

    for j, (kind, e) in enumerate(reductions):
        acc = _acc(e.dtype)
        act = CTYPE[acc]
        pre, per, (nm,) = element_pass([e], f"e{j}")
        op = f"acc{j} = rlx_max<{act}>(acc{j}, ({act}){nm});" if kind == "max" else f"acc{j} += ({act}){nm};"
        lines.append(f"{act} acc{j} = {reduction_identity(kind, acc)};")
        lines += loop(pre, per, [op], [])
        lines.append(f"acc{j} = rlx_block_reduce<{act}, {'true' if kind == 'max' else 'false'}>"
                     f"(acc{j}, {reduction_identity(kind, acc)}, ({act}*)rlx_sh);")
        val = f"acc{j}"
        if kind == "mean":
            val = f"(acc{j} * {c_const(1.0 / length, acc)})" if acc.is_float else f"(acc{j} / {length})"
        lines.append(f"const {CTYPE[e.dtype] if e.dtype not in HALF else 'float'} red{j} = {val};")
        red_names[j] = f"red{j}"
    if row_outputs:
        em = Emitter(lambda x: red_names[x.value] if x.op == "red" else (_ for _ in ()).throw(
            RlxError("CUDA printer: a per-row output reads an input")), prefix="w")
        names = [em.value(e) for e in outputs]
        lines.append("if (threadIdx.x == 0) {")
        lines += ["  " + ln for ln in em.lines]
        lines += [f"  o{k}[{_offset(out_o[k], 'r', 'row', oshape)}] = {convert(nm, e.dtype, outs[k].dtype)};"
                  for k, (e, nm) in enumerate(zip(outputs, names))]
        lines.append("}")
    else:
        pre, per, names = element_pass(outputs, "y")
        out_contig = {k for k in range(len(outs)) if vec > 1 and out_i[k] and out_i[k][-1] == 1}
        stores, post = [], []
        for k, (e, nm) in enumerate(zip(outputs, names)):
            val = convert(nm, e.dtype, outs[k].dtype)
            off = f"{_offset(out_o[k], 'r', 'row', oshape)} + {_offset(out_i[k], 'c', 'c', ishape)}"
            if k in out_contig:
                pre.append(f"__align__(16) {CTYPE[outs[k].dtype]} o{k}v[{vec}];")
                stores.append(f"o{k}v[j] = {val};")
                vt = VEC_TYPE[vec * outs[k].dtype.itemsize]
                post.append(f"*({vt}*)(o{k} + {off}) = *({vt}*)o{k}v;")
            else:
                step = out_i[k][-1] if out_i[k] else 0
                extra = f" + j * {step}" if vec > 1 and step else ""
                stores.append(f"o{k}[{off}{extra}] = {val};")
        lines += loop(pre, per, stores, post)
        if reductions:
            lines.append("__syncthreads();")  # the next row's first reduction reuses rlx_sh
    used_ins = [ins[i] if i in used else None for i in range(len(ins))]
    body = "\n    ".join(lines)
    grid = max(1, min(n_rows, sms * 32))

    def text(name: str) -> str:
        return (f'extern "C" __global__ void __launch_bounds__({threads}) {name}('
                f"{_params(used_ins, [Operand(o.dtype, ()) for o in outs], restrict)}) {{\n"
                f"  __shared__ __align__(8) unsigned char rlx_sh[32 * 8];\n"
                f"  for ({idx} row = blockIdx.x; row < ({idx}){n_rows}; row += gridDim.x) {{\n"
                f"    {body}\n  }}\n}}\n")
    return _finish_source(text, grid, threads)


def row_threads_vec(length: int, vec: int) -> int:
    """Threads of a row block moving ``vec`` elements a step: about two steps per thread."""
    t = 32
    while t < MAX_ROW_THREADS and t * vec * 2 < length:
        t *= 2
    return t


# ---------------------------------------------------------------------------- gather
def gather(data: Operand, data_shape: Sequence[int], axis: int, ids: Operand, ids_shape: Sequence[int],
           out: Operand, sms: int = 132) -> Source:
    """``out = take(data, ids, axis)``; negative ids count from the end. ``data.strides``
    and ``ids.strides`` are their own element strides; ``out.strides`` over the output."""
    pre, n_axis, post = list(data_shape[:axis]), data_shape[axis], list(data_shape[axis + 1:])
    shape = pre + list(ids_shape) + post
    idx = "long long"
    n = math.prod(shape)
    lines = _decompose("i", shape, "d", idx)
    ids_off = " + ".join(f"d{len(pre) + j} * {s}" for j, s in enumerate(ids.strides) if s) or "0"
    lines.append(f"long long k = (long long)a1[{ids_off}];")
    lines.append(f"if (k < 0) k += {n_axis};")
    d_terms = [f"d{j} * {data.strides[j]}" for j in range(len(pre))]
    d_terms.append(f"k * {data.strides[axis]}")
    d_terms += [f"d{len(pre) + len(ids_shape) + j} * {data.strides[axis + 1 + j]}" for j in range(len(post))]
    o_terms = [f"d{j} * {s}" for j, s in enumerate(out.strides) if s]
    lines.append(f"o0[{' + '.join(o_terms) or '0'}] = a0[{' + '.join(d_terms)}];")
    params = (f"const {CTYPE[data.dtype]}* __restrict__ a0, const {CTYPE[ids.dtype]}* __restrict__ a1, "
              f"{CTYPE[out.dtype]}* __restrict__ o0")
    return _grid_stride(params, idx, f"{n}LL", "\n    ".join(lines), n, sms)


# ---------------------------------------------------------------------------- convolution
def _window_taps(x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int]):
    nsp = len(x_shape) - 2
    return nsp, tuple(w_shape[2:]), tuple(out_shape[2:]), tuple(x_shape[2:])


def im2col(x: Operand, x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int],
           strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int], sms: int = 132) -> Source:
    """The windows of a convolution's input as a contiguous (N, C·taps, pixels) matrix per
    image, in the input's dtype (zero outside the padded input): row ``c·taps + t`` of
    image n holds channel c at tap t for every output pixel, so a group's rows are one
    contiguous block of C/group·taps rows and its product with the group's weight matrix
    (M/group, C/group·taps) is a GEMM. ``x.strides`` are the input's own element strides."""
    nsp, kernel, osp, isp = _window_taps(x_shape, w_shape, out_shape)
    n, c = x_shape[0], x_shape[1]
    shape = [n, c, *kernel, *osp]
    total = math.prod(shape)
    span = sum((d - 1) * abs(st) for d, st in zip(x_shape, x.strides)) + 1
    idx = "long long" if max(total, span) >= 2 ** 31 - 1 else "int"
    lines = _decompose("i", shape, "d", idx)
    ok, terms = [], [f"d0 * {x.strides[0]}", f"d1 * {x.strides[1]}"]
    for d in range(nsp):
        k, o = f"d{2 + d}", f"d{2 + nsp + d}"
        lines.append(f"const {idx} p{d} = {o} * {strides[d]} - {pads[d]} + {k} * {dilations[d]};")
        ok.append(f"p{d} >= 0 && p{d} < {isp[d]}")
        terms.append(f"p{d} * {x.strides[2 + d]}")
    zero = "(unsigned short)0" if x.dtype in HALF else f"({CTYPE[x.dtype]})0"
    lines.append(f"o0[i] = ({' && '.join(ok) or 'true'}) ? a0[{' + '.join(terms)}] : {zero};")
    params = f"const {CTYPE[x.dtype]}* __restrict__ a0, {CTYPE[x.dtype]}* __restrict__ o0"
    return _grid_stride(params, idx, f"({idx}){total}", "\n    ".join(lines), total, sms)


def conv_direct(outputs: Sequence[Expr], ins: Sequence[Operand | None], outs: Sequence[Operand],
                out_shape: Sequence[int], conv: int, x: int, x_shape: Sequence[int], w: int, w_shape: Sequence[int],
                bias: int | None, strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int],
                group: int, acc: DType, sms: int = 132) -> Source:
    """A convolution and its epilogue with one thread per output element (n, m, *pixel): the
    sum over the group's C/group channels and the kernel taps (zero outside the padded
    input) in ``acc``, plus the bias, then each output expression of the inputs and the
    convolution (``arg(conv)``). For depthwise and thin grouped convolutions, where a GEMM
    has too little depth to pay. ``ins[x]``, ``ins[w]`` and ``ins[bias]`` hold their own
    element strides; every other input its strides over ``out_shape``."""
    nsp, kernel, osp, isp = _window_taps(x_shape, w_shape, out_shape)
    xs, ws = ins[x].strides, ins[w].strides
    cg, mg = w_shape[1], w_shape[0] // group
    total = math.prod(out_shape)
    spans = [sum((d - 1) * abs(st) for d, st in zip(sh, o.strides)) + 1
             for sh, o in ((x_shape, ins[x]), (w_shape, ins[w]))]
    idx = "long long" if max([total] + spans) >= 2 ** 31 - 1 else "int"
    used = sorted({e.value for o in outputs for e in nodes(o) if e.op == "arg" and e.value != conv}
                  | {x, w} | ({bias} if bias is not None else set()))
    lines = _decompose("i", out_shape, "d", idx)
    lines.append(f"const {idx} cb = (d1 / {mg}) * {cg};")
    lines.append(f"{CTYPE[acc]} acc = 0;")
    lines.append(f"for (int c = 0; c < {cg}; ++c) {{")
    xoff = f"d0 * {xs[0]} + (cb + c) * {xs[1]}"
    woff = f"d1 * {ws[0]} + c * {ws[1]}"
    depth = 1
    for d in range(nsp):
        pad = "  " * depth
        lines.append(f"{pad}#pragma unroll")
        lines.append(f"{pad}for (int k{d} = 0; k{d} < {kernel[d]}; ++k{d}) {{")
        lines.append(f"{pad}  const {idx} p{d} = d{2 + d} * {strides[d]} - {pads[d]} + k{d} * {dilations[d]};")
        lines.append(f"{pad}  if (p{d} < 0 || p{d} >= {isp[d]}) continue;")
        xoff += f" + p{d} * {xs[2 + d]}"
        woff += f" + k{d} * {ws[2 + d]}"
        depth += 1
    pad = "  " * depth
    xv = convert(f"a{x}[{xoff}]", ins[x].dtype, acc)
    wv = convert(f"a{w}[{woff}]", ins[w].dtype, acc)
    lines.append(f"{pad}acc += {xv} * {wv};")
    for d in range(depth - 1, -1, -1):
        lines.append("  " * d + "}")
    if bias is not None:
        lines.append(f"acc += {convert(f'a{bias}[d1 * {ins[bias].strides[0]}]', ins[bias].dtype, acc)};")
    epi = [i for i in used if i not in (x, w, bias)]
    for i in epi:
        lines.append(f"const {idx} off{i} = {_offset(ins[i].strides, 'd', 'i', out_shape)};")
    for k, o in enumerate(outs):
        lines.append(f"const {idx} offo{k} = {_offset(o.strides, 'd', 'i', out_shape)};")

    def leaf(e: Expr) -> str:
        if e.value == conv:
            return convert("acc", acc, e.dtype) if e.dtype != acc else "acc"
        return _load(ins[e.value], f"a{e.value}[off{e.value}]", e.dtype)
    em = Emitter(leaf)
    names = [em.value(e) for e in outputs]
    lines += em.lines
    for k, (e, nm) in enumerate(zip(outputs, names)):
        lines.append(f"o{k}[offo{k}] = {convert(nm, e.dtype, outs[k].dtype)};")
    params = _params([ins[i] if i in used else None for i in range(len(ins))], outs, True)
    return _grid_stride(params, idx, f"({idx}){total}", "\n    ".join(lines), total, sms)


def pool(kind: str, x: Operand, x_shape: Sequence[int], out: Operand, out_shape: Sequence[int],
         kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], lo: Sequence[int],
         hi: Sequence[int], count_include_pad: bool, sms: int = 132) -> Source:
    """Max or average pooling, one thread per output element (n, c, *pixel) over its window:
    the max of the taps inside the input (the padding is the lowest value), or their sum in
    f32 (f64 for f64) over the number of taps inside the input (inside input and pads with
    ``count_include_pad``; at least 1). ``x.strides`` and ``out.strides`` are their own."""
    nsp = len(x_shape) - 2
    isp = x_shape[2:]
    dt = x.dtype
    total = math.prod(out_shape)
    span = sum((d - 1) * abs(st) for d, st in zip(x_shape, x.strides)) + 1
    idx = "long long" if max(total, span) >= 2 ** 31 - 1 else "int"
    if kind == "max":
        acc = DType.f32 if dt in HALF else dt
        if dt.is_int:
            low = int(np.iinfo(dt.np).min)
            init = f"(({CTYPE[dt]})({low + 1}LL - 1))" if low else c_const(0, dt)
        else:
            init = c_const(-math.inf, acc)
    else:
        acc = DType.f64 if dt == DType.f64 else DType.f32
        init = "0"
    lines = _decompose("i", out_shape, "d", idx)
    lines.append(f"{CTYPE[acc]} acc = {init};")
    if kind == "avg":
        lines.append("int count = 0;")
    xoff = f"d0 * {x.strides[0]} + d1 * {x.strides[1]}"
    depth = 0
    for d in range(nsp):
        pad = "  " * depth
        lines.append(f"{pad}#pragma unroll")
        lines.append(f"{pad}for (int k{d} = 0; k{d} < {kernel[d]}; ++k{d}) {{")
        lines.append(f"{pad}  const {idx} p{d} = d{2 + d} * {strides[d]} - {lo[d]} + k{d} * {dilations[d]};")
        if kind == "avg" and count_include_pad:
            lines.append(f"{pad}  if (p{d} < -{lo[d]} || p{d} >= {isp[d] + hi[d]}) continue;")
        else:
            lines.append(f"{pad}  if (p{d} < 0 || p{d} >= {isp[d]}) continue;")
        xoff += f" + p{d} * {x.strides[2 + d]}"
        depth += 1
    pad = "  " * depth
    if kind == "avg" and count_include_pad:
        inside = " && ".join(f"p{d} >= 0 && p{d} < {isp[d]}" for d in range(nsp))
        lines.append(f"{pad}++count;")
        lines.append(f"{pad}if ({inside}) acc += {convert(f'a0[{xoff}]', dt, acc)};")
    elif kind == "avg":
        lines.append(f"{pad}++count;")
        lines.append(f"{pad}acc += {convert(f'a0[{xoff}]', dt, acc)};")
    else:
        lines.append(f"{pad}acc = rlx_max(acc, {convert(f'a0[{xoff}]', dt, acc)});")
    for d in range(depth - 1, -1, -1):
        lines.append("  " * d + "}")
    value = f"acc / ({CTYPE[acc]})(count > 0 ? count : 1)" if kind == "avg" else "acc"
    ooff = " + ".join(f"d{j} * {st}" for j, st in enumerate(out.strides) if st) or "0"
    lines.append(f"o0[{ooff}] = {convert(f'({value})', acc, out.dtype)};")
    params = f"const {CTYPE[dt]}* __restrict__ a0, {CTYPE[out.dtype]}* __restrict__ o0"
    return _grid_stride(params, idx, f"({idx}){total}", "\n    ".join(lines), total, sms)


def triangle(x: Operand, out: Operand, shape: Sequence[int], upper: bool, k: int, fill: float) -> Source:
    """``out = x`` where the last two indices (i, j) keep ``j - i >= k`` (``upper``) or
    ``j - i <= k`` (lower), else ``fill``: trilu (fill 0) and the causal mask (lower, k 0,
    fill -inf). ``x.strides`` and ``out.strides`` are over ``shape``."""
    total = math.prod(shape)
    idx = _index_type(shape, [x.strides, out.strides])
    r = len(shape)
    lines = _decompose("i", shape, "d", idx)
    xo = _offset(x.strides, "d", "i", shape)
    oo = _offset(out.strides, "d", "i", shape)
    keep = f"(d{r - 1} - d{r - 2}) {'>=' if upper else '<='} {k}"
    if out.dtype in HALF or out.dtype.is_float:
        filled = convert(c_const(fill, DType.f32 if out.dtype in HALF else out.dtype),
                         DType.f32 if out.dtype in HALF else out.dtype, out.dtype)
    elif out.dtype == DType.bool:
        filled = "false"
    else:
        filled = f"({CTYPE[out.dtype]})0"
    lines.append(f"o0[{oo}] = ({keep}) ? a0[{xo}] : {filled};")
    params = f"const {CTYPE[x.dtype]}* __restrict__ a0, {CTYPE[out.dtype]}* __restrict__ o0"
    return _grid_stride(params, idx, f"({idx}){total}", "\n    ".join(lines), total)


# ---------------------------------------------------------------------------- flash attention
FLASH_PRELUDE = {
    DType.f16: ("f16", "cvt.rn.f16x2.f32"),
    DType.bf16: ("bf16", "cvt.rn.bf16x2.f32"),
}


@dataclass(frozen=True)
class AttnOperand:
    """An attention operand: storage dtype, strides over the batch axes, and over its two
    matrix axes (rows, columns)."""
    dtype: DType
    batch: tuple[int, ...]
    row: int
    col: int


def flash_attention(score: Expr, q: AttnOperand, k: AttnOperand, v: AttnOperand, out: AttnOperand,
                    masks: dict[int, AttnOperand], batch: Sequence[int], sq: int, sk: int, d: int, dv: int,
                    causal: bool) -> Source:
    """softmax(score(q·kᵀ, masks))·v in one kernel on the tensor cores (mma.sync m16n8k16,
    f16 or bf16 operands, f32 accumulation), flash style: a block of 4 warps takes 64 query
    rows of one batch index; tiles of 32 keys of K and V stream through shared memory two
    stages deep (cp.async; V read transposed by ldmatrix), the
    scores stay in registers (score expression, causal mask, online softmax) and are reused
    as the A operand of P·V. ``score``'s ``arg(0)`` is the product (f32), ``arg(1 + i)``
    the mask ``masks[i]`` indexed by (batch, query, key). Needs d and dv multiples of 16 up
    to 128 and 16-byte aligned rows of k and v (the executor checks)."""
    dt = q.dtype
    if dt not in FLASH_PRELUDE or k.dtype != dt or v.dtype != dt or d % 16 or dv % 16 or d > 128 or dv > 128:
        raise RlxError("flash attention needs f16/bf16 q, k, v with head dims multiples of 16 up to 128")
    suffix, pack = FLASH_PRELUDE[dt]
    nb = len(batch)
    lines = ["long long rest = blockIdx.x;"]
    for j in range(nb - 1, -1, -1):
        lines.append(f"const long long b{j} = rest % {batch[j]}; rest /= {batch[j]};")

    def boff(op: AttnOperand) -> str:
        return " + ".join([f"b{j} * {s}LL" for j, s in enumerate(op.batch) if s] or ["0LL"])
    lines += [f"const long long qoff = {boff(q)}, koff = {boff(k)}, voff = {boff(v)}, ooff = {boff(out)};"]
    lines += [f"const long long mo{i} = {boff(m)};" for i, m in sorted(masks.items())]

    def leaf(x: Expr) -> str:
        if x.value == 0:
            return "x"
        i = x.value - 1
        m = masks[i]
        return _load(Operand(m.dtype, ()), f"m{i}[mo{i} + (long long)row * {m.row} + (long long)col * {m.col}]",
                     x.dtype)
    em = Emitter(leaf, prefix="t")
    root = em.value(score)
    score_code = "\n        ".join(em.lines)
    score_val = convert(root, score.dtype, DType.f32)
    mparams = "".join(f", const {CTYPE[m.dtype]}* __restrict__ m{i}" for i, m in sorted(masks.items()))
    margs = "".join(f", m{i}, mo{i}" for i in sorted(masks))
    mfn_params = "".join(f", const {CTYPE[m.dtype]}* __restrict__ m{i}, long long mo{i}" for i, m in sorted(masks.items()))
    n_tiles = f"min({-(-sk // 32)}, 2 * (int)blockIdx.y + 2)" if causal else f"{-(-sk // 32)}"
    head = "\n  ".join(lines)
    ot = out.dtype

    def store(val: str) -> str:
        return convert(val, DType.f32, ot)

    def text(name: str) -> str:
        return f"""
__device__ __forceinline__ void {name}_mma(float* c, const unsigned int* a, unsigned int b0, unsigned int b1) {{
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.{suffix}.{suffix}.f32 {{%0,%1,%2,%3}}, {{%4,%5,%6,%7}}, {{%8,%9}}, {{%0,%1,%2,%3}};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}}
__device__ __forceinline__ unsigned int {name}_pack(float lo, float hi) {{
  unsigned int r; asm("{pack} %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r;
}}
__device__ __forceinline__ float {name}_score(float x, int row, int col{mfn_params}) {{
        {score_code}
        return {score_val};
}}
extern "C" __global__ void __launch_bounds__(128) {name}(const unsigned short* __restrict__ q,
    const unsigned short* __restrict__ k, const unsigned short* __restrict__ v{mparams}, {CTYPE[ot]}* __restrict__ o) {{
  __shared__ __align__(16) unsigned short ks[2][32][{d} + 8];
  __shared__ __align__(16) unsigned short vs[2][32][{dv} + 8];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  {head}
  const int r_lo = blockIdx.y * 64 + warp * 16 + (lane >> 2), r_hi = r_lo + 8;
  const int n_tiles = {n_tiles};
  // K and V tiles of 32 keys through shared memory, two stages deep (cp.async, zero-filled past the end)
  auto load = [&](int stage, int t) {{
    const int k0 = t * 32;
    for (int ch = tid; ch < 32 * {d // 8}; ch += 128) {{
      const int r = ch / {d // 8}, c = (ch % {d // 8}) * 8;
      const bool in = k0 + r < {sk};
      const unsigned short* src = k + koff + (long long)(in ? k0 + r : 0) * {k.row} + c;
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"((unsigned)__cvta_generic_to_shared(&ks[stage][r][c])), "l"(src), "r"(in ? 16 : 0));
    }}
    for (int ch = tid; ch < 32 * {dv // 8}; ch += 128) {{
      const int r = ch / {dv // 8}, c = (ch % {dv // 8}) * 8;
      const bool in = k0 + r < {sk};
      const unsigned short* src = v + voff + (long long)(in ? k0 + r : 0) * {v.row} + c;
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"((unsigned)__cvta_generic_to_shared(&vs[stage][r][c])), "l"(src), "r"(in ? 16 : 0));
    }}
    asm volatile("cp.async.commit_group;");
  }};
  if (n_tiles > 0) load(0, 0);
  unsigned int qa[{d // 16}][4];
#pragma unroll
  for (int kk = 0; kk < {d // 16}; ++kk) {{
    const int c = kk * 16 + (lane & 3) * 2;
    qa[kk][0] = r_lo < {sq} ? *(const unsigned int*)(q + qoff + (long long)r_lo * {q.row} + c) : 0u;
    qa[kk][1] = r_hi < {sq} ? *(const unsigned int*)(q + qoff + (long long)r_hi * {q.row} + c) : 0u;
    qa[kk][2] = r_lo < {sq} ? *(const unsigned int*)(q + qoff + (long long)r_lo * {q.row} + c + 8) : 0u;
    qa[kk][3] = r_hi < {sq} ? *(const unsigned int*)(q + qoff + (long long)r_hi * {q.row} + c + 8) : 0u;
  }}
  float acc[{dv // 8}][4];
#pragma unroll
  for (int n = 0; n < {dv // 8}; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  float m_lo = -RLX_INF, m_hi = -RLX_INF, l_lo = 0.0f, l_hi = 0.0f;
  for (int t = 0; t < n_tiles; ++t) {{
    const int k0 = t * 32, st = t & 1;
    if (t + 1 < n_tiles) load((t + 1) & 1, t + 1); else asm volatile("cp.async.commit_group;");
    asm volatile("cp.async.wait_group 1;");
    __syncthreads();
    float s[4][4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {{
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < {d // 16}; ++kk) {{
        const int n = j * 8 + (lane >> 2), c = kk * 16 + (lane & 3) * 2;
        {name}_mma(s[j], qa[kk], *(const unsigned int*)&ks[st][n][c], *(const unsigned int*)&ks[st][n][c + 8]);
      }}
    }}
    float mx_lo = -RLX_INF, mx_hi = -RLX_INF;
#pragma unroll
    for (int j = 0; j < 4; ++j) {{
#pragma unroll
      for (int e = 0; e < 4; ++e) {{
        const int row = e < 2 ? r_lo : r_hi;
        const int col = k0 + j * 8 + (lane & 3) * 2 + (e & 1);
        float x = s[j][e];
        x = (row < {sq} && col < {sk}{" && col <= row" if causal else ""}) ? {name}_score(x, row, col{margs}) : -RLX_INF;
        s[j][e] = x;
        if (e < 2) mx_lo = rlx_max(mx_lo, x); else mx_hi = rlx_max(mx_hi, x);
      }}
    }}
    mx_lo = rlx_max(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 1));
    mx_lo = rlx_max(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 2));
    mx_hi = rlx_max(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 1));
    mx_hi = rlx_max(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 2));
    const float mn_lo = rlx_max(m_lo, mx_lo), mn_hi = rlx_max(m_hi, mx_hi);
    const float ref_lo = mn_lo == -RLX_INF ? 0.0f : mn_lo, ref_hi = mn_hi == -RLX_INF ? 0.0f : mn_hi;
    const float al_lo = expf(m_lo - ref_lo), al_hi = expf(m_hi - ref_hi);
    m_lo = mn_lo; m_hi = mn_hi;
    l_lo *= al_lo; l_hi *= al_hi;
#pragma unroll
    for (int n = 0; n < {dv // 8}; ++n) {{ acc[n][0] *= al_lo; acc[n][1] *= al_lo; acc[n][2] *= al_hi; acc[n][3] *= al_hi; }}
#pragma unroll
    for (int j = 0; j < 4; ++j) {{
      s[j][0] = expf(s[j][0] - ref_lo); s[j][1] = expf(s[j][1] - ref_lo);
      s[j][2] = expf(s[j][2] - ref_hi); s[j][3] = expf(s[j][3] - ref_hi);
      l_lo += s[j][0] + s[j][1]; l_hi += s[j][2] + s[j][3];
    }}
#pragma unroll
    for (int kk = 0; kk < 2; ++kk) {{
      unsigned int pa[4];
      pa[0] = {name}_pack(s[2 * kk][0], s[2 * kk][1]);
      pa[1] = {name}_pack(s[2 * kk][2], s[2 * kk][3]);
      pa[2] = {name}_pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[3] = {name}_pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int n = 0; n < {dv // 8}; ++n) {{
        unsigned int b0, b1;
        const unsigned addr = (unsigned)__cvta_generic_to_shared(&vs[st][kk * 16 + (lane & 15)][n * 8]);
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {{%0, %1}}, [%2];" : "=r"(b0), "=r"(b1) : "r"(addr));
        {name}_mma(acc[n], pa, b0, b1);
      }}
    }}
    __syncthreads();
  }}
  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 1);
  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 2);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 1);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 2);
  const float inv_lo = 1.0f / l_lo, inv_hi = 1.0f / l_hi;
#pragma unroll
  for (int n = 0; n < {dv // 8}; ++n) {{
    const int c = n * 8 + (lane & 3) * 2;
    if (r_lo < {sq}) {{
      o[ooff + (long long)r_lo * {out.row} + c] = {store("acc[n][0] * inv_lo")};
      o[ooff + (long long)r_lo * {out.row} + c + 1] = {store("acc[n][1] * inv_lo")};
    }}
    if (r_hi < {sq}) {{
      o[ooff + (long long)r_hi * {out.row} + c] = {store("acc[n][2] * inv_hi")};
      o[ooff + (long long)r_hi * {out.row} + c + 1] = {store("acc[n][3] * inv_hi")};
    }}
  }}
}}
"""
    src = _finish_source(text, 0, 128)
    return Source(src.name, src.text, (math.prod(batch), -(-sq // 64)), 128)


def module(sources: Sequence[Source]) -> str:
    """One NVRTC translation unit holding ``sources`` (deduplicated by name)."""
    seen: dict[str, str] = {}
    for s in sources:
        seen.setdefault(s.name, s.text)
    return PRELUDE + "\n".join(seen.values())


__all__ = ["Operand", "RowOperand", "AttnOperand", "flash_attention", "Source", "pointwise", "rows", "gather", "im2col",
           "conv_direct", "pool", "triangle", "module", "collapse", "printable",
           "c_const", "convert", "print_op", "Emitter", "CTYPE"]
