"""Targets: one TOML file per hardware target (``backends/<name>.toml``) with measured
parameters, turned into the CostModel extraction uses.

A malformed or incomplete file is an error that names the file, the key and what is wrong.
"""
from __future__ import annotations

import difflib
import math
import os
import stat
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
MAX_FILE_BYTES = 1 << 20  # a target file is a regular file of at most 1 MiB
MAX_INT = 2**63 - 1       # integers go to egglog as i64
# Every key a target file may have: an unknown key is an error (a misspelt one would be
# ignored). A table's keys; [peak_flops] is by dtype, [efficiency] by op name (checked against
# the registry in resolve_claims, once rule files have added their ops).
_TABLES: dict[str, tuple[str, ...] | None] = {
    "peak_flops": tuple(DType.__members__), "memory": ("bandwidth",), "overhead": ("launch", "view"),
    "efficiency": None, "ops": ("claim", "exclude"), "regions": ("max_inputs", "max_ops"),
    "saturation": ("iterations", "enodes", "seconds", "algebra_iterations"),
    "extraction": ("exact_below", "exact_seconds"),
}
_KEYS = ("name", "executor", "alignment", "symbol_size", *_TABLES)


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
        """Check the op names of [efficiency] and [ops] against the registry (rule files may
        add ops, so this runs after they load) and fix the claim set."""
        names = set(REGISTRY.names())
        for key, ops in (("efficiency", tuple(self.cost.efficiency)), ("ops.claim", self.claim_spec),
                         ("ops.exclude", self.exclude)):
            for op in ops:
                if op not in names and (op != "*" or key == "efficiency"):
                    hint = difflib.get_close_matches(op, names, n=1)
                    raise TargetError(f"{self.path}: key '{key}': unknown op {op!r}"
                                      + (f"; did you mean {hint[0]!r}?" if hint else ""))
        claimed = names if "*" in self.claim_spec else set(self.claim_spec)
        return replace(self, cost=replace(self.cost, claimed=frozenset(claimed - set(self.exclude))))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:56] + " ..."


def _unknown(path: str, key: str, known: Any) -> TargetError:
    hint = difflib.get_close_matches(key, list(known), n=1)
    return TargetError(f"{path}: unknown key '{key}'" + (f"; did you mean '{hint[0]}'?" if hint else ""))


def _check_keys(data: dict, path: str) -> None:
    for key, value in data.items():
        if key not in _KEYS:
            raise _unknown(path, key, _KEYS)
        if key not in _TABLES:
            continue
        if not isinstance(value, dict):
            raise TargetError(f"{path}: key '{key}': expected a table, got {_show(value)}")
        known = _TABLES[key]
        for k in value if known is not None else ():
            if k in known:
                continue
            if key == "peak_flops":
                hint = difflib.get_close_matches(k, known, n=1)
                raise TargetError(f"{path}: key 'peak_flops.{k}': unknown dtype" +
                                  (f"; did you mean '{hint[0]}'?" if hint else "") +
                                  f" (expected one of {', '.join(known)})")
            raise _unknown(path, f"{key}.{k}", [f"{key}.{x}" for x in known])


def _number(node: Any) -> bool:
    return isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node)


def _integer(node: Any) -> bool:
    return isinstance(node, int) and not isinstance(node, bool) and abs(node) <= MAX_INT


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
        "positive number": _number(node) and node > 0,
        "non-negative number": _number(node) and node >= 0,
        "positive integer": _integer(node) and node > 0,
        "non-negative integer": _integer(node) and node >= 0,
        "list of op names": isinstance(node, list) and all(isinstance(x, str) for x in node),
        "table": isinstance(node, dict),
    }[kind]
    if not ok:
        why = (" (numbers must be finite)" if isinstance(node, float) and not math.isfinite(node) else
               " (integers must fit in 64 bits)" if isinstance(node, int) and abs(node) > MAX_INT else "")
        raise TargetError(f"{path}: key '{key}': expected a {kind}, got {_show(node)}{why}")
    return node


def _read(path: Path) -> str:
    """A target file's text: a regular file of at most MAX_FILE_BYTES, in UTF-8."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise TargetError(f"{path}: not a regular file")
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise TargetError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise TargetError(f"{path}: larger than {MAX_FILE_BYTES} bytes (MAX_FILE_BYTES)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise TargetError(f"{path}: not UTF-8: byte 0x{data[e.start]:02x} on line {line}") from None


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
        data = tomllib.loads(_read(path))
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{path}: malformed TOML: {e}") from None
    except (RecursionError, ValueError) as e:  # arrays nested thousands deep; an integer of 5000 digits
        raise TargetError(f"{path}: malformed TOML: {type(e).__name__}: {str(e)[:100]}") from None
    p = str(path)
    _check_keys(data, p)
    name = _get(data, "name", p, "string")
    executor = _get(data, "executor", p, "string")
    if executor not in EXECUTORS:
        raise TargetError(f"{p}: key 'executor': expected one of {', '.join(EXECUTORS)}, "
                          f"got {_show(executor)}")
    alignment = _get(data, "alignment", p, "positive integer")
    if alignment & (alignment - 1):
        raise TargetError(f"{p}: key 'alignment': expected a power of two, got {alignment}")
    peaks = _get(data, "peak_flops", p, "table")
    for k in peaks:
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
        algebra_iterations=_get(data, "saturation.algebra_iterations", p, "non-negative integer",
                                base.algebra_iterations))
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
                  exact_below=_get(data, "extraction.exact_below", p, "non-negative integer", 0),
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
