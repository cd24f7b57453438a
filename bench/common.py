"""Helpers shared by the benchmarks: timing summaries and table cells."""
from __future__ import annotations

import statistics


def ms(key: str, samples: list[float]) -> dict[str, float]:
    """Median, min and max of timing samples, in ms, under ``key``, ``key_min``, ``key_max``."""
    return {key: 1e3 * statistics.median(samples), f"{key}_min": 1e3 * min(samples), f"{key}_max": 1e3 * max(samples)}


def cell(row: dict, key: str, digits: int = 1) -> str:
    """``median (min-max)`` of a timing in a row, or "-"."""
    if key not in row:
        return "-"
    return f"{row[key]:.{digits}f} ({row[key + '_min']:.{digits}f}-{row[key + '_max']:.{digits}f})"
