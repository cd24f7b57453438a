"""ONNX's own backend node tests (shipped in the onnx wheel as ``onnx.backend.test.case.node``)
for every op rlx imports: each model is imported, compiled for the cpu target and run on the
test's inputs; outputs must have the expected dtype and shape and match within the test's own
rtol/atol (exactly, for integers and bools).

A model whose every op rlx imports either passes or is listed in ``onnx_backend_skips.txt``
with the reason. A listed test must still fail with an rlx error (never a wrong answer or a
crash): it is a strict xfail, so an entry that starts passing must be taken off the list.

Inputs that an op needs at compile time (axes, shapes, bounds given as graph inputs) are
passed to ``load(known=...)`` when the plain import says it needs them: rlx compiles for
known shapes and attributes, as XLA and TVM do."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402
from onnx.backend.test.case import node as node_cases  # noqa: E402

import rlx  # noqa: E402
from rlx.errors import RlxError  # noqa: E402
from rlx.frontends.onnx import HANDLERS, OnnxImportError, load  # noqa: E402

SKIPS_FILE = Path(__file__).with_name("onnx_backend_skips.txt")


def _skips() -> dict[str, str]:
    out = {}
    for line in SKIPS_FILE.read_text().splitlines():
        name, _, reason = line.partition("#")
        if name.strip():
            out[name.strip()] = reason.strip()
    return out


def _cases() -> list:
    """The node tests whose ops are all ones rlx imports."""
    with np.errstate(all="ignore"):
        cases = node_cases.collect_testcases(None)
    return sorted((c for c in cases if {n.op_type for n in c.model.graph.node} <= set(HANDLERS)),
                  key=lambda c: c.name)


CASES = _cases()
SKIPS = _skips()


def _array(x) -> np.ndarray:
    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else np.asarray(x)


def run_case(case) -> None:
    model = case.model
    for inputs, outputs in case.data_sets:
        feeds = {vi.name: _array(x) for vi, x in zip(model.graph.input, inputs)}
        graph = None
        # an input rlx needs at compile time (axes, bounds, Resize's scales) is fed as known:
        # integer inputs first, then every vector
        for known in ({}, {k: v for k, v in feeds.items() if v.dtype.kind in "iu"},
                      {k: v for k, v in feeds.items() if v.dtype.kind in "iu" or v.ndim <= 1}):
            try:
                graph = load(model, known=known)
                break
            except OnnxImportError as e:
                if "known at import time" not in str(e) or len(known) == len(feeds):
                    raise
        if graph is None:
            graph = load(model)
        result = rlx.compile(graph, target="cpu")
        got = result.run({k: v for k, v in feeds.items() if k in {n.name for n in graph.inputs}})
        for vo, want in zip(model.graph.output, outputs):
            want = _array(want)
            y = got[vo.name]
            assert y.dtype == want.dtype, f"{vo.name}: dtype {y.dtype}, expected {want.dtype}"
            assert y.shape == want.shape, f"{vo.name}: shape {y.shape}, expected {want.shape}"
            if want.dtype.kind == "f" or want.dtype == np.dtype("bfloat16"):
                np.testing.assert_allclose(y.astype(np.float64), want.astype(np.float64),
                                           rtol=case.rtol, atol=case.atol, err_msg=vo.name)
            else:
                np.testing.assert_array_equal(y, want, err_msg=vo.name)


def _param(case):
    if case.name in SKIPS:
        return pytest.param(case, id=case.name, marks=pytest.mark.xfail(
            reason=SKIPS[case.name], raises=RlxError, strict=True))
    return pytest.param(case, id=case.name)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_onnx_backend_node(case):
    with np.errstate(all="ignore"):
        run_case(case)


def test_the_skip_list_names_only_tests_that_exist_and_says_why():
    names = {c.name for c in CASES}
    assert not set(SKIPS) - names, f"listed but not run (renamed, or its op is no longer imported): " \
                                   f"{sorted(set(SKIPS) - names)}"
    assert all(SKIPS.values()), "every skipped test needs a reason"


def test_most_imported_node_tests_pass():
    assert len(CASES) >= 400
    assert len(SKIPS) <= len(CASES) // 2
