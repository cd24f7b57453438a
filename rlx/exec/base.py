"""The executor protocol: what every backend implements, and how one is found.

An executor takes a planned LIR and params and gives a ``Program``: the arena allocated
once, params bound once, ``run`` writing every step's result into its slot, ``read`` of any
value, and per-step timings. How each step runs is its *dispatch*: a ``native`` kernel (a
hand-written override registered against the op for this executor), ``generated`` from a
skeleton (``rlx.kernels``), the op's ``definition`` run op by op (a fused op that fits no
skeleton), the registry ``reference`` (NumPy only), or a ``view`` (no work: the planner
aliased the value to its input).
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rlx.errors import RlxError
from rlx.ir.lir import LIR, Step
from rlx.ir.registry import REGISTRY, OpDef

DISPATCH = ("native", "generated", "definition", "reference", "view")


class ExecutorError(RlxError):
    """An executor that is not available, or a target claiming what it cannot run."""


@dataclass
class StepTiming:
    index: int
    node: str
    op: str
    dispatch: str
    seconds: float


class Program(Protocol):
    """One LIR bound to params on one executor."""
    lir: LIR
    dispatch: dict[str, str]            # step node -> how it runs (one of DISPATCH)

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]: ...
    def read(self, value: str) -> np.ndarray: ...
    def profile(self, inputs: Mapping[str, Any]) -> list[StepTiming]: ...


class Executor(Protocol):
    name: str

    def available(self) -> str | None:
        """None when this machine can run it, else why not."""

    def supports(self, op: OpDef) -> bool:
        """Whether it has a kernel, a skeleton or a fallback for ``op``."""

    def prepare(self, lir: LIR, params: Mapping[str, Any]) -> Program: ...


_EXECUTORS: dict[str, Callable[[], Executor]] = {}
_OVERRIDES: dict[str, dict[str, Callable]] = {}


def register_executor(name: str, factory: Callable[[], Executor]) -> None:
    _EXECUTORS[name] = factory


def override(executor: str, *ops: str) -> Callable[[Callable], Callable]:
    """Register a hand-written kernel for ``ops`` on ``executor`` (it wins over a skeleton)."""
    def deco(fn: Callable) -> Callable:
        for op in ops:
            _OVERRIDES.setdefault(executor, {})[op] = fn
        return fn
    return deco


def overrides(executor: str) -> dict[str, Callable]:
    return _OVERRIDES.get(executor, {})


def has_native(executor: str, op: str) -> bool:
    """Whether ``executor`` has a hand-written kernel for ``op`` (a fused op with one runs as
    one kernel even where no skeleton fits its definition, and is priced so)."""
    _load_builtin()
    return op in _OVERRIDES.get(executor, {})


def get_executor(name: str) -> Executor:
    """The executor called ``name``; an error says why it cannot run here."""
    _load_builtin()
    if name not in _EXECUTORS:
        hint = difflib.get_close_matches(name, list(_EXECUTORS) + ["cupy", "vulkan"], n=1)
        raise ExecutorError(f"executor {name!r} is not available yet (this build runs: "
                            f"{', '.join(sorted(_EXECUTORS))})" + (f"; did you mean {hint[0]!r}?" if hint and
                                                                   hint[0] != name else ""))
    ex = _EXECUTORS[name]()
    reason = ex.available()
    if reason:
        raise ExecutorError(f"executor {name!r} is not available on this machine: {reason}")
    return ex


def check_claims(executor: str, claimed: frozenset[str] | None) -> None:
    """A target may claim only ops its executor can run: an error names the first that it
    cannot. Executors not built yet are checked when they run."""
    _load_builtin()
    if executor not in _EXECUTORS:
        return
    ex = _EXECUTORS[executor]()
    names = claimed if claimed is not None else frozenset(REGISTRY.names())
    bad = sorted(op for op in names if op in REGISTRY and REGISTRY.get(op).category != "source"
                 and not ex.supports(REGISTRY.get(op)))
    if bad:
        raise ExecutorError(f"the target claims {', '.join(bad)}, which executor {executor!r} cannot run "
                            f"(no kernel, skeleton or fallback)")


def _load_builtin() -> None:
    from rlx.exec import numpy_exec  # noqa: F401  (registers itself)
    try:  # imports CuPy only when a program is made: a machine without it still lists it
        from rlx.exec import cupy_exec  # noqa: F401  (registers itself)
    except ImportError:
        pass
    from rlx.exec import vulkan_exec  # noqa: F401  (registers itself; imports wgpu only when used)


__all__ = ["Executor", "Program", "StepTiming", "ExecutorError", "DISPATCH", "get_executor", "register_executor",
           "override", "overrides", "has_native", "check_claims", "Step"]
