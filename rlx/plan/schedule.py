"""A topological schedule that keeps peak memory low where that is cheap.

List scheduling: among the nodes whose inputs are computed, run the one that grows live
memory least (bytes it writes minus bytes of inputs that die at it), ties broken by the
input program's order. Sources (inputs, params, constants) run first: they are the prologue.
"""
from __future__ import annotations

from rlx.errors import GraphError
from rlx.ir.graph import Graph, Node


def schedule(graph: Graph, nbytes: dict[str, int]) -> list[Node]:
    order = graph.topo_order()
    rank = {n.id: i for i, n in enumerate(order)}
    consumers: dict[str, int] = {}
    users: dict[int, list[Node]] = {n.id: [] for n in order}
    for n in order:
        for v in n.inputs:
            consumers[v.name] = consumers.get(v.name, 0) + 1
            users[v.node.id].append(n)
    out: list[Node] = [n for n in order if n.opdef.category == "source"]
    done = {n.id for n in out}
    remaining = dict(consumers)

    def score(n: Node) -> tuple[float, int]:
        freed = sum(nbytes.get(v.name, 0) for v in {v.name: v for v in n.inputs}.values()
                    if remaining.get(v.name, 0) == sum(1 for w in n.inputs if w.name == v.name))
        made = sum(nbytes.get(v.name, 0) for v in n.values)
        return (made - freed, rank[n.id])

    ready = [n for n in order if n.id not in done and all(v.node.id in done for v in n.inputs)]
    while ready:
        best = min(ready, key=score)
        ready.remove(best)
        out.append(best)
        done.add(best.id)
        for v in best.inputs:
            remaining[v.name] -= 1
        for u in users[best.id]:
            if u.id in done:
                continue
            if all(w.node.id in done for w in u.inputs) and u not in ready:
                ready.append(u)
    if len(out) != len(order):  # topo_order rejects cycles, so this is a planner bug, said plainly
        missing = sorted({n.name for n in order} - {n.name for n in out})
        raise GraphError(f"schedule could not place nodes {missing[:5]} of graph {graph.name!r}")
    return out


