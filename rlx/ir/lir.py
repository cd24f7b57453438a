"""LIR: a planned program, everything an executor needs to run it with one allocation.

Steps in schedule order (prologue: inputs and params in; body; epilogue: outputs out),
buffers with their region (input, param, output, arena) and aligned byte offsets, views
that alias a root buffer at a byte offset with strides, the I/O manifest, the dynamic
symbols, and a fingerprint that is stable across processes and changes with the program.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rlx.ir.graph import Graph, jsonable


@dataclass(frozen=True)
class Buffer:
    """Storage for one or more values: a region and an aligned offset in it."""
    id: int
    region: str                # input | param | output | arena
    nbytes: int
    offset: int | None         # None while symbols are unbound
    first: int                 # first and last step at which it is live
    last: int


@dataclass(frozen=True)
class ValueLayout:
    """Where a value lives: a buffer, a byte offset in it, its shape and element strides."""
    name: str
    buffer: int
    byte_offset: int
    shape: tuple
    strides: tuple             # in elements
    dtype: str
    view: bool                 # aliases a buffer another value produced


@dataclass(frozen=True)
class Step:
    index: int
    phase: str                 # prologue | body | epilogue
    op: str
    node: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict = field(default_factory=dict, compare=False)
    in_place: bool = False     # the output reuses the buffer of an input that dies here
    view: bool = False         # no work: the output aliases its input


@dataclass
class LIR:
    name: str
    alignment: int
    steps: list[Step]
    buffers: list[Buffer]
    values: dict[str, ValueLayout]
    manifest: dict[str, list[dict[str, Any]]]
    symbols: list[str]
    source: Graph
    planner: Callable[..., "LIR"] = field(repr=False, compare=False, default=None)
    fingerprint: str = ""

    @property
    def planned(self) -> bool:
        return not self.symbols

    def region_bytes(self, region: str) -> int:
        return max((b.offset + _align(b.nbytes, self.alignment) for b in self.buffers
                    if b.region == region and b.offset is not None), default=0)

    @property
    def arena_bytes(self) -> int:
        return self.region_bytes("arena")

    def liveness_lower_bound(self) -> int:
        """Max over steps of the aligned bytes of arena buffers live at that step."""
        arena = [b for b in self.buffers if b.region == "arena"]
        events: dict[int, int] = {}
        for b in arena:
            size = _align(b.nbytes, self.alignment)
            events[b.first] = events.get(b.first, 0) + size
            events[b.last + 1] = events.get(b.last + 1, 0) - size
        live = best = 0
        for t in sorted(events):
            live += events[t]
            best = max(best, live)
        return best

    def no_reuse_bytes(self) -> int:
        return sum(_align(b.nbytes, self.alignment) for b in self.buffers if b.region == "arena")

    def summary(self) -> dict[str, Any]:
        """Arena bytes, the liveness lower bound, bytes with no reuse, and the saving."""
        if not self.planned:
            return {"planned": False, "symbols": self.symbols, "steps": len(self.steps)}
        arena, bound, none = self.arena_bytes, self.liveness_lower_bound(), self.no_reuse_bytes()
        return {"planned": True, "steps": len(self.steps), "arena_bytes": arena, "lower_bound_bytes": bound,
                "no_reuse_bytes": none, "saved_pct": 100.0 * (1 - arena / none) if none else 0.0,
                "arena_over_bound": arena / bound if bound else 1.0,
                "input_bytes": self.region_bytes("input"), "param_bytes": self.region_bytes("param"),
                "output_bytes": self.region_bytes("output"), "views": sum(v.view for v in self.values.values()),
                "in_place": sum(s.in_place for s in self.steps), "fingerprint": self.fingerprint}

    def specialize(self, binding: Mapping[str, int]) -> "LIR":
        """Bind the symbolic dims and re-plan (an unbound or inconsistent symbol is an error)."""
        return self.planner(self.source, alignment=self.alignment, binding=binding)

    def to_dict(self) -> dict[str, Any]:
        return {"alignment": self.alignment, "symbols": self.symbols,
                "steps": [{**asdict(s), "attrs": _jsonable(s.attrs)} for s in self.steps],
                "buffers": [asdict(b) for b in self.buffers],
                "values": {k: asdict(v) for k, v in sorted(self.values.items())},
                "manifest": self.manifest}

    def compute_fingerprint(self) -> str:
        """sha256 of the canonical JSON of the plan (node names excluded: they are labels)."""
        d = self.to_dict()
        for s in d["steps"]:
            s.pop("node")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


def _jsonable(attrs: dict) -> dict:
    out = {}
    for k, v in sorted(attrs.items()):
        v = jsonable(v)
        out[k] = v if isinstance(v, (int, float, str, bool, list, dict, type(None))) else str(v)
    return out
