"""The plots of bench/RESULTS.md (matplotlib, the `bench` extra), drawn from the results JSON:
compile time vs layers (log-log), runtime ratio per model and peer, arena vs lower bound,
predicted vs measured step times. PNGs go beside the JSON in bench/results/."""
from __future__ import annotations

import os
from pathlib import Path


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def compile_time(d: dict, out: Path) -> None:
    plt = _plt()
    rows = sorted(d["rows"], key=lambda r: r["layers"])
    x = [r["layers"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for key, label in (("total", "total (rules + model)"), ("model", "model (load..extract)")):
        med = [r[f"{key}_median"] for r in rows]
        lo = [m - r.get(f"{key}_min", m) for m, r in zip(med, rows)]
        hi = [r.get(f"{key}_max", m) - m for m, r in zip(med, rows)]
        ax.errorbar(x, med, yerr=[lo, hi], marker="o", capsize=3, label=label)
    if rows:
        ref = rows[-1]["model_median"] / x[-1]
        ax.plot(x, [ref * v for v in x], "k:", lw=1, label="linear in layers")
    ax.set(xscale="log", yscale="log", xlabel="layers (llama, d_model 4096)", ylabel="seconds",
           title="rlx.compile time vs layers")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


TITLES = {"runtime_cpu.json": "CPU runtime", "models_cpu.json": "real models on the CPU",
          "runtime_vulkan.json": "Vulkan on this machine", "gpu/runtime_gpu.json": "GPU runtime (CuPy)",
          "gpu/runtime_gpu_autotune.json": "GPU runtime vs max-autotune",
          "gpu/runtime_vulkan.json": "Vulkan on the GPU"}
RATIO_KEYS = {  # file -> (row label key, [(numerator key, denominator key, label)])
    "runtime_cpu.json": ("model", [("unfused_ms", "rlx_ms", "unfused"), ("torch_ms", "rlx_ms", "PyTorch eager"),
                                   ("ort_ms", "rlx_ms", "onnxruntime")]),
    "models_cpu.json": ("model", [("ort_ms", "rlx_ms", "onnxruntime")]),
    "runtime_vulkan.json": ("model", [("numpy_ms", "vulkan_ms", "rlx-numpy / rlx-vulkan")]),
    "gpu/runtime_gpu.json": ("row", [("eager_ms", "rlx_ms", "PyTorch eager"), ("compile_ms", "rlx_ms", "torch.compile"),
                                     ("autotune_ms", "rlx_ms", "max-autotune")]),
    "gpu/runtime_gpu_autotune.json": ("row", [("autotune_ms", "rlx_ms", "max-autotune")]),
    "gpu/runtime_vulkan.json": ("model", [("numpy_ms", "vulkan_ms", "rlx-numpy / rlx-vulkan")]),
}


def ratios(data: dict[str, dict | None], out: Path) -> bool:
    plt = _plt()
    from matplotlib import ticker
    panels = []
    for name, (label_key, pairs) in RATIO_KEYS.items():
        d = data.get(name)
        if not d or "rows" not in d:
            continue
        bars = [(f"{r[label_key]}", lab, r[a] / r[b]) for r in d["rows"] for a, b, lab in pairs
                if r.get(a) and r.get(b)]
        if bars:
            panels.append((name, bars))
    if not panels:
        return False
    heights = [max(2.0, 0.28 * len(b) + 1.0) for _, b in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, sum(heights)), gridspec_kw={"height_ratios": heights},
                             squeeze=False)
    colors = {}
    for ax, (name, bars) in zip(axes[:, 0], panels):
        y = list(range(len(bars)))
        for i, (model, peer, v) in enumerate(bars):
            c = colors.setdefault(peer, f"C{len(colors)}")
            ax.barh(i, v, color=c, label=peer if peer not in ax.get_legend_handles_labels()[1] else None)
        ax.set_yticks(y, [m[:38] for m, _, _ in bars], fontsize=7)
        ax.axvline(1.0, color="k", lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.invert_yaxis()
        ax.set_title(f"{TITLES.get(name, name)}: peer time / rlx time (right of 1x: rlx faster)", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def memory_plan(d: dict, out: Path) -> None:
    plt = _plt()
    rows = d["rows"]
    mib = 2 ** 20
    labels = [f"{r['model']} {r['form']}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.bar([i - 0.27 for i in x], [r["no_reuse_bytes"] / mib for r in rows], 0.27, label="no reuse", color="C7")
    ax.bar(list(x), [r["arena_bytes"] / mib for r in rows], 0.27, label="arena", color="C0")
    ax.bar([i + 0.27 for i in x], [r["lower_bound_bytes"] / mib for r in rows], 0.27, label="liveness lower bound",
           color="C2")
    ax.set_xticks(list(x), labels, rotation=45, ha="right", fontsize=7)
    ax.set(yscale="log", ylabel="MiB", title="arena vs lower bound (and no reuse)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def fidelity(panels: list[tuple[str, dict]], out: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 4.3), squeeze=False)
    for ax, (name, d) in zip(axes[0], panels):
        steps = [s for s in d["steps"] if s["predicted"] > 0 and s["measured"] > 0]
        ops = sorted({s["op"] for s in steps}, key=lambda op: -sum(s["measured"] for s in steps if s["op"] == op))
        for i, op in enumerate(ops):
            mine = [s for s in steps if s["op"] == op]
            ax.scatter([1e6 * s["predicted"] for s in mine], [1e6 * s["measured"] for s in mine], s=14,
                       label=op if i < 9 else None, color=f"C{i % 10}", alpha=0.8)
        lo = min(min(s["predicted"], s["measured"]) for s in steps) * 1e6
        hi = max(max(s["predicted"], s["measured"]) for s in steps) * 1e6
        ax.plot([lo, hi], [lo, hi], "k:", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="predicted µs", ylabel="measured µs")
        ax.set_title(f"{d['target']} on {str(d.get('device', '?'))[:40]}\nSpearman {d['spearman']:.2f}", fontsize=9)
        ax.legend(fontsize=6)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def draw_all(results: Path, data: dict[str, dict | None], md_dir: Path) -> dict[str, list[str]]:
    """Draw every plot the data allows; returns, per results file, the PNGs to link (paths
    relative to ``md_dir``), all of them under "_all", or a "_note" when plots are off."""
    try:
        _plt()
    except ImportError:
        return {"_note": ["Plots skipped: matplotlib is not installed (`pip install -e '.[bench]'`)."]}
    rel = lambda p: os.path.relpath(p, md_dir)  # noqa: E731
    links: dict[str, list[str]] = {"_all": []}

    def add(png: Path, *names: str) -> None:
        for n in names:
            links.setdefault(n, []).append(rel(png))
        links["_all"].append(rel(png))

    ok = lambda n: data.get(n) and "rows" in data[n]  # noqa: E731
    if ok("compile_time.json"):
        compile_time(data["compile_time.json"], results / "compile_time.png")
        add(results / "compile_time.png", "compile_time.json")
    if ok("memory_plan.json"):
        memory_plan(data["memory_plan.json"], results / "memory_plan.png")
        add(results / "memory_plan.png", "memory_plan.json")
    if ratios(data, results / "runtime_ratios.png"):
        add(results / "runtime_ratios.png", *[n for n in RATIO_KEYS if ok(n)])
    fids = [(n, d) for n, d in data.items() if n.split("/")[-1].startswith("fidelity_") and d and d.get("steps")]
    if fids:
        fidelity(fids, results / "fidelity.png")
        add(results / "fidelity.png", *[n for n, _ in fids])
    return links
