"""bench/report.py regenerates RESULTS.md from the results JSON alone: a missing file is a
suite that was not run, a failed run keeps the previous figures beside its error, and the
hand-written notes below the marker survive."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import report  # noqa: E402

ROW = {"model": "mlp 4x1024", "form": "compiled", "nodes": 13, "plan_s": 0.001, "arena_bytes": 2 ** 21,
       "lower_bound_bytes": 2 ** 21, "arena_over_bound": 1.0, "no_reuse_bytes": 3 * 2 ** 20, "saved_pct": 33.3,
       "views": 0, "in_place": 0}
META = {"command": "python bench/memory_plan.py", "date": "2026-11-30 18:00 UTC", "cpu": "Some CPU", "cores": 2,
        "platform": "Linux", "python": "3.11", "commit": "abc1234", "wall_s": 12.0}


def test_from_json_alone(tmp_path):
    results, out = tmp_path / "results", tmp_path / "RESULTS.md"
    results.mkdir()
    (results / "memory_plan.json").write_text(json.dumps({"benchmark": "memory_plan", "rows": [ROW], "meta": META}))
    (results / "user_ops.json").write_text(json.dumps({"benchmark": "user_ops", "rows": [
        {"op": "rms_norm", "source": "shipped", "kernel": "generated: row reduction + elementwise",
         "steps_fused": 1, "steps_unfused": 7, "fused_ms": 0.5, "fused_ms_min": 0.4, "fused_ms_max": 0.7,
         "unfused_ms": 1.0, "unfused_ms_min": 0.9, "unfused_ms_max": 1.2}], "repeats": 3,
        "last_failure": {"date": "2026-11-30 19:00 UTC", "command": "python bench/user_ops.py", "returncode": 1,
                         "error": "Traceback ...\nValueError: boom"}}))
    out.write_text("old\n" + report.NOTES + "\nkept by hand\n")
    assert report.main(["--results", str(results), "--out", str(out), "--no-plots"]) == 0
    text = out.read_text()
    assert "`python bench/memory_plan.py`; 2026-11-30 18:00 UTC; Some CPU, 2 cores" in text
    assert "| mlp 4x1024 | compiled | 13 | 2.00 | 2.00 | 1.000 |" in text
    assert "0.50 (0.40–0.70) | 1.00 (0.90–1.20) | 2.00x |" in text        # median (spread) and the ratio
    assert "failed** (exit 1: ValueError: boom)" in text
    assert "Not run: no `bench/results/compile_time.json`" in text       # a suite that was not run
    assert text.count("not run") >= 5
    assert text.rstrip().endswith("kept by hand") and "\nold\n" not in text
