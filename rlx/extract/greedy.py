"""DAG-aware extraction over a frozen e-graph view.

The start is a valid program: every loaded class takes its original node (the input
program), every class a rule created takes the first node a Kahn sweep finds computable.
Then a top-down local search tries each live class's other nodes. The delta of a switch
is exact DAG cost: reference counts over the selection mean a shared class is paid once,
a node that stops being used frees its whole exclusive subgraph, and one that starts
being used pays for the subgraph it brings in. Levels (a topological labeling of the
selection) keep the result acyclic; a DFS decides the rare candidate the labeling cannot.
Everything is iterative: no recursion limit on deep graphs.
"""
from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rlx.egraph.view import ENode, EGraphView

INF = math.inf


class NoProgram(Exception):
    """No finite-cost program computes a root: carries the classes that cannot be computed."""

    def __init__(self, classes: list[int], computable: set[int]) -> None:
        super().__init__(f"{len(classes)} e-classes have no computable node")
        self.classes, self.computable = classes, computable


@dataclass
class Extraction:
    choice: dict[int, ENode] = field(default_factory=dict)  # live class -> node
    level: dict[int, float] = field(default_factory=dict)
    cost: float = 0.0
    initial_cost: float = 0.0
    switches: int = 0
    passes: int = 0
    stopped: str = ""    # "seconds" when the local search ran out of time


class _Selection:
    def __init__(self, view: EGraphView, cost: Callable[[int, ENode], float]) -> None:
        self.view = view
        self.cost_fn = cost
        self.sel: dict[int, ENode] = {}
        self.own: dict[int, float] = {}
        self.ref: dict[int, int] = {}
        self.level: dict[int, float] = {}
        self._cache: dict[tuple[int, ENode], float] = {}

    def cost(self, c: int, n: ENode) -> float:
        key = (c, n)
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = self.cost_fn(c, n)
        return v

    def incref(self, c: int) -> float:
        added = 0.0
        stack = [c]
        while stack:
            x = stack.pop()
            self.ref[x] = self.ref.get(x, 0) + 1
            if self.ref[x] == 1:
                added += self.own[x]
                stack.extend(self.sel[x].children)
        return added

    def decref(self, c: int) -> float:
        freed = 0.0
        stack = [c]
        while stack:
            x = stack.pop()
            self.ref[x] -= 1
            if self.ref[x] == 0:
                freed += self.own[x]
                stack.extend(self.sel[x].children)
        return freed

    def switch(self, c: int, new: ENode) -> float:
        """Select ``new`` for class ``c``; return the change in total cost. A class no one
        uses (an earlier move of the same step may have freed it) only changes its choice."""
        old = self.sel[c]
        if self.ref.get(c, 0) == 0:
            self.sel[c], self.own[c] = new, self.cost(c, new)
            return 0.0
        delta = self.cost(c, new) - self.own[c]
        self.sel[c], self.own[c] = new, self.cost(c, new)
        for ch in new.children:
            delta += self.incref(ch)
        for ch in old.children:
            delta -= self.decref(ch)
        return delta

    def usable(self, c: int, n: ENode) -> bool:
        return (self.cost(c, n) < INF and c not in n.children and all(ch in self.sel for ch in n.children))

    def acyclic(self, c: int, n: ENode) -> bool:
        """Whether selecting ``n`` for ``c`` keeps the selection acyclic."""
        if all(self.level[ch] < self.level[c] for ch in n.children):
            return True
        return not self.reaches(n.children, c)

    def reaches(self, starts: Sequence[int], target: int) -> bool:
        """Whether ``target`` is reachable from ``starts`` along selected nodes."""
        floor = self.level[target]
        seen: set[int] = set()
        stack = [s for s in starts]
        while stack:
            x = stack.pop()
            if x == target:
                return True
            if x in seen or self.level.get(x, INF) < floor:
                continue
            seen.add(x)
            stack.extend(self.sel[x].children)
        return False

    def relevel(self) -> None:
        """Recompute levels as a topological labeling of the whole selection."""
        level: dict[int, float] = {}
        for root in self.sel:
            if root in level:
                continue
            stack = [(root, False)]
            while stack:
                x, done = stack.pop()
                if done:
                    level[x] = 1 + max((level[ch] for ch in self.sel[x].children), default=0)
                elif x not in level:
                    stack.append((x, True))
                    stack.extend((ch, False) for ch in self.sel[x].children if ch not in level)
        self.level = level


def extract(view: EGraphView, roots: Sequence[int], cost: Callable[[int, ENode], float],
            original: dict[int, ENode], order: dict[int, int], max_passes: int = 4,
            seconds: float = math.inf) -> Extraction:
    """Pick one node per needed class minimizing DAG cost. ``original`` is the input
    program's node per loaded class and ``order`` its topological index. The local search
    stops after ``seconds`` (the selection is a valid program after every switch)."""
    deadline = time.perf_counter() + seconds
    s = _Selection(view, cost)
    # Loaded classes are labeled 2 * their depth in the input program, classes the rules
    # made 1 + their children's: a multi-output op's tuple class lands strictly below the
    # classes its projections join, so taking both projections keeps the labeling valid.
    for c in sorted(original, key=order.__getitem__):
        n = original[c]
        if s.cost(c, n) < INF and all(ch in s.sel for ch in n.children):
            s.sel[c], s.own[c] = n, s.cost(c, n)
            s.level[c] = 2.0 * (1 + max((s.level[ch] // 2 for ch in n.children), default=0))
    _kahn(s)
    missing = [c for c in _needed(s, roots) if c not in s.sel]
    if missing:
        raise NoProgram(missing, set(s.sel))
    for r in roots:
        s.incref(r)
    total = sum(s.own[c] for c in s.ref if s.ref[c] > 0)
    out = Extraction(initial_cost=total)
    gets: dict[int, list[tuple[int, ENode]]] = {}  # tuple class -> its projections
    for c, nodes in enumerate(view.classes):
        for n in nodes:
            if n.is_get:
                gets.setdefault(n.children[0], []).append((c, n))
    for p in range(max_passes):
        out.passes = p + 1
        improved = False
        for c in sorted((c for c in s.ref if s.ref[c] > 0), key=lambda c: -s.level[c]):
            if s.ref.get(c, 0) == 0:
                continue
            if time.perf_counter() > deadline:
                out.stopped = "seconds"
                break
            best, best_delta = None, -1e-15
            for n in view.classes[c]:
                if n == s.sel[c] or not s.usable(c, n):
                    continue
                moves = _moves(s, c, n, gets)
                delta = _try(s, moves)
                if delta is not None and delta < best_delta:
                    best, best_delta = moves, delta
            if best is not None:
                _apply(s, best)
                total += best_delta
                out.switches += 1
                improved = True
        if not improved or out.stopped:
            break
    out.choice = {c: s.sel[c] for c in s.ref if s.ref[c] > 0}
    out.level = {c: s.level[c] for c in out.choice}
    out.cost = sum(s.own[c] for c in out.choice)
    return out


def _moves(s: _Selection, c: int, n: ENode, gets: dict[int, list[tuple[int, ENode]]]) -> list[tuple[int, ENode]]:
    """Selecting a projection of a multi-output op moves its live siblings with it: one
    residual+norm kernel only pays off when both its results are taken from it."""
    moves = [(c, n)]
    if n.is_get:
        for c2, n2 in gets.get(n.children[0], []):
            if c2 != c and s.ref.get(c2, 0) > 0 and s.sel[c2] != n2 and s.usable(c2, n2):
                moves.append((c2, n2))
    return moves


def _try(s: _Selection, moves: list[tuple[int, ENode]]) -> float | None:
    """The cost change of ``moves`` (None if one would close a cycle); state is restored."""
    done: list[tuple[int, ENode]] = []
    delta = 0.0
    ok = True
    relabeled = False
    for c, n in moves:
        if not s.acyclic(c, n):
            ok = False
            break
        done.append((c, s.sel[c]))
        broke = any(s.level[ch] >= s.level[c] for ch in n.children)
        delta += s.switch(c, n)
        if broke and len(moves) > 1:
            s.relevel()  # the next move's cycle check needs a valid labeling
            relabeled = True
    for c, old in reversed(done):
        s.switch(c, old)
    if relabeled:
        s.relevel()
    return delta if ok else None


def _apply(s: _Selection, moves: list[tuple[int, ENode]]) -> None:
    relevel = False
    for c, n in moves:
        relevel |= any(s.level[ch] >= s.level[c] for ch in n.children)
        s.switch(c, n)
    if relevel:
        s.relevel()


def _kahn(s: _Selection) -> None:
    """Give every class without a selection the first finite node whose children are ready."""
    view = s.view
    waiting: dict[int, list[tuple[int, ENode]]] = {}
    pending: dict[tuple[int, ENode], int] = {}
    heap: list[tuple[float, int, int, ENode]] = []
    tick = 0
    for c, nodes in enumerate(view.classes):
        if c in s.sel:
            continue
        for n in nodes:
            if s.cost(c, n) == INF:
                continue
            todo = {ch for ch in n.children if ch not in s.sel}
            if not todo:
                lvl = 1 + max((s.level[ch] for ch in n.children), default=0)
                heapq.heappush(heap, (lvl, tick, c, n))
                tick += 1
            else:
                pending[(c, n)] = len(todo)
                for ch in todo:
                    waiting.setdefault(ch, []).append((c, n))
    while heap:
        lvl, _, c, n = heapq.heappop(heap)
        if c in s.sel:
            continue
        s.sel[c], s.own[c], s.level[c] = n, s.cost(c, n), lvl
        for (pc, pn) in waiting.pop(c, []):
            pending[(pc, pn)] -= 1
            if pending[(pc, pn)] == 0 and pc not in s.sel:
                plvl = 1 + max((s.level[ch] for ch in pn.children), default=0)
                heapq.heappush(heap, (plvl, tick, pc, pn))
                tick += 1


def _needed(s: _Selection, roots: Sequence[int]) -> list[int]:
    """Classes reachable from the roots through selected nodes (and roots without one)."""
    out, seen, stack = [], set(), list(roots)
    while stack:
        c = stack.pop()
        if c in seen:
            continue
        seen.add(c)
        out.append(c)
        if c in s.sel:
            stack.extend(s.sel[c].children)
    return out
