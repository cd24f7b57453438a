"""Graphviz pictures of MIR graphs: fused nodes labelled and colored by kind. Writes DOT,
and SVG/PNG when the ``dot`` program is installed."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from rlx.errors import RlxError
from rlx.ir.graph import Graph

COLORS = {"source": "#e8e8e8", "fused": "#ffd27f", "composite": "#9fd4ff", "region": "#b9f2b9",
          "view": "#f4f4f4", "primitive": "#ffffff"}


def _kind(node) -> str:
    op = node.opdef
    if node.op == "region":
        return "region"
    if op.view:
        return "view"
    return op.category


def quote(text: object) -> str:
    """A DOT double-quoted string that shows ``text`` as written: quotes and backslashes are
    escaped (so nothing in a name can end the string or start an escape such as ``\\N``) and
    line breaks become DOT's ``\\n``."""
    s = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + s.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n") + '"'


def to_dot(graph: Graph) -> str:
    lines = [f"digraph {quote(graph.name)} {{", "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    ids = {n.id: f"n{i}" for i, n in enumerate(graph.topo_order())}
    for n in graph.topo_order():
        kind = _kind(n)
        label = [n.op if kind != "source" else f"{n.op} {n.name}"]
        if n.op == "region":
            label.append(str(n.attrs["body"]))
        elif kind in ("fused", "composite") and n.attrs:
            label.append(", ".join(f"{k}={v}" for k, v in n.attrs.items() if v is not None and k != "value"))
        label.append(", ".join(str(t) for t in n.outputs))
        text = "\n".join(label)
        lines.append(f'  {ids[n.id]} [label={quote(text)}, fillcolor="{COLORS[kind]}", '
                     f'tooltip={quote(n.name)}];')
    for n in graph.nodes:
        for v in n.inputs:
            lines.append(f"  {ids[v.node.id]} -> {ids[n.id]};")
    for i, (name, v) in enumerate(graph.outputs):
        lines.append(f'  out{i} [label={quote(f"output {name}")}, shape=oval, fillcolor="#ffffff"];')
        lines.append(f"  {ids[v.node.id]} -> out{i};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_dot(graph: Graph, path: str | Path) -> list[Path]:
    """Write ``path`` (DOT) and, if ``dot`` is installed, SVG and PNG beside it."""
    path = Path(path)
    path.write_text(to_dot(graph))
    written = [path]
    if shutil.which("dot"):
        for fmt in ("svg", "png"):
            out = path.with_suffix(f".{fmt}")
            done = subprocess.run(["dot", f"-T{fmt}", str(path), "-o", str(out)],
                                  capture_output=True, text=True)
            if done.returncode:
                why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
                raise RlxError(f"{path}: dot could not draw it: {why}")
            written.append(out)
    return written
