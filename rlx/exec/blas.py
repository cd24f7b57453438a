"""Which of OpenBLAS's kernels runs NumPy's GEMMs fastest on this machine, measured.

NumPy's bundled OpenBLAS picks its kernel by CPU model when it loads; on some CPUs another
of its kernels is faster (on the project's AMD EPYC with AVX-512, its Haswell kernel beats
the SkylakeX one it picks by about 10% on single-threaded sgemm). The kernel can only be
chosen before NumPy loads, through ``OPENBLAS_CORETYPE``: so each candidate is timed in a
fresh process, and a program that wants the fastest sets the variable before importing
NumPy (``python -c "import rlx.exec.blas as b; print(b.fastest())"`` prints it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

CANDIDATES = ("", "Haswell", "SkylakeX", "Zen", "Cooperlake", "SapphireRapids")  # "": OpenBLAS's own pick

_PROBE = """
import json, time, numpy as np
from threadpoolctl import threadpool_limits
a = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)
b = np.random.default_rng(1).standard_normal((1024, 2048)).astype(np.float32)
c = np.empty((256, 2048), np.float32)
times = []
with threadpool_limits(1, user_api="blas"):
    np.matmul(a, b, out=c)
    for _ in range(15):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t)
print(json.dumps(2 * 256 * 1024 * 2048 / min(times) / 1e9))
"""


def measure(coretype: str) -> float | None:
    """Single-threaded sgemm GFLOP/s (256x1024x2048, best of 15) with ``coretype``, in a fresh
    process; None when OpenBLAS there does not run it (an unknown name, or a kernel the CPU
    cannot execute)."""
    env = {**os.environ, "OPENBLAS_CORETYPE": coretype}
    env.pop("OPENBLAS_VERBOSE", None)
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else None


def fastest(candidates: tuple[str, ...] = CANDIDATES, margin: float = 0.03) -> str:
    """The candidate with the highest sgemm rate; OpenBLAS's own pick ("") unless another is
    faster by more than ``margin`` (timings here vary by a few percent)."""
    rates = {c: r for c in candidates if (r := measure(c)) is not None}
    if not rates:
        return ""
    best = max(rates, key=rates.__getitem__)
    return best if "" not in rates or rates[best] > rates[""] * (1 + margin) else ""


def rerun_with_fastest() -> str:
    """Run this Python script again from the start with the fastest kernel chosen (it can
    only be chosen before NumPy loads); returns the kernel when it is already chosen. An
    ``OPENBLAS_CORETYPE`` set by the caller is kept ("" : OpenBLAS's own pick)."""
    if "OPENBLAS_CORETYPE" in os.environ:
        return os.environ["OPENBLAS_CORETYPE"]
    os.environ["OPENBLAS_CORETYPE"] = fastest()
    os.execv(sys.executable, [sys.executable] + sys.argv)
    raise AssertionError("unreachable")
