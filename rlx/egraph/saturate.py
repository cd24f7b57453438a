"""Run the compiled rule sets under limits (iterations, e-nodes, seconds) with a schedule.

Each iteration runs every rule set once, in order: ``algebra`` only for its first few
iterations (commutativity and friends must not blow the e-graph up), then ``fusion``,
the region rules (followed by the body helpers to saturation), and the rest. It stops
when nothing changes (saturated) or at the first limit it hits, and says which.

One iteration of an explosive rule set (associativity with commutativity, say) can grow the
e-graph twentyfold and run for minutes, so the limits are also checked *before* each
iteration, against a projection: the e-graph grows, and the iteration takes, at most what
the last one did times the square of the last growth factor (growth accelerates in an
explosion). After the first iteration the factor is not squared: its growth is the one-time
fan-out of every fusion's alternatives (a ResNet grows fourfold), not a rate. An iteration
projected past a limit does not run.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from egglog import bindings

from rlx.rules.compile import Compiled


@dataclass(frozen=True)
class Limits:
    iterations: int = 24
    enodes: int = 2_000_000
    seconds: float = 30.0
    algebra_iterations: int = 2
    # The e-graph may also grow to at most this many e-nodes per e-node loaded (fusion grows
    # it 3-4x): freezing and extracting then stay proportional to the program, whatever a
    # rule set does (associativity with commutativity reaches a million e-nodes from 20).
    growth: int = 50

    def enode_cap(self, loaded: int) -> int:
        return min(self.enodes, max(20_000, self.growth * loaded))


@dataclass
class SaturationStats:
    iterations: int = 0
    enodes: int = 0
    stop: str = "saturated"          # saturated | iterations | enodes | seconds
    matches: Counter = field(default_factory=Counter)  # egglog rule name -> matches
    seconds: float = 0.0


def _run(eg: bindings.EGraph, text: str):
    return eg.run_program(*eg.parse_program(text))


def count_enodes(eg: bindings.EGraph) -> int:
    sizes = _run(eg, "(print-size)")[0].sizes
    return sum(n for name, n in sizes if not name.startswith(("L_", "Near_", "ty-", "Size")))


def saturate(eg: bindings.EGraph, compiled: Compiled, limits: Limits) -> SaturationStats:
    stats = SaturationStats()
    t0 = time.perf_counter()
    size, last_seconds, growth = count_enodes(eg), 0.0, 1.0
    cap = limits.enode_cap(size)
    for it in range(limits.iterations):
        ahead = growth if it == 1 else growth ** 2  # growth accelerates in an explosion
        if it > 0 and size * ahead > cap:
            stats.stop = "enodes"
            break
        if it > 0 and time.perf_counter() - t0 + last_seconds * ahead > limits.seconds:
            stats.stop = "seconds"
            break
        t_it = time.perf_counter()
        updated = False
        for s in compiled.rulesets:
            if s == "algebra" and it >= limits.algebra_iterations:
                continue
            report = _run(eg, f"(run {s} 1)")[-1].report
            updated |= report.updated
            stats.matches.update({k: v for k, v in report.num_matches_per_rule.items() if v})
            if s in compiled.region_sets:
                _run(eg, "(run-schedule (saturate (run region-eval)))")
            if s == "algebra" and report.updated:  # type what it made before fusion matches on it
                _run(eg, "(run-schedule (saturate (run types)))")
        stats.iterations = it + 1
        stats.enodes = count_enodes(eg)
        growth, size = max(1.0, stats.enodes / max(size, 1)), stats.enodes
        last_seconds = time.perf_counter() - t_it
        if not updated:
            stats.stop = "saturated"
            break
        if stats.enodes > cap:
            stats.stop = "enodes"
            break
        if time.perf_counter() - t0 > limits.seconds:
            stats.stop = "seconds"
            break
    else:
        stats.stop = "iterations"
    if compiled.near:
        _run(eg, "(run near 1)")
    stats.seconds = time.perf_counter() - t0
    return stats
