"""The FusionReport: what the optimizer did, why near matches did not fire, and what the
e-graph looked like. Prints as rich tables, serializes to JSON."""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from rlx.errors import RlxError


@dataclass
class MissedFusion:
    rule: str
    node: str
    reason: str
    hint: str = ""


@dataclass
class RuleStats:
    name: str
    ruleset: str
    doc: str
    matches: int = 0
    applied: int = 0


@dataclass
class EGraphStats:
    iterations: int = 0
    eclasses: int = 0
    enodes: int = 0
    stop: str = "saturated"
    limits: dict[str, Any] = field(default_factory=dict)


@dataclass
class FusionReport:
    target: str = "cpu"
    rule_files: list[str] = field(default_factory=list)
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    nodes_before: int = 0
    nodes_after: int = 0
    fused: dict[str, int] = field(default_factory=dict)
    rules: list[RuleStats] = field(default_factory=list)
    missed: list[MissedFusion] = field(default_factory=list)
    unsupported: list[MissedFusion] = field(default_factory=list)  # matched, but the target lacks the op
    egraph: EGraphStats = field(default_factory=EGraphStats)
    cost_before: float = 0.0
    cost_after: float = 0.0
    times: dict[str, float] = field(default_factory=dict)
    extraction: dict[str, Any] = field(default_factory=dict)  # extractor, and for exact: status, gap
    # fused and composite ops in the program -> their kernel: the skeleton it is generated
    # from, or why none fits (then it runs, and is priced, as its definition)
    kernels: dict[str, str] = field(default_factory=dict)
    folded: int = 0  # ops that depend on no input: computed once at bind (the LIR prologue)
    # how each op kind runs on the target's executor (rlx.dispatch.dispatch_report fills it:
    # it prepares the program, so it is asked for, not computed by every compile)
    dispatch: dict[str, Any] = field(default_factory=dict)

    @property
    def matmuls_before(self) -> int:
        return self.ops_before.get("matmul", 0)

    @property
    def matmuls_after(self) -> int:
        return self.ops_after.get("matmul", 0)

    def rule(self, name: str) -> RuleStats:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["matmuls_before"], d["matmuls_after"] = self.matmuls_before, self.matmuls_after
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    def _extraction_text(self) -> str:
        x = self.extraction
        if x.get("extractor") != "exact":
            return f"extractor {x.get('extractor', '?')}"
        gap = x.get("gap")
        return (f"extractor exact ({x['status']}, gap {gap:.1e}, {x['variables']} variables; kept the "
                f"{x['used']} result)" if gap is not None else f"extractor exact ({x['status']}; kept the {x['used']} result)")

    def tables(self) -> Group:
        summary = Text.assemble(
            ("fusion report", "bold"), f"  target {self.target}: {self.nodes_before} -> {self.nodes_after} nodes, "
            f"matmuls {self.matmuls_before} -> {self.matmuls_after}, predicted cost "
            f"{self.cost_before * 1e3:.3f} -> {self.cost_after * 1e3:.3f} ms, "
            f"{self.folded} ops folded (computed once at bind)\n"
            f"e-graph: {self.egraph.iterations} iterations, {self.egraph.eclasses} e-classes, "
            f"{self.egraph.enodes} e-nodes, stopped: {self.egraph.stop}; {self._extraction_text()}; "
            + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in self.times.items()))
        fused = Table(title="fused ops by kind")
        fused.add_column("op")
        fused.add_column("count", justify="right")
        for op, n in sorted(self.fused.items()):
            fused.add_row(escape(op), str(n))
        rules = Table(title="rules")
        for col in ("rule", "set", "matches", "applied", "description"):
            rules.add_column(col, justify="right" if col in ("matches", "applied") else "left")
        for r in self.rules:
            rules.add_row(escape(r.name), escape(r.ruleset), str(r.matches), str(r.applied), escape(r.doc))
        parts: list[Any] = [summary, fused, rules]
        if self.kernels:
            kernels = Table(title="kernels of fused and composite ops")
            kernels.add_column("op")
            kernels.add_column("kernel")
            for op, how in sorted(self.kernels.items()):
                kernels.add_row(escape(op), escape(how))
            parts.append(kernels)
        if self.dispatch.get("ops"):
            d = self.dispatch
            table = Table(title=f"dispatch on executor {d['executor']} ({d['status']})")
            for col in ("op", "steps", "how", "detail"):
                table.add_column(col, justify="right" if col == "steps" else "left")
            for op, row in d["ops"].items():
                steps = str(row["steps"]) if row["steps"] else (f"0 ({row['in_input']} in the input)" if "in_input"
                                                                 in row else f"0 (matched {row.get('matched', 0)}x)")
                table.add_row(escape(op), steps + (f", {row['folded']} folded" if row.get("folded") else ""),
                              escape(row["how"]), escape(row["detail"]))
            parts.append(table)
        for title, items in (("missed fusions", self.missed), ("matched, but not supported on this target",
                                                               self.unsupported)):
            if items:
                table = Table(title=title)
                for col in ("rule", "node", "reason", "hint"):
                    table.add_column(col)
                for m in items:
                    table.add_row(*map(escape, (m.rule, m.node, m.reason, m.hint)))
                parts.append(table)
        return Group(*parts)

    def __rich__(self) -> Group:
        return self.tables()

    def __str__(self) -> str:
        console = Console(record=True, width=140, file=io.StringIO())
        console.print(self.tables())
        return console.export_text()


class FusionNotClean(RlxError):
    """``assert_fusion_clean=True`` and the report lists missed fusions."""

    def __init__(self, report: FusionReport) -> None:
        self.report = report
        lines = [f"{len(report.missed)} missed fusion(s):"] + [
            f"  {m.rule} at {m.node}: {m.reason}" + (f" ({m.hint})" if m.hint else "") for m in report.missed]
        super().__init__("\n".join(lines))

