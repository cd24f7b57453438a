"""Targets: one TOML file per hardware target (``backends/<name>.toml``) with measured
parameters, turned into the CostModel extraction uses.

A malformed or incomplete file is an error that names the file, the key and what is wrong.
"""
from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rlx.errors import RlxError
from rlx.egraph.saturate import Limits
from rlx.extract.cost import CostModel
from rlx.ir.dtypes import DType
from rlx.ir.registry import REGISTRY

BACKENDS = Path(__file__).resolve().parents[2] / "backends"
EXECUTORS = ("numpy", "cupy", "vulkan")


class TargetError(RlxError):
    """A target file that cannot be used."""


@dataclass(frozen=True)
class Target:
    """A hardware target: where its programs run and what things cost there."""
    name: str
    path: str
    executor: str
    alignment: int
    cost: CostModel
    limits: Limits = field(default_factory=Limits)
    exact_below: int = 0          # e-nodes: below this the exact (ILP) extractor runs by default
    exact_seconds: float = 10.0
    claim_spec: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()

    def with_decomposed(self, ops: list[str]) -> "Target":
        """This target with ``ops`` treated as unclaimed (force their common lowering)."""
        if not ops:
            return self
        for op in ops:
            if op not in REGISTRY:
                hint = difflib.get_close_matches(op, REGISTRY.names(), n=1)
                raise TargetError(f"decompose: unknown op {op!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
        claimed = self.cost.claimed if self.cost.claimed is not None else frozenset(REGISTRY.names())
        return replace(self, cost=replace(self.cost, claimed=claimed - set(ops)))

    def resolve_claims(self) -> "Target":
        """Check the claimed op names against the registry (rule files may add ops, so this
        runs after they load) and fix the claim set."""
        names = set(REGISTRY.names())
        for key, ops in (("ops.claim", self.claim_spec), ("ops.exclude", self.exclude)):
            for op in ops:
                if op != "*" and op not in names:
                    hint = difflib.get_close_matches(op, names, n=1)
                    raise TargetError(f"{self.path}: key '{key}': unknown op {op!r}"
                                      + (f"; did you mean {hint[0]!r}?" if hint else ""))
        claimed = names if "*" in self.claim_spec else set(self.claim_spec)
        return replace(self, cost=replace(self.cost, claimed=frozenset(claimed - set(self.exclude))))


def _get(data: dict, key: str, path: str, kind: str, default: Any = ...) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not ...:
                return default
            raise TargetError(f"{path}: missing key '{key}' ({kind})")
        node = node[part]
    ok = {
        "string": isinstance(node, str),
        "positive number": isinstance(node, (int, float)) and not isinstance(node, bool) and node > 0 and math.isfinite(node),
        "non-negative number": isinstance(node, (int, float)) and not isinstance(node, bool) and node >= 0,
        "positive integer": isinstance(node, int) and not isinstance(node, bool) and node > 0,
        "list of op names": isinstance(node, list) and all(isinstance(x, str) for x in node),
        "table": isinstance(node, dict),
    }[kind]
    if not ok:
        raise TargetError(f"{path}: key '{key}': expected a {kind}, got {node!r}")
    return node


def load_target(spec: str | Path | Target) -> Target:
    """A target by name (``backends/<name>.toml``) or by path to a TOML file."""
    if isinstance(spec, Target):
        return spec
    text = str(spec)
    path = Path(text) if text.endswith(".toml") or "/" in text else BACKENDS / f"{text}.toml"
    if not path.exists():
        known = sorted(p.stem for p in BACKENDS.glob("*.toml"))
        raise TargetError(f"unknown target {text!r}: no file {path}; shipped targets: {', '.join(known)}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{path}: malformed TOML: {e}") from None
    p = str(path)
    name = _get(data, "name", p, "string")
    executor = _get(data, "executor", p, "string")
    if executor not in EXECUTORS:
        raise TargetError(f"{p}: key 'executor': expected one of {', '.join(EXECUTORS)}, got {executor!r}")
    alignment = _get(data, "alignment", p, "positive integer")
    if alignment & (alignment - 1):
        raise TargetError(f"{p}: key 'alignment': expected a power of two, got {alignment}")
    peaks = _get(data, "peak_flops", p, "table")
    for k in peaks:
        if k not in DType.__members__:
            raise TargetError(f"{p}: key 'peak_flops.{k}': unknown dtype; expected one of {', '.join(DType.__members__)}")
        _get(data, f"peak_flops.{k}", p, "positive number")
    if "f32" not in peaks:
        raise TargetError(f"{p}: missing key 'peak_flops.f32' (positive number)")
    efficiency = _get(data, "efficiency", p, "table", {})
    for k in efficiency:
        _get(data, f"efficiency.{k}", p, "positive number")
    claim = _get(data, "ops.claim", p, "list of op names")
    exclude = _get(data, "ops.exclude", p, "list of op names", [])
    base = Limits()
    limits = Limits(
        iterations=_get(data, "saturation.iterations", p, "positive integer", base.iterations),
        enodes=_get(data, "saturation.enodes", p, "positive integer", base.enodes),
        seconds=float(_get(data, "saturation.seconds", p, "positive number", base.seconds)),
        algebra_iterations=_get(data, "saturation.algebra_iterations", p, "non-negative number", base.algebra_iterations))
    cost = CostModel(
        name=name,
        peak_flops={k: float(v) for k, v in peaks.items()},
        bandwidth=float(_get(data, "memory.bandwidth", p, "positive number")),
        launch_overhead=float(_get(data, "overhead.launch", p, "non-negative number")),
        view_overhead=float(_get(data, "overhead.view", p, "non-negative number", 0.0)),
        efficiency={k: float(v) for k, v in efficiency.items()},
        region_max_inputs=_get(data, "regions.max_inputs", p, "positive integer"),
        region_max_ops=_get(data, "regions.max_ops", p, "positive integer"),
        symbol_size=_get(data, "symbol_size", p, "positive integer", 128))
    return Target(name=name, path=p, executor=executor, alignment=alignment, cost=cost, limits=limits,
                  exact_below=_get(data, "extraction.exact_below", p, "non-negative number", 0),
                  exact_seconds=float(_get(data, "extraction.exact_seconds", p, "positive number", 10.0)),
                  claim_spec=tuple(claim), exclude=tuple(exclude))


def shipped_targets() -> list[Target]:
    return [load_target(p) for p in sorted(BACKENDS.glob("*.toml"))]


def write_target(path: str | Path, *, name: str, executor: str, alignment: int, peak_flops: dict[str, float],
                 bandwidth: float, launch: float, view: float, claim: list[str], exclude: list[str],
                 max_inputs: int, max_ops: int, note: str = "") -> None:
    """Write a target file (what ``rlx calibrate`` produces)."""
    lines = [f"# {note}" if note else "# rlx target", f'name = "{name}"', f'executor = "{executor}"',
             f"alignment = {alignment}", "", "[peak_flops]  # FLOP/s per dtype"]
    lines += [f"{k} = {v:.4g}" for k, v in peak_flops.items()]
    lines += ["", "[memory]", f"bandwidth = {bandwidth:.4g}  # bytes/s", "", "[overhead]",
              f"launch = {launch:.4g}  # seconds per op", f"view = {view:.4g}", "", "[ops]",
              f"claim = {claim!r}".replace("'", '"'), f"exclude = {exclude!r}".replace("'", '"'), "",
              "[regions]", f"max_inputs = {max_inputs}", f"max_ops = {max_ops}", ""]
    Path(path).write_text("\n".join(lines))
