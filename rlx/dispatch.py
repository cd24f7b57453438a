"""The dispatch report: how each op kind of a compiled program runs on its target.

Each op kind is a *native* kernel (a hand-written override of the executor), *generated*
from a skeleton of the kernel layer (which one), *legalized* (the target does not claim it:
the rules lowered it to its common form, so it is not in the compiled program), running as
its *definition* op by op (a fused op no skeleton fits), its registry *reference* (on
Vulkan: on the host, and why), or a *view* (no work). The answer comes from the executor
itself: the program is prepared (with zero params, which costs their memory) and its
``dispatch`` read; an executor that cannot run on this machine (CuPy without a GPU) is
reported as needing the device, with the kernel layer's part (which skeleton fits) still
given, since every executor prints the same skeletons.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from rlx.exec.base import ExecutorError, get_executor
from rlx.extract.target import load_target
from rlx.ir.dtypes import DType
from rlx.ir.registry import REGISTRY, TensorType
from rlx.kernels.lower import kernel_for, why_not


def _skeleton(op: str, types: list[TensorType], attrs: dict) -> str:
    k = kernel_for(op, types, attrs)
    return k.kind if k is not None else f"no skeleton: {why_not(op, types, attrs)}"


def _legalized(result: Any, target: Any) -> dict[str, dict[str, Any]]:
    """Op kinds the target does not claim: in the input and lowered by the rules, or matched
    by a fusion rule whose op the target lacks (the program keeps their common form)."""
    report, out = result.report, {}
    rules = {r.name: r for r in result.ruleset.rules}
    matched = {s.name: s.matches for s in report.rules}
    for op, n in report.ops_before.items():
        if target.cost.claims(op) or op in report.ops_after:
            continue
        by = sorted(r.name for r in result.ruleset.rules if r.ruleset == "legalize" and matched.get(r.name)
                    and getattr(getattr(r.lhs, "expr", r.lhs), "op", None) == op)
        has_def = op in REGISTRY and REGISTRY.get(op).definition is not None
        out[op] = {"steps": 0, "in_input": n, "how": "legalized",
                   "detail": f"target {target.name} does not claim it; lowered by "
                             + (", ".join(by) + (" or its definition" if has_def else "") if by else
                                "its definition" if has_def else "the rules")}
    for miss in report.unsupported:
        rule = rules.get(miss.rule)
        op = getattr(getattr(rule, "rhs", None), "op", None) if rule else None
        if op is None or op in out or op in report.ops_after:
            continue
        n = sum(1 for m in report.unsupported if m.rule == miss.rule)
        out[op] = {"steps": 0, "matched": n, "how": "legalized",
                   "detail": f"rule {miss.rule} matched {n}x but target {target.name} does not claim {op}: "
                             "the program keeps its common form"}
    return out


def dispatch_report(result: Any, target: Any = None, binding: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Per op kind of ``result`` (a ``rlx.compile`` result for ``target``, by default the
    shipped target of the report's name): how its steps run on the target's executor, as
    JSON-ready data (also set as ``result.report.dispatch``). Symbols are bound by
    ``binding``, else 8."""
    with result.ruleset.active():  # the claim set names the rule files' fused ops too
        target = load_target(target if target is not None else result.report.target).resolve_claims()
    lir = result.lir
    if lir.symbols:
        lir = lir.specialize({s: int((binding or {}).get(s, 8)) for s in lir.symbols})
    out: dict[str, Any] = {"executor": result.executor, "status": "asked the executor", "ops": {}}
    dispatch: dict[str, str] = {}
    reasons: dict[str, str] = {}
    try:
        ex = get_executor(result.executor)
        params = {e["name"]: result.source.weights[e["name"]] if e["name"] in result.source.weights
                  else np.zeros(e["shape"], DType(e["dtype"]).np) for e in lir.manifest["params"]}
        with result.ruleset.active():
            program = ex.prepare(lir, params)
        dispatch = dict(program.dispatch)
        reasons = dict(getattr(program, "host_reasons", {}))
    except ExecutorError as e:
        out["status"] = f"needs the device: {e}"
    ops: dict[str, dict[str, Any]] = {}
    with result.ruleset.active():
        for step in lir.steps:
            if step.op in ("input", "param", "constant") or step.phase == "epilogue":
                continue
            row = ops.setdefault(step.op, {"steps": 0, "kinds": Counter(), "details": Counter()})
            row["steps"] += 1
            kind = dispatch.get(step.node, "needs the device")
            if step.phase == "prologue":
                row["folded"] = row.get("folded", 0) + 1
            row["kinds"][kind] += 1
            types = [TensorType(tuple(lir.values[v].shape), DType(lir.values[v].dtype)) for v in step.inputs]
            if kind == "generated" or (kind == "needs the device" and not step.view):
                row["details"][_skeleton(step.op, types, step.attrs)] += 1
            elif step.node in reasons:
                row["details"][f"on the host: {reasons[step.node]}"] += 1
            elif kind == "view" or step.view:
                row["details"]["aliases its input"] += 1
            elif kind == "native":
                row["details"][f"the {result.executor} executor's own kernel"] += 1
            elif kind == "reference":
                row["details"]["no skeleton fits and no own kernel: the registry's NumPy reference"] += 1
            elif kind == "definition":
                row["details"][f"op by op ({_skeleton(step.op, types, step.attrs)})"] += 1
    for op, row in ops.items():
        kinds, details = row.pop("kinds"), row.pop("details")
        row.update({k: n for k, n in kinds.items()})
        row["how"] = " + ".join(k for k, _ in kinds.most_common())
        row["detail"] = "; ".join(d if n == row["steps"] else f"{d} ({n})" for d, n in details.most_common())
    ops.update(_legalized(result, target))
    out["ops"] = dict(sorted(ops.items()))
    result.report.dispatch = out
    return out


__all__ = ["dispatch_report"]
