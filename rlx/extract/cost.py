"""Cost models: what an e-node costs on a target.

An e-node's cost is launch overhead + max(FLOPs / peak, bytes / bandwidth), with FLOPs
and bytes from the op registry at the e-class shapes (a fused op's from its definition,
a region's from its body). Views cost a fraction of a launch; sources nothing. Symbols
not bound by the caller are priced at ``symbol_size``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rlx.errors import RlxError
from rlx.ir.expr import ops_of
from rlx.ir.registry import REGISTRY, TensorType
from rlx.ir.shapes import DimBinding, symbols

if TYPE_CHECKING:
    from rlx.ir.graph import Graph

INF = math.inf
REGION_TIE_BREAK = 1e-12  # seconds per region body op


@dataclass(frozen=True)
class CostModel:
    name: str = "cpu"
    peak_flops: Mapping[str, float] = field(default_factory=lambda: {
        "f64": 80e9, "f32": 160e9, "f16": 20e9, "bf16": 10e9, "i64": 40e9, "i32": 40e9, "bool": 40e9})
    bandwidth: float = 34e9
    launch_overhead: float = 4e-6
    view_overhead: float = 0.5e-6
    efficiency: Mapping[str, float] = field(default_factory=dict)
    claimed: frozenset[str] | None = None  # None: every registry op
    region_max_inputs: int = 16
    region_max_ops: int = 32
    symbol_size: int = 128

    def binding(self, types: list[TensorType], given: Mapping[str, int] | None = None) -> DimBinding:
        syms: set[str] = set()
        for t in types:
            syms |= symbols(t.shape)
        return DimBinding({**{s: self.symbol_size for s in syms}, **(given or {})})

    def claims(self, op: str) -> bool:
        return self.claimed is None or op in self.claimed

    def op_cost(self, op: str, attrs: dict, ins: list[TensorType], outs: list[TensorType] | tuple,
                binding: DimBinding) -> float:
        """Predicted seconds for one op application (inf when the target does not claim it)."""
        opdef = REGISTRY.get(op)
        if opdef.category == "source":
            return 0.0
        if not self.claims(op) or op == "region" and not all(map(self.claims, ops_of(attrs["body"]))):
            return INF  # a region runs its body's ops: the target must claim each of them
        if opdef.view:
            return self.view_overhead
        try:
            in_shapes = [binding.resolve_shape(t.shape) for t in ins]
            out_shapes = [binding.resolve_shape(t.shape) for t in outs]
        except RlxError:
            return INF
        flops = float(opdef.flops(in_shapes, out_shapes, attrs))
        nbytes = opdef.bytes_moved(ins, list(outs), in_shapes, out_shapes)
        seconds = self.roofline(op, flops, nbytes, str(outs[0].dtype) if outs else "f32")
        if op == "region":  # at equal cost, a named kernel beats generated code
            seconds += REGION_TIE_BREAK * sum(1 for _ in ops_of(attrs["body"]))
        return seconds

    def roofline(self, op: str, flops: float, nbytes: float, dtype: str) -> float:
        """Launch overhead + the longer of compute (at ``dtype``'s peak times ``op``'s
        efficiency) and memory traffic."""
        peak = self.peak_flops.get(dtype, self.peak_flops["f32"]) * self.efficiency.get(op, 1.0)
        return self.launch_overhead + max(flops / peak, nbytes / self.bandwidth)

    def body_cost(self, body: "Graph", binding: DimBinding) -> float:
        """Predicted seconds of a definition run op by op (an op no skeleton fits)."""
        total = 0.0
        for n in body.nodes:
            if n.opdef.category != "source":
                total += self.op_cost(n.op, n.attrs, [v.type for v in n.inputs], n.outputs, binding)
        return total


DEFAULT = CostModel()
