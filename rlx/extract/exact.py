"""Exact extraction: an integer linear program over the frozen e-graph, solved with
SciPy's ``milp`` (HiGHS) under a time limit.

Variables: x_n in {0, 1} per computable e-node, t_c in [0, K] per e-class. Minimize
sum cost_n x_n subject to: each root class has a chosen node; a chosen node has a chosen
node in each child class; and t_c >= t_child + 1 when a node of c is chosen (big-M), which
forbids cycles. Each class's cost is paid once however many parents use it, so this is
the DAG cost the greedy extractor approximates. Small e-graphs only: the size threshold
and time limit come from the target.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from rlx.egraph.view import ENode, EGraphView
from rlx.extract.greedy import Extraction

STATUS = {0: "optimal", 1: "time limit", 2: "infeasible", 3: "unbounded", 4: "failed"}


def extract_exact(view: EGraphView, roots: Sequence[int], cost: Callable[[int, ENode], float],
                  greedy: Extraction, seconds: float) -> tuple[Extraction, dict[str, Any]]:
    """The ILP optimum (or the best solution found in time); the greedy extraction when the
    solver finds nothing better. The info dict gives status, gap and both costs."""
    nodes: list[tuple[int, ENode, float]] = []
    reach: set[int] = set()
    stack = list(roots)
    while stack:  # classes reachable through computable nodes
        c = stack.pop()
        if c in reach:
            continue
        reach.add(c)
        for n in view.classes[c]:
            w = cost(c, n)
            if math.isfinite(w):
                stack.extend(n.children)
    for c in sorted(reach):
        for n in view.classes[c]:
            w = cost(c, n)
            if math.isfinite(w) and c not in n.children and all(ch in reach for ch in n.children):
                nodes.append((c, n, w))
    classes = sorted(reach)
    cidx = {c: i for i, c in enumerate(classes)}
    nx, k = len(nodes), len(classes)
    by_class: dict[int, list[int]] = {}
    for i, (c, _, _) in enumerate(nodes):
        by_class.setdefault(c, []).append(i)
    rows, cols, vals, lo, hi = [], [], [], [], []

    def row(entries: list[tuple[int, float]], lower: float, upper: float) -> None:
        r = len(lo)
        for col, v in entries:
            rows.append(r)
            cols.append(col)
            vals.append(v)
        lo.append(lower)
        hi.append(upper)

    for r in set(roots):
        row([(i, 1.0) for i in by_class.get(r, [])], 1.0, np.inf)
    big = k + 1.0
    for i, (c, n, _) in enumerate(nodes):
        for ch in set(n.children):
            row([(i, 1.0)] + [(j, -1.0) for j in by_class.get(ch, [])], -np.inf, 0.0)
            # t_c - t_ch - big * x_i >= 1 - big
            row([(nx + cidx[c], 1.0), (nx + cidx[ch], -1.0), (i, -big)], 1.0 - big, np.inf)
    a = coo_matrix((vals, (rows, cols)), shape=(len(lo), nx + k))
    objective = np.concatenate([np.array([w for _, _, w in nodes]), np.zeros(k)])
    integrality = np.concatenate([np.ones(nx), np.zeros(k)])
    bounds = Bounds(np.zeros(nx + k), np.concatenate([np.ones(nx), np.full(k, float(k))]))
    res = milp(objective, constraints=LinearConstraint(a, lo, hi), integrality=integrality, bounds=bounds,
               options={"time_limit": seconds, "disp": False})
    info: dict[str, Any] = {"extractor": "exact", "status": STATUS.get(res.status, str(res.status)),
                            "variables": nx + k, "constraints": len(lo), "greedy_cost": greedy.cost}
    gap = getattr(res, "mip_gap", None)
    info["gap"] = float(gap) if gap is not None and res.x is not None else None
    if res.x is None:
        info["used"] = "greedy"
        return greedy, info
    chosen: dict[int, ENode] = {}
    for c, ids in by_class.items():
        picked = [i for i in ids if res.x[i] > 0.5]
        if picked:
            chosen[c] = nodes[min(picked, key=lambda i: nodes[i][2])][1]
    ex = _from_choice(chosen, roots, cost, greedy)
    info["exact_cost"] = ex.cost
    if ex.cost > greedy.cost + 1e-15:
        info["used"] = "greedy"
        return greedy, info
    info["used"] = "exact"
    return ex, info


def _from_choice(chosen: dict[int, ENode], roots: Sequence[int], cost, greedy: Extraction) -> Extraction:
    """Keep the classes the roots need; label them topologically (iteratively)."""
    level: dict[int, float] = {}
    for r in roots:
        stack = [(r, False)]
        while stack:
            c, done = stack.pop()
            if done:
                level[c] = 1 + max((level[ch] for ch in chosen[c].children), default=0)
            elif c not in level:
                stack.append((c, True))
                stack.extend((ch, False) for ch in chosen[c].children if ch not in level)
    choice = {c: chosen[c] for c in level}
    return Extraction(choice=choice, level=level, cost=sum(cost(c, n) for c, n in choice.items()),
                      initial_cost=greedy.initial_cost, passes=0, switches=0)
