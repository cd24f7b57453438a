"""Cost-model fidelity: does a target file's cost model predict what its executor measures?

Extraction picks programs by predicted seconds, so a target whose predictions do not even
*order* steps the way the hardware does picks the wrong programs. ``check`` runs a compiled
program step by step (the executor's ``profile``), pairs each step's measured time with
the time the cost model gives the same op application, and reports the Spearman rank
correlation (over steps and over op kinds), predicted vs measured per op kind, the
worst-predicted steps, and a refit of the target file's entries (launch overhead,
bandwidth, peak FLOP/s per dtype, then an ``[efficiency]`` factor per op kind) by least
squares in log space, so a bad prediction comes with the number to change.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from rlx.exec.base import Program
from rlx.extract.cost import CostModel
from rlx.extract.target import Target
from rlx.ir.graph import Graph
from rlx.pipeline import definition_body


# ----------------------------------------------------------------------------- statistics
def rank(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing the mean of the ranks they span (as Spearman needs)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's on tie-averaged ranks (NaN if either side is
    constant or there are fewer than two pairs)."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} values against {len(y)}")
    if len(x) < 2:
        return math.nan
    rx, ry = rank(x), rank(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else math.nan


# ----------------------------------------------------------------------------- predictions
@dataclass
class StepCost:
    """What the cost model knows of one step: its predicted seconds and the figures it is
    made of (FLOPs, bytes, the dtype whose peak applies), to refit the model from."""
    node: str
    op: str
    predicted: float
    flops: float = 0.0
    nbytes: float = 0.0
    dtype: str = "f32"
    priced: str = "roofline"   # or "definition" (a fused op with no kernel, priced as its body), or "view"


def predict(graph: Graph, target: Target, binding: Mapping[str, int] | None = None) -> dict[str, StepCost]:
    """Each op node of ``graph`` (its symbols bound by ``binding``) -> its predicted cost, priced as extraction
    prices it (``rlx.pipeline``'s node cost: a fused op no skeleton fits and no native kernel
    covers runs, and costs, its definition op by op)."""
    cost = target.cost
    out: dict[str, StepCost] = {}
    for n in graph.nodes:
        opdef = n.opdef
        if opdef.category == "source":
            continue
        ins, outs = [v.type for v in n.inputs], list(n.outputs)
        bind = cost.binding(ins + outs, binding)
        body = definition_body(n.op, ins, n.attrs, target.executor)
        if body is not None:
            out[n.name] = StepCost(n.name, n.op, cost.body_cost(body, bind), priced="definition")
            continue
        if opdef.view:  # a view op the planner could not alias runs as a copy, priced as a view
            out[n.name] = StepCost(n.name, n.op, cost.op_cost(n.op, n.attrs, ins, outs, bind), priced="view")
            continue
        in_shapes = [bind.resolve_shape(t.shape) for t in ins]
        out_shapes = [bind.resolve_shape(t.shape) for t in outs]
        flops = float(opdef.flops(in_shapes, out_shapes, n.attrs))
        nbytes = float(opdef.bytes_moved(ins, outs, in_shapes, out_shapes))
        out[n.name] = StepCost(n.name, n.op, cost.op_cost(n.op, n.attrs, ins, outs, bind), flops, nbytes,
                               str(outs[0].dtype) if outs else "f32")
    return out


def roofline(s: StepCost, cost: CostModel) -> float:
    """The cost model's formula for a roofline-priced step under ``cost``'s figures."""
    return cost.roofline(s.op, s.flops, s.nbytes, s.dtype)


# ----------------------------------------------------------------------------- measurements
def measure(program: Program, inputs: Mapping[str, Any], repeats: int = 5) -> dict[str, tuple[float, str]]:
    """Each body step's node -> (median seconds over ``repeats`` profiled runs, its
    dispatch), after one unprofiled warm-up run; views (no work) are left out."""
    program.run(inputs)
    samples: dict[str, list[float]] = {}
    dispatch: dict[str, str] = {}
    for _ in range(max(1, repeats)):
        for t in program.profile(inputs):
            if t.dispatch != "view":
                samples.setdefault(t.node, []).append(t.seconds)
                dispatch[t.node] = t.dispatch
    return {k: (statistics.median(v), dispatch[k]) for k, v in samples.items()}


# ----------------------------------------------------------------------------- the report
@dataclass
class StepFidelity:
    node: str
    op: str
    dispatch: str
    predicted: float
    measured: float
    priced: str = "roofline"

    @property
    def ratio(self) -> float:
        """measured / predicted (above 1: the model is optimistic)."""
        return self.measured / self.predicted if self.predicted > 0 else math.inf


@dataclass
class Fidelity:
    """Predicted vs measured for one program on one target, and what to change."""
    target: str
    model: str
    executor: str
    steps: list[StepFidelity]
    spearman: float                    # over steps
    spearman_ops: float                # over op kinds (summed per kind)
    by_op: dict[str, dict[str, float]]  # op -> steps, predicted_ms, measured_ms, ratio
    suggestions: dict[str, Any] = field(default_factory=dict)  # see ``fit``
    device: str = ""

    @property
    def predicted_total(self) -> float:
        return sum(s.predicted for s in self.steps)

    @property
    def measured_total(self) -> float:
        return sum(s.measured for s in self.steps)

    def worst(self, k: int = 8) -> list[StepFidelity]:
        """The ``k`` steps furthest off by factor (|log measured/predicted|), then by time."""
        return sorted(self.steps, key=lambda s: (-abs(math.log(s.ratio)) if 0 < s.ratio < math.inf else -math.inf,
                                                 -s.measured))[:k]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(predicted_total=self.predicted_total, measured_total=self.measured_total,
                 worst=[asdict(s) | {"ratio": s.ratio} for s in self.worst()])
        return d


def compare(costs: Mapping[str, StepCost], measured: Mapping[str, tuple[float, str]], target: Target,
            model: str = "", device: str = "") -> Fidelity:
    """Pair predictions with measurements (steps measured but not priced, such as a copy the
    planner inserted, are left out), correlate them, and fit the target's figures."""
    steps = [StepFidelity(node, costs[node].op, disp, costs[node].predicted, sec, costs[node].priced)
             for node, (sec, disp) in measured.items() if node in costs]
    by_op: dict[str, dict[str, float]] = {}
    for s in steps:
        row = by_op.setdefault(s.op, {"steps": 0, "predicted_ms": 0.0, "measured_ms": 0.0})
        row["steps"] += 1
        row["predicted_ms"] += 1e3 * s.predicted
        row["measured_ms"] += 1e3 * s.measured
    for row in by_op.values():
        row["ratio"] = row["measured_ms"] / row["predicted_ms"] if row["predicted_ms"] else math.inf
    kinds = list(by_op)
    fid = Fidelity(target.name, model, target.executor, steps,
                   spearman([s.predicted for s in steps], [s.measured for s in steps]),
                   spearman([by_op[k]["predicted_ms"] for k in kinds], [by_op[k]["measured_ms"] for k in kinds]),
                   dict(sorted(by_op.items(), key=lambda kv: -kv[1]["measured_ms"])), device=device)
    fid.suggestions = fit([costs[s.node] for s in steps], [s.measured for s in steps], target.cost)
    fid.suggestions["structural"] = fid.suggestions.get("still_off", []) + unpriced(costs, measured)
    return fid


# ----------------------------------------------------------------------------- the refit
def _log_error(costs: Sequence[StepCost], measured: Sequence[float], cost: CostModel) -> list[float]:
    return [math.log(m / roofline(c, cost)) for c, m in zip(costs, measured)]


def _with(cost: CostModel, x: Sequence[float], dtypes: Sequence[str]) -> CostModel:
    launch, bandwidth, *peaks = (math.exp(v) for v in x)
    return replace(cost, launch_overhead=launch, bandwidth=bandwidth,
                   peak_flops={**cost.peak_flops, **dict(zip(dtypes, peaks))})


def fit(costs: Sequence[StepCost], measured: Sequence[float], cost: CostModel) -> dict[str, Any]:
    """Refit the target's figures to the measurements, by least squares on log(measured /
    predicted) (a Cauchy loss, so a few ops far off do not drag every figure): launch overhead,
    bandwidth and the peak of each dtype in the program together, then, with those, one
    ``[efficiency]`` factor (it scales peak FLOP/s) for each compute-bound op kind more than
    25% off that the factor explains (a grid over 1/1000 to 8), alternating a few rounds; op
    kinds still more than 2x off are listed. Steps priced
    as a definition (a sum of other ops) or as a view (a copy the planner could not alias)
    are left out. Returns the fitted
    figures (each within 1000x of the file's), the current ones, the entries worth changing
    (more than 25% off), and the Spearman and median |log error| before and after."""
    from scipy.optimize import least_squares
    pairs = [(c, m) for c, m in zip(costs, measured) if c.priced == "roofline" and m > 0]
    if len(pairs) < 3:
        return {"note": f"only {len(pairs)} roofline-priced steps were measured: nothing to fit"}
    cs, ms = [p[0] for p in pairs], [p[1] for p in pairs]
    dtypes = sorted({c.dtype for c in cs if c.flops > 0 and c.dtype in cost.peak_flops})
    x_file = [math.log(cost.launch_overhead), math.log(cost.bandwidth)] + [math.log(cost.peak_flops[d]) for d in dtypes]
    span = math.log(1000.0)  # each figure within 1000x of the file's: a fit past that is noise, not a machine
    bounds = ([v - span for v in x_file], [v + span for v in x_file])
    ops = sorted({c.op for c in cs if c.flops > 0})
    fitted = cost
    for _ in range(4):  # alternate: shared figures given the factors, then each op's factor given those
        x0 = [math.log(fitted.launch_overhead), math.log(fitted.bandwidth)] + [math.log(fitted.peak_flops[d])
                                                                             for d in dtypes]
        res = least_squares(lambda x: _log_error(cs, ms, _with(fitted, x, dtypes)), x0, loss="cauchy",
                            f_scale=0.2, bounds=bounds)
        fitted = _with(fitted, res.x, dtypes)
        names = ["launch", "bandwidth"] + [f"peak_flops.{d}" for d in dtypes]
        at_limit = [n for n, v, lo, hi in zip(names, res.x, *bounds) if min(v - lo, hi - v) < 1e-3]
        efficiency = dict(fitted.efficiency)
        for op in ops:
            mine_c = [c for c in cs if c.op == op]
            mine_m = [m for c, m in zip(cs, ms) if c.op == op]
            if not _compute_bound(mine_c, fitted):
                continue  # [efficiency] scales FLOP/s: a memory-bound op's misfit is bandwidth's

            def err(e: float) -> float:
                trial = replace(fitted, efficiency={**efficiency, op: e})
                return sum(v * v for v in _log_error(mine_c, mine_m, trial))
            best = min((10 ** (-3 + 3.9 * i / 200) for i in range(201)), key=err)
            best = min((best * 10 ** (0.0195 * (i / 10 - 1)) for i in range(21)), key=err)  # refine
            now = err(efficiency.get(op, 1.0))
            # an entry only for an op off by more than 25% that it explains (small misfits are the
            # shared figures' to absorb, else every op's factor would take up their slack)
            if now > len(mine_c) * math.log(1.25) ** 2 and err(best) < 0.5 * now:
                efficiency[op] = best
        fitted = replace(fitted, efficiency=efficiency)

    def summary(model: CostModel) -> dict[str, float]:
        errs = _log_error(cs, ms, model)
        return {"spearman": spearman([roofline(c, model) for c in cs], ms),
                "median_abs_log10_error": statistics.median(abs(e) / math.log(10) for e in errs)}

    now = {"launch": cost.launch_overhead, "bandwidth": cost.bandwidth,
           **{f"peak_flops.{d}": cost.peak_flops[d] for d in dtypes},
           **{f"efficiency.{op}": cost.efficiency.get(op, 1.0) for op in efficiency}}
    new = {"launch": fitted.launch_overhead, "bandwidth": fitted.bandwidth,
           **{f"peak_flops.{d}": fitted.peak_flops[d] for d in dtypes},
           **{f"efficiency.{op}": e for op, e in efficiency.items()}}
    change = {k: v for k, v in new.items() if not 0.8 <= v / now[k] <= 1.25}
    still = []  # op kinds the refit leaves more than 2x off: no figure of the file can say it
    for op in sorted({c.op for c in cs}):
        errs = [e for c, e in zip(cs, _log_error(cs, ms, fitted)) if c.op == op]
        off = math.exp(statistics.median(errs))
        if not 0.5 <= off <= 2:
            bound = "compute" if _compute_bound([c for c in cs if c.op == op], fitted) else "memory"
            still.append(f"{op}: {bound}-bound, measured {off:.2g}x the refitted prediction (median of {len(errs)} "
                         "steps)" + ("; the cost model has no per-op bandwidth factor" if bound == "memory" else ""))
    for n in at_limit:
        still.append(f"{n}: the fit stopped at its limit (1000x the file's figure): the data cannot place it")
    return {"current": now, "fitted": new, "change": change, "still_off": still, "steps_fitted": len(cs),
            "before": summary(cost), "after": summary(fitted)}


def _compute_bound(steps: Sequence[StepCost], cost: CostModel) -> bool:
    """Whether most of these steps are priced by their FLOPs at full efficiency."""
    flops_bound = sum(c.flops / cost.peak_flops.get(c.dtype, cost.peak_flops["f32"]) >= c.nbytes / cost.bandwidth
                      for c in steps)
    return 2 * flops_bound > len(steps)


def unpriced(costs: Mapping[str, StepCost], measured: Mapping[str, tuple[float, str]]) -> list[str]:
    """What no target-file entry can fix: op kinds priced as a view that run as a copy, or
    priced as their definition (the cost model's structure, not its figures)."""
    out = []
    for priced, why in (("view", "priced as a view (no work) but runs as a copy: the planner could not alias it"),
                        ("definition", "priced as its definition op by op (no skeleton fits)")):
        kinds: dict[str, list[tuple[float, float]]] = {}
        for node, (sec, _) in measured.items():
            c = costs.get(node)
            if c is not None and c.priced == priced:
                kinds.setdefault(c.op, []).append((sec, c.predicted))
        for op, pairs in sorted(kinds.items()):
            if any(p <= 0 for _, p in pairs):
                out.append(f"{op}: {why}; predicted 0, measured {1e6 * statistics.median(m for m, _ in pairs):.1f} us "
                           f"(median of {len(pairs)} steps)")
                continue
            med = statistics.median(m / p for m, p in pairs)
            if priced == "definition" or not 0.2 <= med <= 5:
                out.append(f"{op}: {why}; measured / predicted {med:.1f} (median of {len(pairs)} steps)")
    return out


def toml_lines(change: Mapping[str, float], current: Mapping[str, float],
               notes: Mapping[str, str] | None = None) -> list[str]:
    """The suggested changes as target-file lines, grouped by table."""
    tables = {"launch": ("overhead", "launch"), "bandwidth": ("memory", "bandwidth")}
    grouped: dict[str, list[str]] = {}
    for key, value in change.items():
        table, name = tables.get(key) or key.split(".", 1)
        note = f"; {notes[key]}" if notes and key in notes else ""
        grouped.setdefault(table, []).append(f"{name} = {value:.3g}    # now {current[key]:.3g}{note}")
    return [line for table in ("overhead", "memory", "peak_flops", "efficiency") if table in grouped
            for line in [f"[{table}]", *grouped[table]]]


def device_name(executor: str) -> str:
    """The device an executor measured on, for the record (best effort)."""
    import platform
    try:
        if executor == "vulkan":
            from rlx.exec.vulkan_exec import context
            return str(context()["name"])
        if executor == "cupy":
            import cupy
            return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except Exception:  # noqa: BLE001  (a label only)
        pass
    return platform.processor() or platform.machine()


def check_model(graph: Graph, target: str | Any, *, binding: Mapping[str, int] | None = None, repeats: int = 5,
                seed: int = 0, rules: Any = None, name: str = "") -> Fidelity:
    """Compile ``graph`` for ``target``, run it on the target's executor with random inputs
    (symbols bound by ``binding``, else 8; an imported model keeps its weights) and compare
    each step's measured time with its predicted one."""
    import rlx
    from rlx.extract.target import load_target
    from rlx.ir.interpret import random_arrays
    tgt = load_target(target)
    result = rlx.compile(graph, target=tgt, rules=rules, binding=binding)
    syms = {s: int((binding or {}).get(s, 8)) for s in result.lir.symbols}
    arrays = random_arrays(graph, syms, seed=seed)
    arrays.update(graph.weights)
    ins = {n.name: arrays[n.name] for n in graph.inputs}
    result.bind({n.name: arrays[n.name] for n in graph.params})
    program = result.executor_for(ins)
    with result.ruleset.active():
        costs = predict(result.graph, tgt, syms)
    return compare(costs, measure(program, ins, repeats), tgt, name or graph.name, device_name(tgt.executor))


__all__ = ["rank", "spearman", "StepCost", "predict", "roofline", "measure", "StepFidelity", "Fidelity",
           "compare", "fit", "unpriced", "toml_lines", "device_name", "check_model"]
