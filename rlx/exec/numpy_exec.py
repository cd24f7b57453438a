"""The NumPy executor: runs an LIR with one allocation per region.

The input, param, output and arena regions are allocated once; every value is a NumPy view
at its offset (views of views are views); parameters are copied in once at bind time; each
step writes into its slot (``out=``), fused ops run as one kernel each, elementwise regions
as one generated function, and kernel temporaries come from per-step scratch allocated on
the first run, so later runs allocate nothing large. BLAS uses both cores.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from rlx.errors import BindingError, RlxError
from rlx.exec.kernels import KERNELS, MULTI, Scratch
from rlx.exec.regions import region_function
from rlx.ir.dtypes import DType
from rlx.ir.lir import LIR, ValueLayout
from rlx.ir.registry import REGISTRY


class NumpyExecutor:
    """Bound to one planned LIR and one set of params; ``run`` reuses every buffer."""

    def __init__(self, lir: LIR, params: Mapping[str, np.ndarray]) -> None:
        if not lir.planned:
            raise BindingError(f"LIR {lir.name!r} has unbound symbols {', '.join(lir.symbols)}: specialize it first")
        self.lir = lir
        self.regions = {r: np.zeros(max(lir.region_bytes(r), 1), dtype=np.uint8)
                        for r in ("input", "param", "output", "arena")}
        self.arrays: dict[str, np.ndarray] = {name: self._array(lay) for name, lay in lir.values.items()}
        for entry in lir.manifest["params"]:
            if entry["name"] not in params:
                raise BindingError(f"missing param {entry['name']!r} {entry['dtype']}{entry['shape']}")
            self._store(entry["name"], params[entry["name"]], "param")
        self.steps: list[Callable[[], None]] = []
        for step in lir.steps:
            if step.phase == "body" and not step.view:
                self.steps.append(self._step(step))
            elif step.phase == "prologue" and step.op == "constant":
                node = lir.source.node(step.node)
                np.copyto(self.arrays[step.outputs[0]], node.attrs["value"].astype(node.outputs[0].dtype.np))

    def _array(self, lay: ValueLayout) -> np.ndarray:
        buf = self.regions[self.lir.buffers[lay.buffer].region]
        dt = DType(lay.dtype).np
        strides = tuple(s * dt.itemsize for s in lay.strides)
        return np.ndarray(lay.shape, dtype=dt, buffer=buf, offset=self.lir.buffers[lay.buffer].offset + lay.byte_offset,
                          strides=strides)

    def _store(self, name: str, value, kind: str) -> None:
        dst = self.arrays[name]
        arr = np.asarray(value)
        if arr.shape != dst.shape:
            raise BindingError(f"{kind} {name!r}: expected shape {dst.shape}, got {arr.shape}")
        np.copyto(dst, arr, casting="same_kind" if arr.dtype.kind == dst.dtype.kind else "unsafe")

    def _step(self, step) -> Callable[[], None]:
        ins = [self.arrays[n] for n in step.inputs]
        outs = [self.arrays[n] for n in step.outputs]
        attrs = step.attrs
        op = step.op
        scratch = Scratch()
        if op == "region":
            fn = region_function(attrs["body"], len(ins))
            out = outs[0]
            return lambda: fn(*ins, out, scratch=scratch)
        if op in MULTI:
            k = MULTI[op]
            return lambda: k(ins, outs, attrs, scratch)
        if op in KERNELS and len(outs) == 1:
            k, out = KERNELS[op], outs[0]
            return lambda: k(ins, out, attrs, scratch)
        if op == "causal_mask":
            out = outs[0]

            def causal() -> None:
                np.copyto(out, ins[0])
                rows, cols = np.triu_indices(out.shape[-2], 1, out.shape[-1])
                out[..., rows, cols] = -np.inf
            return causal
        ref = REGISTRY.get(op).reference  # everything else: the registry reference, copied into the slot

        def generic() -> None:
            res = ref(ins, attrs)
            for o, r in zip(outs, res if isinstance(res, tuple) else (res,)):
                np.copyto(o, r, casting="unsafe")
        return generic

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; returns fresh arrays (the output region is reused by the next run)."""
        for entry in self.lir.manifest["inputs"]:
            if entry["name"] not in inputs:
                raise BindingError(f"missing input {entry['name']!r} {entry['dtype']}{entry['shape']}")
            self._store(entry["name"], inputs[entry["name"]], "input")
        with np.errstate(all="ignore"):
            for step in self.steps:
                step()
        return {s.node: self.arrays[s.inputs[0]].copy() for s in self.lir.steps if s.phase == "epilogue"}


def check_executor(name: str) -> None:
    if name != "numpy":
        raise RlxError(f"executor {name!r} is not available yet (this machine runs the numpy executor)")
