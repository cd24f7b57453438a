"""Generated code for elementwise regions: one Python function per body, cached.

The leftmost chain of the body is computed straight into the output slot (each op writes
``out=out``; NumPy broadcasts the inputs to it), other operands into temporaries. When the
output slot aliases an input (an in-place plan), the body runs into a temporary first.
"""
from __future__ import annotations

import math

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from rlx.exec.kernels import ELEMENTWISE, Scratch
from rlx.ir.region import RArg, RCall, RConst, _attrs, parse_body


@lru_cache(maxsize=4096)
def region_function(body: str, n_inputs: int) -> Callable[..., None]:
    """``f(*inputs, out, scratch=None)`` computing ``body`` into ``out``; temporaries come
    from ``scratch`` (a Scratch pool: allocated once, reused by later runs)."""
    lines: list[str] = []
    counter = [0]
    consts: dict[str, dict] = {}

    def temp() -> str:
        counter[0] += 1
        return f"t{counter[0]}"

    def operand(e) -> str:
        if isinstance(e, RArg):
            return f"a{e.index}"
        if isinstance(e, RConst):
            return repr(e.value) if math.isfinite(e.value) else f"float('{e.value}')"
        t = temp()
        emit(e, None, t)
        return t

    def emit(e: RCall, target: str | None, name: str) -> None:
        """Compute call ``e`` into ``target`` (a slot) or a new temporary ``name``."""
        first = e.args[0]
        if isinstance(first, RCall):
            if target is not None:
                emit(first, target, target)
                args = [target]
            else:
                args = [operand(first)]
        else:
            args = [operand(first)]
        args += [operand(a) for a in e.args[1:]]
        attrs = "{}"
        if e.attr:  # attribute values (a cast's DType) live in the function's globals
            attrs = f"A{len(consts)}"
            consts[attrs] = _attrs(e)
        if target is None:
            shape = "np.broadcast_shapes(" + ", ".join(f"np.shape({a})" for a in args) + ")"
            lines.append(f"    {name} = S({name!r}, {shape}, out.dtype)")
            target = name
        lines.append(f"    K[{e.op!r}]([{', '.join(args)}], {target}, {attrs}, S)")

    expr = parse_body(body)
    params = ", ".join(f"a{i}" for i in range(n_inputs))
    if isinstance(expr, RCall):
        emit(expr, "out", "out")
    else:
        lines.append(f"    np.copyto(out, {operand(expr)})")
    src = f"def region({params}, out, S):\n" + "\n".join(lines) + "\n"
    scope = {"np": np, "K": ELEMENTWISE, **consts}
    exec(compile(src, f"<region {body}>", "exec"), scope)
    fn = scope["region"]
    fn.source = src

    def run(*args: np.ndarray, scratch: Scratch | None = None) -> None:
        *ins, out = args
        pool = scratch if scratch is not None else Scratch()
        if any(np.shares_memory(a, out) for a in ins if isinstance(a, np.ndarray)):
            tmp = pool("region-out", out.shape, out.dtype)
            fn(*ins, tmp, pool)
            np.copyto(out, tmp)
        else:
            fn(*ins, out, pool)
    run.source = src
    return run
