"""The OpenBLAS kernel probe: each candidate timed in a fresh process."""
from __future__ import annotations

from rlx.exec import blas


def test_the_default_kernel_is_measured_and_the_fastest_is_a_candidate():
    rate = blas.measure("")
    assert rate is not None and rate > 1.0  # GFLOP/s of a single-threaded sgemm
    assert blas.fastest(("", "Haswell")) in ("", "Haswell")


def test_the_fastest_keeps_openblas_own_pick_within_the_margin(monkeypatch):
    rates = {"": 100.0, "A": 102.0, "B": 90.0}
    monkeypatch.setattr(blas, "measure", rates.get)
    assert blas.fastest(("", "A", "B")) == ""          # 2% is within the 3% margin
    rates["A"] = 110.0
    assert blas.fastest(("", "A", "B")) == "A"
    assert blas.fastest(("B",)) == "B"                 # without the default to compare, the best measured
