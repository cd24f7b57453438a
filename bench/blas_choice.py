"""Which BLAS for f32 GEMM on this machine (issue 17: "A BLAS choice measured, not assumed").

rlx's NumPy executor runs matmul as ``np.matmul(a, b, out=c)``, i.e. on NumPy's bundled
OpenBLAS. This measures, with 2 threads, whether a BLAS that installs from pip is faster
on the GEMM shapes rlx's CPU benchmarks run: the Llama stack (d 1024, d_ff 2816) at seq
128, batch 1 and 8; BERT-base at seq 128 (with the fused QKV projection and the batched
12-head attention GEMMs); ResNet-50-style im2col GEMMs; and a 1024 square. Each 2-D shape
is run with B stored [K, N] ("NN") and with B stored [N, K] and used transposed ("NT",
A @ B.T), since weights can be stored either way.

Candidates (each runs in a subprocess of its own, so that one library's spinning worker
threads never share the 2 cores with the next one's; missing ones are skipped, with why):

- numpy-openblas: ``np.matmul(a, b, out=c)``, NumPy's bundled OpenBLAS, 2 threads via
  threadpoolctl (or OPENBLAS_NUM_THREADS=2 when threadpoolctl is absent).
- mkl: Intel oneMKL from the ``mkl`` wheel, ``cblas_sgemm`` of libmkl_rt through ctypes into
  a preallocated output, ``mkl_set_num_threads(2)``; batched attention through
  ``cblas_sgemm_batch_strided``; threaded by Intel's OpenMP (libiomp5), MKL's default.
- mkl-gnu: the same with MKL's GNU threading layer (libgomp), set by
  ``MKL_Set_Threading_Layer``: on this AMD 2-vCPU VM the Intel OpenMP runtime left some shapes
  (49x4608x512, 12544x147x64) switching between full and about half speed; libgomp did not,
  but ran the large Llama and BERT GEMMs 10-35% slower.
- scipy-openblas32: a newer OpenBLAS from the ``scipy-openblas32`` wheel (the build SciPy
  and NumPy ship), ``scipy_cblas_sgemm`` through ctypes, ``scipy_openblas_set_num_threads(2)``;
  batched through ``scipy_cblas_sgemm_batch_strided``.
- torch: ``torch.matmul(a, b, out=c)`` on tensors sharing the arrays' memory,
  ``torch.set_num_threads(2)``; a reference point (it brings its own BLAS and oneDNN).
- blis: ``blis.py.gemm`` from the ``blis`` wheel (cython-blis); that build is
  single-threaded, so it runs on 1 thread: a reference point only.

Each cell: median GFLOP/s (2*M*N*K*batch / time) of --repeats samples after warm-up, with
min and max; a sample times enough back-to-back calls to last about 2 ms. Every
candidate's result is checked against a float64 product (through a random vector) first.
Ratios are candidate / numpy-openblas (above 1: the candidate is faster).

Measured on the 2-vCPU AMD EPYC (Zen 4, AVX-512) machine, 2026-11: NumPy's OpenBLAS already
runs the 2-D GEMMs at 110-210 GFLOP/s, near the two cores' peak, and nothing installable beat
it there beyond noise (scipy-openblas32 mostly 0.9-1.1x, MKL and torch 0.4-1.0x); the 12-head
attention batches, which np.matmul runs as 12 separate BLAS calls, went 1.5-1.8x faster
through one cblas_sgemm_batch_strided (scipy-openblas32 or MKL) or torch. MKL with Intel's
OpenMP switched between full and half speed on some im2col shapes.

Install the candidates in a scratch venv (not rlx's), as measured on 2026-11 (CPython 3.11):

    python3 -m venv /tmp/blasenv
    /tmp/blasenv/bin/pip install numpy==2.4.6 threadpoolctl==3.8.0 rich \\
        mkl==2026.2.0 scipy-openblas32==0.3.34.481.3 blis==1.3.4
    /tmp/blasenv/bin/python bench/blas_choice.py --torch-python .venv/bin/python

(mkl pulls in intel-openmp, tbb, intel-cmplr-lib-ur, umf and tcmlib: about 0.95 GB installed;
scipy-openblas32 is one 26 MB package with no dependencies. mkl-gnu needs the system's
libgomp.so.1, Debian's libgomp1. torch 2.13.0+cpu is rlx's test extra; --torch-python runs
the torch candidate under an interpreter that has it, by default the one running this
script.) Options:
``--repeats 15``, ``--only SUBSTR`` (rows whose shape label contains it; repeatable),
``--candidates a,b``, ``--layouts NN,NT``, ``--retries 3``, ``--json PATH`` (default
bench/out/blas_choice.json), ``--update`` (merge the rows of this run into that file: to rerun
noisy rows, e.g. ``--update --only "llama b8"``).

The "other" column is the largest share of the two cores that processes other than the
benchmark's took while a cell of the row ran (cells over 5% are shown in magenta): numbers
taken under such load are not to be trusted (OpenBLAS's spinning threads fall apart under
competing load), so such a cell is redone up to --retries times, 2 s apart, keeping the least
disturbed attempt; rows still marked can be rerun later with --update --only.
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

THREADS = 2
CANDIDATES = ("numpy-openblas", "mkl", "mkl-gnu", "scipy-openblas32", "torch", "blis")

# (label, batch, M, K, N): C[batch, M, N] = A[batch, M, K] @ B[batch, K, N]
SHAPES = [
    ("llama b1 qkvo 128x1024x1024", 1, 128, 1024, 1024),
    ("llama b1 up 128x1024x2816", 1, 128, 1024, 2816),
    ("llama b1 down 128x2816x1024", 1, 128, 2816, 1024),
    ("llama b8 qkvo 1024x1024x1024", 1, 1024, 1024, 1024),
    ("llama b8 up 1024x1024x2816", 1, 1024, 1024, 2816),
    ("llama b8 down 1024x2816x1024", 1, 1024, 2816, 1024),
    ("bert proj 128x768x768", 1, 128, 768, 768),
    ("bert ff1 128x768x3072", 1, 128, 768, 3072),
    ("bert ff2 128x3072x768", 1, 128, 3072, 768),
    ("bert qkv b8 1024x768x2304", 1, 1024, 768, 2304),
    ("bert attn QK^T 12x128x64x128", 12, 128, 64, 128),
    ("bert attn PV 12x128x128x64", 12, 128, 128, 64),
    ("resnet 3136x576x64", 1, 3136, 576, 64),
    ("resnet 784x1152x128", 1, 784, 1152, 128),
    ("resnet 196x2304x256", 1, 196, 2304, 256),
    ("resnet 49x4608x512", 1, 49, 4608, 512),
    ("resnet stem 12544x147x64", 1, 12544, 147, 64),
    ("square 1024x1024x1024", 1, 1024, 1024, 1024),
]

# CBLAS enums
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
SAMPLE_S = 2e-3
WARMUP_S = 0.05
NOISY = 0.05  # a cell during which other processes took more of the CPU than this is marked
RETRY_WAIT_S = 2.0  # before redoing a disturbed cell
PAUSE_S = 0.3  # between candidates: OpenBLAS and OpenMP worker threads spin ~0.1-0.2 s after a call


# ----------------------------------------------------------------------------- candidates
class Unavailable(Exception):
    pass


def _ptr(a: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)


class _CblasLib:
    """A cblas_sgemm (and optional cblas_sgemm_batch_strided) reached through ctypes."""

    def __init__(self, lib: ctypes.CDLL, sgemm: str, strided: str | None):
        i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
        self.sgemm = getattr(lib, sgemm)
        self.sgemm.restype = None
        self.sgemm.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
        self.strided = None
        if strided and hasattr(lib, strided):
            self.strided = getattr(lib, strided)
            self.strided.restype = None
            # layout, transa, transb, m, n, k, alpha, a, lda, stridea, b, ldb, strideb, beta, c, ldc,
            # stridec, batch
            self.strided.argtypes = [i, i, i, i, i, i, f, p, i, i, p, i, i, f, p, i, i, i]

    def bind(self, a: np.ndarray, b: np.ndarray, c: np.ndarray, b_transposed: bool):
        """A no-argument callable computing c = a @ b (b: [.., K, N], or [.., N, K] if b_transposed)."""
        batch, m, k = a.shape
        n = c.shape[-1]
        tb = TRANS if b_transposed else NO_TRANS
        ldb = k if b_transposed else n
        pa, pb, pc = _ptr(a), _ptr(b), _ptr(c)
        if batch == 1:
            fn, args = self.sgemm, (ROW_MAJOR, NO_TRANS, tb, m, n, k, 1.0, pa, k, pb, ldb, 0.0, pc, n)
            return lambda: fn(*args)
        if self.strided is not None:
            fn = self.strided
            args = (ROW_MAJOR, NO_TRANS, tb, m, n, k, 1.0, pa, k, m * k, pb, ldb, k * n, 0.0, pc, n, m * n,
                    batch)
            return lambda: fn(*args)
        fn, calls = self.sgemm, [(ROW_MAJOR, NO_TRANS, tb, m, n, k, 1.0, _ptr(a[h]), k, _ptr(b[h]), ldb, 0.0,
                                  _ptr(c[h]), n) for h in range(batch)]

        def run():
            for args in calls:
                fn(*args)
        return run


def setup_numpy_openblas() -> tuple[dict, object]:
    info: dict = {"numpy": np.__version__}
    try:
        import threadpoolctl
        limiter = threadpoolctl.threadpool_limits(THREADS, user_api="blas")
        libs = [d for d in threadpoolctl.threadpool_info() if "numpy" in d.get("filepath", "")]
        if libs:
            info.update(openblas=libs[0].get("version"), kernel=libs[0].get("architecture"),
                        threads=libs[0].get("num_threads"), threading_layer=libs[0].get("threading_layer"))
    except ImportError:
        limiter = None
        info["threads"] = f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')} (no threadpoolctl)"
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info.setdefault("openblas", cfg.get("version"))
        info["blas_build"] = cfg.get("openblas configuration")
    except Exception:  # noqa: BLE001 - show_config's layout is informational only
        pass

    def bind(a, b, c, b_transposed):
        if a.shape[0] == 1:
            a2, c2 = a[0], c[0]
            b2 = b[0].T if b_transposed else b[0]
            return lambda: np.matmul(a2, b2, out=c2)
        bb = np.swapaxes(b, -1, -2) if b_transposed else b
        return lambda: np.matmul(a, bb, out=c)
    return info, (bind, limiter)


def _find_mkl_rt() -> str:
    roots = [sys.prefix, sys.base_prefix, *(p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p)]
    for root in roots:
        for cand in sorted(glob.glob(os.path.join(root, "lib", "libmkl_rt.so*")) + glob.glob(
                os.path.join(root, "libmkl_rt.so*"))):
            return cand
    import ctypes.util
    found = ctypes.util.find_library("mkl_rt")
    if found:
        return found
    raise Unavailable("libmkl_rt.so not found (pip install mkl)")


def _cblas(info: dict, lib, prefix: str = "") -> tuple[dict, object]:
    """A library's CBLAS sgemm (and its strided batch, where it has one) as a candidate."""
    cb = _CblasLib(lib, prefix + "cblas_sgemm", prefix + "cblas_sgemm_batch_strided")
    info["batched"] = "cblas_sgemm_batch_strided" if cb.strided else "loop of cblas_sgemm"
    return info, (cb.bind, None)


def setup_mkl(gnu: bool = False) -> tuple[dict, object]:
    path = _find_mkl_rt()
    lib = ctypes.CDLL(path)
    if gnu:  # before any other MKL call; MKL_THREADING_GNU = 3 (libgomp instead of Intel's libiomp5)
        lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
        if lib.MKL_Set_Threading_Layer(3) != 3:
            raise Unavailable("MKL's GNU threading layer did not load (libgomp.so.1 missing?)")
    # The C entry points (the lower-case names are MKL's Fortran ones, taking pointers).
    lib.MKL_Set_Num_Threads.argtypes = [ctypes.c_int]
    lib.MKL_Set_Num_Threads(THREADS)
    lib.MKL_Get_Version_String.argtypes = [ctypes.c_char_p, ctypes.c_int]
    buf = ctypes.create_string_buffer(1024)
    lib.MKL_Get_Version_String(buf, len(buf))
    layer = "gnu (libgomp)" if gnu else os.environ.get("MKL_THREADING_LAYER", "intel (libiomp5)")
    info = {"lib": path, "version": " ".join(buf.value.decode().split()),
            "threads": lib.MKL_Get_Max_Threads(), "threading_layer": layer}
    try:
        from importlib.metadata import version
        info["wheel"] = version("mkl")
    except Exception:  # noqa: BLE001
        pass
    return _cblas(info, lib)


def setup_scipy_openblas32() -> tuple[dict, object]:
    try:
        import scipy_openblas32
    except ImportError as e:
        raise Unavailable(f"{e} (pip install scipy-openblas32)") from e
    path = os.path.join(scipy_openblas32.get_lib_dir(), "lib" + scipy_openblas32.get_library() + ".so")
    lib = ctypes.CDLL(path)
    pre = "scipy_" if hasattr(lib, "scipy_cblas_sgemm") else ""
    getattr(lib, f"{pre}openblas_set_num_threads").argtypes = [ctypes.c_int]
    getattr(lib, f"{pre}openblas_set_num_threads")(THREADS)
    for fn in ("openblas_get_config", "openblas_get_corename"):
        getattr(lib, pre + fn).restype = ctypes.c_char_p
    info = {"lib": path, "version": scipy_openblas32.__version__,
            "config": getattr(lib, pre + "openblas_get_config")().decode(),
            "kernel": getattr(lib, pre + "openblas_get_corename")().decode(),
            "threads": getattr(lib, pre + "openblas_get_num_threads")()}
    return _cblas(info, lib, pre)


def setup_torch() -> tuple[dict, object]:
    try:
        import torch
    except ImportError as e:
        raise Unavailable(f"{e} (pip install torch, CPU build; or --torch-python PATH)") from e
    torch.set_num_threads(THREADS)
    cfg = torch.__config__.show()
    blas = [ln.strip() for ln in cfg.splitlines() if "Math Kernel" in ln or "oneDNN" in ln]
    info = {"version": torch.__version__, "threads": torch.get_num_threads(), "config": blas,
            "mkl": torch.backends.mkl.is_available(), "mkldnn": torch.backends.mkldnn.is_available()}

    def bind(a, b, c, b_transposed):
        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
        if a.shape[0] == 1:
            ta, tc = ta[0], tc[0]
            tb = tb[0].T if b_transposed else tb[0]
        elif b_transposed:
            tb = tb.transpose(-1, -2)

        return lambda: torch.matmul(ta, tb, out=tc)
    return info, (bind, None)


def setup_blis() -> tuple[dict, object]:
    try:
        import blis
        import blis.py
    except ImportError as e:
        raise Unavailable(f"{e} (pip install blis)") from e
    info = {"version": blis.__version__ if hasattr(blis, "__version__") else None,
            "threads": "1 (the wheel is built without threading)"}
    try:
        from importlib.metadata import version
        info["version"] = version("blis")
    except Exception:  # noqa: BLE001
        pass
    gemm = blis.py.gemm

    def bind(a, b, c, b_transposed):
        calls = [(a[h], b[h], c[h]) for h in range(a.shape[0])]

        def run():
            for ah, bh, ch in calls:
                gemm(ah, bh, out=ch, trans2=b_transposed, beta=0.0)
        return run
    return info, (bind, None)


SETUP = {"numpy-openblas": setup_numpy_openblas, "mkl": setup_mkl, "mkl-gnu": lambda: setup_mkl(gnu=True),
         "scipy-openblas32": setup_scipy_openblas32,
         "torch": setup_torch, "blis": setup_blis}


# ----------------------------------------------------------------------------- worker
def _check(a, b, c, b_transposed) -> float:
    """Largest |C x - A (B x)| relative to |A| |B| |x|, in float64, per output element."""
    x = np.random.default_rng(1).standard_normal((c.shape[-1], 1))
    b64 = b.astype(np.float64)
    if b_transposed:
        b64 = np.swapaxes(b64, -1, -2)
    a64 = a.astype(np.float64)
    want = a64 @ (b64 @ x)
    scale = np.abs(a64) @ (np.abs(b64) @ np.abs(x))
    return float(np.max(np.abs(c.astype(np.float64) @ x - want) / scale))


def _samples(fn, repeats: int) -> tuple[list[float], int]:
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    warm_end = time.perf_counter() + WARMUP_S
    n = 0
    while n < 3 or time.perf_counter() < warm_end:
        t0 = time.perf_counter()
        fn()
        once = min(once, time.perf_counter() - t0)
        n += 1
    inner = max(1, math.ceil(SAMPLE_S / max(once, 1e-7)))
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        out.append((time.perf_counter() - t0) / inner)
    return out, inner


def measure(bind, label: str, batch: int, m: int, k: int, n: int, layout: str, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    bt = layout == "NT"
    a = rng.standard_normal((batch, m, k), dtype=np.float32)
    b = rng.standard_normal((batch, n, k) if bt else (batch, k, n), dtype=np.float32)
    c = np.zeros((batch, m, n), np.float32)
    fn = bind(a, b, c, bt)
    fn()
    err = _check(a, b, c, bt)
    if not err < 1e-4:
        return {"shape": label, "layout": layout, "error": f"wrong result: rel err {err:.2e}"}
    secs, inner = _samples(fn, repeats)
    g = sorted(2.0 * batch * m * n * k / s / 1e9 for s in secs)
    return {"shape": label, "layout": layout, "batch": batch, "M": m, "K": k, "N": n,
            "gflops": statistics.median(g), "gflops_min": g[0], "gflops_max": g[-1],
            "ms": 1e3 * statistics.median(secs), "calls_per_sample": inner, "rel_err": err}


def worker(name: str) -> None:
    """Set the candidate up, say how (one JSON line), then measure one request per stdin line."""
    try:
        info, (bind, _limiter) = SETUP[name]()
    except Unavailable as e:
        print(json.dumps({"skipped": str(e)}), flush=True)
        return
    except (OSError, AttributeError) as e:
        print(json.dumps({"skipped": f"{type(e).__name__}: {e}"}), flush=True)
        return
    print(json.dumps({"info": info}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        print(json.dumps(measure(bind, *req)), flush=True)


# ----------------------------------------------------------------------------- driver
def _jiffies(pids: list[int]) -> tuple[int, int]:
    """(all CPUs' busy jiffies, jiffies of these processes) so far."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    busy = sum(v) - v[3] - v[4]
    own = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            own += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return busy, own


class Worker:
    def __init__(self, name: str, python: str):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS),
                   OMP_NUM_THREADS=str(THREADS), BLIS_NUM_THREADS="1")
        self.name, self.python = name, python
        self.proc = subprocess.Popen([python, str(Path(__file__).resolve()), "--worker", name], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = self.proc.stderr.read().strip().splitlines()[-1:] or ["no output"]
            return {"skipped": f"worker under {self.python} died (rc {self.proc.returncode}): {tail[0]}"}
        return json.loads(line)

    def ask(self, *req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def _select(only: list[str]) -> list:
    return [s for s in SHAPES if not only or any(o.lower() in s[0].lower() for o in only)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--only", action="append", default=[], help="shape-label substring (repeatable)")
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--layouts", default="NN,NT")
    ap.add_argument("--torch-python", default=sys.executable, help="interpreter for the torch candidate")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "out" / "blas_choice.json"))
    ap.add_argument("--retries", type=int, default=3,
                    help="times a cell is redone while other processes took over 5%% of the CPU during it")
    ap.add_argument("--update", action="store_true",
                    help="merge this run's rows into the existing --json (to rerun noisy rows with --only)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return

    from rich.console import Console
    console = Console(width=max(Console().width, 200))
    layouts = [s.strip() for s in args.layouts.split(",") if s.strip()]
    shapes = _select(args.only)
    names = [c.strip() for c in args.candidates.split(",") if c.strip()]
    workers = {n: Worker(n, args.torch_python if n == "torch" else sys.executable) for n in names}
    results = {n: dict(w.hello) for n, w in workers.items()}
    live = [n for n in names if "info" in results[n]]
    for n in names:
        if n in live:
            results[n]["rows"] = []
            console.print(f"[bold]{n}[/bold]: {json.dumps(results[n]['info'])}")
        else:
            workers[n].close()
            console.print(f"[yellow]skipped {n}[/yellow]: {results[n]['skipped']}")
    pids = [os.getpid()] + [workers[n].proc.pid for n in live]

    # Candidates take turns row by row (the order rotating), so that load from elsewhere falls on
    # all of them alike; a pause between turns lets the last one's spinning threads go to sleep.
    # foreign_cpu: the share of both cores that processes other than these took during the cell.
    t_start = time.perf_counter()
    hz, cores = os.sysconf("SC_CLK_TCK"), os.cpu_count() or 1
    for i, (label, batch, m, k, n_) in enumerate(shapes):
        for j, layout in enumerate(layouts):
            turn = (2 * i + j) % max(len(live), 1)
            for n in live[turn:] + live[:turn]:
                best = None
                for attempt in range(1 + args.retries):  # a cell that other processes disturbed is redone
                    time.sleep(PAUSE_S if attempt == 0 else RETRY_WAIT_S)
                    busy0, own0 = _jiffies(pids)
                    t0 = time.perf_counter()
                    row = workers[n].ask(label, batch, m, k, n_, layout, args.repeats)
                    busy1, own1 = _jiffies(pids)
                    ticks = hz * cores * (time.perf_counter() - t0)
                    row["foreign_cpu"] = max(0.0, ((busy1 - busy0) - (own1 - own0)) / ticks)
                    row["attempts"] = attempt + 1
                    if best is None or row["foreign_cpu"] < best["foreign_cpu"]:
                        best = row
                    if row["foreign_cpu"] <= NOISY or "error" in row:
                        break
                results[n]["rows"].append(best)
        console.print(f"[dim]{label}: {time.perf_counter() - t_start:.0f} s[/dim]")
    for n in live:
        workers[n].close()

    out = Path(args.json)
    doc = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "python": platform.python_version()},
           "threads": THREADS, "repeats": args.repeats, "candidates": results}
    try:
        with open("/proc/cpuinfo") as f:
            doc["machine"]["cpu"] = next(ln.split(":", 1)[1].strip() for ln in f
                                         if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if args.update and out.exists():
        doc = _merge(json.loads(out.read_text()), results)
    console.print(_table(doc))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    console.print(f"wrote {out}")


def _merge(old: dict, results: dict) -> dict:
    """``old`` with this run's rows in place of its rows of the same shape and layout (marked rerun)."""
    for n, res in results.items():
        if "rows" not in res:
            continue
        prev = old["candidates"].setdefault(n, {"info": res["info"], "rows": []})
        prev.pop("skipped", None)
        prev["info"] = res["info"]
        prev.setdefault("rows", [])
        fresh = {(r["shape"], r["layout"]): dict(r, rerun=True) for r in res["rows"]}
        prev["rows"] = [fresh.pop((r["shape"], r["layout"]), r) for r in prev["rows"]] + list(fresh.values())
    return old


def _table(doc: dict):
    """The rich table of a result document, rows in SHAPES order; * marks rows rerun with --update."""
    from rich.table import Table
    cands = doc["candidates"]
    live = [n for n in CANDIDATES if "rows" in cands.get(n, {})]
    index = {n: {(r["shape"], r["layout"]): r for r in cands[n]["rows"]} for n in live}
    keys = {k for n in live for k in index[n]}
    order = [(label, lay) for label, *_ in SHAPES for lay in ("NN", "NT") if (label, lay) in keys]
    table = Table(title=f"f32 GEMM, GFLOP/s: median (min-max) of {doc['repeats']}, {doc['threads']} threads "
                        "(blis: 1); xR = R times numpy-openblas; other: the most CPU share that other "
                        "processes took during a cell of the row, magenta: over 5% (* rerun)")
    table.add_column("shape (batch x M x K x N)")
    table.add_column("B")
    for n in live:
        table.add_column(n, justify="right")
    table.add_column("other", justify="right")
    for key in order:
        cells, foreign, rerun = [], 0.0, False
        ref = index.get("numpy-openblas", {}).get(key)
        for n in live:
            r = index[n].get(key)
            if r is None:
                cells.append("-")
                continue
            f, rerun = r.get("foreign_cpu", 0.0), r.get("rerun", rerun)
            foreign = max(foreign, f)
            if "error" in r:
                cells.append(f"[red]{r['error']}[/red]")
                continue
            s = f"{r['gflops']:.0f} ({r['gflops_min']:.0f}-{r['gflops_max']:.0f})"
            if f > NOISY:
                s = f"[magenta]{s}[/magenta]"
            if ref and "gflops" in ref and n != "numpy-openblas":
                x = r["gflops"] / ref["gflops"]
                colour = "green" if x > 1.1 else "red" if x < 0.9 else "white"
                s += f" [{colour}]x{x:.2f}[/{colour}]"
            cells.append(s)
        table.add_row(key[0] + (" *" if rerun else ""), key[1], *cells,
                      f"[{'red' if foreign > NOISY else 'white'}]{100 * foreign:.0f}%[/]")
    return table

if __name__ == "__main__":
    main()
