"""Worker threads for the NumPy executor: every core runs part of each step.

NumPy's ufuncs and BLAS release the GIL over their loops, so a step cut into one list of
calls per core, with disjoint outputs and each list with its own scratch, runs in parallel
from plain threads. BLAS is held at one thread while a program runs: its own threads would
compete with ours for the cores (and on a busy machine its spinning workers collapse), so
GEMMs are cut across our threads like everything else.

``RLX_NUM_THREADS`` sets the number of threads (default: the cores this process may use).
"""
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

Call = tuple[Callable[..., object], tuple]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_count() -> int:
    """How many lists a step is cut into."""
    env = os.environ.get("RLX_NUM_THREADS", "")
    return max(1, int(env)) if env.strip().isdigit() else _cores()


def run_calls(calls: Sequence[Call]) -> None:
    for fn, args in calls:
        fn(*args)


class Pool:
    """``run(lists)`` runs the lists on the calling thread and the workers, each list on one
    thread, and returns when all are done. The lists are handed out as threads come free:
    a step cut into more lists than threads keeps every core busy when one runs slow (on a
    shared machine a core is often taken away for a while). One caller at a time uses the
    workers: a second thread that finds them busy runs its lists itself, in order (correct,
    only not parallel); so does a forked child, which has none of its parent's threads."""

    def __init__(self, workers: int) -> None:
        self._pid = os.getpid()
        self._inbox: list[queue.SimpleQueue] = []
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._busy = threading.Lock()
        for i in range(workers):
            box: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=self._work, args=(box,), name=f"rlx-worker-{i}", daemon=True).start()
            self._inbox.append(box)

    @property
    def size(self) -> int:
        return len(self._inbox) + 1

    @staticmethod
    def _drain(tasks: queue.SimpleQueue) -> None:
        while True:
            try:
                calls = tasks.get_nowait()
            except queue.Empty:
                return
            run_calls(calls)

    def _work(self, box: queue.SimpleQueue) -> None:
        while True:
            tasks = box.get()
            try:
                self._drain(tasks)
                self._done.put(None)
            except BaseException as e:  # handed to the caller, which raises it
                self._done.put(e)

    def run(self, lists: Sequence[Sequence[Call]]) -> None:
        if len(lists) == 1 or not self._inbox or self._pid != os.getpid() or not self._busy.acquire(blocking=False):
            for calls in lists:
                run_calls(calls)
            return
        try:
            tasks: queue.SimpleQueue = queue.SimpleQueue()
            for calls in lists:
                tasks.put(calls)
            helpers = self._inbox[:len(lists) - 1]
            for box in helpers:
                box.put(tasks)
            error = None
            try:
                self._drain(tasks)
            except BaseException as e:
                error = e
                while not tasks.empty():  # the others stop after their current list
                    try:
                        tasks.get_nowait()
                    except queue.Empty:
                        break
            for _ in helpers:
                got = self._done.get()
                error = error or got
            if error is not None:
                raise error
        finally:
            self._busy.release()


_POOL: Pool | None = None
_POOL_LOCK = threading.Lock()


def pool() -> Pool:
    """The process's pool (made on first use, with ``thread_count() - 1`` workers)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.size != thread_count() or _POOL._pid != os.getpid():
            _POOL = Pool(thread_count() - 1)
        return _POOL


def split(n: int, parts: int) -> list[range]:
    """``range(n)`` cut into at most ``parts`` contiguous, nearly equal, non-empty ranges."""
    if n <= 0:
        return []
    parts = max(1, min(parts, n))
    return [range(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0
_BLAS_BEFORE: list[int] = []


@contextmanager
def blas_single_threaded() -> Iterator[None]:
    """BLAS at one thread inside (when we run more than one thread ourselves). Programs
    running at once in several threads share it: the first in sets it, the last out
    restores what it was."""
    global _BLAS_USERS, _BLAS_BEFORE
    ctl = _blas_controllers()
    if thread_count() == 1 or not ctl:
        yield
        return
    with _BLAS_LOCK:
        if _BLAS_USERS == 0:
            _BLAS_BEFORE = [c.num_threads for c in ctl]
            for c in ctl:
                c.set_num_threads(1)
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0:
                for c, n in zip(ctl, _BLAS_BEFORE):
                    c.set_num_threads(n)


_CONTROLLERS: list | None = None


def _blas_controllers() -> list:
    global _CONTROLLERS
    if _CONTROLLERS is None:
        from threadpoolctl import ThreadpoolController
        _CONTROLLERS = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    return _CONTROLLERS
