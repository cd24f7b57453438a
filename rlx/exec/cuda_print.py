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
skeleton, whose two products run on cuBLAS) and gather.
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

PRELUDE = r"""
__device__ __forceinline__ float rlx_h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short rlx_f2h(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float rlx_b2f(unsigned short b) { return __uint_as_float(((unsigned int)b) << 16); }
__device__ __forceinline__ unsigned short rlx_f2b(float f) { unsigned short h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
template <class T> __device__ __forceinline__ T rlx_max(T a, T b) { return (a > b || a != a) ? a : b; }
template <class T> __device__ __forceinline__ T rlx_min(T a, T b) { return (a < b || a != a) ? a : b; }
__device__ __forceinline__ float rlx_fmodpy(float a, float b) { float r = fmodf(a, b); return (r != 0.0f && ((r < 0.0f) != (b < 0.0f))) ? r + b : r; }
__device__ __forceinline__ double rlx_fmodpy(double a, double b) { double r = fmod(a, b); return (r != 0.0 && ((r < 0.0) != (b < 0.0))) ? r + b : r; }
template <class T> __device__ __forceinline__ T rlx_imod(T a, T b) { if (b == 0) return (T)0; T r = a % b; return (r != 0 && ((r < 0) != (b < 0))) ? (T)(r + b) : r; }
template <class T> __device__ __forceinline__ T rlx_ifmod(T a, T b) { return b == 0 ? (T)0 : (T)(a % b); }
template <class T> __device__ __forceinline__ T rlx_idiv(T a, T b) { return b == 0 ? (T)0 : (T)(a / b); }
template <class T> __device__ __forceinline__ T rlx_ipow(T a, T b) {
  if (b < 0) return a == 1 ? (T)1 : (a == (T)-1 ? ((b & 1) ? (T)-1 : (T)1) : (T)0);
  T r = 1; while (b) { if (b & 1) r *= a; a *= a; b >>= 1; } return r; }
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
    grid: int
    block: int


def _finish_source(body_fn: Callable[[str], str], grid: int, block: int) -> Source:
    text = body_fn("KERNEL")
    name = kernel_name(text)
    return Source(name, text.replace("KERNEL", name), grid, block)


# ---------------------------------------------------------------------------- pointwise
def pointwise(outputs: Sequence[Expr], ins: Sequence[Operand | None], outs: Sequence[Operand],
              shape: Sequence[int], restrict: bool = True, sms: int = 132) -> Source:
    """Each output ``outputs[k]`` (over ``arg(i)`` = ``ins[i]``) at every point of ``shape``."""
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
    em = Emitter(lambda x: _load(ins[x.value], f"a{x.value}[off{x.value}]", x.dtype))
    lines = _decompose("i", shp, "d", idx)
    lines += [f"const {idx} off{i} = {_offset(in_st[i], 'd', 'i', shp)};" for i in used]
    names = [em.value(e) for e in outputs]
    lines += em.lines
    for k, (e, nm) in enumerate(zip(outputs, names)):
        lines.append(f"o{k}[{_offset(out_st[k], 'd', 'i', shp)}] = {convert(nm, e.dtype, outs[k].dtype)};")
    grid = max(1, min(-(-n // THREADS), sms * 16))
    used_ins = [ins[i] if i in used else None for i in range(len(ins))]
    body = "\n    ".join(lines)

    def text(name: str) -> str:
        return (f'extern "C" __global__ void __launch_bounds__({THREADS}) {name}({_params(used_ins, outs, restrict)}) {{\n'
                f"  for ({idx} i = ({idx})blockIdx.x * blockDim.x + threadIdx.x; i < ({idx}){n}; "
                f"i += ({idx})gridDim.x * blockDim.x) {{\n    {body}\n  }}\n}}\n")
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


def _identity(kind: str, dtype: DType) -> str:
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
         restrict: bool = True, causal: int | None = None, sms: int = 132) -> Source:
    """One block per row of ``inner`` elements (the rows are indexed by ``outer``): the
    reductions in order (``red(j)`` reads the j-th; sum, mean or max), then the outputs,
    per element of the row, or once per row when ``row_outputs``. With ``causal`` (the
    number of query rows, the last outer axis), element c of row r is masked to -inf in
    the expressions' ``arg(-1)`` (bool) is c > r % causal (top-left causal: the key is
    after the query)."""
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
    threads = row_threads(length)
    lines = _decompose("row", oshape, "r", idx)
    lines += [f"const {idx} ro{i} = {_offset(in_o[i], 'r', 'row', oshape)};" for i in used]
    if causal is not None:
        lines.append(f"const {idx} qi = row % {causal};")
    red_names: dict[int, str] = {}

    def element_pass(roots: Sequence[Expr], tag: str) -> tuple[list[str], list[str]]:
        """Per-element code of ``roots`` (offsets of the inputs it reads first)."""
        reads: set[int] = set()

        def leaf(x: Expr) -> str:
            if x.op == "red":
                return red_names[x.value]
            if x.value < 0:
                if causal is None:
                    raise RlxError("CUDA printer: the causal leaf outside an attention kernel")
                return "(c > qi)"
            reads.add(x.value)
            return _load(ins[x.value], f"a{x.value}[ro{x.value} + co{x.value}]", x.dtype)
        em = Emitter(leaf, prefix=f"{tag}_")
        names = [em.value(e) for e in roots]
        pre = _decompose("c", ishape, "c", idx)
        pre += [f"const {idx} co{i} = {_offset(in_i[i], 'c', 'c', ishape)};" for i in sorted(reads)]
        return pre + em.lines, names

    for j, (kind, e) in enumerate(reductions):
        acc = _acc(e.dtype)
        act = CTYPE[acc]
        code, (nm,) = element_pass([e], f"e{j}")
        op = f"acc{j} = rlx_max<{act}>(acc{j}, ({act}){nm});" if kind == "max" else f"acc{j} += ({act}){nm};"
        lines.append(f"{act} acc{j} = {_identity(kind, acc)};")
        lines.append(f"for ({idx} c = threadIdx.x; c < ({idx}){length}; c += {threads}) {{")
        lines += ["  " + ln for ln in code] + [f"  {op}", "}"]
        lines.append(f"acc{j} = rlx_block_reduce<{act}, {'true' if kind == 'max' else 'false'}>"
                     f"(acc{j}, {_identity(kind, acc)}, ({act}*)rlx_sh);")
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
        code, names = element_pass(outputs, "y")
        lines.append(f"for ({idx} c = threadIdx.x; c < ({idx}){length}; c += {threads}) {{")
        lines += ["  " + ln for ln in code]
        for k, (e, nm) in enumerate(zip(outputs, names)):
            off = f"{_offset(out_o[k], 'r', 'row', oshape)} + {_offset(out_i[k], 'c', 'c', ishape)}"
            lines.append(f"  o{k}[{off}] = {convert(nm, e.dtype, outs[k].dtype)};")
        lines.append("}")
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
    body = "\n    ".join(lines)
    grid = max(1, min(-(-n // THREADS), sms * 16))

    def text(name: str) -> str:
        return (f'extern "C" __global__ void __launch_bounds__({THREADS}) {name}('
                f"const {CTYPE[data.dtype]}* __restrict__ a0, const {CTYPE[ids.dtype]}* __restrict__ a1, "
                f"{CTYPE[out.dtype]}* __restrict__ o0) {{\n"
                f"  for ({idx} i = ({idx})blockIdx.x * blockDim.x + threadIdx.x; i < {n}LL; "
                f"i += ({idx})gridDim.x * blockDim.x) {{\n    {body}\n  }}\n}}\n")
    return _finish_source(text, grid, THREADS)


def module(sources: Sequence[Source]) -> str:
    """One NVRTC translation unit holding ``sources`` (deduplicated by name)."""
    seen: dict[str, str] = {}
    for s in sources:
        seen.setdefault(s.name, s.text)
    return PRELUDE + "\n".join(seen.values())


__all__ = ["Operand", "RowOperand", "Source", "pointwise", "rows", "gather", "module", "collapse", "printable",
           "c_const", "convert", "print_op", "Emitter", "CTYPE"]
