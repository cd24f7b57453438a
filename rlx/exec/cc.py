"""Native CPU kernels: C++ printed by ``c_print``, compiled by this machine's compiler and
called through ctypes, as torch.compile's C++ backend does.

A kernel is specialized to its sizes and strides, so the compiler sees constant trip counts
and unit strides and vectorizes the inner loops for this CPU (``-march=native``). Kernels
printed while a program is prepared are compiled together, as one library, the first time
any of them runs; libraries are cached on disk by the hash of their source, the compiler and
the CPU, so a model compiles its kernels once per machine. Kernels run their parts on
OpenMP's threads where the compiler has OpenMP (``-fopenmp``), else one after another;
ctypes releases the GIL for the length of a call.

``RLX_CC`` names the compiler (default: the first of c++, g++, clang++ on PATH); ``RLX_CC=0``
turns native kernels off. Without a compiler ``available()`` says why and the NumPy
printer's kernels run instead. ``RLX_CACHE_DIR`` moves the cache (default ~/.cache/rlx).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from functools import cache
from pathlib import Path

from rlx.errors import RlxError

FLAGS = ("-O3", "-march=native", "-std=c++17", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared")
OPENMP = ("-fopenmp",)         # kernels split their loop over OpenMP's threads (c_print.threaded)
NO_OPENMP = ("-fopenmp-simd",)  # a compiler without an OpenMP runtime: the chunks run one after another
OFF = ("0", "off", "no", "false")


class CompileError(RlxError):
    """The compiler rejected printed source: a printer bug (the source is kept to read)."""


@cache
def _compiler(choice: str) -> tuple[str | None, str]:
    """(compiler path, its version line), or (None, why there is none)."""
    if choice.strip().lower() in OFF:
        return None, "native CPU kernels are off (RLX_CC=0)"
    names = [choice] if choice else ["c++", "g++", "clang++"]
    for name in names:
        path = shutil.which(name)
        if path is None:
            continue
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"C++ compiler {path} does not run: {e}"
        if out.returncode == 0:
            return path, (out.stdout.splitlines() or [""])[0]
    return None, f"no C++ compiler found (looked for {', '.join(names)}; set RLX_CC)"


@cache
def _openmp(path: str) -> tuple[str, ...]:
    """The OpenMP flags ``path`` builds a shared library with (a clang without libomp has none)."""
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "probe.cpp"
        src.write_text('#include <omp.h>\nextern "C" int probe() { return omp_get_max_threads(); }\n')
        out = subprocess.run([path, *FLAGS, *OPENMP, "-o", str(Path(d) / "probe.so"), str(src)],
                             capture_output=True, text=True, check=False)
    return OPENMP if out.returncode == 0 else NO_OPENMP


def available() -> str | None:
    """None when native kernels can be built here, else why not."""
    path, why = _compiler(os.environ.get("RLX_CC", ""))
    return None if path else why


@cache
def _cpu() -> str:
    """What ``-march=native`` depends on: the CPU's model and flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform
        return platform.processor() or platform.machine()
    return "\n".join(sorted({ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))}))


def vector_bytes() -> int:
    """The widest vector registers ``-march=native`` gives the compiler here."""
    return 64 if " avx512f" in _cpu() else 32


def cache_dir() -> Path:
    """Where compiled libraries are kept: $RLX_CACHE_DIR, else ~/.cache/rlx, else (a home
    that cannot be written) the temporary directory."""
    root = os.environ.get("RLX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "rlx")
    d = Path(root) / "cc"
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        d = Path(tempfile.gettempdir()) / f"rlx-cc-{os.getuid() if hasattr(os, 'getuid') else 0}"
        d.mkdir(parents=True, exist_ok=True)
    return d


_loaded: dict[str, ctypes.CDLL] = {}
_lock = threading.Lock()


def build(source: str) -> ctypes.CDLL:
    """The library of ``source``, compiled now unless this machine has it cached."""
    path, version = _compiler(os.environ.get("RLX_CC", ""))
    if path is None:
        raise RlxError(version)
    flags = FLAGS + _openmp(path)
    key = hashlib.sha256("\0".join((version, " ".join(flags), _cpu(), source)).encode()).hexdigest()[:24]
    with _lock:
        if key in _loaded:
            return _loaded[key]
        d = cache_dir()
        lib = d / f"{key}.so"
        if not lib.exists():
            src = d / f"{key}.cpp"
            src.write_text(source)  # kept beside the library: what a profile or an error points to
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=d)
            os.close(fd)
            out = subprocess.run([path, *flags, "-o", tmp, str(src)], capture_output=True, text=True, check=False)
            if out.returncode != 0:
                os.unlink(tmp)
                raise CompileError(f"{path} could not compile printed kernels ({src}):\n{out.stderr[-4000:]}")
            os.replace(tmp, lib)  # atomic: another process may be building the same library
        _loaded[key] = ctypes.CDLL(str(lib))
        return _loaded[key]


class Module:
    """Kernels compiled together as one library, when the first of them runs."""

    def __init__(self, prelude: str) -> None:
        self.prelude = prelude
        self.sources: dict[str, str] = {}
        self.text: str | None = None  # set when sealed: no kernel joins it after that

    def library(self) -> ctypes.CDLL:
        with _lock:
            if self.text is None:
                self.text = self.prelude + "\n".join(self.sources[k] for k in sorted(self.sources))
        return build(self.text)


_open: dict[str, Module] = {}  # per prelude: the module kernels are added to until it is compiled


def kernel(prelude: str, name: str, text: str) -> NativeFunction:
    """Kernel ``name`` (defined by ``text`` after ``prelude``), compiled with every other
    kernel added since the last compile, the first time one of them runs."""
    with _lock:
        module = _open.get(prelude)
        if module is None or module.text is not None:
            module = _open[prelude] = Module(prelude)
        module.sources[name] = text
    return NativeFunction(module, name)


class NativeFunction:
    """One compiled kernel, found in its module's library when first asked for (which
    compiles the module): ``rlx_loops`` calls its ``<name>_chunk`` export by address."""

    def __init__(self, module: Module, name: str) -> None:
        self.module, self.name = module, name
        self.keep: object = None  # the arrays a call reads by address, kept alive with it

    def address(self, export: str) -> int:
        """Where an export of this kernel's library is (``<name>_chunk``), compiling it if need be."""
        return ctypes.cast(getattr(self.module.library(), export), ctypes.c_void_p).value
