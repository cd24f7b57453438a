"""The NumPy printer: the primitives and the five skeletons as generated Python over NumPy.

A kernel is built once per step, for the step's arrays (views into the arena). Its output
is cut into chunks of about ``CHUNK`` elements along the outer axes, so every temporary is
chunk-sized and stays in cache; each chunk runs one generated straight-line function of
ufunc calls with ``out=`` into preallocated scratch. A GEMM is computed per block of rows
with its epilogue applied while the block is in cache; attention per block of query rows,
whose scores never leave the cache; a convolution per image, as one GEMM over its windows
(a depthwise one tap by tap), its epilogue applied to the image while it is in cache.
"""
from __future__ import annotations

import ctypes
import math
import os
import threading
from collections.abc import Callable, Sequence
from functools import cached_property, lru_cache, partial

import numpy as np
from scipy import special

from rlx.errors import DTypeError
from rlx.exec import c_print, cc, winograd
from rlx.exec.cuda_print import AttnOperand, Operand, aligned_strides, collapse, elem_strides, own_strides
from rlx.exec.parallel import Call, pool, split, thread_count
from rlx.ir.dtypes import DType, as_dtype
from rlx.ir.expr import Expr, arg, call, const, nodes, rebuild, red, remap, typed
from rlx.ir.ops import divide
from rlx.kernels.skeletons import Attention, Conv, Gemm, Kernel, Pointwise, RowReduce

CHUNK = 32768        # elements per temporary: a few of them fit in this machine's L2
PAR_MIN = 1 << 18    # elements below which a step runs on one thread (a hand-off costs about as much)
GEMM_BLOCK = 1 << 20  # elements of a GEMM's product block (BLAS loses speed on thin blocks)
GEMM_PAR_MIN = 1 << 21  # multiply-adds below which a GEMM runs on one thread
GEMV_PAR_MIN = 1 << 16  # elements of constant B from which a GEMM runs on every thread however few its
                        # rows (a matrix-vector product streams B: its time goes with B's bytes)
SCORES = 1 << 18       # elements of an attention score block
DEPTHWISE_BLOCK = 1 << 16  # elements of a depthwise accumulator block (fewer, longer calls than CHUNK: -5%)

# ---------------------------------------------------------------------------- primitives
# How each primitive prints: {o} is the output array, {0} {1} {2} the operands.
UFUNC = {"add": "np.add", "sub": "np.subtract", "mul": "np.multiply", "div": "np.divide",
         "pow": "np.power", "maximum": "np.maximum", "minimum": "np.minimum", "equal": "np.equal",
         "less": "np.less", "greater": "np.greater", "neg": "np.negative", "abs": "np.abs",
         "exp": "np.exp", "log": "np.log", "sqrt": "np.sqrt", "tanh": "np.tanh",
         "reciprocal": "np.reciprocal", "floor": "np.floor", "ceil": "np.ceil", "sin": "np.sin",
         "cos": "np.cos", "sign": "np.sign", "isnan": "np.isnan", "isinf": "np.isinf",
         "logical_not": "np.logical_not", "logical_and": "np.logical_and", "logical_or": "np.logical_or",
         "logical_xor": "np.logical_xor", "mod": "np.mod", "fmod": "np.fmod"}
CODE = {
    "erf": "ERF({0}, {o})",
    "cast": "np.copyto({o}, {0}, casting='unsafe')",
    "where": "np.copyto({o}, {2}); np.copyto({o}, {1}, where={0})",
}
WRITES_FIRST = {"where"}  # writes its output before it has read every operand


def printable() -> set[str]:
    """The primitives this printer has code for."""
    return set(UFUNC) | set(CODE)


def print_op(op: str, dtype: DType, operands: Sequence[str], out: str) -> str:
    if op in CODE:
        return CODE[op].format(*operands, o=out)
    if op == "div" and not dtype.is_float:  # integer division truncates toward zero
        return f"np.copyto({out}, IDIV({', '.join(operands)}), casting='unsafe')"
    return f"{UFUNC[op]}({', '.join(operands)}, out={out})"


# float32 erf: SciPy's is a scalar loop (12 ns per element here); Abramowitz & Stegun 7.1.26,
# |error| <= 1.5e-7, vectorized (chunks are cache-sized already).
_AS = [np.float32(c) for c in (0.3275911, 1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)]


_ERF_SCRATCH = threading.local()


def ERF(x: np.ndarray, out: np.ndarray) -> None:
    """out = erf(x); float32 in this thread's scratch (x and out are chunk-sized)."""
    if out.dtype != np.float32:
        special.erf(x, out=out)
        return
    n = out.size
    bufs = getattr(_ERF_SCRATCH, "bufs", None)
    if bufs is None or bufs[0].size < n:
        bufs = _ERF_SCRATCH.bufs = [np.empty(max(n, CHUNK), np.float32) for _ in range(3)]
    a, t, y = (b[:n].reshape(out.shape) for b in bufs)
    np.abs(x, out=a)
    np.multiply(a, _AS[0], out=t)
    t += 1
    np.reciprocal(t, out=t)
    np.multiply(t, _AS[1], out=y)
    for c in _AS[2:]:
        y += c
        y *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    y *= a
    np.subtract(1, y, out=y)
    np.copysign(y, x, out=out)


# ---------------------------------------------------------------------------- chunks
def plan_chunks(shape: tuple[int, ...], fixed: int, target: int) -> list[tuple]:
    """Index tuples cutting ``shape`` into chunks of about ``target`` elements along its outer
    axes; the last ``fixed`` axes are never cut."""
    rank = len(shape)
    whole = [tuple(slice(None) for _ in shape)]
    if rank - fixed <= 0 or math.prod(shape) == 0:
        return whole
    cut = rank - fixed - 1
    for ax in range(rank - fixed):
        if math.prod(shape[ax + 1:]) <= target:
            cut = ax
            break
    block = max(1, target // max(1, math.prod(shape[cut + 1:])))
    out = []
    for outer in np.ndindex(*shape[:cut]):
        for start in range(0, shape[cut], block):
            out.append(tuple(slice(i, i + 1) for i in outer) + (slice(start, min(start + block, shape[cut])),)
                       + tuple(slice(None) for _ in shape[cut + 1:]))
    return out


def take(a: np.ndarray, index: tuple, axes: Sequence[int | None]) -> np.ndarray:
    """What a chunk of the output reads of operand ``a``: ``axes[j]`` is the output axis of
    operand axis j (None: read whole); broadcast axes are read whole."""
    if a.ndim == 0:
        return a[...]  # a view: indexing a 0-d array with () would copy its value out
    return a[tuple(slice(None) if ax is None or a.shape[j] == 1 else index[ax] for j, ax in enumerate(axes))]


def aligned(rank: int, out_rank: int) -> list[int | None]:
    """Right-aligned broadcasting: operand axis j is output axis ``j + out_rank - rank``."""
    return [j + out_rank - rank for j in range(rank)]


# ---------------------------------------------------------------------------- programs
class Program:
    """Straight-line code for expressions over named leaves. Temporaries are scratch slots
    reused by liveness over the whole kernel (one slot per shape and dtype at a time)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, object] = {}
        self.name: dict[Expr, str] = {}
        self.shape_of: dict[Expr, tuple] = {}
        self.slots: list[tuple[Expr, np.dtype]] = []   # a representative node per slot
        self.uses: dict[Expr, int] = {}
        self.targets: dict[Expr, str] = {}   # where a value must end up (an output), when known
        self._free: dict[tuple, list[int]] = {}

    def leaf(self, e: Expr, name: str, shape: tuple) -> None:
        self.name[e] = name
        self.shape_of[e] = shape

    def shape(self, e: Expr) -> tuple:
        return shape_in(self.shape_of, e)

    def const(self, value, dtype: DType) -> str:
        name = f"C{len(self.consts)}"
        self.consts[name] = dtype.np.type(value)
        return name

    def prepare(self, roots: Sequence[Expr]) -> None:
        """Count every use in the kernel: each node's parents, and each root once per
        appearance (a reduction or an output consumes it)."""
        seen: set[Expr] = set()
        for r in roots:
            self.uses[r] = self.uses.get(r, 0) + 1
            for x in nodes(r):
                if x not in seen:
                    seen.add(x)
                    for a in x.args:
                        self.uses[a] = self.uses.get(a, 0) + 1

    def consume(self, e: Expr) -> None:
        """One use of ``e`` is done; its slot is free once none is left."""
        self.uses[e] -= 1
        name = self.name.get(e, "")
        if self.uses[e] == 0 and name.startswith("T["):
            self._free.setdefault((self.shape(e), e.dtype.np), []).append(int(name[2:-1]))

    def _temp(self, e: Expr) -> str:
        free = self._free.get((self.shape(e), e.dtype.np))
        if free:
            return f"T[{free.pop()}]"
        self.slots.append((e, e.dtype.np))
        return f"T[{len(self.slots) - 1}]"

    def compute(self, roots: Sequence[Expr], targets: Sequence[str | None]) -> list[str]:
        """Emit code for ``roots`` (into ``targets`` where given); returns where each is."""
        want = {**self.targets, **{r: t for r, t in zip(roots, targets) if t is not None}}
        for r in roots:
            for x in nodes(r):
                if x in self.name:
                    continue
                if x.op == "const":
                    self.name[x] = self.const(x.value, x.dtype)
                    continue
                operands = [self.name[a] for a in x.args]
                out = (want.get(x) or self._temp(x)) if x.op in WRITES_FIRST else None
                for a in x.args:
                    self.consume(a)
                out = out or want.get(x) or self._temp(x)
                if x.op == "div" and x.dtype.is_float and _smaller(self.shape(x.args[1]), self.shape(x)):
                    # division by a per-row value: one reciprocal per row, then a multiply
                    small = self._temp(x.args[1])
                    self.lines.append(f"np.reciprocal({operands[1]}, out={small})")
                    self.lines.append(f"np.multiply({operands[0]}, {small}, out={out})")
                    self._free.setdefault((self.shape(x.args[1]), x.dtype.np), []).append(int(small[2:-1]))
                else:
                    self.lines.append(print_op(x.op, x.dtype, operands, out))
                self.name[x] = out
        where = []
        for r, t in zip(roots, targets):
            if t is not None and self.name[r] != t:  # a leaf, or a value computed before
                self.lines.append(f"np.copyto({t}, {self.name[r]}, casting='unsafe')")
            where.append(self.name[r])
        return where

    def slot_views(self, scratch: list[np.ndarray], leaf_shapes: dict[Expr, tuple]) -> list[np.ndarray]:
        """The scratch slots shaped for one chunk, whose leaves have ``leaf_shapes``."""
        memo = dict(leaf_shapes)
        return [fit(buf, shape_in(memo, e)) for buf, (e, _) in zip(scratch, self.slots)]


def _smaller(shape: tuple, than: tuple) -> bool:
    return math.prod(shape) * 8 <= math.prod(than)


def shape_in(memo: dict[Expr, tuple], e: Expr) -> tuple:
    """The broadcast shape of ``e`` given its leaves' shapes in ``memo`` (which it extends)."""
    s = memo.get(e)
    if s is None:
        for x in nodes(e):
            if x not in memo:
                memo[x] = () if x.op == "const" else np.broadcast_shapes(*(memo[a] for a in x.args))
        s = memo[e]
    return s


def fit(buf: np.ndarray, shape: tuple) -> np.ndarray:
    """A view of the front of ``buf`` with ``shape`` (a smaller last chunk reuses scratch)."""
    return buf.reshape(-1)[:math.prod(shape)].reshape(shape)


@lru_cache(maxsize=4096)
def _compiled(src: str) -> Callable:
    scope: dict = {"np": np, "ERF": ERF, "IDIV": divide}
    exec(compile(src, "<rlx numpy kernel>", "exec"), scope)
    return scope["chunk"]


def generated(params: list[str], lines: list[str], consts: dict) -> tuple[Callable, str, tuple]:
    """The compiled chunk function (shared by every kernel with the same source), its source
    and the constants it takes after ``params``."""
    header = ", ".join(params + list(consts))
    body = "\n".join(f"    {ln}" for ln in lines) or "    pass"
    src = f"def chunk({header}):\n{body}\n"
    return _compiled(src), src, tuple(consts.values())


class ChunkedKernel:
    """A step as phases run in order; a phase is one list of calls per thread (disjoint
    outputs, each list with its own scratch), run in parallel by the pool."""

    def __init__(self, source: str, phases: list[list[list[Call]]]) -> None:
        self.source = source
        self.phases = [p for p in phases if any(p)]
        self._pool = pool()

    @property
    def threads(self) -> int:
        """The most threads one of its phases runs on (lists, or a compiled call's threads)."""
        return max([len(p) for p in self.phases] + [c[0].threads for p in self.phases for calls in p for c in calls
                                                    if isinstance(c[0], Threaded)] + [1])

    @property
    def calls(self) -> list[Call]:
        """Every call, in an order that is correct on one thread."""
        return [c for phase in self.phases for calls in phase for c in calls]

    def __call__(self) -> None:
        for lists in self.phases:
            self._pool.run(lists)


def serial(source: str, calls: list[Call]) -> ChunkedKernel:
    return ChunkedKernel(source, [[calls]])


def threads_for(elements: int) -> int:
    """How many threads a step of this many elements is worth (a hand-off costs about what
    ``PAR_MIN`` elements of a ufunc do)."""
    return max(1, min(thread_count(), elements // PAR_MIN))


# ---------------------------------------------------------------------------- skeletons
def build(kernel: Kernel, ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
          constant: frozenset[int] = frozenset()) -> ChunkedKernel:
    """The NumPy program of ``kernel`` over these arrays (the outputs are written in place);
    ``constant`` inputs (params) keep their values for as long as the kernel lives."""
    s = kernel.skeleton
    if isinstance(s, Pointwise):
        return native_rows(s.outputs, (), ins, outs) or _rows(s.outputs, (), (), ins, outs, fixed=0)
    if isinstance(s, RowReduce):
        return (native_rows(s.outputs, s.reductions, ins, outs)
                or _rows(s.outputs, s.reductions, (), ins, outs, fixed=1))
    if isinstance(s, Gemm):
        return (native_gemm(s.outputs, s.gemms, ins, outs, constant)
                or _rows(s.outputs, (), s.gemms, ins, outs, fixed=0, constant=constant))
    if isinstance(s, Attention):
        return _attention(s, ins, outs)
    if isinstance(s, Conv):
        return _conv(s, ins, outs, constant)
    raise TypeError(f"no NumPy printer for skeleton {type(s).__name__}")


def _leaves(exprs: Sequence[Expr]) -> dict[tuple[str, int], Expr]:
    out = {}
    for e in exprs:
        for x in nodes(e):
            if x.op in ("arg", "red"):
                out[(x.op, x.value)] = x
    return out


def _matmul(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    np.matmul(x, w, out=out, dtype=out.dtype)


def _packable(gemms, products: list[int], constant: frozenset[int], leaves, n_in: int) -> bool:
    """Products of one left operand with constant matrices are one GEMM with the matrices side
    by side (one BLAS call, wider: SwiGLU's gate and up projections); the packed matrix is
    made once, when the kernel is built (params do not change after)."""
    return (len(products) >= 2 and len({gemms[j][0] for j in products}) == 1
            and all(gemms[j][1] in constant for j in products)
            and len({leaves[("arg", n_in + j)].dtype for j in products}) == 1)


def gemm_blocks(shape: tuple[int, ...], threads: int, columns_ok: bool) -> list[tuple]:
    """A GEMM output cut into blocks for the threads. Each thread's BLAS call packs the whole
    of the operand it does not cut, so the cut goes along the larger side: by column ranges
    (each thread reads its part of the right operand, the weights of a layer at a small
    batch) when the output is at least as wide as it is tall, else by blocks of rows, at
    least one per thread. Row blocks hold ``GEMM_BLOCK`` elements at most (BLAS loses speed
    on thinner ones; an epilogue wants its block in cache)."""
    size, n = math.prod(shape), (shape[-1] if shape else 1)
    if threads > 1 and columns_ok and shape and n >= max(size // n, 64 * threads):
        return [b[:-1] + (slice(c.start, c.stop),)  # in thread order: a thread's column range, row block by row block
                for c in split(n, threads) for b in plan_chunks(shape, 1, GEMM_BLOCK)]
    return plan_chunks(shape, 1, min(GEMM_BLOCK, max(n, -(-size // threads))))


def _rows(outputs: Sequence[Expr], reductions, gemms, ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
          fixed: int, constant: frozenset[int] = frozenset()) -> ChunkedKernel:
    """Pointwise, row reduction and GEMM + epilogue. The output is cut into blocks dealt to
    the threads, each thread with its own scratch. A GEMM's block is rows (or columns) whose
    products are computed into the thread's scratch, then the epilogue per chunk of the block
    while it is in cache: the reductions in order, then the outputs. Without a GEMM a block
    is one chunk."""
    rank, n_in = outs[0].ndim, len(ins)
    leaves = _leaves(list(outputs) + [e for _, e in reductions])
    args = sorted(i for (kind, i) in leaves if kind == "arg" and i < n_in)
    products = [j for j in range(len(gemms)) if ("arg", n_in + j) in leaves]
    aliased = any(np.may_share_memory(o, ins[i]) for o in outs for i in range(n_in))
    axes = {i: aligned(ins[i].ndim, rank) for i in range(n_in)}
    row_axes = {i: a[:-1] + [None] for i, a in axes.items()}
    out_shape = outs[0].shape
    if gemms:
        macs = outs[0].size * max(ins[a].shape[-1] for a, _ in gemms)
        threads = thread_count() if macs >= GEMM_PAR_MIN else threads_for(outs[0].size)
        full_width = all(ins[gemms[j][1]].shape[-1] == (out_shape[-1] if out_shape else 1) for j in products)
        blocks = gemm_blocks(out_shape, threads, fixed == 0 and full_width)
    else:
        blocks = plan_chunks(out_shape, fixed, CHUNK)
        threads = threads_for(outs[0].size)
    groups = split(len(blocks), threads)

    def columns(block) -> slice:
        return block[-1] if block and gemms and block[-1] != slice(None) else slice(None)

    def weight(j: int, block) -> np.ndarray:
        b = ins[gemms[j][1]]
        if b.ndim < 2:
            return b
        return take(b, block, aligned(b.ndim, rank)[:-2] + [None, None])[..., columns(block)]

    def product_shape(j: int, block) -> tuple:
        a = gemms[j][0]
        return take(ins[a], block, row_axes[a]).shape[:-1] + (weight(j, block).shape[-1],)

    def leaf_shapes(block, index) -> dict[Expr, tuple]:
        shapes = {leaves[("arg", i)]: take(take(ins[i], block, axes[i]), index, axes[i]).shape for i in args}
        for j in products:
            p = product_shape(j, block)
            shapes[leaves[("arg", n_in + j)]] = take(np.broadcast_to(0, p), index, aligned(len(p), rank)).shape
        return shapes

    first_block = blocks[0]
    first_chunks = plan_chunks(outs[0][first_block].shape, fixed, CHUNK)
    first = leaf_shapes(first_block, first_chunks[0])
    prog = Program()
    for i in args:
        prog.leaf(leaves[("arg", i)], f"a{i}", first[leaves[("arg", i)]])
    for j in products:
        prog.leaf(leaves[("arg", n_in + j)], f"P{j}", first[leaves[("arg", n_in + j)]])
    prog.prepare([e for _, e in reductions] + list(outputs))
    if not aliased:  # an output computed on the way to a reduction goes straight to its slot
        prog.targets = {e: f"o{k}" for k, e in reversed(list(enumerate(outputs))) if not e.is_leaf}
    red_leaves = []
    for j, (kind, e) in enumerate(reductions):
        if kind != "max" and e.op == "mul" and all(prog.shape(a) == prog.shape(e) for a in e.args):
            a, b = prog.compute(list(e.args), [None, None])  # a sum of products: one pass
            prog.lines.append(f"np.vecdot({a}, {b}, axis=-1, out=R{j}[..., 0])")
            prog.consume(e.args[0])
            prog.consume(e.args[1])
        else:
            (src,) = prog.compute([e], [None])
            prog.lines.append(f"{'np.max' if kind == 'max' else 'np.sum'}({src}, axis=-1, keepdims=True, out=R{j})")
        if kind == "mean":
            prog.lines.append(f"np.multiply(R{j}, {prog.const(1.0 / prog.shape(e)[-1], e.dtype)}, out=R{j})")
        prog.consume(e)
        leaf = leaves.get(("red", j), Expr("red", value=j, dtype=e.dtype))
        prog.leaf(leaf, f"R{j}", prog.shape(e)[:-1] + (1,))
        red_leaves.append((leaf, e))
    where = prog.compute(list(outputs), [None if aliased else f"o{k}" for k in range(len(outs))])
    if aliased:  # an output shares memory with an input: write the outputs last
        prog.lines += [f"np.copyto(o{k}, {w}, casting='unsafe')" for k, w in enumerate(where)]
    params = ([f"a{i}" for i in args] + [f"P{j}" for j in products] + [f"R{j}" for j in range(len(reductions))]
              + [f"o{k}" for k in range(len(outs))] + ["T"])
    fn, src, consts = generated(params, prog.lines, prog.consts)

    packed: dict[tuple, np.ndarray] = {}  # by column range: the side-by-side constant matrices
    pack = _packable(gemms, products, constant, leaves, n_in)

    def packed_for(block) -> np.ndarray:
        c = columns(block)
        key = (c.start, c.stop)
        if key not in packed:
            packed[key] = np.concatenate([weight(j, block) for j in products], axis=-1)
        return packed[key]

    lists: list[list[Call]] = []
    for group in groups:  # each thread: its blocks, with its own scratch
        mine = [blocks[b] for b in group]
        big = max(mine, key=lambda b: outs[0][b].size)
        prod_bufs = {j: np.empty(product_shape(j, big), leaves[("arg", n_in + j)].dtype.np) for j in products}
        wide = (np.empty(product_shape(products[0], big)[:-1] + (packed_for(big).shape[-1],),
                         leaves[("arg", n_in + products[0])].dtype.np) if pack else None)
        big_shapes = leaf_shapes(big, plan_chunks(outs[0][big].shape, fixed, CHUNK)[0])
        for leaf, e in red_leaves:
            big_shapes[leaf] = shape_in(big_shapes, e)[:-1] + (1,)
        red_bufs = [np.empty(big_shapes[leaf], leaf.dtype.np) for leaf, _ in red_leaves]
        scratch = [np.empty(shape_in(big_shapes, e), d) for e, d in prog.slots]
        calls: list[Call] = []
        for block in mine:
            ins_b = {i: take(ins[i], block, axes[i]) for i in args}
            outs_b = [o[block] if o.ndim else o[...] for o in outs]  # o[()] of a 0-d array is a copy
            prods_b = {}
            if pack:
                a = gemms[products[0]][0]
                x, w = take(ins[a], block, row_axes[a]), packed_for(block)
                wide_b = fit(wide, x.shape[:-1] + (w.shape[-1],))
                calls.append((_matmul, (x, w, wide_b)))
                n = w.shape[-1] // len(products)
                prods_b = {j: wide_b[..., k * n:(k + 1) * n] for k, j in enumerate(products)}
            for j in products if not pack else ():
                a = gemms[j][0]
                prods_b[j] = fit(prod_bufs[j], product_shape(j, block))
                calls.append((_matmul, (take(ins[a], block, row_axes[a]), weight(j, block), prods_b[j])))
            for index in plan_chunks(outs_b[0].shape, fixed, CHUNK):
                shapes = leaf_shapes(block, index)
                for leaf, e in red_leaves:
                    shapes[leaf] = shape_in(shapes, e)[:-1] + (1,)
                call = [take(ins_b[i], index, axes[i]) for i in args]
                call += [take(prods_b[j], index, aligned(prods_b[j].ndim, rank)) for j in products]
                call += [fit(buf, shapes[leaf]) for buf, (leaf, _) in zip(red_bufs, red_leaves)]
                call += [o[index] if o.ndim else o for o in outs_b]
                call.append(prog.slot_views(scratch, shapes))
                calls.append((fn, tuple(call) + consts))
        lists.append(calls)
    return ChunkedKernel(src, [lists])


NATIVE_MIN = 1 << 14  # work (elements, or multiply-adds) below which a step keeps the NumPy kernel


def _compiles(work: int) -> bool:
    """Whether a step gets a compiled kernel: this machine has a compiler, and the step has
    enough work to repay compiling it (a fraction of a second, once per machine: a graph of
    tiny steps would spend longer in the compiler than it ever runs)."""
    return work >= NATIVE_MIN and cc.available() is None


class Threaded:
    """One call of a ``c_print.threaded`` kernel: its outer loop's ``n`` iterations cut into
    ``chunks``, run by ``rlx_loops`` (``c_print.LOOPS``) as a table of one row, on as many
    OpenMP threads as this process runs but no more than the chunks (one in a forked child:
    OpenMP's threads are not the child's). A run of them is one table (``native_runs``)."""

    def __init__(self, fn: cc.NativeFunction, args: Sequence[int], n: int, chunks: int) -> None:
        self.fn, self.args, self.n, self.chunks = fn, tuple(args), n, chunks
        self._pid = os.getpid()
        self._ready: tuple | None = None  # (driver, table, the arguments' arrays it points into)

    @property
    def threads(self) -> int:
        return min(self.chunks, thread_count()) if os.getpid() == self._pid else 1

    def __call__(self) -> None:
        fn, table, _ = self._ready or self._prepare()
        fn(table.ctypes.data, 1, self.threads)

    def _prepare(self) -> tuple:
        self._ready = loop_table([self])  # in one assignment: never a table without its arrays
        return self._ready


def loop_table(loops: Sequence[Threaded]) -> tuple[Callable[[int, int, int], None], np.ndarray, list[np.ndarray]]:
    """``rlx_loops(table, count, threads)`` (compiled once per machine, ``cc``'s cache, by
    the compiler the kernels are compiled with), its table for ``loops`` (their kernels'
    libraries compiled if need be) and the arrays of arguments the rows point into, which
    must live as long as the table."""
    driver = cc.build(c_print.LOOPS).rlx_loops
    driver.argtypes = [ctypes.c_ssize_t] * 3
    driver.restype = None
    args = [np.array(loop.args, dtype=np.int64) for loop in loops]
    table = np.array([(loop.fn.address(f"{loop.fn.name}_chunk"), a.ctypes.data, 0, loop.n, loop.chunks)
                      for loop, a in zip(loops, args)], dtype=np.int64)
    return driver, table, args


def _native_kernel(src: c_print.CSource, arrays: Sequence[np.ndarray], n: int, parts: int) -> ChunkedKernel:
    """``src`` compiled, bound to the addresses of ``arrays`` and its outer loop's ``n``
    iterations cut into ``parts`` ranges that OpenMP's threads share (``Threaded``). The
    kernel keeps the arrays alive: it reads them by address (packed weights or a mask made
    at build time would otherwise be freed under it)."""
    par = c_print.threaded(src)
    fn = cc.kernel(c_print.PRELUDE, par.name, par.text)
    fn.keep = tuple(arrays)
    call = Threaded(fn, [a.ctypes.data for a in arrays], n, max(1, min(parts, n)))
    return ChunkedKernel(src.text, [[[(call, ())]]])


def native_max_pool(x: np.ndarray, out: np.ndarray, kernel: Sequence[int], strides: Sequence[int],
                    dilations: Sequence[int], pads: Sequence[int]) -> ChunkedKernel | None:
    """A max pool as one compiled loop nest (``c_print.max_pool``), the planes split over the
    threads; None where it does not apply (no compiler, a dtype or rank it has no loop for,
    a window wider than a stack row)."""
    if not _compiles(out.size * math.prod(kernel)) or out.shape[-1] > 1 << 14 or x.shape[-1] > 1 << 14:
        return None
    src = c_print.max_pool(Operand(as_dtype(x.dtype), own_strides(x)), Operand(as_dtype(out.dtype), own_strides(out)),
                           x.shape, out.shape, kernel, strides, dilations, pads)
    if src is None:
        return None
    planes = math.prod(x.shape[:2])
    return _native_kernel(src, [x, out], planes, max(1, min(thread_count(), planes, out.size * math.prod(kernel) // PAR_MIN)))


def native_reduce(kind: str, x: np.ndarray, out: np.ndarray, axes: Sequence[int]) -> ChunkedKernel | None:
    """A sum, mean or max over the trailing ``axes`` of a contiguous array as one compiled
    pass per row (``c_print.reduce_rows``: a global pool's reduction), the rows split over
    the threads; None where it does not apply (no compiler, other axes, a strided operand,
    another dtype)."""
    nd, k = x.ndim, len(axes)
    if not k or sorted(axes) != list(range(nd - k, nd)) or not x.flags.c_contiguous or \
            not out.flags.c_contiguous or x.dtype != out.dtype or not _compiles(x.size):
        return None
    length = math.prod(x.shape[nd - k:])
    src = c_print.reduce_rows(kind, as_dtype(x.dtype), length)
    if src is None:
        return None
    rows = x.size // length
    return _native_kernel(src, [x, out], rows, max(1, min(thread_count(), rows, x.size // PAR_MIN)))


ROW_MIN = 1 << 12  # a pointwise kernel's row when its operands collapse to one axis


def native_rows(outputs: Sequence[Expr], reductions, ins: Sequence[np.ndarray],
                outs: Sequence[np.ndarray]) -> ChunkedKernel | None:
    """A pointwise or row-reduction kernel as one compiled loop nest (``c_print.rows``): one
    pass over each row per reduction and one for the outputs, in place of NumPy's pass per
    primitive; the rows split over the threads. None without a compiler, for half dtypes,
    or where an output overlaps an input other than element for element."""
    out = outs[0]
    if out.ndim == 0 or not _compiles(out.size) or any(o.shape != out.shape for o in outs):
        return None
    exprs = list(outputs) + [e for _, e in reductions]
    used = sorted({x.value for e in exprs for x in nodes(e) if x.op == "arg"})
    if any(ins[i].ndim > out.ndim for i in used):
        return None
    restrict = True
    for o in outs:
        for i in used:
            if np.may_share_memory(o, ins[i]):
                if ins[i].shape != o.shape or ins[i].strides != o.strides or ins[i].ctypes.data != o.ctypes.data:
                    return None
                restrict = False  # in place, element for element
    strides = [aligned_strides(ins[i], out.shape) for i in used] + [elem_strides(o) for o in outs]
    if reductions:  # the row stays the last axis; the others may merge
        outer, st = collapse(out.shape[:-1], [s[:-1] for s in strides])
        shape, strides = tuple(outer) + out.shape[-1:], [a + s[-1:] for a, s in zip(st, strides)]
    else:
        shape, strides = collapse(out.shape, strides)
        if not shape:
            shape, strides = (1,), [(0,) for _ in strides]
        n = shape[-1]
        if len(shape) == 1 and n > 2 * ROW_MIN:  # one long run: rows of it, for the threads
            row = next((d for d in range(ROW_MIN, 2 * ROW_MIN) if n % d == 0), n)
            shape, strides = (n // row, row), [(s[0] * row, s[0]) for s in strides]
    by_input = dict(zip(used, strides))
    opers = [Operand(as_dtype(ins[i].dtype), by_input[i]) if i in by_input else None for i in range(len(ins))]
    src = c_print.rows(outputs, reductions, opers,
                       [Operand(as_dtype(o.dtype), s) for o, s in zip(outs, strides[len(used):])], shape, restrict)
    if src is None:
        return None
    n_rows = math.prod(shape[:-1])
    parts = max(1, min(thread_count(), n_rows, out.size // NATIVE_PAR_MIN))
    return _native_kernel(src, [ins[i] for i in used] + list(outs), n_rows, parts)


def _matrix(a: np.ndarray, shape: tuple[int, int]) -> tuple[int, int] | None:
    """Element strides of ``a`` as the matrix ``shape`` (its leading axes as rows), or None
    when they do not step as one."""
    try:
        return elem_strides(np.reshape(a, shape, copy=False))
    except ValueError:
        return None


ROWS_SPLIT = 4  # a GEMM's threads split its rows when this many times its rows are as many as its columns
SPLIT_PANELS_MIN = 24  # panels per thread a GEMM needs for its threads to split the panels


def split_rows(m: int, n: int, t: c_print.Tile, parts: int, products: int = 1) -> bool:
    """Whether a compiled GEMM's threads split its blocks of rows (each reads every panel of
    B) rather than its panels (each packs all of A). Packing A costs a thread about a
    panel's work or two, so panels are split only when each thread gets many of them, and
    rows once A is not much the smaller operand (measured on this repo's model shapes)."""
    blocks, n_panels = -(-m // t.rows), c_print.panels(n, products, t)
    return parts > 1 and blocks >= 2 * parts and (ROWS_SPLIT * m >= n * products or n_panels < SPLIT_PANELS_MIN * parts)


def native_gemm(outputs: Sequence[Expr], gemms, ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                constant: frozenset[int]) -> ChunkedKernel | None:
    """A GEMM + epilogue as one compiled kernel (``c_print.gemm``): the products of one f32
    left operand with constant matrices, packed once into column panels (side by side for
    SwiGLU's two), the epilogue applied to each block of the output while it is in
    registers; the panels (or, when A is the larger operand, its rows) split over the
    threads. None where it does not apply (no compiler, a non-constant or batched right operand, half
    or f64 products, more products than a panel holds): the BLAS program runs."""
    if not gemms:
        return None
    n_in, out = len(ins), outs[0]
    leaves = _leaves(outputs)
    products = [j for j in range(len(gemms)) if ("arg", n_in + j) in leaves]
    t = c_print.tile(cc.vector_bytes())
    if not products or len({gemms[j][0] for j in products}) != 1 or t.width % (len(products) * t.lanes) or \
            any(gemms[j][1] not in constant or ins[gemms[j][1]].ndim != 2 for j in products) or \
            any(leaves[("arg", n_in + j)].dtype != DType.f32 for j in products) or out.ndim < 1:
        return None
    x = ins[gemms[products[0]][0]]
    k, n = ins[gemms[products[0]][1]].shape
    if x.dtype != np.float32 or x.shape[-1] != k or x.shape[:-1] != out.shape[:-1] or out.shape[-1] != n or \
            any(ins[gemms[j][1]].shape != (k, n) for j in products) or any(o.shape != out.shape for o in outs):
        return None
    m = math.prod(out.shape[:-1])
    if not _compiles(m * n * k):
        return None
    used = sorted(i for (kind, i) in leaves if kind == "arg" and i < n_in)
    if any(ins[i].ndim > out.ndim or not c_print.supported(as_dtype(ins[i].dtype)) for i in used) or \
            any(not c_print.supported(as_dtype(o.dtype)) for o in outs):
        return None
    a_strides = _matrix(x, (m, k))
    strides = {i: _matrix(np.broadcast_to(ins[i], out.shape), (m, n)) for i in used}
    out_strides = [_matrix(o, (m, n)) for o in outs]
    if a_strides is None or None in strides.values() or None in out_strides:
        return None
    opers = [Operand(as_dtype(ins[i].dtype), strides[i]) if i in used else None for i in range(n_in)]
    parts = gemm_parts(m, n * len(products), k)
    n_panels, blocks = c_print.panels(n, len(products), t), -(-m // t.rows)
    by_rows = split_rows(m, n, t, parts, len(products))
    src = c_print.gemm(outputs, opers, [Operand(as_dtype(o.dtype), s) for o, s in zip(outs, out_strides)],
                       products, n_in, Operand(DType.f32, a_strides), m, k, n, t, by_rows)
    packed = c_print.pack_panels([ins[gemms[j][1]] for j in products], t)
    arrays = [x, packed] + [ins[i] for i in used] + list(outs)
    return _native_kernel(src, arrays, blocks if by_rows else n_panels, parts)


def gemm_parts(m: int, n: int, k: int) -> int:
    """How many threads a compiled GEMM of M×K by a constant K×N runs on."""
    return thread_count() if m * n * k >= GEMM_PAR_MIN or n * k >= GEMV_PAR_MIN else 1


def matmul_kernel(a: np.ndarray, b: np.ndarray, out: np.ndarray, constant_b: bool = False) -> ChunkedKernel:
    """``np.matmul(a, b, out=out)`` cut into blocks of rows (or columns) across the threads;
    by a constant matrix, the compiled GEMM where it applies (``native_gemm``)."""
    if constant_b and out.dtype == np.float32:
        native = native_gemm((arg(2, DType.f32),), ((0, 1),), [a, b], [out], frozenset({1}))
        if native is not None:
            return native
    if min(a.ndim, b.ndim) < 2 or out.size * a.shape[-1] < GEMM_PAR_MIN or thread_count() == 1:
        return serial("matmul", [(np.matmul, (a, b, out))])
    rank = out.ndim
    a_axes, b_axes = aligned(a.ndim, rank)[:-1] + [None], aligned(b.ndim, rank)[:-2] + [None, None]
    blocks = gemm_blocks(out.shape, thread_count(), True)
    lists = [[(np.matmul, (take(a, blocks[i], a_axes), take(b, blocks[i], b_axes)[..., blocks[i][-1]], out[blocks[i]]))
              for i in group] for group in split(len(blocks), thread_count())]
    return ChunkedKernel("matmul", [lists])


def _attention(s: Attention, ins: Sequence[np.ndarray], outs: Sequence[np.ndarray]) -> ChunkedKernel:
    """Per block of query rows: scores = q·kᵀ into scratch, the score expression and the
    causal mask in place, a softmax over the rows, then scores·v into the output block."""
    out = outs[0]
    rank = out.ndim
    q, k, v = ins[s.q], ins[s.k], ins[s.v]
    sk = k.shape[-2]
    threads = thread_count() if out.size * sk >= 1 << 20 else 1
    rows = min(SCORES // max(1, sk), -(-math.prod(out.shape[:-1]) // threads))  # query rows per block
    chunks = plan_chunks(out.shape, 1, max(1, rows) * out.shape[-1])
    leaves = _leaves([s.score])
    score = leaves.get(("arg", 0))
    masks = sorted(i - 1 for (kind, i) in leaves if kind == "arg" and i > 0)
    acc = (score.dtype if score is not None else DType.f32).np
    q_axes = aligned(q.ndim, rank)[:-1] + [None]
    probs_leaf = next((x for x in nodes(s.probs) if x.op == "arg"), None) if s.probs is not None else None

    def parts(index):
        qc = take(q, index, q_axes)
        kc, vc = (take(t, index, aligned(t.ndim, rank)[:-2] + [None, None]) for t in (k, v))
        ms = [take(ins[i], index, aligned(ins[i].ndim, rank)[:-1] + [None]) for i in masks]
        scores = np.broadcast_shapes(qc.shape[:-2], kc.shape[:-2]) + (qc.shape[-2], sk)
        shapes = {leaves[("arg", i + 1)]: m.shape for i, m in zip(masks, ms)}
        if score is not None:
            shapes[score] = scores
        if probs_leaf is not None:
            shapes[probs_leaf] = scores
        return qc, kc, vc, ms, scores, shapes

    native = _compiled_attention(s, masks, ins, out) if _compiles(out.size * sk) else None
    if native is None and _compiles(out.size * sk):
        native = _native_attention(s, masks, chunks, parts, out, acc, threads)
    if native is not None:
        return native
    *_, first_scores, first_shapes = parts(chunks[0])
    prog = Program()
    for leaf, shape in first_shapes.items():
        prog.leaf(leaf, "S" if leaf is score else f"m{leaf.value - 1}", shape)
    dt = f"np.{np.dtype(acc).name}"
    prog.lines.append(f"np.matmul(q, np.swapaxes(k, -1, -2), out=S, dtype={dt})")
    prog.prepare([s.score])
    prog.compute([s.score], ["S"])
    if s.causal:
        prog.lines.append("np.copyto(S, -np.inf, where=CM)")
    prog.lines += ["np.max(S, axis=-1, keepdims=True, out=R)", "np.subtract(S, R, out=S)", "np.exp(S, out=S)",
                   "np.sum(S, axis=-1, keepdims=True, out=R)", "np.divide(S, R, out=S)"]
    if s.probs is not None:  # an elementwise map of the probabilities, in place (its arg(0) is S now)
        prog.name = {e: n for e, n in prog.name.items() if e.is_leaf}
        prog.leaf(probs_leaf, "S", first_scores)
        prog.prepare([s.probs])
        prog.compute([s.probs], ["S"])
    prog.lines.append(f"np.matmul(S, v, out=o, dtype={dt})")
    params = ["q", "k", "v"] + [f"m{i}" for i in masks] + ["S", "R", "CM", "o", "T"]
    fn, src, consts = generated(params, prog.lines, prog.consts)
    lists: list[list[Call]] = []
    for group in split(len(chunks), threads):  # each thread: its blocks of rows, its own scratch
        sbuf, rbuf = np.empty(first_scores, acc), np.empty(first_scores[:-1] + (1,), acc)
        scratch = [np.empty(prog.shape(e), d) for e, d in prog.slots]
        calls: list[Call] = []
        for index in (chunks[c] for c in group):
            qc, kc, vc, ms, scores, shapes = parts(index)
            row0 = index[rank - 2].start or 0
            cm = np.triu(np.ones(scores[-2:], bool), k=row0 + 1) if s.causal else None
            calls.append((fn, (qc, kc, vc, *ms, fit(sbuf, scores), fit(rbuf, scores[:-1] + (1,)), cm, out[index],
                               prog.slot_views(scratch, shapes)) + consts))
        lists.append(calls)
    return ChunkedKernel(src, [lists])


def _softmax_rows(s: Attention, masks: list[int], dtypes: tuple[DType, ...]) -> tuple[tuple, tuple]:
    """The score expression, causal mask, softmax and map of the probabilities as a row
    kernel over the scores in place (its arg(0); the masks follow, then the causal mask)."""
    mapping = {0: 0, **{1 + i: 1 + j for j, i in enumerate(masks)}}
    score = remap(s.score, mapping)
    if s.causal:
        score = call("where", arg(1 + len(masks)), const(-math.inf), score)
    e = call("exp", score - red(0))
    probs = e / red(1)
    if s.probs is not None:
        probs = rebuild(s.probs, lambda x: probs if x.op == "arg" else x)
    acc = dtypes[0]
    return (typed(probs, dtypes, (acc, acc)),), (("max", typed(score, dtypes)), ("sum", typed(e, dtypes, (acc,))))


def _attn_operand(x: np.ndarray, batch: tuple[int, ...]) -> AttnOperand:
    st = aligned_strides(x, batch + x.shape[-2:])
    return AttnOperand(as_dtype(x.dtype), st[:-2], st[-2], st[-1])


def _compiled_attention(s: Attention, masks: list[int], ins: Sequence[np.ndarray], out: np.ndarray):
    """The whole of an f32 attention as one compiled kernel (``c_print.attention``): per
    batch index and block of query rows, both products by the register micro-kernel and
    the softmax between them, the block's scores in L1; the blocks split over the threads.
    None where it does not apply (another dtype, a product in f64)."""
    q, k, v = ins[s.q], ins[s.k], ins[s.v]
    if any(x.dtype != np.float32 for x in (q, k, v, out)) or q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        return None
    batch = out.shape[:-2]
    sq, d, sk, dv = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    mask_arrays = [ins[i] for i in masks]
    dtypes = (DType.f32, *(as_dtype(m.dtype) for m in mask_arrays))
    if any(not c_print.supported(x) for x in dtypes):
        return None
    try:
        score = typed(remap(s.score, {0: 0, **{1 + i: 1 + j for j, i in enumerate(masks)}}), dtypes)
        probs = typed(s.probs, (DType.f32,)) if s.probs is not None else None
    except DTypeError:
        return None
    if score.dtype != DType.f32 or (probs is not None and probs.dtype != DType.f32):
        return None
    t = c_print.tile(cc.vector_bytes())
    units_min = thread_count() * BALANCE
    nb = math.prod(batch)
    rb = c_print.attention_rows(sq, sk, units_min, nb, t)
    scores = batch + (sq, sk)
    mops = []
    for m in mask_arrays:
        st = aligned_strides(m, scores)
        mops.append(AttnOperand(as_dtype(m.dtype), st[:-2], st[-2], st[-1]))
    src = c_print.attention(score, probs, *(_attn_operand(x, batch) for x in (q, k, v, out)), mops,
                            batch, sq, sk, d, dv, s.causal, t, rb)
    units = nb * -(-sq // rb)
    parts = max(1, min(units, units_min, out.size * sk // NATIVE_PAR_MIN))
    return _native_kernel(src, [q, k, v, *mask_arrays, out], units, parts)


def _native_attention(s: Attention, masks: list[int], chunks, parts, out: np.ndarray, acc, threads: int):
    """Attention with the middle compiled: per block of query rows, q·kᵀ into scratch (BLAS),
    the score expression, causal mask and softmax as one row kernel over the scores in place
    (``native_rows``: two passes where NumPy makes six), then the scores times v (BLAS).
    None where the row kernel does not apply."""
    if acc != np.float32:
        return None
    matmul = partial(np.matmul, dtype=acc)
    kernels = None
    lists: list[list[Call]] = []
    for group in split(len(chunks), threads):
        calls: list[Call] = []
        sbuf = None
        for c in group:
            index = chunks[c]
            qc, kc, vc, ms, scores, _ = parts(index)
            sbuf = np.empty(scores, acc) if sbuf is None else sbuf
            scores_buf = fit(sbuf, scores)
            row0 = index[out.ndim - 2].start or 0
            extra = [np.triu(np.ones(scores[-2:], bool), k=row0 + 1)] if s.causal else []
            ins = [scores_buf, *ms, *extra]
            if kernels is None:
                try:  # the expression typed as the arrays are stored (a half mask stays with NumPy)
                    kernels = _softmax_rows(s, masks, tuple(as_dtype(a.dtype) for a in ins))
                except DTypeError:
                    return None
            softmax = native_rows(kernels[0], kernels[1], ins, [scores_buf])
            if softmax is None:
                return None
            calls += [(matmul, (qc, np.swapaxes(kc, -1, -2), scores_buf)), *softmax.calls,
                      (matmul, (scores_buf, vc, out[index]))]
        lists.append(calls)
    return ChunkedKernel("attention: q·kᵀ (BLAS), compiled softmax rows, ·v (BLAS)", [lists])


def window(tap: tuple[int, ...], dilations, strides, sizes: tuple[int, ...], start: int = 0) -> tuple[slice, ...]:
    """The slices of the (zero-bordered) input one kernel tap reads for ``sizes`` output
    positions per spatial axis, the first axis from output row ``start``."""
    firsts = (start,) + (0,) * (len(sizes) - 1)
    return tuple(slice(k * d + st * f, k * d + st * (f + o - 1) + 1, st)
                 for k, d, st, o, f in zip(tap, dilations, strides, sizes, firsts))


def _conv(s: Conv, ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], constant: frozenset[int]) -> ChunkedKernel:
    """Per image: the convolution into an f32 (f64 for f64) product buffer, then its
    epilogue over that image. A grouped convolution with C/group > 1 is one batched GEMM of
    the weight (group, M/group, C/group·taps) with the windows copied tap by tap into
    (group, C/group·taps, pixels) (a 1×1 unit-stride one reads the image as it is); a
    depthwise one accumulates tap by tap. Constant weights are converted once, at build."""
    native = _native_conv(s, ins, outs) or _native_winograd(s, ins, outs, constant) or \
        _native_conv_gemm(s, ins, outs, constant)
    if native is not None:
        return native
    x, w, out = ins[s.x], ins[s.w], outs[0]
    n_in, g = len(ins), s.group
    n_sp = x.ndim - 2
    acc = np.float64 if x.dtype == np.float64 else np.float32
    osp = out.shape[2:]
    c, m, taps = x.shape[1], w.shape[0], w.shape[2:]
    lo, hi = s.pads[:n_sp], s.pads[n_sp:]
    plain = not any(s.pads)  # read the image where it is; else from a zero-bordered copy
    depthwise = g == c == m and w.shape[1] == 1
    unit = all(t == 1 for t in taps) and all(st == 1 for st in s.strides) and plain
    grid = None  # im2col from a phase grid: each tap's columns one contiguous run per channel
    if not depthwise and not unit and n_sp:
        grid = PhaseGrid(s, x.shape[1:], osp, tuple(taps), acc)
        if grid.run > 1.1 * math.prod(osp):  # too many junk columns (small images): copy tap views
            grid = None
    padded = None if plain or depthwise or grid else np.zeros(
        (c,) + tuple(d + a + b for d, a, b in zip(x.shape[2:], lo, hi)), acc)
    interior = (slice(None),) + tuple(slice(a, a + d) for a, d in zip(lo, x.shape[2:]))

    def tap_view(src: np.ndarray, tap: tuple[int, ...]) -> np.ndarray:
        return src[(slice(None),) + window(tap, s.dilations, s.strides, osp)]

    def converted(i: int, shape: tuple) -> tuple[np.ndarray, list]:
        """Input i reshaped and in ``acc``: a view when it can be, else a buffer refreshed per run."""
        a = ins[i]
        if a.dtype == acc:
            v = a.reshape(shape)
            if np.shares_memory(v, a):
                return v, []
        if i in constant:
            return a.astype(acc).reshape(shape), []
        buf = np.empty(shape, acc)
        return buf, [(np.copyto, (buf.reshape(a.shape), a))]

    setup: list[Call] = []
    bias = None
    if s.bias is not None:
        bias, more = converted(s.bias, (m,) + (1,) * n_sp)
        setup += more
    all_taps = list(np.ndindex(*taps))
    pixels = math.prod(osp)
    if depthwise:
        wt, more = converted(s.w, (m, math.prod(taps)))
        setup += more
        dw = Depthwise(s, x.shape[1:], osp, tuple(taps), wt, bias, acc, s.w in constant)
        setup += dw.setup
    else:
        k = w.shape[1] * math.prod(taps)
        wmat, more = converted(s.w, (g, m // g, k))
        setup += more
        if grid is not None:
            cols = np.empty((c, len(all_taps), grid.run), acc)
            grid_out = np.empty((m, grid.run), acc) if g > 1 else None  # g == 1: per-thread blocks
        elif unit and x.dtype == acc and x.flags.c_contiguous:
            cols = None
        else:
            cols = np.empty((c,) + tuple(taps) + tuple(osp), acc)

    leaves = _leaves(s.outputs)
    direct = s.outputs == (leaves.get(("arg", n_in)),) and out.dtype == acc and out.flags.c_contiguous and not any(
        np.may_share_memory(out, a) for a in ins)  # the product written in place: a reshape of out must be a view
    product = None if direct or (g == 1 and n_sp and not depthwise) else np.empty((1, m) + tuple(osp), acc)
    phases: list[list[list[Call]]] = [[setup]]

    def by_channels(n: int, per_channel: int, calls_for: Callable[[slice], list[Call]]) -> list[list[Call]]:
        """One call list per thread, each over its range of ``n`` channels."""
        return [calls_for(slice(r.start, r.stop)) for r in split(n, threads_for(n * per_channel))]

    def epilogue(region: tuple, product: np.ndarray) -> ChunkedKernel:
        """The epilogue over ``region`` of the output, where the convolution is ``product``."""
        region_ins = [take(a, region, aligned(a.ndim, out.ndim)) if a.ndim <= out.ndim else a for a in ins]
        return _rows(s.outputs, (), (), region_ins + [product], [o[region] for o in outs], fixed=0)

    def fused(b: int, rhs: np.ndarray, rest: tuple[int, ...]) -> list[list[Call]]:
        """Image ``b``'s GEMM with bias and epilogue: each thread computes its block of the
        product (a range of output rows, or of channels when the image is smaller than the
        channel count), then adds the bias and runs the epilogue on it while it is in cache.
        ``rhs`` has ``prod(rest)`` columns per output row (more than the output's width when
        they come from a phase grid: the junk columns are dropped)."""
        w2, width = wmat.reshape(m, k), math.prod(rest)
        threads = thread_count() if m * k * pixels >= GEMM_PAR_MIN else 1
        if pixels >= m:
            blocks = [(slice(0, m), slice(r.start, r.stop)) for r in split(osp[0], threads)]
        else:
            blocks = [(slice(r.start, r.stop), slice(0, osp[0])) for r in split(m, threads)]
        lists = []
        for ch, rows in blocks:
            nrows, nch = rows.stop - rows.start, ch.stop - ch.start
            buf = np.empty((nch, nrows * width), acc)
            calls: list[Call] = [(np.matmul, (w2[ch], rhs[:, rows.start * width:rows.stop * width], buf))]
            valid = buf.reshape((nch, nrows) + tuple(rest))[(slice(None), slice(None)) +
                                                             tuple(slice(0, o) for o in osp[1:])]
            region = (slice(b, b + 1), ch, rows) + (slice(None),) * (n_sp - 1)
            if direct:
                dst = out[region][0]
                calls.append((np.add, (valid, bias[ch], dst)) if bias is not None else (np.copyto, (dst, valid)))
            else:
                if bias is not None:
                    calls.append((np.add, (valid, bias[ch], valid)))
                calls += epilogue(region, valid[None]).calls
            lists.append(calls)
        return lists

    for b in range(x.shape[0]):
        p = out[b:b + 1] if direct else product
        img = x[b]
        if plain or depthwise or grid:
            src = img
        else:
            src = padded
            phases.append(by_channels(c, img[0].size, lambda r: [(np.copyto, (padded[interior][r], img[r]))]))
        if depthwise:
            phases += dw.phases(img, p[0])
        elif grid is not None:
            phases.append(by_channels(c, img[0].size, lambda r: grid.fill(img, r)))
            phases.append(by_channels(c, len(all_taps) * grid.run, lambda r: [
                (np.copyto, (cols[r, t], grid.tap(tap, r))) for t, tap in enumerate(all_taps)]))
            if g == 1:
                phases.append(fused(b, cols.reshape(k, grid.run), grid.q[1:]))
                continue
            phases += matmul_kernel(wmat, cols.reshape(g, k, grid.run), grid_out.reshape(g, m // g, grid.run)).phases
            valid = grid.valid(grid_out)
            phases.append(by_channels(m, pixels, lambda r: [
                (np.add, (valid[r], bias[r], p[0][r])) if bias is not None else (np.copyto, (p[0][r], valid[r]))]))
        else:
            if cols is None:
                rhs = src.reshape(g, k, pixels)
            else:
                phases.append(by_channels(c, len(all_taps) * pixels, lambda r: [
                    (np.copyto, (cols[(r,) + tap], tap_view(src[r], tap))) for tap in all_taps]))
                rhs = cols.reshape(g, k, pixels)
            if g == 1 and n_sp:
                phases.append(fused(b, rhs.reshape(k, pixels), osp[1:]))
                continue
            phases += matmul_kernel(wmat, rhs, p.reshape(g, m // g, pixels)).phases
            if bias is not None:
                phases.append(by_channels(m, pixels, lambda r: [(np.add, (p[0][r], bias[r], p[0][r]))]))
        if not direct:
            phases += epilogue((slice(b, b + 1),) + (slice(None),) * (out.ndim - 1), p).phases
    src_text = f"conv {x.shape} * {w.shape} group={g} ({'depthwise' if depthwise else 'im2col GEMM'})"
    return ChunkedKernel(src_text, phases)


DIRECT_CONV_DEPTH = 8   # a convolution summing fewer products per output runs direct, not as a GEMM
DIRECT_FEW_CHANNELS = 4  # input channels per group of a spatial kernel that runs direct up to ...
DIRECT_TAPS_DEPTH = 64   # ... this many products per output
NATIVE_PAR_MIN = 1 << 16  # multiply-adds a compiled kernel's thread hand-off is worth
BALANCE = 4  # lists per thread of a long kernel, handed out as threads come free: a slow core's share moves


def runs_direct(w_shape: Sequence[int]) -> bool:
    """Whether a convolution by weights of this shape runs the direct loop nest rather than
    a GEMM: depthwise, under ``DIRECT_CONV_DEPTH`` products per output, or a spatial kernel
    over so few channels that its sums are too short for a GEMM's tiles to pay back their
    packing and epilogue (a 3×3 stem over 3 or 4 channels: 1.4-1.7× faster direct; at
    72-150 products the two tie, and a 16×16 patch embedding is 3× slower direct)."""
    cg, taps = w_shape[1], math.prod(w_shape[2:])
    return cg == 1 or cg * taps < DIRECT_CONV_DEPTH or \
        (taps > 1 and cg <= DIRECT_FEW_CHANNELS and cg * taps <= DIRECT_TAPS_DEPTH)


def runs_lanes(x_shape: Sequence[int], w_shape: Sequence[int], group: int, out_shape: Sequence[int]) -> bool:
    """Whether a depthwise convolution (one input channel per output channel) runs with
    channels as vector lanes (``c_print.conv_lanes``) rather than output columns
    (``conv_direct``): where output rows are at most ``LANES_MAX_WIDTH`` wide (a narrow row
    fills few lanes and few FMA chains) and there are channels enough to fill a vector."""
    return group == x_shape[1] == w_shape[0] and w_shape[1] == 1 and out_shape[-1] <= LANES_MAX_WIDTH and \
        x_shape[1] >= c_print.LANE_CHANNELS


LANES_MAX_WIDTH = 64  # wider rows run conv_direct: measured, lanes ahead by 10-70% up to 56-wide outputs, even at 112


def _native_conv(s: Conv, ins: Sequence[np.ndarray], outs: Sequence[np.ndarray]) -> ChunkedKernel | None:
    """A depthwise, thin grouped or few-channel convolution with its epilogue as one
    compiled loop nest (``c_print``), its output planes split over the threads; None without
    a compiler, where it runs as a GEMM (``runs_direct``) or where the CPU printer has no
    loop nest (then the NumPy program runs)."""
    x, w, out = ins[s.x], ins[s.w], outs[0]
    depth = w.shape[1] * math.prod(w.shape[2:])
    if not _compiles(out.size * depth) or not runs_direct(w.shape) or any(o.shape != out.shape for o in outs):
        return None
    n_in = len(ins)
    epilogue = {q.value for e in s.outputs for q in nodes(e) if q.op == "arg" and q.value != n_in}
    if s.x in epilogue or s.w in epilogue or any(ins[i].ndim > out.ndim for i in epilogue):
        return None

    def operand(i: int) -> Operand | None:
        dt = as_dtype(ins[i].dtype)
        if i in (s.x, s.w, s.bias):
            return Operand(dt, own_strides(ins[i]))
        return Operand(dt, aligned_strides(ins[i], out.shape)) if i in epilogue else None
    opers = [operand(i) for i in range(n_in)]
    acc = DType.f64 if x.dtype == np.float64 else DType.f32
    out_opers = [Operand(as_dtype(o.dtype), elem_strides(o)) for o in outs]
    src = c_print.conv_lanes(s.outputs, opers, out_opers, out.shape, n_in, s.x, x.shape, s.w, w.shape, s.bias,
                             s.strides, s.pads[:x.ndim - 2], s.dilations) \
        if runs_lanes(x.shape, w.shape, s.group, out.shape) else None
    lanes = src is not None
    if not lanes:
        src = c_print.conv_direct(s.outputs, opers, out_opers, out.shape, n_in, s.x, x.shape, s.w, w.shape, s.bias,
                                  s.strides, s.pads[:x.ndim - 2], s.dilations, s.group, acc)
    if src is None:
        return None
    n = c_print.lane_units(x.shape) if lanes else c_print.planes(out.shape)
    parts = max(1, min(thread_count(), n, out.size * depth // NATIVE_PAR_MIN))
    return _native_kernel(src, [ins[i] for i, o in enumerate(opers) if o is not None] + list(outs), n, parts)


def _native_conv_operands(s: Conv, ins: Sequence[np.ndarray], outs: Sequence[np.ndarray]) \
        -> tuple[c_print.ConvGeometry, list[int]] | None:
    """The geometry of a convolution the compiled kernels run, and the inputs its epilogue
    reads; None where they do not apply (no compiler, f64 or half images or epilogues, a 3-D
    convolution, an epilogue reading the image or the weights)."""
    x, w, out = ins[s.x], ins[s.w], outs[0]
    geo = c_print.conv_geometry(x.shape, w.shape, out.shape, s.strides, s.pads, s.dilations, s.group)
    n_in = len(ins)
    used = sorted({q.value for e in s.outputs for q in nodes(e) if q.op == "arg" and q.value != n_in} |
                  ({s.bias} if s.bias is not None else set()))
    if geo is None or x.dtype != np.float32 or not np.issubdtype(w.dtype, np.floating) or s.x in used or s.w in used or \
            not _compiles(out.size * math.prod(w.shape[1:])) or any(o.shape != out.shape for o in outs) or \
            any(ins[i].ndim > out.ndim or not c_print.supported(as_dtype(ins[i].dtype)) for i in used) or \
            any(not c_print.supported(as_dtype(o.dtype)) for o in outs) or \
            (s.bias is not None and ins[s.bias].ndim != 1):
        return None
    return geo, used


WINOGRAD_MIN_CHANNELS = 16  # fewer input or output channels: the transforms outweigh the GEMMs' savings
WINOGRAD_MIN_TILES = 12     # fewer tiles: the transformed weights (4× the size) stream from memory for little work


def _native_winograd(s: Conv, ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                     constant: frozenset[int]) -> ChunkedKernel | None:
    """A 3×3 unit-stride convolution by constant weights as Winograd's F(4×4, 3×3)
    (``winograd``): the image's patches transformed (threads split the channels), 36 GEMMs
    by the transformed weights packed once (threads split each GEMM's panels or rows), the
    products transformed back with the epilogue (threads split the tiles). None where it
    does not apply: ``_native_conv_gemm`` runs it."""
    found = _native_conv_operands(s, ins, outs)
    if found is None or s.w not in constant:
        return None
    geo, used = found
    x, w, out = ins[s.x], ins[s.w], outs[0]
    th_n, tw_n = winograd.tiles(geo)
    t_all, n_in, parts = geo.n * th_n * tw_n, len(ins), thread_count()
    if not winograd.applies(geo) or min(geo.c, geo.m) < WINOGRAD_MIN_CHANNELS or t_all < WINOGRAD_MIN_TILES:
        return None
    v = np.empty((geo.c, winograd.ELEMENTS, t_all), np.float32)  # each channel's transforms together
    m = np.empty((t_all, winograd.ELEMENTS, geo.m), np.float32)  # each tile's products together
    src = winograd.input_transform(geo, Operand(as_dtype(x.dtype), own_strides(x)))
    phases = _native_kernel(src, [x, v], geo.n * geo.c, max(1, min(parts * BALANCE, geo.n * geo.c))).phases
    t = c_print.tile(cc.vector_bytes())
    u = winograd.transform_weights(np.asarray(w))
    packed = np.stack([c_print.pack_panels([u[e]], t) for e in range(winograd.ELEMENTS)])
    n_panels, blocks = c_print.panels(geo.m, 1, t), -(-t_all // t.rows)
    by_rows = split_rows(t_all, geo.m, t, parts)
    gemm = c_print.gemm((arg(0, DType.f32),), [], [Operand(DType.f32, (winograd.ELEMENTS * geo.m, 1))], [0], 0,
                        Operand(DType.f32, (1, winograd.ELEMENTS * t_all)), t_all, geo.c, geo.m, t, by_rows)
    batched = winograd.gemms(gemm, geo, packed[0].size)
    phases += _native_kernel(batched, [v, packed, m], blocks if by_rows else n_panels, parts).phases
    opers = [Operand(as_dtype(ins[i].dtype), own_strides(ins[i]) if i == s.bias else aligned_strides(ins[i], out.shape))
             if i in used else None for i in range(n_in)]
    back = winograd.output_transform(s.outputs, opers, [Operand(as_dtype(o.dtype), elem_strides(o)) for o in outs],
                                     n_in, s.bias, geo)
    phases += _native_kernel(back, [m] + [ins[i] for i in used] + list(outs), t_all,
                             max(1, min(parts * BALANCE, t_all))).phases
    return ChunkedKernel(src.text + batched.text + back.text, phases)


def _native_conv_gemm(s: Conv, ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                      constant: frozenset[int]) -> ChunkedKernel | None:
    """A 1-D or 2-D convolution with its epilogue as the compiled convolution GEMM
    (``c_print.conv_gemm``): the weights packed into blocks of output channels (once when
    they are constant, else each run), the image copied into zero-bordered phase planes
    (read where it is when it already is one: a 1×1 or unpadded unit-stride convolution of
    a contiguous image), then tiles of output channels × pixels split over the threads.
    None where it does not apply (``_native_conv_operands``): the NumPy program runs."""
    found = _native_conv_operands(s, ins, outs)
    if found is None:
        return None
    geo, used = found
    x, w, out = ins[s.x], ins[s.w], outs[0]
    n_in = len(ins)
    t = c_print.tile(cc.vector_bytes())
    by_rows = _native_conv_by_rows(s, ins, outs, geo, used, t) if _by_pixel_rows(geo, t) and s.w in constant else None
    if by_rows is not None:
        return by_rows
    planes, strides, phases = _phase_planes(geo, x, max(geo.taps()) + geo.panels(t.width) * t.width)
    weights = c_print.conv_weight_blocks(w.shape, s.group, t)
    if s.w in constant:  # packed once; weights that are inputs, per run
        c_print.pack_conv_weights(w, weights)
    else:
        phases.insert(0, [[(c_print.pack_conv_weights, (w, weights))]])
    kc = c_print.conv_slice(geo, t)
    chunk = c_print.conv_chunk(geo, t, kc, thread_count() * BALANCE)
    span = c_print.conv_span(geo, t, kc)
    opers = [Operand(as_dtype(ins[i].dtype), own_strides(ins[i]) if i == s.bias else aligned_strides(ins[i], out.shape))
             if i in used else None for i in range(n_in)]
    src = c_print.conv_gemm(s.outputs, opers, [Operand(as_dtype(o.dtype), elem_strides(o)) for o in outs], n_in,
                            s.bias, geo, strides, t, chunk, span, kc)
    tiles = c_print.conv_tiles(geo, t, chunk, span, kc)
    parts = max(1, min(thread_count() * BALANCE, tiles, out.size * math.prod(w.shape[1:]) // NATIVE_PAR_MIN))
    gemm = _native_kernel(src, [planes, weights] + [ins[i] for i in used] + list(outs), tiles, parts)
    return ChunkedKernel(gemm.source, phases + gemm.phases)


def _phase_planes(geo: c_print.ConvGeometry, x: np.ndarray, reach: int) -> tuple[np.ndarray, tuple[int, int], list]:
    """The image as ``conv_gemm``'s phase planes, their (image, channel) strides, and the
    phase copying them (none when the image already is one: a 1×1 or unpadded unit-stride
    convolution of a contiguous image whose memory holds ``reach`` elements past a
    channel's start)."""
    plain = geo.strides == (1, 1) and not any(geo.pads) and x.strides[-1] == 4 and \
        (x.ndim == 3 or x.strides[-2] == 4 * geo.width) and geo.wq == geo.width and geo.hq == geo.height
    if plain and _readable(x, (x.shape[0] - 1) * x.strides[0] // 4 + (geo.c - 1) * x.strides[1] // 4 + reach):
        return x, (x.strides[0] // 4, x.strides[1] // 4), []
    per_image = geo.c * geo.channel
    planes = np.empty(geo.n * per_image + max(0, reach - geo.channel), np.float32)
    copy = c_print.conv_planes(geo, Operand(as_dtype(x.dtype), own_strides(x)))
    return planes, (per_image, geo.channel), _native_kernel(copy, [x, planes], geo.n * geo.c,
                                                            max(1, min(thread_count(), planes.size // PAR_MIN))).phases


def _by_pixel_rows(geo: c_print.ConvGeometry, t: c_print.Tile) -> bool:
    """Whether a single image's convolution wastes less as a GEMM with output pixels as
    rows (blocks of ``t.rows`` pixels, no junk columns) than as ``conv_gemm``'s panels of
    ``t.width`` plane pixels: a small output (7×7: 49 of 64 panel columns used, 49 of 54
    rows)."""
    pixels = geo.out_h * geo.out_w
    by_panels = pixels / (geo.panels(t.width) * t.width)
    by_rows = pixels / (-(-pixels // t.rows) * t.rows)
    return geo.n == 1 and geo.group == 1 and by_rows > PIXEL_ROWS_GAIN * by_panels


PIXEL_ROWS_GAIN = 1.1  # how much less a convolution must waste as pixel rows to run that way


def _native_conv_by_rows(s: Conv, ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], geo: c_print.ConvGeometry,
                         used: list[int], t: c_print.Tile) -> ChunkedKernel | None:
    """A single image's convolution by constant weights as the compiled GEMM (``c_print.gemm``)
    with output pixels as rows: A's rows the windows, gathered from the phase planes as
    they are packed (``c_print.conv_rows``); B the weights (channels·taps × output channels)
    packed once; the bias and epilogue applied to each tile (the output written transposed,
    pixels along its rows)."""
    x, w, out = ins[s.x], ins[s.w], outs[0]
    n_in, pixels = len(ins), geo.out_h * geo.out_w

    def matrix(st: tuple[int, ...]) -> tuple[int, int] | None:  # (N, M, H, W) strides as (pixel, channel)
        sp = st[2:] if len(st) == 4 else (0,) + tuple(st[2:])
        if geo.out_h > 1 and geo.out_w > 1 and sp[0] != sp[1] * geo.out_w:
            return None
        return (sp[1] if geo.out_w > 1 else sp[0], st[1])
    mats = {i: matrix(aligned_strides(ins[i], out.shape)) for i in used if i != s.bias}
    out_mats = [matrix(elem_strides(o)) for o in outs]
    if None in mats.values() or None in out_mats:
        return None
    if s.bias is not None:
        if ins[s.bias].dtype != np.float32:
            return None
        mats[s.bias] = (0, elem_strides(ins[s.bias])[0])
    dtypes = tuple(as_dtype(a.dtype) for a in ins) + (DType.f32,)
    conv = arg(n_in) if s.bias is None else call("add", arg(n_in), arg(s.bias))  # the bias joins in f32
    try:
        outputs = [typed(rebuild(e, lambda q: conv if q.op == "arg" and q.value == n_in else q), dtypes)
                   for e in s.outputs]
    except DTypeError:
        return None
    planes, _, phases = _phase_planes(geo, x, max(geo.taps()) + geo.pixels)
    opers = [Operand(as_dtype(ins[i].dtype), mats[i]) if i in mats else None for i in range(n_in)]
    parts = gemm_parts(pixels, geo.m, geo.products)
    n_panels, blocks = c_print.panels(geo.m, 1, t), -(-pixels // t.rows)
    by_rows = split_rows(pixels, geo.m, t, parts)
    src = c_print.gemm(outputs, opers, [Operand(as_dtype(o.dtype), st) for o, st in zip(outs, out_mats)], [0], n_in,
                       Operand(DType.f32, (1, pixels)), pixels, geo.products, geo.m, t, by_rows, c_print.conv_rows(geo))
    packed = c_print.pack_panels([np.asarray(w, np.float32).reshape(geo.m, -1).T], t)
    gemm = _native_kernel(src, [planes, packed] + [ins[i] for i in sorted(mats)] + list(outs),
                          blocks if by_rows else n_panels, parts)
    return ChunkedKernel(gemm.source, phases + gemm.phases)


def _readable(a: np.ndarray, elements: int) -> bool:
    """Whether the allocation ``a`` lives in holds ``elements`` f32 from ``a``'s first one
    (a kernel may read junk past a view's end, but not past its memory)."""
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    return a.ctypes.data + 4 * elements <= np.lib.array_utils.byte_bounds(root)[1]


class PhaseGrid:
    """An image laid out so that every tap of a convolution is one contiguous run per
    channel: the zero-bordered image split into its stride phases (a strided convolution of
    the image is a unit-stride one of its phases), each phase's channels stored flat. A tap's
    run covers the output's rows at the phase's full width; the columns past the output's
    width are junk, dropped by ``valid``."""

    def __init__(self, s: Conv, image: tuple[int, ...], osp: tuple[int, ...], taps: tuple[int, ...], acc) -> None:
        self.s, self.c, self.osp = s, image[0], osp
        spatial = image[1:]
        n = len(spatial)
        self.lo = s.pads[:n]
        self.padded = tuple(d + a + b for d, a, b in zip(spatial, self.lo, s.pads[n:]))
        self.q = tuple(-(-p // st) for p, st in zip(self.padded, s.strides))  # a phase's size
        self.size = math.prod(self.q)
        self.run = osp[0] * math.prod(self.q[1:])  # a tap's run per channel
        self.taps = list(np.ndindex(*taps))
        self.keys = list(np.ndindex(*s.strides))
        self.acc = acc

    @cached_property
    def flat(self) -> np.ndarray:
        """Each phase's channels, flat, with a zero tail for the last channel's junk columns
        (made when first used)."""
        tail = max(0, max(self.offset(t) for t in self.taps) + self.run - self.size)
        return np.zeros((len(self.keys), self.c * self.size + tail), self.acc)

    @cached_property
    def phase(self) -> list[np.ndarray]:
        return [f[:self.c * self.size].reshape((self.c,) + self.q) for f in self.flat]

    def offset(self, tap: tuple[int, ...]) -> int:
        """Where a tap's run starts in its phase's flat channel."""
        off, stride = 0, 1
        for k, d, st, q in reversed(list(zip(tap, self.s.dilations, self.s.strides, self.q))):
            off += (k * d // st) * stride
            stride *= q
        return off

    def tap(self, tap: tuple[int, ...], channels: slice) -> np.ndarray:
        """A (channels, run) view of what ``tap`` reads."""
        flat = self.flat[self.keys.index(tuple(k * d % st for k, d, st in zip(tap, self.s.dilations, self.s.strides)))]
        n = channels.stop - channels.start
        return np.lib.stride_tricks.as_strided(flat[channels.start * self.size + self.offset(tap):], (n, self.run),
                                               (self.size * flat.itemsize, flat.itemsize), writeable=False)

    def valid(self, grid: np.ndarray) -> np.ndarray:
        """The output positions of a (..., run) array computed over the taps' runs."""
        g = grid.reshape(grid.shape[:-1] + (self.osp[0],) + self.q[1:])
        return g[(Ellipsis, slice(None)) + tuple(slice(0, o) for o in self.osp[1:])]

    def fill(self, img: np.ndarray, r: slice) -> list[Call]:
        """Copy channels ``r`` of the image onto every phase (the border stays zero)."""
        calls = []
        for key, phase in zip(self.keys, self.phase):
            dst, src = [r], [r]
            for a, st, lo, d in zip(key, self.s.strides, self.lo, img.shape[1:]):
                j0 = max(0, -(-(lo - a) // st))        # first phase index inside the image
                j1 = (d - 1 + lo - a) // st + 1        # one past the last
                start = a + st * j0 - lo
                dst.append(slice(j0, max(j0, j1)))
                src.append(slice(start, start + st * max(0, j1 - j0 - 1) + 1, st))
            if all(x.stop > x.start for x in dst[1:]):
                calls.append((np.copyto, (phase[tuple(dst)], img[tuple(src)])))
        return calls


class Depthwise:
    """A depthwise convolution (one filter per channel) as a sum over the kernel's taps, each
    tap one multiply-add of a shifted image by a per-channel weight; what makes it fast in
    NumPy is long inner loops: each tap a contiguous run per channel of a ``PhaseGrid``, or,
    for small images with many channels (runs shorter than the channels), a view of a
    channels-last copy with the channels innermost. Blocks of channels (or rows) keep the
    accumulator in cache across the taps; threads take ranges of channels."""

    def __init__(self, s: Conv, image: tuple[int, ...], osp: tuple[int, ...], taps: tuple[int, ...], wt: np.ndarray,
                 bias: np.ndarray | None, acc, constant_weight: bool) -> None:
        self.c, self.osp, self.s, self.bias, self.acc = image[0], osp, s, bias, acc
        self.taps = list(np.ndindex(*taps))
        self.setup: list[Call] = []
        self.grid = PhaseGrid(s, image, osp, taps, acc)
        self.ranges = [slice(r.start, r.stop) for r in split(self.c, threads_for(self.c * math.prod(osp)))]
        self.channels_last = self.c // len(self.ranges) > self.grid.run
        if self.channels_last:
            if constant_weight:  # each tap's weights contiguous over the channels
                wt = np.ascontiguousarray(wt.T).T
            else:
                buf = np.empty((wt.shape[1], wt.shape[0]), acc)
                self.setup.append((np.copyto, (buf, wt.T)))
                wt = buf.T
            self.image = np.zeros(self.grid.padded + (self.c,), acc)
        self.wt = wt

    def phases(self, img: np.ndarray, out: np.ndarray) -> list[list[list[Call]]]:
        """The calls for one image into ``out`` (channels, *osp), by channel range per thread."""
        if self.channels_last:
            interior = tuple(slice(a, a + d) for a, d in zip(self.grid.lo, img.shape[1:]))
            fill = [[(np.copyto, (self.image[interior + (r,)], np.moveaxis(img[r], 0, -1)))] for r in self.ranges]
            return [fill, [self._last(r, out) for r in self.ranges]]
        return [[self.grid.fill(img, r) for r in self.ranges], [self._flat(r, out) for r in self.ranges]]

    def _flat(self, r: slice, out: np.ndarray) -> list[Call]:
        run = self.grid.run
        block = max(1, min(r.stop - r.start, DEPTHWISE_BLOCK // max(1, run)))
        acc, tmp = np.empty((block, run), self.acc), np.empty((block, run), self.acc)
        calls: list[Call] = []
        for c0 in range(r.start, r.stop, block):
            c1 = min(c0 + block, r.stop)
            a, t = acc[:c1 - c0], tmp[:c1 - c0]
            for i, tap in enumerate(self.taps):
                view, w = self.grid.tap(tap, slice(c0, c1)), self.wt[c0:c1, i:i + 1]
                calls.append((_mul_into, (view, w, a)) if i == 0 else (_mul_add, (view, w, a, t)))
            if self.bias is not None:
                calls.append((np.add, (a, self.bias.reshape(-1, 1)[c0:c1], a)))
            calls.append((np.copyto, (out[c0:c1], self.grid.valid(a))))
        return calls

    def _last(self, r: slice, out: np.ndarray) -> list[Call]:
        osp, s = self.osp, self.s
        rc = r.stop - r.start
        step = max(1, CHUNK // max(1, math.prod(osp[1:]) * rc))
        block = (min(step, osp[0]),) + tuple(osp[1:]) + (rc,)
        acc, tmp = np.empty(block, self.acc), np.empty(block, self.acc)
        ws = [self.wt[r, i] for i in range(len(self.taps))]  # views: a weight that is an input changes per run
        b = None if self.bias is None else self.bias.reshape(-1)[r]
        calls: list[Call] = []
        for r0 in range(0, osp[0], step):
            r1 = min(r0 + step, osp[0])
            a, t = acc[:r1 - r0], tmp[:r1 - r0]
            for i, tap in enumerate(self.taps):
                view = self.image[window(tap, s.dilations, s.strides, (r1 - r0,) + tuple(osp[1:]), r0) + (r,)]
                calls.append((_mul_into, (view, ws[i], a)) if i == 0 else (_mul_add, (view, ws[i], a, t)))
            if b is not None:
                calls.append((np.add, (a, b, a)))
            calls.append((np.copyto, (out[r, r0:r1], np.moveaxis(a, -1, 0))))
        return calls


def _mul_into(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.multiply(a, b, out=out)


def _mul_add(a: np.ndarray, b: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> None:
    np.multiply(a, b, out=tmp)
    out += tmp
