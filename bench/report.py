"""Regenerate bench/RESULTS.md (and the plots) from the JSON in bench/results/ alone.

Each benchmark gets a section: the command that produced it, the date, the machine (and the
device), then a table with medians, spreads (min-max) and the ratio against each peer.
A JSON file that is missing is a suite that was not run: its section says so. Text below
the "Notes" marker of the current RESULTS.md is hand-written and kept as it is; the
measurements of earlier sessions, with their analysis, are in bench/HISTORY.md.

    python bench/report.py [--results bench/results] [--out bench/RESULTS.md] [--no-plots]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
NOTES = "<!-- notes: hand-written below this line; bench/report.py keeps it -->"


# ----------------------------------------------------------------------------- cells
def cell(row: dict, key: str, digits: int = 1, scale: float = 1.0) -> str:
    """``median (min-max)`` of a timing, or "-"."""
    if row.get(key) is None:
        return "-"
    lo, hi = row.get(f"{key}_min"), row.get(f"{key}_max")
    med = f"{row[key] * scale:.{digits}f}"
    return f"{med} ({lo * scale:.{digits}f}–{hi * scale:.{digits}f})" if lo is not None and hi is not None else med


def ratio(row: dict, num: str, den: str) -> str:
    """``num / den`` of two medians as ``1.23x``, or "-"."""
    a, b = row.get(num), row.get(den)
    return f"{a / b:.2f}x" if a and b else "-"


def table(head: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right if right is not None else set(range(1, len(head)))
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if i in right else "---" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def geomean(xs: list[float]) -> float:
    xs = [x for x in xs if x and x > 0]
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else math.nan


# ----------------------------------------------------------------------------- provenance
def provenance(data: dict, path: Path, script: str) -> str:
    """Command, date, machine (and device), commit and wall time of a result file."""
    meta = data.get("meta", {})
    cmd = meta.get("command") or data.get("command") or \
        f"python bench/{script} (defaults assumed: the command was not recorded)"
    date = meta.get("date") or data.get("date") or time.strftime("%Y-%m-%d (file date)",
                                                                  time.gmtime(path.stat().st_mtime))
    mach = meta.get("cpu") and f"{meta['cpu']}, {meta.get('cores')} cores, {meta.get('platform')}, Python " \
        f"{meta.get('python')}" or data.get("machine", "machine not recorded")
    parts = [f"`{cmd}`", date, mach]
    if data.get("device"):
        parts.append(f"device: {data['device']}")
    if meta.get("commit"):
        parts.append(f"commit {meta['commit']}")
    if meta.get("wall_s") is not None:
        parts.append(f"{meta['wall_s']:.0f} s")
    text = "Command, date, machine: " + "; ".join(parts) + "."
    fail = data.get("last_failure")
    if fail:
        err = fail.get("error", "").strip().splitlines()[-1:] or ["?"]
        text += (f"\n\n**The last run ({fail.get('date')}, `{fail.get('command')}`) failed** "
                 f"(exit {fail.get('returncode')}: {err[0][:200]}); " +
                 ("these are the rows it wrote before failing." if data.get("meta") is fail or
                  data.get("meta", {}).get("date") == fail.get("date") else "the results above are from the previous run."))
    return text


# ----------------------------------------------------------------------------- sections
def compile_time(d: dict) -> tuple[str, str]:
    for r in d["rows"]:  # the script names the spreads total_min, model_min
        for k in ("total", "model"):
            r.setdefault(f"{k}_median_min", r.get(f"{k}_min"))
            r.setdefault(f"{k}_median_max", r.get(f"{k}_max"))
    rows = [[r["layers"], r["nodes"], cell(r, "total_median", 3), cell(r, "model_median", 3),
             f"{r['per_layer_ms']:.1f}", *(f"{r.get('phases_median', {}).get(p, math.nan):.3f}"
                                           for p in ("rules", "load", "saturate", "freeze", "extract")),
             r["enodes"], r["iterations"], r["stop"]] for r in d["rows"]]
    t = table(["layers", "MIR nodes", "total s (min–max)", "model s (min–max)", "ms/layer", "rules", "load",
               "saturate", "freeze", "extract", "e-nodes", "iterations", "stop"], rows, set(range(0, 12)))
    at32 = next((r for r in d["rows"] if r["layers"] == 32), None)
    per = [r["per_layer_ms"] for r in d["rows"] if r["layers"] >= 8]
    head = (f"32 layers in {at32['total_median']:.2f} s" if at32 else "") + \
        (f"; {min(per):.1f}–{max(per):.1f} ms per layer from 8 layers up" if per else "")
    return ("`rlx.compile` with the shipped rules on `rlx.models.llama(layers=L, d_model=4096, n_heads=32, "
            "d_ff=11008)`, cpu target; model = load + saturate + freeze + extract (phases are medians, s).\n\n" + t,
            head)


def extraction(d: dict) -> tuple[str, str]:
    rows = [[r["target"], r["layers"], r["enodes"], f"{r['input_cost'] * 1e6:.1f}", f"{r['greedy_cost'] * 1e6:.3f}",
             f"{r['exact_cost'] * 1e6:.3f}" if r.get("exact_cost") else "-",
             f"{r['greedy_over_exact']:.6f}" if r.get("greedy_over_exact") else "-", r["status"],
             f"{r['gap']:.1e}" if r.get("gap") is not None else "-", f"{r['greedy_s'] * 1e3:.1f}",
             cell(r, "exact_s", 0, 1e3)] for r in d["rows"]]
    t = table(["target", "layers", "e-nodes", "input µs", "greedy µs", "exact µs", "greedy/exact", "status", "gap",
               "greedy ms", "exact ms (min–max)"], rows, {1, 2, 3, 4, 5, 6, 8, 9, 10})
    worst = max((r["greedy_over_exact"] for r in d["rows"] if r.get("greedy_over_exact")), default=None)
    return ("The same saturated e-graph of `llama(layers=L, d_model=1024, n_heads=16, d_ff=2816, seq=128)` extracted "
            "by the greedy extractor and by the ILP; costs are the target's predicted µs.\n\n" + t,
            f"greedy within {100 * (worst - 1):.2f}% of the ILP optimum" if worst else "")


def memory_plan(d: dict) -> tuple[str, str]:
    mib = 2 ** 20
    rows = [[r["model"], r["form"], r["nodes"], f"{r['arena_bytes'] / mib:.2f}", f"{r['lower_bound_bytes'] / mib:.2f}",
             f"{r['arena_over_bound']:.3f}", f"{r['no_reuse_bytes'] / mib:.2f}", f"{r['saved_pct']:.1f}", r["views"],
             r["in_place"], f"{r['plan_s'] * 1e3:.0f}"] for r in d["rows"]]
    t = table(["model", "form", "nodes", "arena MiB", "lower bound MiB", "arena / bound", "no reuse MiB", "saved %",
               "views", "in place", "plan ms"], rows, set(range(2, 11)))
    worst = max(r["arena_over_bound"] for r in d["rows"])
    return ("LIR plans (alignment 64 B) as built (unfused) and as compiled for cpu; the bound is the most aligned "
            "bytes live at one step.\n\n" + t, f"worst arena / lower bound {worst:.3f} (goal ≤ 1.05)")


def user_ops(d: dict) -> tuple[str, str]:
    rows = [[r["op"], r["source"], r["kernel"].replace("generated: ", ""), f"{r['steps_fused']} vs {r['steps_unfused']}",
             cell(r, "fused_ms", 2), cell(r, "unfused_ms", 2), ratio(r, "unfused_ms", "fused_ms")] for r in d["rows"]]
    t = table(["op", "from", "kernel", "steps", "fused ms", "unfused ms", "unfused / fused"], rows, {4, 5, 6})
    g = geomean([r["unfused_ms"] / r["fused_ms"] for r in d["rows"]])
    return (f"Each fused op's kernel on the NumPy executor against the same program unfused (median of "
            f"{d.get('repeats', '?')}, min–max, ms; above 1x the fused kernel is faster).\n\n" + t,
            f"fused / unfused geometric mean {g:.2f}x")


PEERS_CPU = (("unfused_ms", "unfused interpreter"), ("torch_ms", "PyTorch eager"), ("ort_ms", "onnxruntime"))


def runtime_cpu(d: dict) -> tuple[str, str]:
    peers = [(k, n) for k, n in PEERS_CPU if any(k in r for r in d["rows"])]
    gemm = any("gemm_fraction" in r for r in d["rows"])

    def gemm_cells(r: dict) -> list[str]:
        if "gemm_fraction" not in r:
            return ["-", "-"] if gemm else []
        peak = r.get("sgemm_peak_gflops")
        return [f"{100 * r['gemm_fraction']:.0f}%",
                f"{r['gemm_gflops']:.0f}" + (f" ({100 * r['gemm_gflops'] / peak:.0f}%)" if peak else "")]
    rows = [[r["model"], f"{r.get('nodes', '?')} ({r.get('nodes_compiled', '?')})", cell(r, "rlx_ms"),
             *[cell(r, k) for k, _ in peers], *[ratio(r, k, "rlx_ms") for k, _ in peers], *gemm_cells(r)]
            for r in d["rows"]]
    t = table(["model", "MIR nodes (compiled)", "rlx ms", *[f"{n} ms" for _, n in peers],
               *[f"{n} / rlx" for _, n in peers],
               *(["rlx time in GEMM steps", "their GFLOP/s (of NumPy's 1024³ sgemm)"] if gemm else [])], rows)
    heads = [f"{n} / rlx {geomean([r[k] / r['rlx_ms'] for r in d['rows'] if k in r]):.2f}x"
             for k, n in peers if k != "unfused_ms"]
    return ("f32, 2 threads, batch 1 unless the row says; medians with min–max in ms; ratio = peer / rlx (above 1x "
            "rlx is faster).\n\n"
            + t, ", ".join(heads) + " (geometric means)")


def models_cpu(d: dict) -> tuple[str, str]:
    rows = [[r["model"], f"{r['import_s']:.2f}", f"{r['compile_s']:.2f}", f"{r['nodes']} ({r['nodes_compiled']})",
             cell(r, "rlx_ms"), cell(r, "ort_ms"), ratio(r, "ort_ms", "rlx_ms"),
             f"{r['max_err_vs_onnxruntime']:.1e} ({r['tolerance']:.0e})",
             ", ".join(f"{k} {v}" for k, v in sorted(r.get("fused", {}).items()))] for r in d["rows"]]
    t = table(["model", "import s", "compile s", "MIR nodes (compiled)", "rlx ms", "onnxruntime ms",
               "onnxruntime / rlx", "max err (tol)", "fused"], rows, set(range(1, 8)))
    g = geomean([r["ort_ms"] / r["rlx_ms"] for r in d["rows"]])
    return ("Exported with torch.onnx.export (dynamo), random weights, batch 1, seq 128 / image 224; rlx compiled for "
            "cpu vs ONNX Runtime (CPU provider, 2 threads) in the same run; ratio = onnxruntime / rlx.\n\n" + t,
            f"onnxruntime / rlx {g:.2f}x (geometric mean over {len(d['rows'])} models)")


def compiled_cpu(d: dict) -> tuple[str, str]:
    rows = [[r["model"], cell(r, "numpy_ms"), cell(r, "compiled_ms"), ratio(r, "numpy_ms", "compiled_ms"),
             f"{r['max_err']:.1e} ({r['tolerance']:.0e})"] for r in d["rows"]]
    t = table(["model", "NumPy kernels ms", "compiled ms", "NumPy kernels / compiled", "max diff (tol)"], rows,
              set(range(1, 5)))
    g = geomean([r["numpy_ms"] / r["compiled_ms"] for r in d["rows"]])
    return ("Each model compiled for cpu twice, with the C++ printer's kernels and with `RLX_CC=0` (the NumPy "
            f"printer's), run alternately on the same inputs; batch 1; compiler: {d.get('compiler', '?')}.\n\n" + t,
            f"NumPy kernels / compiled {g:.2f}x (geometric mean over {len(d['rows'])} models)")


def runtime_gpu(d: dict) -> tuple[str, str]:
    peers = [p for p in ("eager", "compile", "autotune") if any(f"{p}_ms" in r for r in d["rows"])]
    names = {"eager": "PyTorch eager", "compile": "torch.compile", "autotune": "max-autotune"}
    rows = []
    for r in d["rows"]:
        if "error" in r:
            rows.append([r["row"], "failed: " + r["error"][:80]] + [""] * (2 * len(peers) + 2))
            continue
        bw, gm = r.get("elementwise_bandwidth_fraction"), r.get("gemm_fraction_of_cublas")
        rows.append([r["row"], cell(r, "rlx_ms", 2), *[cell(r, f"{p}_ms", 2) for p in peers],
                     *[ratio(r, f"{p}_ms", "rlx_ms") for p in peers], f"{bw:.0%}" if bw else "-",
                     f"{gm:.0%}" if gm else "-"])
    notes = any(r.get("note") for r in d["rows"])
    if notes:
        rows = [row + [r.get("note", "")] for row, r in zip(rows, d["rows"])]
    t = table(["row", "rlx ms", *[f"{names[p]} ms" for p in peers], *[f"{names[p]} / rlx" for p in peers],
               "elementwise BW", "GEMM / cuBLAS", *(["run"] if notes else [])], rows,
              set(range(1, 2 * len(peers) + 4)))
    c = d.get("ceilings", {})
    ceil = (f"Measured ceilings: copy {c['copy_bytes_per_s'] / 1e12:.2f} TB/s, cuBLAS f16 "
            f"{c['gemm_flops_f16'] / 1e12:.0f} TFLOP/s, TF32 {c['gemm_flops_tf32'] / 1e12:.0f} TFLOP/s. ") if c else ""
    heads = [f"{names[p]} / rlx {geomean([r[f'{p}_ms'] / r['rlx_ms'] for r in d['rows'] if f'{p}_ms' in r]):.2f}x"
             for p in peers]
    return (ceil + "Medians by CUDA events, min–max, ms; ratio = peer / rlx (above 1x rlx is faster).\n\n" + t,
            ", ".join(heads) + " (geometric means)")


def runtime_vulkan(d: dict) -> tuple[str, str]:
    rows = [[r["model"], f"{r['steps']} ({r['pipelines']})", cell(r, "vulkan_ms"), cell(r, "numpy_ms"),
             ratio(r, "numpy_ms", "vulkan_ms"), f"{r['max_err_vs_numpy']:.1e}"] for r in d["rows"]]
    t = table(["model", "steps (pipelines)", "rlx-vulkan ms", "rlx-numpy ms", "numpy / vulkan", "max err"], rows)
    kinds = [[r["model"], k, b["steps"], f"{b['ms']:.1f}", f"{b['gflops_per_s']:.1f}"]
             for r in d["rows"] for k, b in sorted(r.get("breakdown", {}).items(), key=lambda kv: -kv[1]["ms"])]
    t2 = table(["model", "kind of step", "steps", "ms", "GFLOP/s"], kinds, {2, 3, 4})
    g = geomean([r["numpy_ms"] / r["vulkan_ms"] for r in d["rows"]])
    return (f"rlx on Vulkan ({d.get('device', '?')}) vs rlx on NumPy, f32, batch 1 (median of {d.get('repeats', '?')}, "
            "min–max, ms; the two alternate run by run). One profiled Vulkan run by kind of step:\n\n" + t + "\n\n" + t2,
            f"numpy / vulkan {g:.2f}x on {d.get('device', '?')}")


def fidelity(d: dict) -> tuple[str, str]:
    if d.get("error"):
        return f"Not measured: {d['error']}", "not measured"
    ops = [[op, int(r["steps"]), f"{r['predicted_ms']:.3f}", f"{r['measured_ms']:.3f}", f"{r['ratio']:.2f}"]
           for op, r in d["by_op"].items()]
    worst = [[w["node"], w["op"], w["dispatch"], w["priced"], f"{w['predicted'] * 1e6:.1f}", f"{w['measured'] * 1e6:.1f}",
              f"{w['ratio']:.2f}"] for w in d.get("worst", [])]
    sug = d.get("suggestions", {})
    text = (f"`{d.get('model')}` on target {d['target']} ({d.get('device', '?')}): {len(d['steps'])} steps, predicted "
            f"{d['predicted_total'] * 1e3:.2f} ms, measured {d['measured_total'] * 1e3:.2f} ms (median of "
            f"{d.get('repeats', '?')} profiled runs per step). **Spearman {d['spearman']:.3f}** over steps, "
            f"{d['spearman_ops']:.3f} over op kinds.\n\n"
            + table(["op", "steps", "predicted ms", "measured ms", "measured / predicted"], ops)
            + "\n\nWorst-predicted steps:\n\n"
            + table(["step", "op", "dispatch", "priced as", "predicted µs", "measured µs", "measured / predicted"],
                    worst, {4, 5, 6}))
    if sug.get("change") is not None:
        b, a = sug["before"], sug["after"]
        notes = sug.get("notes", {})
        lines = [f"{k} = {v:.3g}  (now {sug['current'][k]:.3g})" + (f"`: {notes[k]}`" if k in notes else "")
                 for k, v in sug["change"].items()]
        text += (f"\n\nWhat to change in the target file (least squares on log(measured / predicted) over "
                 f"{sug['steps_fitted']} steps; Spearman {b['spearman']:.3f} → {a['spearman']:.3f}, median |log10 "
                 f"error| {b['median_abs_log10_error']:.2f} → {a['median_abs_log10_error']:.2f}):\n\n"
                 + ("\n".join(f"- `{x}`" for x in lines) or "- nothing: every figure fits within 25%"))
    for line in sug.get("structural", []):
        text += f"\n- beyond the target file: {line}"
    if d.get("refit"):
        text += f"\n\nPredictions and refit recomputed {d['refit']['date']} ({d['refit']['how']})."
    return text, f"Spearman {d['spearman']:.2f} ({d['target']}, {d.get('device', '?')})"


# (title, file under results/, script, renderer)
SECTIONS: list[tuple[str, str, str, Callable[[dict], tuple[str, str]]]] = [
    ("Compile time", "compile_time.json", "compile_time.py", compile_time),
    ("Greedy vs exact extraction", "extraction.json", "extraction.py", extraction),
    ("Memory planning", "memory_plan.json", "memory_plan.py", memory_plan),
    ("Fused kernels vs unfused (user and shipped fused ops)", "user_ops.json", "user_ops.py", user_ops),
    ("CPU runtime vs PyTorch eager and ONNX Runtime", "runtime_cpu.json", "runtime_cpu.py", runtime_cpu),
    ("Real models on the CPU vs ONNX Runtime", "models_cpu.json", "models_cpu.py", models_cpu),
    ("Compiled CPU kernels vs the NumPy printer's", "compiled_cpu.json", "compiled_cpu.py", compiled_cpu),
    ("Vulkan executor on this machine", "runtime_vulkan.json", "runtime_vulkan.py", runtime_vulkan),
    ("Cost-model fidelity: cpu", "fidelity_cpu.json", "fidelity.py --targets cpu", fidelity),
    ("Cost-model fidelity: vulkan on this machine", "fidelity_vulkan.json", "fidelity.py --targets vulkan", fidelity),
    ("GPU runtime: CuPy vs PyTorch eager and torch.compile", "gpu/runtime_gpu.json", "runtime_gpu.py", runtime_gpu),
    ("GPU runtime with max-autotune (the GPU engineer's separate runs)", "gpu/runtime_gpu_autotune.json",
     "runtime_gpu.py --peers eager,compile,autotune", runtime_gpu),
    ("Vulkan executor on the GPU", "gpu/runtime_vulkan.json", "runtime_vulkan.py", runtime_vulkan),
    ("Cost-model fidelity: cuda", "gpu/fidelity_cuda.json", "fidelity.py --targets cuda", fidelity),
    ("Cost-model fidelity: vulkan on the GPU", "gpu/fidelity_vulkan.json", "fidelity.py --targets vulkan", fidelity),
]
SUITE_OF = {f: ("make bench-gpu" if f.startswith("gpu/") else "make bench") for _, f, _, _ in SECTIONS}


def load(results: Path, name: str) -> dict | None:
    p = results / name
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        return {"error": f"unreadable JSON: {e}"}


def render(results: Path, plots: dict[str, list[str]], notes: str) -> str:
    """RESULTS.md's text from the JSON under ``results``."""
    glance, body = [], []
    for title, name, script, fn in SECTIONS:
        d = load(results, name)
        anchor = "".join(c for c in title.lower() if c.isalnum() or c in " -_").replace(" ", "-")  # as GitHub does
        if d is None:
            glance.append([f"[{title}](#{anchor})", SUITE_OF[name], "not run", "-"])
            body.append(f"## {title}\n\nNot run: no `bench/results/{name}` (`{SUITE_OF[name]}` writes it).")
            continue
        if "rows" not in d and "by_op" not in d and d.get("error") is not None:
            glance.append([f"[{title}](#{anchor})", SUITE_OF[name], "failed", "-"])
            err = (d["error"].strip().splitlines() or ["?"])[-1]
            body.append(f"## {title}\n\nFailed (no earlier results): {err[:300]}\n\n"
                        + provenance(d, results / name, script))
            continue
        try:
            text, head = fn(d)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            text, head = f"(this file's layout is not one report.py reads: {type(e).__name__}: {e})", "?"
        date = d.get("meta", {}).get("date") or d.get("date") or "date not recorded"
        glance.append([f"[{title}](#{anchor})", SUITE_OF[name], date + (" (last run failed)" if d.get("last_failure")
                                                                         else ""), head])
        pics = "".join(f"\n\n![{Path(p).stem}]({p})" for p in plots.get(name, []))
        body.append(f"## {title}\n\n{provenance(d, results / name, script)}\n\n{text}{pics}")
    out = ["# Measured results", "",
           "Generated by `python bench/report.py` from the JSON in `bench/results/` (CPU suite: `make bench`; GPU "
           "suite on the lent GPU: `make bench-gpu`, its files in `bench/results/gpu/`). Do not edit above the notes "
           "marker: regenerate instead (`make bench-report` needs no rerun). Measurements of earlier sessions, with "
           "their analysis, are in [HISTORY.md](HISTORY.md).", "",
           f"Regenerated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "", "## At a glance", "",
           table(["benchmark", "suite", "measured", "headline"], glance, set()), ""]
    if plots.get("_all"):
        out += ["Plots: " + ", ".join(f"[{Path(p).stem}]({p})" for p in plots["_all"]), ""]
    elif plots.get("_note"):
        out += [plots["_note"][0], ""]
    out += ["\n\n".join(body), "", NOTES, notes.strip("\n"), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(BENCH / "results"))
    ap.add_argument("--out", default=str(BENCH / "RESULTS.md"))
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    results, out = Path(args.results), Path(args.out)
    notes = ""
    if out.exists() and NOTES in out.read_text():
        notes = out.read_text().split(NOTES, 1)[1]
    plots: dict[str, list[str]] = {}
    if not args.no_plots:
        try:
            import plots as plotting
        except ImportError:
            import sys
            sys.path.insert(0, str(BENCH))
            import plots as plotting
        plots = plotting.draw_all(results, {name: load(results, name) for _, name, _, _ in SECTIONS}, out.parent)
    out.write_text(render(results, plots, notes))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
