"""Cost-model fidelity (issue 18): each target's predicted step times against its executor's
measured ones on the Llama stack, as `rlx calibrate --check` prints them.

Per target: the Spearman rank correlation over steps and over op kinds, predicted and
measured totals, the per-op-kind sums, the worst-predicted steps and the refit of the target
file's figures (rlx.extract.fidelity). The Llama stack is runtime_cpu.py's on cpu and on
vulkan (4 x 1024, d_ff 2816, seq 128, f32), runtime_gpu.py's llama-f16-b1 on cuda (4 x 4096,
d_ff 11008, seq 512, f16). Writes bench/results/fidelity_<target>.json per target; a target
whose executor cannot run here is recorded with the reason.

    python bench/fidelity.py [--targets cpu vulkan cuda] [--repeats 5] [--small]
    python bench/fidelity.py --refit bench/results/gpu/fidelity_cuda.json ...

--refit needs no device: it compiles the recorded model again (compiling is host work),
prices it with the target file as it is now, and recomputes the comparison and the refit
from the measurements stored in the file (a GPU run's, say, after the target file or the
fitting code changed).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
import traceback
from pathlib import Path

import rlx
from rlx.extract.fidelity import check_model, toml_lines

LLAMA_CPU = dict(layers=4, d_model=1024, n_heads=16, d_ff=2816, seq=128, batch=1)
MODELS = {
    "cpu": ("llama 4x1024 (d_ff 2816, seq 128), f32", LLAMA_CPU),
    "vulkan": ("llama 4x1024 (d_ff 2816, seq 128), f32", LLAMA_CPU),
    "cuda": ("llama 4x4096 (d_ff 11008, seq 512), f16", dict(layers=4, d_model=4096, n_heads=32, d_ff=11008,
                                                             seq=512, batch=1, dtype="f16")),
}
SMALL = ("llama 2x256 (seq 64), f32", dict(layers=2, d_model=256, n_heads=4, seq=64, batch=1))


def refit(path: Path) -> None:
    """Recompute a result file's predictions, correlation and refit from its measurements."""
    from rlx.extract.fidelity import compare, predict
    from rlx.extract.target import load_target
    d = json.loads(path.read_text())
    if d.get("error") or not d.get("steps"):
        print(f"{path}: no measurements to refit")
        return
    target = load_target(d["target"])
    result = rlx.compile(rlx.models.llama(**d["config"]), target=target)
    with result.ruleset.active():
        costs = predict(result.graph, target)
    measured = {s["node"]: (s["measured"], s["dispatch"]) for s in d["steps"]}
    f = compare(costs, measured, target, d.get("model", ""), d.get("device", ""))
    if len(f.steps) < 0.9 * len(measured):
        raise SystemExit(f"{path}: only {len(f.steps)} of {len(measured)} measured steps are in today's compiled "
                         "program: the compiler changed since; measure again")
    keep = {k: d[k] for k in ("benchmark", "target", "model", "config", "machine", "date", "repeats", "seconds",
                              "meta", "last_failure") if k in d}
    path.write_text(json.dumps({**keep, **f.to_dict(), "refit": {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "how": f"python bench/fidelity.py --refit {path.name}: predictions from the target file as of this date, "
               "measurements as recorded"}}, indent=1, default=str))
    print(f"{path}: Spearman {f.spearman:.3f} over {len(f.steps)} steps; refit: "
          + "; ".join(toml_lines(f.suggestions.get("change", {}), f.suggestions.get("current", {}))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", nargs="+", default=["cpu"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--small", action="store_true", help="a small stack (a quick check)")
    ap.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--refit", nargs="+", type=Path, help="result files to recompute from their measurements")
    args = ap.parse_args()
    for path in args.refit or []:
        refit(path)
    if args.refit:
        return
    for target in args.targets:
        name, cfg = SMALL if args.small else MODELS.get(target, MODELS["cpu"])
        out = Path(args.out_dir) / f"fidelity_{target}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"benchmark": "fidelity", "target": target, "model": name, "config": cfg,
                  "machine": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M"), "repeats": args.repeats}
        t = time.perf_counter()
        try:
            f = check_model(rlx.models.llama(**cfg), target, repeats=args.repeats, name=name)
        except Exception as e:  # an executor that cannot run here is a result, not a crash
            record["error"] = f"{type(e).__name__}: {e}"
            print(f"{target}: not measured: {record['error']}")
            traceback.print_exc()
        else:
            record.update(f.to_dict())
            print(f"{target} ({f.device}): Spearman {f.spearman:.3f} over {len(f.steps)} steps, {f.spearman_ops:.3f} "
                  f"over op kinds; predicted {f.predicted_total * 1e3:.2f} ms, measured {f.measured_total * 1e3:.2f} ms")
            for s in f.worst(5):
                print(f"  {s.node} ({s.op}, {s.dispatch}): predicted {s.predicted * 1e6:.1f} us, measured "
                      f"{s.measured * 1e6:.1f} us ({s.ratio:.2f}x)")
            sug = f.suggestions
            if "change" in sug:
                print("  refit:\n    " + "\n    ".join(toml_lines(sug["change"], sug["current"], sug.get("notes"))))
            for line in sug.get("structural", []):
                print(f"  beyond the target file: {line}")
        record["seconds"] = time.perf_counter() - t
        out.write_text(json.dumps(record, indent=1, default=str))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
