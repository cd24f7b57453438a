"""The NumPy executor's threads: steps cut across the cores give the one-thread results."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import rlx
from rlx.exec import numpy_print
from rlx.exec.parallel import Pool, blas_single_threaded, pool, split, thread_count
from rlx.ir import random_arrays
from rlx.kernels.lower import kernel_for
from rlx.ir.registry import TensorType
from rlx.ir.dtypes import DType



def _inputs_and_params(graph, seed: int) -> tuple[dict, dict]:
    arrays = random_arrays(graph, seed=seed)
    return ({n.name: arrays[n.name] for n in graph.inputs}, {n.name: arrays[n.name] for n in graph.params})


def _small_llama(batch: int, seed: int):
    """A one-layer Llama compiled for cpu with its params bound, its inputs and one run's outputs."""
    graph = rlx.models.llama(layers=1, d_model=128, n_heads=4, d_ff=352, seq=64, batch=batch)
    ins, ps = _inputs_and_params(graph, seed)
    result = rlx.compile(graph, target="cpu").bind(ps)
    return result, ins, result.run(ins)


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

def test_split_covers_the_range_in_nearly_equal_parts():
    for n in range(0, 40):
        for parts in range(1, 6):
            ranges = split(n, parts)
            assert [i for r in ranges for i in r] == list(range(n))
            assert all(len(r) for r in ranges) and len(ranges) <= max(1, parts)
            if ranges:
                assert max(map(len, ranges)) - min(map(len, ranges)) <= 1


def test_pool_runs_every_list_and_raises_a_workers_error():
    p = Pool(2)
    hits = np.zeros(5)
    p.run([[(np.add, (hits[i:i + 1], 1, hits[i:i + 1]))] for i in range(5)])  # more lists than threads
    assert hits.tolist() == [1] * 5

    def boom() -> None:
        raise ValueError("from a worker")
    with pytest.raises(ValueError, match="from a worker"):
        p.run([[], [(boom, ())]])
    p.run([[(np.add, (hits, 1, hits))], []])  # the pool still works after an error
    assert hits.tolist() == [2] * 5


def test_a_second_caller_finds_the_workers_busy_and_runs_its_lists_itself():
    p = Pool(1)
    started, release = threading.Event(), threading.Event()
    out = np.zeros(2)

    def hold() -> None:
        started.set()
        release.wait(5)
    t = threading.Thread(target=p.run, args=([[(hold, ())], [(np.add, (out[:1], 1, out[:1]))]],))
    t.start()
    started.wait(5)
    p.run([[(np.add, (out[1:], 1, out[1:]))], [(np.add, (out[1:], 1, out[1:]))]])  # inline, in order
    release.set()
    t.join(5)
    assert out.tolist() == [1, 2]


def test_blas_is_single_threaded_inside_and_restored_after():
    before = _blas_threads()
    if not before or thread_count() == 1:
        pytest.skip("no BLAS found by threadpoolctl, or one thread only")
    with blas_single_threaded():
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == before
    # two programs at once: the first out must not restore while the second still runs
    outer, inner = blas_single_threaded(), blas_single_threaded()
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    assert set(_blas_threads()) == {1}
    inner.__exit__(None, None, None)
    assert _blas_threads() == before


def _kernel(op: str, arrays: list[np.ndarray], attrs: dict, out_shapes: list[tuple]):
    types = [TensorType(a.shape, DType.f32) for a in arrays]
    k = kernel_for(op, types, attrs)
    outs = [np.zeros(s, np.float32) for s in out_shapes]
    return numpy_print.build(k, arrays, outs), outs


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_large_steps_are_cut_across_the_threads_and_match_one_thread(monkeypatch, threads):
    rng = np.random.default_rng()
    cases = [  # op, inputs, attrs, output shapes
        ("gelu", [rng.standard_normal((700, 1517)).astype(np.float32)], {}, [(700, 1517)]),
        ("softmax", [rng.standard_normal((4, 290, 933)).astype(np.float32)], {"axis": -1}, [(4, 290, 933)]),
        ("matmul_bias_act", [rng.standard_normal((130, 96)).astype(np.float32),
                             rng.standard_normal((96, 700)).astype(np.float32),
                             rng.standard_normal(700).astype(np.float32)], {"act": "gelu"}, [(130, 700)]),
        ("matmul_bias_act", [rng.standard_normal((1, 512)).astype(np.float32),  # one row: cut by columns
                             rng.standard_normal((512, 4100)).astype(np.float32),
                             rng.standard_normal(4100).astype(np.float32)], {"act": "relu"}, [(1, 4100)]),
    ]
    monkeypatch.setenv("RLX_NUM_THREADS", "1")
    want = []
    for op, ins, attrs, shapes in cases:
        k, outs = _kernel(op, ins, attrs, shapes)
        k()
        want.append(outs)
    monkeypatch.setenv("RLX_NUM_THREADS", str(threads))
    for (op, ins, attrs, shapes), ref in zip(cases, want):
        k, outs = _kernel(op, ins, attrs, shapes)
        assert 1 <= k.threads <= threads
        if threads > 1:  # every case is large enough to be cut (GEMMs by their multiply-adds)
            assert outs[0].size >= 4 * numpy_print.PAR_MIN or op.startswith("matmul")
            assert k.threads > 1, f"{op} ran on one thread"
        k()
        for got, w in zip(outs, ref):
            np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-5)  # f32: GEMM blocking may differ by rounding


def test_matmul_is_cut_by_rows_or_columns(monkeypatch):
    monkeypatch.setenv("RLX_NUM_THREADS", "2")
    rng = np.random.default_rng()
    for a_shape, b_shape in [((256, 300), (300, 200)), ((1, 2048), (2048, 1500)), ((3, 128, 64), (64, 300))]:
        a, b = rng.standard_normal(a_shape).astype(np.float32), rng.standard_normal(b_shape).astype(np.float32)
        out = np.empty(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]) + (a_shape[-2], b_shape[-1]), np.float32)
        k = numpy_print.matmul_kernel(a, b, out)
        assert len(k.phases[0]) == 2
        k()
        np.testing.assert_allclose(out, a @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model", ["llama", "bert"])
def test_models_match_across_thread_counts(monkeypatch, model):
    build = {"llama": lambda: rlx.models.llama(layers=2, d_model=128, n_heads=4, d_ff=352, seq=64, batch=2),
             "bert": lambda: rlx.models.bert(layers=2, d_model=128, n_heads=4, d_ff=512, seq=64, batch=2)}[model]
    graph = build()
    ins, ps = _inputs_and_params(graph, int(np.random.default_rng().integers(1 << 30)))
    results = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("RLX_NUM_THREADS", threads)
        result = rlx.compile(graph, target="cpu")
        results[threads] = result.run(ins, ps)
    for k in results["1"]:
        np.testing.assert_allclose(results["2"][k], results["1"][k], rtol=1e-4, atol=1e-4)


def test_programs_run_from_two_threads_at_once():
    result, ins, want = _small_llama(batch=2, seed=3)
    blas_before = _blas_threads()
    got: list[dict] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            for _ in range(5):
                got.append(result.run(ins))
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)
    ts = [threading.Thread(target=go) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and len(got) == 10
    assert _blas_threads() == blas_before
    for g in got:
        for k in want:
            np.testing.assert_array_equal(g[k], want[k])


def test_the_pool_follows_the_thread_count(monkeypatch):
    monkeypatch.setenv("RLX_NUM_THREADS", "3")
    assert thread_count() == 3 and pool().size == 3
    monkeypatch.setenv("RLX_NUM_THREADS", "1")
    assert pool().size == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_runs_a_program_made_before_the_fork(monkeypatch):
    """The child has none of the parent's worker threads: it must not wait for them."""
    monkeypatch.setenv("RLX_NUM_THREADS", "2")
    result, ins, want = _small_llama(batch=4, seed=5)
    pid = os.fork()
    if pid == 0:  # the child: run, compare, exit with the verdict (never back into pytest)
        code = 1
        try:
            got = result.run(ins)
            code = 0 if all(np.array_equal(got[k], want[k]) for k in want) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, "the child's outputs differ, or it failed"
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    pytest.fail("the forked child hung (waiting for worker threads it does not have)")
