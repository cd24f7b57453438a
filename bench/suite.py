"""Run a benchmark suite and regenerate bench/RESULTS.md (issue 18).

`python bench/suite.py cpu` (what `make bench` runs) runs the CPU benchmarks one by one,
each its own process with this Python; `python bench/suite.py gpu` (`make bench-gpu`, on the
lent GPU) the GPU ones. Each script writes its JSON under bench/results/ (the GPU suite's are
moved to bench/results/gpu/, so a GPU run never overwrites the CPU machine's files); this
runner adds what the script does not record, under "meta": the exact command, the date, the
machine, the CPU, the commit and the wall time. A script that fails keeps its previous
results, with the failure noted beside them ("last_failure"); one that never ran has no
file, and RESULTS.md says "not run". Then bench/report.py regenerates RESULTS.md and the
plots from the JSON alone.

    python bench/suite.py cpu|gpu [--only compile_time,fidelity] [--timeout 600] [--budget 540] [--dry-run]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"

# suite -> [(name, script and arguments, JSON files it writes under bench/results/)]
SUITES: dict[str, list[tuple[str, list[str], list[str]]]] = {
    "cpu": [
        ("compile_time", ["compile_time.py"], ["compile_time.json"]),
        ("extraction", ["extraction.py"], ["extraction.json"]),
        ("memory_plan", ["memory_plan.py"], ["memory_plan.json"]),
        ("user_ops", ["user_ops.py"], ["user_ops.json"]),
        ("runtime_cpu", ["runtime_cpu.py"], ["runtime_cpu.json"]),
        ("models_cpu", ["models_cpu.py"], ["models_cpu.json"]),
        ("compiled_cpu", ["compiled_cpu.py"], ["compiled_cpu.json"]),
        ("runtime_vulkan", ["runtime_vulkan.py"], ["runtime_vulkan.json"]),
        ("fidelity", ["fidelity.py", "--targets", "cpu", "vulkan"], ["fidelity_cpu.json", "fidelity_vulkan.json"]),
    ],
    "gpu": [  # the quick ones first: the lent GPU's time is short
        ("fidelity", ["fidelity.py", "--targets", "cuda", "vulkan"], ["fidelity_cuda.json", "fidelity_vulkan.json"]),
        ("runtime_vulkan", ["runtime_vulkan.py"], ["runtime_vulkan.json"]),
        ("runtime_gpu", ["runtime_gpu.py", "--peers", os.environ.get("GPU_PEERS", "eager,compile")],
         ["runtime_gpu.json"]),
    ],
}


def destination(suite: str) -> Path:
    return RESULTS / "gpu" if suite == "gpu" else RESULTS


def machine() -> dict[str, object]:
    """What ran the suite: OS, CPU model, cores, Python, the commit (dirty if edited)."""
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name")) or cpu
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit = commit + ("-dirty" if dirty else "") if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "commit": commit}


def run_one(suite: str, name: str, argv: list[str], files: list[str], timeout: float | None) -> bool:
    """Run one script; stamp (or, on failure, note beside the old results) its JSON files."""
    cmd = [sys.executable, str(BENCH / argv[0]), *argv[1:]]
    shown = " ".join(["python", f"bench/{argv[0]}", *argv[1:]])
    print(f"\n=== {name}: {shown}", flush=True)
    kept = {f: (RESULTS / f).read_bytes() for f in files if suite == "gpu" and (RESULTS / f).exists()}
    for f in files:  # the CPU machine's file must not pass for this GPU run's
        if suite == "gpu":
            (RESULTS / f).unlink(missing_ok=True)
    before = {f: (RESULTS / f).stat().st_mtime_ns if (RESULTS / f).exists() else None for f in files}
    started, t = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), time.perf_counter()
    tail: collections.deque[str] = collections.deque(maxlen=20)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True)  # its own process group: a timeout ends its workers too
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    timer = threading.Timer(timeout, kill) if timeout else None
    if timer:
        timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail.append(line.rstrip())
        rc = proc.wait()
    except KeyboardInterrupt:
        kill()
        raise
    finally:
        if timer:
            timer.cancel()
    if killed.is_set():
        tail.append(f"killed after {timeout:.0f} s (its time limit)")
    wall = time.perf_counter() - t
    meta = {"suite": suite, "command": shown, "date": started, "wall_s": round(wall, 1), "returncode": rc,
            **machine()}
    dest = destination(suite)
    dest.mkdir(parents=True, exist_ok=True)
    ok = True
    for f in files:
        made, target = RESULTS / f, dest / f
        fresh = made.exists() and made.stat().st_mtime_ns != before[f]
        try:
            data = json.loads(made.read_text()) if fresh else None
        except json.JSONDecodeError:  # killed while writing it
            fresh = False
        failure = {**meta, "error": "\n".join(tail)} if rc or not fresh else None
        ok &= failure is None
        if fresh and data is not None:  # this run's results (a run that failed half way keeps what it wrote, noted)
            data["meta"] = meta
            if failure:
                data["last_failure"] = failure
            if made != target:
                made.unlink()
        elif target.exists():  # the previous results, with this run's failure beside them
            data = json.loads(target.read_text())
            data["last_failure"] = failure
        else:
            data = {"benchmark": name, "error": failure["error"] if failure else "", "meta": meta}
        target.write_text(json.dumps(data, indent=1, default=str))
    for f, blob in kept.items():  # the CPU machine's file, as it was before this GPU run
        (RESULTS / f).write_bytes(blob)
    print(f"=== {name}: {'ok' if ok else f'FAILED (exit {rc})'} in {wall:.0f} s", flush=True)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite", choices=sorted(SUITES))
    ap.add_argument("--only", help="comma-separated benchmark names")
    ap.add_argument("--timeout", type=float, help="seconds per script")
    ap.add_argument("--budget", type=float, help="seconds for the whole suite: a script gets what is left "
                    "(killed at the end of it, keeping what it wrote); scripts past it are skipped")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    ap.add_argument("--no-report", action="store_true", help="do not regenerate RESULTS.md")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    entries = [e for e in SUITES[args.suite] if only is None or e[0] in only]
    if only and only - {e[0] for e in entries}:
        raise SystemExit(f"unknown benchmark(s) {sorted(only - {e[0] for e in entries})} in suite {args.suite}")
    if args.dry_run:
        for name, argv, files in entries:
            print(f"{name}: python bench/{' '.join(argv)} -> {', '.join(str(destination(args.suite) / f) for f in files)}")
        return 0
    failed, skipped, start = [], [], time.monotonic()
    for name, argv, files in entries:
        left = args.budget - (time.monotonic() - start) if args.budget else None
        if left is not None and left < 20:
            skipped.append(name)
            continue
        limit = min(x for x in (args.timeout, left) if x is not None) if args.timeout or left else None
        if not run_one(args.suite, name, argv, files, limit):
            failed.append(name)
    if skipped:
        print(f"skipped (--budget {args.budget:.0f} s spent): {', '.join(skipped)}")
    if not args.no_report:
        sys.path.insert(0, str(BENCH))
        import report
        report.main([])
    if failed:
        print(f"failed: {', '.join(failed)} (their previous results are kept; RESULTS.md notes the failure)")
    return 1 if failed else 0


if __name__ == "__main__":
    if shutil.which("git") is None:
        print("git not found: the commit is recorded as unknown")
    sys.exit(main())
