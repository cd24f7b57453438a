"""Measure a machine's peaks with a target's executor and write a target file.

Peak FLOP/s: a square matmul; bandwidth: a large copy (bytes read + written); launch
overhead: the smallest op. Medians of repeated timings. NumPy measures here; the Vulkan
executor measures its own shaders (``rlx.exec.vulkan_exec.measure``) and the CuPy executor
its own cuBLAS GEMMs and printed kernels (``rlx.exec.cupy_exec.measure``), each imported
only when asked for.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from rlx.extract.target import Target, TargetError, load_target, write_target


def sample_seconds(fn, repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def median_seconds(fn, repeats: int) -> float:
    return statistics.median(sample_seconds(fn, repeats))


def measure_numpy(n: int = 1024, copy_mib: int = 256, repeats: int = 7) -> dict[str, float]:
    out: dict[str, float] = {}
    for dtype in ("f32", "f64"):
        a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32 if dtype == "f32" else np.float64)
        c = np.empty_like(a)
        out[f"peak_{dtype}"] = 2.0 * n ** 3 / median_seconds(lambda: np.matmul(a, a, out=c), repeats)
    src = np.ones(copy_mib * 2 ** 20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    out["bandwidth"] = 2.0 * src.nbytes / median_seconds(lambda: np.copyto(dst, src), repeats)
    x, y, z = np.ones(1, np.float32), np.ones(1, np.float32), np.empty(1, np.float32)

    def small() -> None:
        for _ in range(1000):
            np.add(x, y, out=z)
    out["launch"] = median_seconds(small, repeats) / 1000
    xs = np.ones((4, 4), np.float32)

    def views() -> None:
        for _ in range(1000):
            xs.reshape(16)
    out["view"] = median_seconds(views, repeats) / 1000
    return out


def calibrate(target: str | Path | Target, out: str | Path, quick: bool = False) -> dict[str, float]:
    """Measure with ``target``'s executor and write a target file like it to ``out``."""
    base = load_target(target)
    if base.executor == "numpy":
        m = measure_numpy(n=256 if quick else 1024, copy_mib=16 if quick else 256, repeats=3 if quick else 7)
    elif base.executor == "vulkan":
        from rlx.exec.vulkan_exec import measure  # the executor measures its own shaders
        m = measure(n=256 if quick else 1024, copy_mib=16 if quick else 64, repeats=3 if quick else 7)
    elif base.executor == "cupy":
        from rlx.exec.cupy_exec import measure as measure_cupy  # cuBLAS and printed kernels, CUDA events
        m = measure_cupy(n=2048 if quick else 8192, copy_mib=64 if quick else 1024, repeats=5 if quick else 20)
    else:
        raise TargetError(f"calibrating executor {base.executor!r} (target {base.name!r}) is not available yet: "
                          "it comes with that executor")
    peaks = dict(base.cost.peak_flops)
    ratio = m["peak_f32"] / peaks["f32"]
    peaks = {k: v * ratio for k, v in peaks.items()}  # dtypes not measured keep their ratio to f32
    peaks.update({k[5:]: v for k, v in m.items() if k.startswith("peak_")})
    name = Path(out).stem
    write_target(out, name=name, executor=base.executor, alignment=base.alignment, peak_flops=peaks,
                 bandwidth=m["bandwidth"], launch=m["launch"], view=m["view"], claim=list(base.claim_spec),
                 exclude=list(base.exclude), max_inputs=base.cost.region_max_inputs, max_ops=base.cost.region_max_ops,
                 note=f"written by `rlx calibrate --target {base.name}` on {time.strftime('%Y-%m-%d')}"
                      + (f" on {m['device']}" if "device" in m else ""))
    return m
