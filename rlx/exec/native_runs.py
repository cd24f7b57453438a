"""Runs of compiled steps as one native call.

Most steps of a compiled CPU program are one OpenMP loop each (``numpy_print.Threaded``).
Called one by one from Python, each opens and closes a parallel region, and between two of
them the other threads wait while Python dispatches the next: on MobileNetV3's 81 steps of
about 100 µs, the second core sat idle for a third of the run. A run of consecutive such
steps is handed to ``c_print.LOOPS`` as a table instead: one parallel region, loops
separated by barriers, no Python in between (an AOT executor's host loop, as TVM's and
torch.compile's C++ wrapper print it). Steps that are NumPy calls stay where they are,
between runs; per-step profiles still call each step on its own.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from rlx.exec.numpy_print import ChunkedKernel, Threaded, loop_table
from rlx.exec.parallel import thread_count


def loops_of(step: Callable[[], None]) -> list[Threaded] | None:
    """The compiled loops a step is, in order, or None if any part of it is not one."""
    if not isinstance(step, ChunkedKernel):
        return None
    out = []
    for phase in step.phases:
        if len(phase) != 1 or len(phase[0]) != 1 or not isinstance(phase[0][0][0], Threaded) or phase[0][0][1]:
            return None
        out.append(phase[0][0][0])
    return out


class NativeRun:
    """Consecutive compiled loops run by one call of ``rlx_loops``. The table is made on the
    first call, when the kernels' library is compiled and their addresses are known."""

    def __init__(self, loops: Sequence[Threaded]) -> None:
        self.loops = list(loops)
        self._pid = os.getpid()
        self._ready: tuple | None = None  # (driver, table, the arguments' arrays it points into)

    def _prepare(self) -> tuple:
        self._ready = loop_table(self.loops)  # in one assignment: never a table without its arrays
        return self._ready

    def __call__(self) -> None:
        fn, table, _ = self._ready or self._prepare()
        threads = thread_count() if os.getpid() == self._pid else 1  # a forked child has none of OpenMP's threads
        fn(table.ctypes.data, len(self.loops), threads)


def fused(steps: Sequence[Callable[[], None]]) -> list[Callable[[], None]]:
    """``steps`` with each run of two or more compiled loops in a row made one ``NativeRun``."""
    out: list[Callable[[], None]] = []
    pending: list[Threaded] = []
    last: list[Callable[[], None]] = []

    def flush() -> None:
        out.extend([NativeRun(pending)] if len(pending) > 1 else last)
        pending.clear()
        last.clear()
    for step in steps:
        loops = loops_of(step)
        if loops is None:
            flush()
            out.append(step)
        else:
            pending.extend(loops)
            last.append(step)
    flush()
    return out
