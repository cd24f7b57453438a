"""Best-fit offsets for buffers with liveness intervals in one arena.

Each buffer goes into the smallest gap that fits it among the buffers already placed that
are live at the same time, else above them all; offsets are aligned, and buffers live at
the same step never overlap. The result depends on the order buffers are placed in, so a
few standard orders (largest first, earliest first, longest-lived first, largest
size x lifetime first, then seeded shuffles of equal-size buffers), each with best-fit,
most-recently-freed and first-fit gaps, are tried and the smallest arena kept; the search stops as soon as one
reaches the liveness lower bound, which nothing can beat. Deterministic (fixed seed), so
plans and their fingerprints are stable.
"""
from __future__ import annotations

import random
from collections.abc import Callable


def align(n: int, a: int) -> int:
    return -(-n // a) * a


ORDERS: dict[str, Callable[[tuple[int, int, int]], tuple]] = {
    "size": lambda iv: (-iv[0], iv[1]),
    "start": lambda iv: (iv[1], -iv[0]),
    "lifetime": lambda iv: (-(iv[2] - iv[1]), -iv[0]),
    "area": lambda iv: (-iv[0] * (iv[2] - iv[1] + 1), iv[1]),
}


def _place(intervals: list[tuple[int, int, int]], order: list[int], alignment: int, mode: str) -> list[int]:
    """mode: "best" (smallest gap that fits), "first" (lowest), "recent" (the slot whose
    last occupant died most recently: chains of buffers then stay in one slot)."""
    placed: list[tuple[int, int, int, int]] = []  # offset, end, first, last
    ended_at: dict[int, int] = {}                  # offset -> latest last step of a buffer placed there
    offsets = [0] * len(intervals)
    for i in order:
        size, first, last = intervals[i]
        size = align(max(size, 1), alignment)
        busy = sorted((o, e) for o, e, f, l in placed if f <= last and first <= l)
        best, best_key, cursor = None, None, 0
        for o, e in busy + [(None, None)]:
            room = (o - cursor) if o is not None else None
            if room is None or room >= size:
                # best-fit (or first-fit), then the slot whose last occupant died most recently
                recency = ended_at.get(cursor, -1) if ended_at.get(cursor, -1) < first else -1
                fit = room if room is not None else float("inf")
                key = {"best": (fit, -recency), "first": (0,), "recent": (-recency, fit)}[mode]
                if best_key is None or key < best_key:
                    best, best_key = cursor, key
                if mode == "first":
                    break
            if o is not None:
                cursor = max(cursor, align(e, alignment))
        offsets[i] = best
        placed.append((best, best + size, first, last))
        ended_at[best] = max(ended_at.get(best, -1), last)
    return offsets


def lower_bound(intervals: list[tuple[int, int, int]], alignment: int) -> int:
    """Max over steps of the aligned bytes live at that step."""
    events: dict[int, int] = {}
    for size, first, last in intervals:
        size = align(max(size, 1), alignment)
        events[first] = events.get(first, 0) + size
        events[last + 1] = events.get(last + 1, 0) - size
    live = best = 0
    for t in sorted(events):
        live += events[t]
        best = max(best, live)
    return best


def assign(intervals: list[tuple[int, int, int]], alignment: int, shuffles: int = 6) -> list[int]:
    """intervals: (nbytes, first, last) per buffer -> aligned offsets, same order."""
    bound = lower_bound(intervals, alignment)
    rng = random.Random(0)
    orders = [sorted(range(len(intervals)), key=lambda i, k=key: (*k(intervals[i]), i)) for key in ORDERS.values()]
    for _ in range(shuffles):
        ties = [rng.random() for _ in intervals]
        orders.append(sorted(range(len(intervals)), key=lambda i: (-intervals[i][0], ties[i])))
    best, best_top = [], None
    for order in orders:
        for mode in ("best", "recent", "first"):
            offsets = _place(intervals, order, alignment, mode)
            top = max((o + align(max(iv[0], 1), alignment) for o, iv in zip(offsets, intervals)), default=0)
            if best_top is None or top < best_top:
                best, best_top = offsets, top
            if best_top <= bound:
                return best
    return best
