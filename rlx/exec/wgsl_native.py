"""Native WGSL kernels: ops that are not elementwise and whose definitions fit no skeleton
(matmul is the GEMM skeleton; these are reductions over any axes, gathers, data movement,
masks, rotary, scans, arg-reductions, pooling, resize, softmax over another axis). Each is a loop
structure over ``wgsl_print``'s operands and builder; registered in ``vulkan_exec.NATIVE``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from rlx.exec.wgsl_print import (ROW_WG, Builder, Operand, Shader, Unsupported, _tree, addr, convert, group_id, groups, indexed,
                                 literal, unravel, uses_f16, wtype)
from rlx.ir.dtypes import DType


def reduce(x: Operand, out: Operand, kind: str, axes: Sequence[int]) -> Shader:
    """sum, mean or max over any ``axes``: one workgroup per output element."""
    rank = len(x.shape)
    axes = sorted({a % rank for a in axes}) if rank else []
    kept = [a for a in range(rank) if a not in axes]
    oshape = tuple(x.shape[a] for a in kept)
    rshape = tuple(x.shape[a] for a in axes)
    total, count = math.prod(oshape), math.prod(rshape)
    grid = groups(total)
    t = wtype(DType.f32 if x.dtype.is_float else x.dtype)
    b = Builder(2)
    b.helper("rlx_max")
    b.shared.append(f"var<workgroup> SH: array<{t}, {ROW_WG}>;")
    b.lines += [f"let g = {group_id(grid)};", f"if (g >= {total}) {{ return; }}"]
    oidx = unravel(b, "g", oshape, "o")
    init = literal(0, DType(t)) if kind != "max" else literal(-math.inf if t == "f32" else -2**31, DType(t))
    b.lines += [f"var acc = {init};", f"for (var t = li; t < {count}; t += {ROW_WG}) {{"]
    saved, b.lines = b.lines, []
    ridx = unravel(b, "t", rshape, "q")
    inner = b.lines
    b.lines = saved
    full = [None] * rank
    for a, nm in zip(kept, oidx):
        full[a] = nm
    for a, nm in zip(axes, ridx):
        full[a] = nm
    val = convert(b.load(x, addr(x, full)), x.dtype, DType(t))
    comb = (f"acc = acc + {val};" if kind != "max" else
            (f"acc = rlx_max(acc, {val});" if t == "f32" else f"acc = max(acc, {val});"))
    b.lines += ["  " + ln for ln in inner] + ["  " + comb, "}", "SH[li] = acc;", "workgroupBarrier();"]
    _tree(b, "SH", "max" if kind == "max" else "sum", t == "f32")
    res = "SH[0]" + (f" / {literal(count, DType(t))}" if kind == "mean" else "")
    # the output's own index: kept axes in order (keepdims adds axes of size one)
    oaddr = addr(out, oidx) if len(out.shape) == len(oidx) else \
        addr(out, [full[a] if a in kept else "0" for a in range(rank)])
    b.lines.append(f"if (li == 0) {{ {b.store(out, oaddr, convert(res, DType(t), out.dtype))} }}")
    return b.finish((ROW_WG, 1), grid, uses_f16([x, out]))


def copy(src: Operand, src_shape: tuple[int, ...], dst: Operand) -> Shader:
    """``dst`` (in its order) from ``src`` read as ``src_shape`` in row-major order: a
    transpose, expand or slice (``src`` is the view) or a reshape of a strided value."""
    def body(b: Builder, idx: list[str]) -> None:
        if src_shape == dst.shape:
            sidx = idx
        else:
            sidx = unravel(b, "lin", src_shape, "s")
        b.lines.append(b.store(dst, addr(dst, idx), convert(b.load(src, addr(src, sidx)), src.dtype, dst.dtype)))
    return indexed([src], [dst], dst.shape, body)


def concat(ins: Sequence[Operand], out: Operand, axis: int) -> Shader:
    axis %= len(out.shape)

    def body(b: Builder, idx: list[str]) -> None:
        start = 0
        for i, t in enumerate(ins):
            stop = start + t.shape[axis]
            sidx = list(idx)
            sidx[axis] = f"({idx[axis]} - {start})"
            cond = f"{idx[axis]} < {stop}"
            head = "if" if i == 0 else "} else if"
            b.lines.append(f"{head} ({cond}) {{ {b.store(out, addr(out, idx), b.load(t, addr(t, sidx)))}")
            start = stop
        b.lines.append("}")
    return indexed(ins, [out], out.shape, body)


def split(x: Operand, outs: Sequence[Operand], axis: int) -> Shader:
    axis %= len(x.shape)

    def body(b: Builder, idx: list[str]) -> None:
        start = 0
        v = b.fresh("x")
        b.lines.append(f"let {v} = {b.load(x, addr(x, idx))};")
        for t in outs:
            stop = start + t.shape[axis]
            oidx = list(idx)
            oidx[axis] = f"({idx[axis]} - {start})"
            b.lines.append(f"if ({idx[axis]} >= {start} && {idx[axis]} < {stop}) "
                           f"{{ {b.store(t, addr(t, oidx), v)} }}")
            start = stop
    return indexed([x], outs, x.shape, body)


def gather(data: Operand, ids: Operand, out: Operand, axis: int) -> Shader:
    axis %= len(data.shape)
    k = len(ids.shape)

    def body(b: Builder, idx: list[str]) -> None:
        raw = b.fresh("g")
        b.lines.append(f"let {raw} = {b.load(ids, addr(ids, idx[axis:axis + k]) if k else '0')};")
        g = b.fresh("g")
        b.lines.append(f"let {g} = select({raw}, {raw} + {data.shape[axis]}, {raw} < 0);")
        didx = idx[:axis] + [g] + idx[axis + k:]
        b.lines.append(b.store(out, addr(out, idx), b.load(data, addr(data, didx))))
    return indexed([data, ids], [out], out.shape, body)


def gather_elements(data: Operand, ids: Operand, out: Operand, axis: int) -> Shader:
    """``out[i] = data[i with i[axis] = ids[i]]`` (negative indices count from the end)."""
    axis %= len(data.shape)
    size = data.shape[axis]

    def body(b: Builder, idx: list[str]) -> None:
        g = b.fresh("g")
        b.lines.append(f"let {g}r = {b.load(ids, addr(ids, idx))};")
        b.lines.append(f"let {g} = select({g}r, {g}r + {size}, {g}r < 0);")
        src = list(idx)
        src[axis] = g
        b.lines.append(b.store(out, addr(out, idx), b.load(data, addr(data, src))))
    return indexed([data, ids], [out], out.shape, body)


def gather_nd(data: Operand, ids: Operand, out: Operand, batch_dims: int) -> Shader:
    """Slices of ``data`` at the index tuples in the last axis of ``ids`` (ONNX GatherND)."""
    k = ids.shape[-1]
    lead = len(ids.shape) - 1

    def body(b: Builder, idx: list[str]) -> None:
        tuple_at, trailing = idx[:lead], idx[lead:]
        comps = []
        for c in range(k):
            g = b.fresh("g")
            dim = data.shape[batch_dims + c]
            b.lines.append(f"let {g}r = {b.load(ids, addr(ids, [*tuple_at, str(c)]))};")
            b.lines.append(f"let {g} = select({g}r, {g}r + {dim}, {g}r < 0);")
            comps.append(g)
        src = tuple_at[:batch_dims] + comps + trailing
        b.lines.append(b.store(out, addr(out, idx), b.load(data, addr(data, src))))
    return indexed([data, ids], [out], out.shape, body)


def causal_mask(x: Operand, out: Operand) -> Shader:
    def body(b: Builder, idx: list[str]) -> None:
        v = b.fresh("x")
        b.lines.append(f"let {v} = {b.load(x, addr(x, idx))};")
        ninf = literal(-math.inf, x.dtype)
        b.lines.append(b.store(out, addr(out, idx), f"select({v}, {ninf}, {idx[-1]} > {idx[-2]})"))
    return indexed([x], [out], out.shape, body)


def trilu(x: Operand, out: Operand, upper: bool, k: int) -> Shader:
    def body(b: Builder, idx: list[str]) -> None:
        keep = f"({idx[-1]} - {idx[-2]} {'>=' if upper else '<='} {k})"
        zero = literal(0, x.dtype) if x.dtype != DType.bool else "false"
        b.lines.append(b.store(out, addr(out, idx), f"select({zero}, {b.load(x, addr(x, idx))}, {keep})"))
    return indexed([x], [out], out.shape, body)


def rotary(x: Operand, cos: Operand, sin: Operand, out: Operand) -> Shader:
    """Rotate-half: the first half is ``x1 cos - x2 sin``, the second ``x2 cos + x1 sin``."""
    h = x.shape[-1] // 2

    def body(b: Builder, idx: list[str]) -> None:
        j = idx[-1]
        b.lines.append(f"let first = {j} < {h};")
        b.lines.append(f"let jj = select({j} - {h}, {j}, first);")
        tidx = idx[:-1] + ["jj"]
        f = lambda t, i: convert(b.load(t, addr(t, i)), t.dtype, DType.f32)  # noqa: E731
        b.lines.append(f"let x1 = {f(x, idx[:-1] + ['jj'])};")
        b.lines.append(f"let x2 = {f(x, idx[:-1] + [f'(jj + {h})'])};")
        b.lines.append(f"let c = {f(cos, tidx)};")
        b.lines.append(f"let s = {f(sin, tidx)};")
        b.lines.append(b.store(out, addr(out, idx), convert("select(x2 * c + x1 * s, x1 * c - x2 * s, first)",
                                                            DType.f32, out.dtype)))
    return indexed([x, cos, sin], [out], out.shape, body)


def cumsum(x: Operand, out: Operand, axis: int, exclusive: bool, reverse: bool) -> Shader:
    """A running sum: each element sums its prefix (or suffix) along ``axis``, in f32 for
    floats."""
    axis %= len(x.shape)
    n = x.shape[axis]
    acc_t = DType.f32 if x.dtype.is_float else x.dtype

    def body(b: Builder, idx: list[str]) -> None:
        i = idx[axis]
        lo, hi = (f"{i} + {int(exclusive)}", f"{n}") if reverse else ("0", f"{i} + {int(not exclusive)}")
        src = list(idx)
        src[axis] = "j"
        b.lines += [f"var acc = {literal(0, acc_t)};", f"for (var j = {lo}; j < {hi}; j++) {{",
                    f"  acc = acc + {convert(b.load(x, addr(x, src)), x.dtype, acc_t)};", "}"]
        b.lines.append(b.store(out, addr(out, idx), convert("acc", acc_t, out.dtype)))
    return indexed([x], [out], out.shape, body)


def softmax_axis(x: Operand, out: Operand, axis: int) -> Shader:
    """Softmax along any axis (the last one is a row-reduction skeleton): an invocation per
    line along ``axis`` makes three passes over it (max, sum, write), in f32."""
    rank = len(x.shape)
    axis %= rank
    n = x.shape[axis]
    lines = x.shape[:axis] + x.shape[axis + 1:]
    f32 = DType.f32

    def body(b: Builder, idx: list[str]) -> None:
        b.helper("rlx_max")
        src = idx[:axis] + ["j"] + idx[axis:]
        v = convert(b.load(x, addr(x, src)), x.dtype, f32)
        b.lines += [f"var mx = {literal(-math.inf, f32)};", f"for (var j = 0; j < {n}; j++) {{ mx = rlx_max(mx, {v}); }}",
                    "var sm = 0.0;", f"for (var j = 0; j < {n}; j++) {{ sm = sm + exp({v} - mx); }}",
                    f"for (var j = 0; j < {n}; j++) {{ "
                    f"{b.store(out, addr(out, src), convert(f'(exp({v} - mx) / sm)', f32, out.dtype))} }}"]
    return indexed([x], [out], lines, body)


def arg_extreme(x: Operand, out: Operand, axis: int, largest: bool, last: bool) -> Shader:
    """argmax/argmin along ``axis``: the first (or last) index of the extreme; a NaN wins,
    as in NumPy. The i64 result is stored as its two words."""
    rank = len(x.shape)
    axis %= rank
    n = x.shape[axis]
    keep = len(out.shape) == rank

    def body(b: Builder, idx: list[str]) -> None:
        src = list(idx) if keep else idx[:axis] + ["0"] + idx[axis:]
        src[axis] = "j"
        first = list(src)
        first[axis] = "0"
        f = x.dtype.is_float
        t = DType.f32 if f else x.dtype
        if f:
            b.helper("rlx_isnan")
        load = lambda ix: convert(b.load(x, addr(x, ix)), x.dtype, t)  # noqa: E731
        cmp = ">" if largest else "<"
        better = f"(v {cmp} best)" + (" || (rlx_isnan(v) && !rlx_isnan(best))" if f else "")
        b.lines += [f"var best = {load(first)};", "var bi = 0;", f"for (var j = 1; j < {n}; j++) {{",
                    f"  let v = {load(src)};",
                    f"  if ({better}{' || v == best' if last else ''}) {{ best = v; bi = j; }}", "}"]
        b.lines.append(b.store(out, addr(out, idx), "bi"))
    return indexed([x], [out], out.shape, body)


def pool(x: Operand, out: Operand, kind: str, kernel: Sequence[int], strides: Sequence[int],
         dilations: Sequence[int], pads: Sequence[int], count_include_pad: bool) -> Shader:
    """max or average pooling: one invocation per output element loops over its window;
    padding never wins a max and counts toward an average only with ``count_include_pad``."""
    nsp = len(kernel)
    lo, hi = pads[:nsp], pads[nsp:]
    f = x.dtype.is_float
    t = DType.f32 if f else x.dtype

    def body(b: Builder, idx: list[str]) -> None:
        taps = math.prod(kernel)
        low = literal(-math.inf, t) if f else literal(-2**31, t)
        b.lines += ["var acc = " + (low if kind == "max" else "0.0") + ";", "var count = 0;",
                    f"for (var t = 0; t < {taps}; t++) {{"]
        pos, inside, padded = [], [], []
        for d in range(nsp):
            p = f"p{d}"
            b.lines.append(f"  let {p} = {idx[2 + d]} * {strides[d]} - {lo[d]} + "
                           f"((t / {math.prod(kernel[d + 1:])}) % {kernel[d]}) * {dilations[d]};")
            pos.append(p)
            inside.append(f"{p} >= 0 && {p} < {x.shape[2 + d]}")
            padded.append(f"{p} < {x.shape[2 + d] + hi[d]}")
        v = convert(b.load(x, addr(x, [idx[0], idx[1], *pos])), x.dtype, t)
        if kind == "max":
            if f:
                b.helper("rlx_max")
            comb = f"rlx_max(acc, {v})" if f else f"max(acc, {v})"
            b.lines += [f"  if ({' && '.join(inside)}) {{ acc = {comb}; }}", "}"]
        else:
            b.lines.append(f"  if ({' && '.join(inside)}) {{ acc = acc + {v}; }}")
            counted = " && ".join(padded) if count_include_pad else " && ".join(inside)
            b.lines += [f"  if ({counted}) {{ count = count + 1; }}", "}",
                        "acc = acc / f32(max(count, 1));"]
        b.lines.append(b.store(out, addr(out, idx), convert("acc", t, out.dtype)))
    return indexed([x], [out], out.shape, body)


def resize(x: Operand, out: Operand, ti: Operand, tw: Operand, axes: Sequence[tuple[int, int, int, int]]) -> Shader:
    """Resize as the sum over each resized axis's taps of the interpolation weights times the
    input sample: one invocation per output element. ``axes`` holds (axis, taps, index offset,
    weight offset) of each resized axis: its (n_out, taps) tables of input indices (``ti``,
    i32) and weights (``tw``, f32) start at those offsets from the step's table base (both
    operands share one uniform slot); the host computes them with the reference's
    ``resize_matrix`` (every mode and coordinate transformation). Other axes are copied.
    Accumulates in f32; integer results are rounded half to even, as the reference."""
    if not x.dtype.is_float and x.dtype != DType.i32:
        raise Unsupported(f"{x.dtype} resize")

    def body(b: Builder, idx: list[str]) -> None:
        src = list(idx)
        weights = []
        b.lines.append("var acc = 0.0;")
        for depth, (d, taps, oi, ow) in enumerate(axes):
            pad = "  " * depth
            b.lines += [f"{pad}for (var t{d} = 0; t{d} < {taps}; t{d}++) {{",
                        f"{pad}  let k{d} = {idx[d]} * {taps} + t{d};",
                        f"{pad}  let j{d} = {b.load(ti, f'{oi} + k{d}')};",
                        f"{pad}  let w{d} = {b.load(tw, f'{ow} + k{d}')};"]
            src[d] = f"j{d}"
            weights.append(f"w{d}")
        v = convert(b.load(x, addr(x, src)), x.dtype, DType.f32)
        b.lines.append("  " * len(axes) + f"acc = acc + {' * '.join(weights + [v])};")
        for depth in range(len(axes) - 1, -1, -1):
            b.lines.append("  " * depth + "}")
        val = "acc" if out.dtype.is_float else "round(acc)"
        b.lines.append(b.store(out, addr(out, idx), convert(val, DType.f32, out.dtype)))
    return indexed([x, ti], [out], out.shape, body)


__all__ = ["reduce", "copy", "concat", "split", "gather", "gather_elements", "gather_nd", "causal_mask", "trilu",
           "rotary", "cumsum", "softmax_axis", "arg_extreme", "pool", "resize"]
