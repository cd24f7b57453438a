"""The WGSL printer: the scalar primitives and the kernel skeletons as Vulkan compute shaders.

A shader's *signature* is its source: shapes, strides, dtypes and the region each operand
lives in are constants in the text, while each operand's base offset in its region is read
from a small uniform table. So the 32 layers of a model share one pipeline per kind of
step, and the runtime (``vulkan_exec``) builds a pipeline once per distinct source.

Every region of the plan (or each part of one too large to bind at once) is a storage buffer,
bound whole (binding offset 0, so no
offset-alignment rules apply) once per element type a shader reads it as: ``array<f32>``,
``array<f16>``, ``array<i32>``, ``array<u32>`` (bool bytes and the low words of i64
indices are read from it) and ``array<atomic<u32>>`` (bool bytes are written with atomics,
as four of them share a word). Values are f32 in registers (half inputs are widened where
read, as the kernel layer asks); f16 storage needs the adapter's ``shader-f16``.

Skeletons: pointwise (an invocation per element, broadcasting by strides), row reduction
(a workgroup per row, reductions in workgroup memory), GEMM + epilogue (64x64 output tiles,
the epilogue applied to the accumulators), attention (the scores never stored) and
convolution + epilogue. GEMM and attention have a "tiled" schedule for GPUs (workgroup
memory) and a "registers" one for CPU drivers such as lavapipe (no workgroup memory, no
barriers). Ops that are none of these (data movement, gathers, reductions over any axes...)
are ``wgsl_native``'s.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from rlx.ir.dtypes import DType
from rlx.ir.expr import Expr, nodes
from rlx.kernels.skeletons import Attention, Conv, Gemm, Kernel, Pointwise, RowReduce

WG = 256          # invocations per workgroup of pointwise kernels
ROW_WG = 64       # per row of a row reduction, a reduction, an attention query
TILE, TK = 64, 16  # GEMM output tile (per workgroup of 16x16, 4x4 each) and depth step
MAX_GROUPS = 65535
MAX_SWEEP = 1024  # workgroups of an elementwise dispatch; past it each invocation loops

STORED = {DType.f32: "f32", DType.f16: "f16", DType.i32: "i32", DType.u32: "u32", DType.bool: "u32"}
REGISTER = {DType.f32: "f32", DType.f16: "f16", DType.i32: "i32", DType.u32: "u32", DType.bool: "bool"}


class Unsupported(Exception):
    """This step has no shader here (a dtype, a shape or an op the printer lacks); the
    message says why, and the runtime runs it on the host."""


@dataclass(frozen=True)
class Operand:
    """A tensor a shader reads or writes: where (region, uniform slot), what (dtype),
    and its layout (shape, element strides, a constant extra element offset)."""
    region: str
    dtype: DType
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    slot: int
    extra: int = 0
    index_only: bool = False   # an i64 read as the i32 in its low word (gather indices)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class Shader:
    """A compute shader: source, bindings (region, element kind), and its dispatch grid."""
    source: str
    bindings: list[tuple[str, str]]
    grid: tuple[int, int, int]
    slots: int


# ---------------------------------------------------------------------------- helpers (WGSL)
HELPERS = {
    "rlx_isnan": "fn rlx_isnan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }",
    "rlx_isinf": "fn rlx_isinf(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u; }",
    "rlx_max": "fn rlx_max(a: f32, b: f32) -> f32 { return select(max(a, b), a + b, rlx_isnan(a) || rlx_isnan(b)); }",
    "rlx_min": "fn rlx_min(a: f32, b: f32) -> f32 { return select(min(a, b), a + b, rlx_isnan(a) || rlx_isnan(b)); }",
    # WGSL's pow is exp2(y * log2(x)): undefined for x < 0, NaN for pow(0, 0)
    "rlx_pow": """fn rlx_pow(x: f32, y: f32) -> f32 {
  if (y == 0.0) { return 1.0; }
  let r = pow(abs(x), y);
  if (x >= 0.0 || rlx_isnan(x)) { return r; }
  if (trunc(y) != y) { return bitcast<f32>(0x7fc00000u); }
  return select(r, -r, (trunc(y * 0.5) * 2.0) != y);
}""",
    # tanh from exp overflows to NaN past |x| ~ 44 on some drivers; tanh(9) is 1 in f32
    "rlx_tanh": "fn rlx_tanh(x: f32) -> f32 { return select(tanh(clamp(x, -9.0, 9.0)), x, rlx_isnan(x)); }",
    # WGSL has no erf. Near 0 its Maclaurin series to x^11 (relative error < 1e-7 for
    # |x| < 0.5); beyond, Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7): f32 tolerance both.
    "rlx_erf": """fn rlx_erf(x: f32) -> f32 {
  let a = abs(x);
  if (a < 0.5) {
    let z = x * x;
    let p = 0.005223977625442188 + z * (-0.0008548327023450852);
    return x * (1.1283791670955126 + z * (-0.37612638903183754 + z * (0.11283791670955126
                + z * (-0.026866170645131252 + z * p))));
  }
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
                 + 0.254829592) * t * exp(-a * a);
  return select(-y, y, x >= 0.0);
}""",
    "rlx_modf": """fn rlx_modf(a: f32, b: f32) -> f32 {
  let r = a - b * trunc(a / b);
  return select(r, r + b, r != 0.0 && ((r < 0.0) != (b < 0.0)));
}""",
    # integer / and % on magnitudes as u32 (NVIDIA's Vulkan driver gave -17 % -13 = -17, an
    # unsigned remainder, through wgpu's SPIR-V); the signs as C's truncation, then Python's mod
    "rlx_modi": """fn rlx_modi(a: i32, b: i32) -> i32 {
  let r = rlx_fmodi(a, b);
  return select(r, r + b, r != 0 && ((r < 0) != (b < 0)));
}""",
    "rlx_fmodi": """fn rlx_fmodi(a: i32, b: i32) -> i32 {
  if (b == 0) { return 0; }
  let r = i32(u32(abs(a)) % u32(abs(b)));
  return select(r, -r, a < 0);
}""",
    "rlx_divi": """fn rlx_divi(a: i32, b: i32) -> i32 {
  if (b == 0) { return 0; }
  let q = i32(u32(abs(a)) / u32(abs(b)));
  return select(q, -q, (a < 0) != (b < 0));
}""",
}
NEEDS = {"rlx_max": ("rlx_isnan",), "rlx_min": ("rlx_isnan",), "rlx_pow": ("rlx_isnan",),
         "rlx_tanh": ("rlx_isnan",), "rlx_modi": ("rlx_fmodi",)}

UNARY_F = {"exp": "exp({0})", "log": "log({0})", "sqrt": "sqrt({0})", "sin": "sin({0})", "cos": "cos({0})",
           "floor": "floor({0})", "ceil": "ceil({0})", "tanh": "rlx_tanh({0})", "erf": "rlx_erf({0})",
           "reciprocal": "(1.0 / {0})", "isnan": "rlx_isnan({0})", "isinf": "rlx_isinf({0})"}
INFIX = {"add": "+", "sub": "-", "mul": "*", "equal": "==", "less": "<", "greater": ">"}


def printable() -> set[str]:
    """The primitives this printer has code for."""
    return set(UNARY_F) | set(INFIX) | {"div", "pow", "maximum", "minimum", "neg", "abs", "sign", "logical_not",
                                        "logical_and", "logical_or", "logical_xor", "mod", "fmod", "cast", "where"}


def wtype(d: DType) -> str:
    if d not in REGISTER:
        raise Unsupported(f"{d} values have no WGSL type here")
    return REGISTER[d]


def literal(value, d: DType) -> str:
    if d == DType.bool:
        return "true" if value else "false"
    if d.is_float:
        v = float(value)
        h = float(np.float16(v)) if d == DType.f16 else float(np.float32(v))
        if math.isnan(h) or math.isinf(h):
            bits = "0x7fc00000u" if math.isnan(h) else ("0x7f800000u" if h > 0 else "0xff800000u")
            text = f"bitcast<f32>({bits})"
            return f"f16({text})" if d == DType.f16 else text
        return f"{wtype(d)}({h!r})"
    if d == DType.i32:
        v = int(value)
        return "i32(-2147483647 - 1)" if v == -2**31 else f"i32({v})"
    if d == DType.u32:
        return f"{int(value)}u"
    raise Unsupported(f"a {d} literal")


def _prim(sh: "Builder", x: Expr, a: list[str]) -> str:
    op, d = x.op, x.dtype
    ind = x.args[0].dtype if x.args else d
    fl = ind is not None and ind.is_float
    if fl and ind != DType.f32 and op not in ("cast",):
        raise Unsupported(f"{op} computed in {ind} (expected f32 registers)")
    if op in INFIX:
        return f"({a[0]} {INFIX[op]} {a[1]})"
    if op in UNARY_F:
        if not fl:
            if op in ("isnan", "isinf"):
                return "false"
            raise Unsupported(f"{op} of {ind}")
        for h in ("rlx_tanh", "rlx_erf", "rlx_isnan", "rlx_isinf"):
            if h in UNARY_F[op]:
                sh.helper(h)
        return UNARY_F[op].format(*a)
    if op == "div":
        return f"({a[0]} / {a[1]})" if fl else (sh.helper("rlx_divi") or f"rlx_divi({a[0]}, {a[1]})")
    if op == "pow":
        if not fl:
            raise Unsupported("integer pow")
        return sh.helper("rlx_pow") or f"rlx_pow({a[0]}, {a[1]})"
    if op in ("maximum", "minimum"):
        if fl:
            name = "rlx_max" if op == "maximum" else "rlx_min"
            return sh.helper(name) or f"{name}({a[0]}, {a[1]})"
        return f"{op[:3]}({a[0]}, {a[1]})"
    if op == "neg":
        return f"(-{a[0]})"
    if op == "abs":
        return f"abs({a[0]})"
    if op == "sign":
        return f"sign({a[0]})"
    if op == "logical_not":
        return f"(!{a[0]})"
    if op == "logical_and":
        return f"({a[0]} && {a[1]})"
    if op == "logical_or":
        return f"({a[0]} || {a[1]})"
    if op == "logical_xor":
        return f"({a[0]} != {a[1]})"
    if op in ("mod", "fmod"):
        if fl:
            return f"({a[0]} % {a[1]})" if op == "fmod" else (sh.helper("rlx_modf") or f"rlx_modf({a[0]}, {a[1]})")
        name = "rlx_modi" if op == "mod" else "rlx_fmodi"
        return sh.helper(name) or f"{name}({a[0]}, {a[1]})"
    if op == "where":
        return f"select({a[2]}, {a[1]}, {a[0]})"
    if op == "cast":
        return convert(a[0], ind, d)
    raise Unsupported(f"no WGSL for primitive {op!r}")


def convert(v: str, src: DType, dst: DType) -> str:
    """``v`` of dtype ``src`` as ``dst`` (NumPy's casting: nonzero is true, true is one)."""
    if src == dst:
        return v
    if dst == DType.bool:
        return f"({v} != {literal(0, src)})"
    if src == DType.bool:
        return f"select({literal(0, dst)}, {literal(1, dst)}, {v})"
    return f"{wtype(dst)}({v})"


# ---------------------------------------------------------------------------- shader builder
@dataclass
class Builder:
    """Collects bindings, helpers, workgroup arrays and lines for one shader."""
    slots: int
    bindings: list[tuple[str, str]] = field(default_factory=list)
    helpers: list[str] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    counter: int = 0

    def fresh(self, stem: str = "v") -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def helper(self, name: str) -> None:
        for dep in NEEDS.get(name, ()):
            self.helper(dep)
        if name not in self.helpers:
            self.helpers.append(name)

    def buf(self, region: str, kind: str) -> str:
        if (region, kind) not in self.bindings:
            self.bindings.append((region, kind))
        return f"{region}_{kind}"

    def base(self, o: Operand) -> str:
        return f"i32(U.o[{o.slot // 4}][{o.slot % 4}])" + (f" + {o.extra}" if o.extra else "")

    def load(self, o: Operand, addr: str) -> str:
        """An expression reading element ``addr`` of ``o`` as its register type."""
        return self.load_at(o, f"{self.base(o)} + {addr}")

    def load_at(self, o: Operand, absolute: str) -> str:
        """``load`` at an address that already includes the operand's base."""
        at = f"({absolute})"
        if o.index_only:
            return f"bitcast<i32>({self.buf(o.region, 'u32')}[u32({at}) * 2u])"
        if o.dtype == DType.bool:
            return f"((({self.buf(o.region, 'u32')}[u32({at}) / 4u] >> ((u32({at}) % 4u) * 8u)) & 0xffu) != 0u)"
        if o.dtype not in STORED:
            raise Unsupported(f"{o.dtype} storage")
        return f"{self.buf(o.region, STORED[o.dtype])}[u32({at})]"

    def store(self, o: Operand, addr: str, value: str) -> str:
        at = f"u32({self.base(o)} + {addr})"
        if o.index_only:  # an i64 index: the i32 value and its sign extension
            w = self.buf(o.region, "u32")
            return (f"{{ let p = {at} * 2u; let v = {value}; {w}[p] = bitcast<u32>(v); "
                    f"{w}[p + 1u] = select(0u, 0xffffffffu, v < 0); }}")
        if o.dtype == DType.bool:
            w = self.buf(o.region, "atomic")
            return (f"{{ let p = {at}; let s = (p % 4u) * 8u; atomicAnd(&{w}[p / 4u], ~(0xffu << s)); "
                    f"atomicOr(&{w}[p / 4u], select(0u, 1u, {value}) << s); }}")
        if o.dtype not in STORED:
            raise Unsupported(f"{o.dtype} storage")
        return f"{self.buf(o.region, STORED[o.dtype])}[{at}] = {value};"

    def expr(self, e: Expr, leaf: Callable[[Expr], str], out: list[str] | None = None) -> str:
        """Emit ``let`` lines for ``e`` (into ``out``, else the body); returns its name."""
        lines = self.lines if out is None else out
        names: dict[int, str] = {}
        for x in nodes(e):
            if x.op in ("arg", "red"):
                names[id(x)] = leaf(x)
            elif x.op == "const":
                names[id(x)] = literal(x.value, x.dtype)
            else:
                v = self.fresh()
                lines.append(f"let {v} = {_prim(self, x, [names[id(a)] for a in x.args])};")
                names[id(x)] = v
        return names[id(e)]

    def finish(self, wg: tuple[int, int], grid: tuple[int, int, int], f16: bool) -> Shader:
        out = ["enable f16;"] if f16 or any(k == "f16" for _, k in self.bindings) else []
        for i, (region, kind) in enumerate(self.bindings):
            el = "atomic<u32>" if kind == "atomic" else kind
            out.append(f"@group(0) @binding({i}) var<storage, read_write> {region}_{kind}: array<{el}>;")
        out.append(f"struct Offsets {{ o: array<vec4<u32>, {max(1, -(-self.slots // 4))}> }};")
        out.append(f"@group(0) @binding({len(self.bindings)}) var<uniform> U: Offsets;")
        out += [HELPERS[h] for h in self.helpers] + self.shared
        out.append(f"@compute @workgroup_size({wg[0]}, {wg[1]}, 1)")
        out.append("fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, "
                   "@builtin(local_invocation_index) li_: u32) {")
        out.append("  let li = i32(li_);")
        out += ["  " + ln for ln in self.lines]
        out.append("}")
        return Shader("\n".join(out) + "\n", list(self.bindings), grid, self.slots)


def uses_f16(ops: Sequence[Operand]) -> bool:
    return any(o.dtype == DType.f16 for o in ops)


def addr(o: Operand, idx: Sequence[str]) -> str:
    """The element offset of ``o`` at the full index ``idx`` (right-aligned broadcasting)."""
    r, n = len(o.shape), len(idx)
    terms = [f"({idx[j + n - r]}) * {o.strides[j]}" for j in range(r) if o.shape[j] != 1 and o.strides[j] != 0]
    return " + ".join(terms) or "0"


def unravel(b: Builder, lin: str, shape: Sequence[int], stem: str) -> list[str]:
    names = []
    for k in range(len(shape)):
        inner = math.prod(shape[k + 1:])
        v = b.fresh(stem)
        b.lines.append(f"let {v} = ({lin} / {inner}) % {shape[k]};" if k else f"let {v} = {lin} / {inner};")
        names.append(v)
    return names


def groups(n: int) -> tuple[int, int, int]:
    """``n`` workgroups as a 2-D grid within the per-dimension limit."""
    x = max(1, min(n, MAX_GROUPS))
    return x, max(1, -(-n // x)), 1


def group_id(grid: tuple[int, int, int]) -> str:
    return f"(i32(wid.y) * {grid[0]} + i32(wid.x))"


def _leaf_loader(b: Builder, ins: Sequence[Operand], idx: Sequence[str], cache: dict, out: list[str],
                 extra: Callable[[Expr], str] | None = None) -> Callable[[Expr], str]:
    def leaf(x: Expr) -> str:
        if x.op == "arg" and x.value < len(ins):
            key = ("arg", x.value)
            if key not in cache:
                v = b.fresh("a")
                out.append(f"let {v} = {b.load(ins[x.value], addr(ins[x.value], idx))};")
                cache[key] = v
            return cache[key]
        return extra(x)
    return leaf


# ---------------------------------------------------------------------------- skeletons
def print_kernel(kernel: Kernel, ins: Sequence[Operand], outs: Sequence[Operand],
                 schedule: str = "tiled") -> Shader:
    """The shader of a skeleton instance over these operands (slots: inputs, then outputs).
    ``schedule`` is "tiled" (workgroup memory: GPUs) or "registers" (no workgroup memory
    in GEMMs and attention: CPU drivers such as lavapipe)."""
    s = kernel.skeleton
    if isinstance(s, Pointwise):
        return pointwise(ins, outs, s.outputs)
    if isinstance(s, RowReduce):
        return row_reduce(ins, outs, s)
    if isinstance(s, Gemm):
        return gemm(ins, outs, s.gemms, s.outputs, schedule)
    if isinstance(s, Attention):
        return attention(ins, outs, s) if schedule == "tiled" else attention_rows(ins, outs, s)
    if isinstance(s, Conv):
        return conv(ins, outs, s)
    raise Unsupported(f"no WGSL printer for skeleton {type(s).__name__}")


def _store_root(b: Builder, o: Operand, at: str, v: str, e: Expr, lines: list[str]) -> None:
    lines.append(b.store(o, at, convert(v, e.dtype, o.dtype)))


def _elements(b: Builder, total: int) -> tuple[int, int, int]:
    """Open a loop over this invocation's elements (``lin``): a workgroup covers WG
    consecutive elements per iteration and at most ``MAX_SWEEP`` workgroups are launched, so
    large tensors take several sweeps (a dispatched workgroup costs a CPU driver far more
    than a loop iteration). The caller closes the loop."""
    needed = -(-total // WG)
    per = -(-needed // MAX_SWEEP)
    grid = groups(-(-needed // per))
    b.lines.append(f"for (var sweep = 0; sweep < {per}; sweep++) {{")
    b.lines.append(f"let lin = ({group_id(grid)} * {per} + sweep) * {WG} + li;")
    b.lines.append(f"if (lin >= {total}) {{ break; }}")
    return grid


def pointwise(ins: Sequence[Operand], outs: Sequence[Operand], exprs: Sequence[Expr]) -> Shader:
    shape = outs[0].shape
    b = Builder(len(ins) + len(outs))
    grid = _elements(b, math.prod(shape))
    idx = unravel(b, "lin", shape, "i")
    cache: dict = {}
    leaf = _leaf_loader(b, ins, idx, cache, b.lines)
    for o, e in zip(outs, exprs):
        _store_root(b, o, addr(o, idx), b.expr(e, leaf), e, b.lines)
    b.lines.append("}")
    return b.finish((WG, 1), grid, uses_f16([*ins, *outs]))


def _full_shape(ins: Sequence[Operand], outs: Sequence[Operand]) -> tuple[int, ...]:
    return tuple(int(d) for d in np.broadcast_shapes(*(o.shape for o in [*ins, *outs])))


def _tree(b: Builder, arr: str, op: str, is_float: bool = True) -> None:
    """Reduce ``arr[0..ROW_WG)`` in workgroup memory into ``arr[0]``."""
    step = ROW_WG // 2
    mx = "rlx_max" if is_float else "max"
    while step:
        comb = f"{arr}[li] + {arr}[li + {step}]" if op == "sum" else f"{mx}({arr}[li], {arr}[li + {step}])"
        b.lines.append(f"if (li < {step}) {{ {arr}[li] = {comb}; }}")
        b.lines.append("workgroupBarrier();")
        step //= 2


def row_reduce(ins: Sequence[Operand], outs: Sequence[Operand], s: RowReduce) -> Shader:
    full = _full_shape(ins, outs)
    if not full:
        full = (1,)
    rows, n = math.prod(full[:-1]), full[-1]
    if any(o.shape[:-1] != full[:-1] for o in outs):
        raise Unsupported("row reduction outputs smaller than its rows")
    grid = groups(rows)
    b = Builder(len(ins) + len(outs))
    b.helper("rlx_max")
    b.lines.append(f"let row = {group_id(grid)};")
    b.lines.append(f"if (row >= {rows}) {{ return; }}")
    ridx = unravel(b, "row", full[:-1], "r")
    reds: list[str] = []
    arrays: set[str] = set()

    def red_leaf(x: Expr) -> str:
        return reds[x.value]

    for kind, e in s.reductions:
        t = wtype(e.dtype)
        arr = f"SH_{t}"
        if arr not in arrays:
            arrays.add(arr)
            b.shared.append(f"var<workgroup> {arr}: array<{t}, {ROW_WG}>;")
        acc = b.fresh("acc")
        init = literal(0, e.dtype) if kind != "max" else literal(-math.inf if e.dtype.is_float else -2**31, e.dtype)
        b.lines.append(f"var {acc} = {init};")
        b.lines.append(f"for (var j = li; j < {n}; j += {ROW_WG}) {{")
        body: list[str] = []
        v = b.expr(e, _leaf_loader(b, ins, [*ridx, "j"], {}, body, red_leaf), body)
        body.append(f"{acc} = {acc} + {v};" if kind != "max" else
                    (f"{acc} = rlx_max({acc}, {v});" if e.dtype.is_float else f"{acc} = max({acc}, {v});"))
        b.lines += ["  " + ln for ln in body] + ["}"]
        b.lines += [f"{arr}[li] = {acc};", "workgroupBarrier();"]
        _tree(b, arr, "max" if kind == "max" else "sum", e.dtype.is_float)
        r = b.fresh("red")
        val = f"{arr}[0]" + (f" / {literal(n, e.dtype)}" if kind == "mean" else "")
        b.lines += [f"let {r} = {val};", "workgroupBarrier();"]
        reds.append(r)
    for o, e in zip(outs, s.outputs):
        b.lines.append(f"for (var j = li; j < {o.shape[-1] if o.shape else 1}; j += {ROW_WG}) {{")
        body = []
        v = b.expr(e, _leaf_loader(b, ins, [*ridx, "j"], {}, body, red_leaf), body)
        _store_root(b, o, addr(o, [*ridx, "j"]), v, e, body)
        b.lines += ["  " + ln for ln in body] + ["}"]
    return b.finish((ROW_WG, 1), grid, uses_f16([*ins, *outs]))


def _collapsible(a: Operand) -> bool:
    """Whether ``a``'s leading axes and its row axis are one axis of stride ``strides[-2]``."""
    for d in range(len(a.shape) - 3, -1, -1):
        if a.shape[d] != 1 and a.strides[d] != a.strides[d + 1] * a.shape[d + 1]:
            return False
    return True


def gemm(ins: Sequence[Operand], outs: Sequence[Operand], gemms: Sequence[tuple[int, int]],
         exprs: Sequence[Expr], schedule: str = "tiled") -> Shader:
    """Products ``ins[a] @ ins[b]``, then each output is its epilogue expression of the
    inputs and the products (``arg(len(ins) + j)``). Two schedules of 64x64 output tiles:
    ``tiled`` stages A and B through workgroup memory (16x16 invocations, 4x4 each: for
    GPUs); ``registers`` has each of 8x8 invocations read its 8 rows and 8 columns straight
    from the buffers into an 8x8 block of accumulators (for CPU drivers such as lavapipe,
    where workgroup memory is ordinary memory and every barrier a context switch)."""
    n_in = len(ins)
    for a, bb in gemms:
        if len(ins[a].shape) < 2 or len(ins[bb].shape) < 2:
            raise Unsupported("a matrix-vector product")
    a0, b0 = ins[gemms[0][0]], ins[gemms[0][1]]
    pshape = tuple(int(d) for d in np.broadcast_shapes(a0.shape[:-2], b0.shape[:-2])) + (a0.shape[-2], b0.shape[-1])
    for a, bb in gemms:
        p = tuple(int(d) for d in np.broadcast_shapes(ins[a].shape[:-2], ins[bb].shape[:-2]))
        if p + (ins[a].shape[-2], ins[bb].shape[-1]) != pshape or ins[a].shape[-1] != ins[bb].shape[-2]:
            raise Unsupported("products of different shapes")
    if any(o.shape != pshape for o in outs):
        raise Unsupported("an epilogue broadcasting past its product")
    rows_mode = all(len(ins[bb].shape) == 2 and _collapsible(ins[a]) for a, bb in gemms)
    m = math.prod(pshape[:-1]) if rows_mode else pshape[-2]
    n = pshape[-1]
    batch = () if rows_mode else pshape[:-2]
    grid = (-(-n // TILE), -(-m // TILE), max(1, math.prod(batch)))
    if grid[1] > MAX_GROUPS or grid[2] > MAX_GROUPS:
        raise Unsupported("a GEMM too large for one dispatch")
    b = Builder(n_in + len(outs))
    b.lines += ["let tx = i32(lid.x);", "let ty = i32(lid.y);",
                f"let row0 = i32(wid.y) * {TILE};", f"let col0 = i32(wid.x) * {TILE};", "let z = i32(wid.z);"]
    bidx = unravel(b, "z", batch, "bz")

    def batch_of(t: Operand) -> str:
        return "" if rows_mode else " + " + addr(replace(t, shape=t.shape[:-2], strides=t.strides[:-2]), bidx)

    if schedule == "tiled":
        per, wg = TILE // 16, 16
        b.shared += [f"var<workgroup> As: array<f32, {TILE * TK}>;", f"var<workgroup> Bs: array<f32, {TK * TILE}>;"]
        rows = [f"(row0 + ty + {16 * i})" for i in range(per)]
        cols = [f"(col0 + tx + {16 * q})" for q in range(per)]
    elif schedule == "registers":
        per, wg = TILE // 8, 8
        rows = [f"(row0 + ty * {per} + {i})" for i in range(per)]
        cols = [f"(col0 + tx * {per} + {q})" for q in range(per)]
    else:
        raise ValueError(f"unknown GEMM schedule {schedule!r}")
    for j, (ai, bi) in enumerate(gemms):
        a, bm = ins[ai], ins[bi]
        k = a.shape[-1]
        if schedule == "registers":  # scalar accumulators (an array spills on llvmpipe)
            b.lines += [f"var s{j}_{t} = 0.0;" for t in range(per * per)]
            # each row's and column's start hoisted out of the loop; past the edge, the last one
            for name, idxs, lim, stride, op_ in (("x", rows, m - 1, a.strides[-2], a),
                                                 ("y", cols, n - 1, bm.strides[-1], bm)):
                for i, r in enumerate(idxs):
                    b.lines.append(f"let p{name}{j}_{i} = {b.base(op_)} + min({r}, {lim}) * {stride}{batch_of(op_)};")
            b.lines.append(f"for (var k = 0; k < {k}; k++) {{")
            ka, kb = f"k * {a.strides[-1]}", f"k * {bm.strides[-2]}"
            for i in range(per):
                b.lines.append(f"  let x{i} = {convert(b.load_at(a, f'px{j}_{i} + {ka}'), a.dtype, DType.f32)};")
            for q in range(per):
                b.lines.append(f"  let y{q} = {convert(b.load_at(bm, f'py{j}_{q} + {kb}'), bm.dtype, DType.f32)};")
            b.lines += [f"  s{j}_{i * per + q} = fma(x{i}, y{q}, s{j}_{i * per + q});"
                        for i in range(per) for q in range(per)]
            b.lines.append("}")
            b.lines.append(f"var acc{j} = array<f32, {per * per}>({', '.join(f's{j}_{t}' for t in range(per * per))});")
            continue
        b.lines.append(f"var acc{j}: array<f32, {per * per}>;")
        b.lines.append(f"for (var k0 = 0; k0 < {k}; k0 += {TK}) {{")
        for q in range(TILE * TK // 256):
            e = f"(li + {256 * q})"
            ga = f"{e} / {TK}"
            at = f"(row0 + {ga}) * {a.strides[-2]} + (k0 + {e} % {TK}) * {a.strides[-1]}{batch_of(a)}"
            b.lines.append(f"  if (row0 + {ga} < {m} && k0 + {e} % {TK} < {k}) {{ As[{e}] = "
                           f"{convert(b.load(a, at), a.dtype, DType.f32)}; }} else {{ As[{e}] = 0.0; }}")
            bt = f"(k0 + {e} / {TILE}) * {bm.strides[-2]} + (col0 + {e} % {TILE}) * {bm.strides[-1]}{batch_of(bm)}"
            b.lines.append(f"  if (k0 + {e} / {TILE} < {k} && col0 + {e} % {TILE} < {n}) {{ Bs[{e}] = "
                           f"{convert(b.load(bm, bt), bm.dtype, DType.f32)}; }} else {{ Bs[{e}] = 0.0; }}")
        b.lines.append("  workgroupBarrier();")
        b.lines.append(f"  for (var kk = 0; kk < {TK}; kk++) {{")
        for i in range(per):
            b.lines.append(f"    let x{i} = As[(ty + {16 * i}) * {TK} + kk];")
        for q in range(per):
            b.lines.append(f"    let y{q} = Bs[kk * {TILE} + tx + {16 * q}];")
            for i in range(per):
                b.lines.append(f"    acc{j}[{i * per + q}] = fma(x{i}, y{q}, acc{j}[{i * per + q}]);")
        b.lines += ["  }", "  workgroupBarrier();", "}"]
    # the epilogue, once per element of the invocation's block
    step = 16 if schedule == "tiled" else 1
    base_r = "row0 + ty" if schedule == "tiled" else f"row0 + ty * {per}"
    base_c = "col0 + tx" if schedule == "tiled" else f"col0 + tx * {per}"
    b.lines.append(f"for (var t = 0; t < {per * per}; t++) {{")
    body: list[str] = [f"let r = {base_r} + (t / {per}) * {step};", f"let c = {base_c} + (t % {per}) * {step};"]
    if rows_mode:
        saved, b.lines = b.lines, body
        idx = unravel(b, "r", pshape[:-1], "e") + ["c"]
        b.lines = saved
    else:
        idx = [*bidx, "r", "c"]
    prods = {n_in + j: f"acc{j}[t]" for j in range(len(gemms))}
    inner: list[str] = []
    leaf = _leaf_loader(b, ins, idx, {}, inner, lambda x: prods[x.value])
    for o, e in zip(outs, exprs):
        _store_root(b, o, addr(o, idx), b.expr(e, leaf, inner), e, inner)
    body += [f"if (r < {m} && c < {n}) {{"] + ["  " + ln for ln in inner] + ["}"]
    b.lines += ["  " + ln for ln in body] + ["}"]
    return b.finish((wg, wg), grid, uses_f16([*ins, *outs]))


def attention(ins: Sequence[Operand], outs: Sequence[Operand], s: Attention) -> Shader:
    q, k, v, o = ins[s.q], ins[s.k], ins[s.v], outs[0]
    d, sk, dv = q.shape[-1], k.shape[-2], v.shape[-1]
    rows = math.prod(o.shape[:-1])
    grid = groups(rows)
    b = Builder(len(ins) + len(outs))
    b.helper("rlx_isnan")
    b.shared += [f"var<workgroup> Q: array<f32, {d}>;", f"var<workgroup> SM: array<f32, {ROW_WG}>;",
                 f"var<workgroup> SL: array<f32, {ROW_WG}>;", "var<workgroup> ML: vec2<f32>;"]
    b.lines += [f"let row = {group_id(grid)};", f"if (row >= {rows}) {{ return; }}"]
    ridx = unravel(b, "row", o.shape[:-1], "r")
    bidx, iq = ridx[:-1], ridx[-1]

    def at(t: Operand, i2: str, i1: str) -> str:
        head = replace(t, shape=t.shape[:-2], strides=t.strides[:-2])
        return " + ".join(x for x in (addr(head, bidx) if head.shape else "0",
                                      f"({i2}) * {t.strides[-2]}", f"({i1}) * {t.strides[-1]}"))

    b.lines.append(f"for (var c = li; c < {d}; c += {ROW_WG}) {{ Q[c] = "
                   f"{convert(b.load(q, at(q, iq, 'c')), q.dtype, DType.f32)}; }}")
    b.lines.append("workgroupBarrier();")
    ninf = literal(-math.inf, DType.f32)

    def score(out: list[str]) -> str:
        out.append("var dot = 0.0;")
        out.append(f"for (var c = 0; c < {d}; c++) {{ dot = fma(Q[c], "
                   f"{convert(b.load(k, at(k, 'j', 'c')), k.dtype, DType.f32)}, dot); }}")
        sidx = [*bidx, iq, "j"]

        def leaf(x: Expr) -> str:
            if x.value == 0:
                return "dot"
            t = ins[x.value - 1]
            return convert(b.load(t, addr(t, sidx)), t.dtype, x.dtype)
        sc = b.expr(s.score, leaf, out)
        sv = b.fresh("s")
        out.append(f"let {sv} = select({convert(sc, s.score.dtype, DType.f32)}, {ninf}, "
                   f"{'true' if s.causal else 'false'} && j > {iq});")
        return sv

    # pass 1: each invocation's running max and sum over its keys, then combined
    b.lines += [f"var mt = {ninf};", "var lt = 0.0;", f"for (var j = li; j < {sk}; j += {ROW_WG}) {{"]
    body: list[str] = []
    sv = score(body)
    body += [f"if ({sv} > mt) {{ lt = lt * exp(mt - {sv}) + 1.0; mt = {sv}; }}",
             f"else if ({sv} > {ninf}) {{ lt = lt + exp({sv} - mt); }}"]
    b.lines += ["  " + ln for ln in body] + ["}"]
    b.lines += ["SM[li] = mt;", "SL[li] = lt;", "workgroupBarrier();",
                "if (li == 0) {", f"  var mx = {ninf};",
                f"  for (var t = 0; t < {ROW_WG}; t++) {{ mx = max(mx, SM[t]); }}",
                "  var sm = 0.0;",
                f"  for (var t = 0; t < {ROW_WG}; t++) {{ if (SM[t] > {ninf}) {{ sm = sm + SL[t] * exp(SM[t] - mx); }} }}",
                "  ML = vec2<f32>(mx, sm);", "}", "workgroupBarrier();",
                "let mrow = ML.x;", "let lrow = ML.y;"]
    # pass 2: probabilities of a block of keys in workgroup memory, times values
    per = -(-dv // ROW_WG)
    b.lines += [f"var acc: array<f32, {per}>;", f"for (var c0 = 0; c0 < {sk}; c0 += {ROW_WG}) {{",
                "  let j = c0 + li;", "  var p = 0.0;", f"  if (j < {sk}) {{"]
    body = []
    sv = score(body)
    body.append(f"var pr = exp({sv} - mrow) / lrow;")
    if s.probs is not None:
        pv = b.expr(s.probs, lambda x: "pr", body)
        body.append(f"pr = {convert(pv, s.probs.dtype, DType.f32)};")
    body.append("p = pr;")
    b.lines += ["    " + ln for ln in body] + ["  }", "  SL[li] = p;", "  workgroupBarrier();"]
    b.lines.append(f"  for (var u = 0; u < {per}; u++) {{")
    b.lines.append(f"    let c = li + u * {ROW_WG};")
    b.lines.append(f"    if (c < {dv}) {{")
    b.lines.append(f"      for (var t = 0; t < min({ROW_WG}, {sk} - c0); t++) {{")
    b.lines.append(f"        acc[u] = fma(SL[t], {convert(b.load(v, at(v, 'c0 + t', 'c')), v.dtype, DType.f32)}, acc[u]);")
    b.lines += ["      }", "    }", "  }", "  workgroupBarrier();", "}"]
    b.lines.append(f"for (var u = 0; u < {per}; u++) {{")
    b.lines.append(f"  let c = li + u * {ROW_WG};")
    b.lines.append(f"  if (c < {dv}) {{ {b.store(o, addr(o, [*ridx, 'c']), convert('acc[u]', DType.f32, o.dtype))} }}")
    b.lines.append("}")
    return b.finish((ROW_WG, 1), grid, uses_f16([*ins, *outs]))


def conv(ins: Sequence[Operand], outs: Sequence[Operand], s: Conv) -> Shader:
    """Direct convolution: one invocation per output element (n, m, *out) sums its window
    over the group's channels and the kernel taps (zero outside the padded input) in f32,
    adds the bias, then applies the epilogue."""
    x, w, o = ins[s.x], ins[s.w], outs[0]
    nsp = len(x.shape) - 2
    cg, kernel = w.shape[1], w.shape[2:]
    m_per_group = w.shape[0] // s.group
    lo = s.pads[:nsp]

    def body(b: Builder, idx: list[str]) -> None:
        n_, m_, sp = idx[0], idx[1], idx[2:]
        b.lines += ["var acc = 0.0;", f"let cbase = ({m_} / {m_per_group}) * {cg};"]
        taps = math.prod(kernel)
        b.lines.append(f"for (var c = 0; c < {cg}; c++) {{")
        b.lines.append(f"  for (var t = 0; t < {taps}; t++) {{")
        kidx, pos, ok = [], [], []
        for d in range(nsp):
            inner = math.prod(kernel[d + 1:])
            kv = f"k{d}"
            b.lines.append(f"    let {kv} = (t / {inner}) % {kernel[d]};")
            p = f"p{d}"
            b.lines.append(f"    let {p} = {sp[d]} * {s.strides[d]} - {lo[d]} + {kv} * {s.dilations[d]};")
            kidx.append(kv)
            pos.append(p)
            ok.append(f"{p} >= 0 && {p} < {x.shape[2 + d]}")
        b.lines.append(f"    if ({' && '.join(ok) or 'true'}) {{")
        xv = convert(b.load(x, addr(x, [n_, "(cbase + c)", *pos])), x.dtype, DType.f32)
        wv = convert(b.load(w, addr(w, [m_, "c", *kidx])), w.dtype, DType.f32)
        b.lines += [f"      acc = fma({xv}, {wv}, acc);", "    }", "  }", "}"]
        if s.bias is not None:
            bias = ins[s.bias]
            b.lines.append(f"acc = acc + {convert(b.load(bias, addr(bias, [m_])), bias.dtype, DType.f32)};")
        body_lines: list[str] = []
        leaf = _leaf_loader(b, ins, idx, {}, body_lines, lambda e: "acc")
        for out, e in zip(outs, s.outputs):
            _store_root(b, out, addr(out, idx), b.expr(e, leaf, body_lines), e, body_lines)
        b.lines += body_lines

    if any(out.shape != o.shape for out in outs):
        raise Unsupported("convolution outputs of different shapes")
    return indexed(ins, outs, o.shape, body)


def attention_rows(ins: Sequence[Operand], outs: Sequence[Operand], s: Attention) -> Shader:
    """Attention with one invocation per query row and no workgroup memory (for CPU
    drivers, which vectorize across invocations and pay for every barrier): a pass for the
    row's max and sum, then probabilities times values into a private accumulator. Causal
    rows stop at their diagonal; masked keys are skipped unless the whole row is masked
    (then the probabilities are NaN, as the definition says, before ``probs`` maps them)."""
    q, k, v, o = ins[s.q], ins[s.k], ins[s.v], outs[0]
    d, sk, dv = q.shape[-1], k.shape[-2], v.shape[-1]
    ninf = literal(-math.inf, DType.f32)

    def body(b: Builder, ridx: list[str]) -> None:
        bidx, iq = ridx[:-1], ridx[-1]

        def at(t: Operand, i2: str, i1: str) -> str:
            head = replace(t, shape=t.shape[:-2], strides=t.strides[:-2])
            return " + ".join((addr(head, bidx), f"({i2}) * {t.strides[-2]}", f"({i1}) * {t.strides[-1]}"))

        f32 = lambda t, i2, i1: convert(b.load(t, at(t, i2, i1)), t.dtype, DType.f32)  # noqa: E731
        b.lines += [f"var qv: array<f32, {d}>;", f"for (var c = 0; c < {d}; c++) {{ qv[c] = {f32(q, iq, 'c')}; }}",
                    f"let jend = {f'min({sk}, {iq} + 1)' if s.causal else sk};"]

        def score(out: list[str]) -> str:
            out += ["var dot = 0.0;", f"for (var c = 0; c < {d}; c++) {{ dot = fma(qv[c], {f32(k, 'j', 'c')}, dot); }}"]

            def leaf(x: Expr) -> str:
                if x.value == 0:
                    return "dot"
                t = ins[x.value - 1]
                return convert(b.load(t, addr(t, [*bidx, iq, "j"])), t.dtype, x.dtype)
            return convert(b.expr(s.score, leaf, out), s.score.dtype, DType.f32)

        body1: list[str] = []
        sv = score(body1)
        body1 += [f"let sj = {sv};", "if (sj > mx) { l = l * exp(mx - sj) + 1.0; mx = sj; }",
                  f"else if (sj > {ninf}) {{ l = l + exp(sj - mx); }}"]
        b.lines += [f"var mx = {ninf};", "var l = 0.0;", "for (var j = 0; j < jend; j++) {"]
        b.lines += ["  " + ln for ln in body1] + ["}"]
        body2: list[str] = []
        sv = score(body2)
        body2 += [f"let sj = {sv};", f"if (sj == {ninf} && mx > {ninf}) {{ continue; }}",
                  "var pr = exp(sj - mx) / l;"]
        if s.probs is not None:
            pv = b.expr(s.probs, lambda x: "pr", body2)
            body2.append(f"pr = {convert(pv, s.probs.dtype, DType.f32)};")
        body2.append(f"for (var c = 0; c < {dv}; c++) {{ acc[c] = fma(pr, {f32(v, 'j', 'c')}, acc[c]); }}")
        b.lines += [f"var acc: array<f32, {dv}>;", "for (var j = 0; j < jend; j++) {"]
        b.lines += ["  " + ln for ln in body2] + ["}"]
        b.lines.append(f"for (var c = 0; c < {dv}; c++) {{ "
                       f"{b.store(o, addr(o, [*ridx, 'c']), convert('acc[c]', DType.f32, o.dtype))} }}")
    return indexed(ins, outs, o.shape[:-1], body)


def indexed(ins: Sequence[Operand], outs: Sequence[Operand], shape: tuple[int, ...],
            body: Callable[[Builder, list[str]], None]) -> Shader:
    """An invocation per element of ``shape`` (in sweeps, see ``_elements``);
    ``body(builder, index)`` emits the lines."""
    b = Builder(len(ins) + len(outs))
    grid = _elements(b, math.prod(shape))
    body(b, unravel(b, "lin", shape, "i"))
    b.lines.append("}")
    return b.finish((WG, 1), grid, uses_f16([*ins, *outs]))


__all__ = ["Operand", "Shader", "Unsupported", "Builder", "printable", "print_kernel", "pointwise", "row_reduce",
           "gemm", "attention", "attention_rows", "conv", "indexed", "literal", "convert", "addr", "unravel",
           "HELPERS"]
