"""Hostile MIR documents, constants and run-time inputs: every failure is an RlxError that
names the node or the input (issue "Trust: ... rlx errors only"). Each test failed before
the fix it pins; the fuzz test at the end mutates real documents."""
import json
import random
import re
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import rlx
from rlx.errors import RlxError, UnknownOpError
from rlx.ir import Graph, interpret
from rlx.rules import load

RULES = load()


def small_graph() -> Graph:
    g = Graph("small")
    x = g.input("x", ("B", 4), "f32")
    i = g.input("i", (3,), "i64")
    t = g.param("t", (10, 4))
    c = g.constant([[1.0, 2.0, 3.0, 4.0]])
    y = g.relu(g.add(x, c))
    g.output(y, g.gather(t, i, axis=0), g.max(y, axes=[-1]), g.softmax(y))
    return g


def doc() -> dict:
    return json.loads(small_graph().to_json())


def node(d: dict, op: str) -> dict:
    return next(n for n in d["nodes"] if n["op"] == op)


def load_doc(d: dict) -> Graph:
    return Graph.from_json(json.dumps(d))


# ---------------------------------------------------------------------------- constants
@pytest.mark.parametrize("value,match", [
    ({"tensor": [1.0, 2.0, 3.0, 4.0], "shape": [1, 4, 4]}, r"4 values do not fill shape \[1, 4, 4\]"),
    ({"tensor": [[1.0, 2.0], [3.0]], "shape": [1, 4]}, "rectangular array of numbers"),
    ({"tensor": ["a", "b", "c", "d"], "shape": [1, 4]}, "rectangular array of numbers"),
    ({"tensor": [None, 1, 2, 3], "shape": [1, 4]}, "rectangular array of numbers"),
    ({"tensor": [1, 2, 3, 2 ** 70], "shape": [1, 4]}, "rectangular array of numbers"),
    ({"tensor": [1.0, 2.0, 3.0, 4.0], "shape": [1, -4]}, "non-negative ints"),
    ({"tensor": [1.0, 2.0, 3.0, 4.0], "shape": "1x4"}, "non-negative ints"),
    ({"tensor": [1.0, 2.0, 3.0, 4.0]}, "expected {'tensor'"),
    ({"tensor": [], "shape": [0] * 70}, "at most 32"),
    ("abcd", "rectangular array of numbers"),
])
def test_constant_data_must_match_its_shape_and_be_numbers(value, match):
    d = doc()
    node(d, "constant")["attrs"]["value"] = value
    with pytest.raises(RlxError, match=match) as e:
        load_doc(d)
    assert "node #3 'constant_1'" in str(e.value)


@pytest.mark.parametrize("dtype,data,match", [
    ("i32", [1, 2, 3, 2 ** 40], "does not fit i32"),
    ("i64", [1.5, 2, 3, 4], "does not fit i64"),
    ("i64", [float("nan"), 2, 3, 4], "does not fit i64"),
    ("bool", [0, 1, 2, 1], "does not fit bool"),
])
def test_constant_values_must_fit_the_declared_dtype(dtype, data, match):
    d = doc()
    const = node(d, "constant")
    const["attrs"].update(dtype=dtype, value={"tensor": [data], "shape": [1, 4]})
    const.pop("outputs")
    with pytest.raises(RlxError, match=match):
        load_doc(d)


@pytest.mark.parametrize("value,dtype,match", [
    ([[1.0, 2.0], [3.0]], None, "rectangular array of numbers"),
    ("abc", None, "rectangular array of numbers"),
    ([object()], None, "rectangular array of numbers"),
    (2 ** 70, None, "rectangular array of numbers"),
    (1.5, "i32", "does not fit i32"),
    (float("nan"), "i64", "does not fit i64"),
])
def test_graph_constant_rejects_what_is_not_a_tensor(value, dtype, match):
    with pytest.raises(RlxError, match=match) as e:
        Graph().constant(value, dtype, name="k")
    assert "node 'k'" in str(e.value)


def test_graph_constant_still_casts_what_fits():
    g = Graph()
    assert g.constant([1, 2], "f32").dtype == "f32"
    assert g.constant([[True, False]]).dtype == "bool"
    assert g.constant(3.0, "i32").node.attrs["value"].dtype == np.int32
    assert np.isinf(g.constant(1e300, "f16").node.attrs["value"])


# ---------------------------------------------------------------------------- every field, wrong types
WRONG = [None, True, 1.5, -1, "x", [], {}, [[1]], 2 ** 80]


def _fields(d: dict):
    """The path of every field of a document: its own, its nodes', their attributes' and
    declared outputs', and its outputs'."""
    yield from (("name",), ("nodes",), ("outputs",))
    for i, nd in enumerate(d["nodes"]):
        yield from (("nodes", i, k) for k in ("name", "op", "inputs", "attrs", "outputs"))
        yield from (("nodes", i, "attrs", k) for k in nd["attrs"])
        for j, _ in enumerate(nd["outputs"]):
            yield from (("nodes", i, "outputs", j), ("nodes", i, "outputs", j, "shape"),
                        ("nodes", i, "outputs", j, "dtype"))
    for j, _ in enumerate(d["outputs"]):
        yield from (("outputs", j, k) for k in ("name", "value"))


def test_wrong_types_in_every_field_are_rlx_errors_naming_the_node():
    checked = failed = 0
    for path in _fields(doc()):
        for bad in WRONG:
            d = doc()
            target = d
            for k in path[:-1]:
                target = target[k]
            target[path[-1]] = bad
            try:
                load_doc(d)
            except RlxError as e:
                failed += 1
                assert re.search(r"node #\d+|node '|output|malformed MIR JSON|not an rlx MIR", str(e)), (path, bad, str(e))
            checked += 1
    assert checked > 300 and failed > 0.9 * checked


def test_unknown_ops_and_attributes_name_the_node():
    d = doc()
    node(d, "relu")["op"] = "frobnicate"
    with pytest.raises(UnknownOpError, match=r"node #5 'relu_1'.*unknown op 'frobnicate'"):
        load_doc(d)
    d = doc()
    node(d, "max")["attrs"]["keepdims"] = "yes"
    with pytest.raises(RlxError, match=r"node 'max_1' \(max\): attribute 'keepdims' expects bool, got 'yes'"):
        load_doc(d)
    d = doc()
    node(d, "input")["attrs"]["dtype"] = {"a": 1}
    with pytest.raises(RlxError, match=r"node #0 'x'.*expected a dtype name"):
        load_doc(d)
    d = doc()
    node(d, "softmax")["attrs"]["axis"] = 2 ** 80
    with pytest.raises(RlxError, match=r"node 'softmax_1' \(softmax\): axis 1208925819614629174706176 out of range"):
        load_doc(d)


def test_references_and_names_are_checked():
    d = doc()
    node(d, "relu")["inputs"] = [["add_1"]]
    with pytest.raises(RlxError, match=r"node #5 'relu_1': input \['add_1'\] is not defined"):
        load_doc(d)
    d = doc()
    d["outputs"].append(dict(d["outputs"][0]))
    with pytest.raises(RlxError, match="duplicate output name"):
        load_doc(d)
    with pytest.raises(RlxError, match="expected an object at the top level, got list"):
        Graph.from_dict([])


# ---------------------------------------------------------------------------- nesting and huge numbers
def test_deeply_nested_json_is_an_error_not_a_recursion():
    for text in ("[" * 100_000, '{"a":' * 100_000):
        with pytest.raises(RlxError, match="nested deeper"):
            Graph.from_json(text)
    d = doc()
    deep: object = 1.0
    for _ in range(5000):
        deep = [deep]
    node(d, "constant")["attrs"]["value"] = {"tensor": deep, "shape": [1]}
    with pytest.raises(RlxError, match=r"node #3 'constant_1': nested deeper than 128 levels"):
        Graph.from_dict(d)  # a Python caller can build what json.loads cannot read
    d = doc()
    body = ["$", 0]
    for _ in range(3000):
        body = ["exp", {}, body]
    d["nodes"].insert(4, {"name": "r", "op": "region", "inputs": ["x"], "attrs": {"body": body}})
    with pytest.raises(RlxError, match="nested deeper"):
        Graph.from_dict(d)


def test_huge_numbers_are_errors():
    text = json.dumps(doc()).replace('"B"', "9" * 5000, 1)
    with pytest.raises(RlxError, match="digits"):
        Graph.from_json(text)
    d = doc()
    d["nodes"].insert(4, {"name": "n", "op": "rms_norm", "inputs": ["x", "constant_1"], "attrs": {"eps": 10 ** 400}})
    with pytest.raises(RlxError, match="node #4 'n': attribute 'eps': 1000.* is too large for a float"):
        Graph.from_dict(d)


# ---------------------------------------------------------------------------- run-time inputs
@pytest.fixture(scope="module")
def compiled():
    g = small_graph()
    return g, rlx.compile(g, rules=RULES)


GOOD = {"x": np.ones((2, 4), np.float32), "i": np.array([1, 2, 3])}
T = {"t": np.ones((10, 4), np.float32)}


@pytest.mark.parametrize("change,match", [
    ({"x": np.full((2, 4), "1.5")}, r"input 'x': expected f32 data, got strings"),
    ({"x": np.full((2, 4), None)}, r"input 'x': expected f32 data, got Python objects"),
    ({"x": np.ones((2, 4), bool)}, r"input 'x': expected f32 data, got bools"),
    ({"i": np.array([1.0, 2.0, 3.0])}, r"input 'i': expected i64 data, got floats"),
    ({"i": np.array([1, 2, 2 ** 63], np.uint64)}, r"input 'i': values .* do not fit i64"),
])
def test_inputs_of_the_wrong_kind_are_named(compiled, change, match):
    g, r = compiled
    with pytest.raises(RlxError, match=match):
        r.run({**GOOD, **change}, T)
    with pytest.raises(RlxError, match=match):
        interpret(g, {**GOOD, **change}, T)


def test_params_of_the_wrong_kind_are_named(compiled):
    g, r = compiled
    with pytest.raises(RlxError, match=r"param 't': expected f32 data, got strings"):
        r.run(GOOD, {"t": np.full((10, 4), "a")})
    r.bind(T)


def test_an_index_out_of_range_is_named(compiled):
    g, r = compiled
    with pytest.raises(RlxError, match=r"input 'i': indices 1 to 99 are out of range for a table of 10 rows"):
        r.run({**GOOD, "i": np.array([1, 2, 99])}, T)
    with pytest.raises(RlxError, match=r"node 'gather_1' \(gather\) cannot run"):
        interpret(g, {**GOOD, "i": np.array([1, 2, 99])}, T)


def test_ragged_inputs_are_named():
    g = Graph()
    g.output(g.relu(g.input("x", (2, 2), "f32")))
    r = rlx.compile(g, rules=RULES)
    with pytest.raises(RlxError, match="input 'x': not a rectangular array"):
        interpret(g, {"x": [[1.0, 2.0], [3.0]]})
    with pytest.raises(RlxError, match="input 'x': not a rectangular array"):
        r.run({"x": [[1.0, 2.0], [3.0]]})


@pytest.mark.parametrize("op", ["max", "softmax", "rms_norm"])
def test_a_symbol_bound_to_zero_reaching_a_reduction_is_named(op):
    g = Graph(op)
    x = g.input("x", (2, "S"), "f32")
    g.output(g.max(x, axes=[-1]) if op == "max" else g.softmax(x) if op == "softmax"
             else g.rms_norm(x, g.param("w", ("S",), "f32")))
    r = rlx.compile(g, rules=RULES)
    empty = {"x": np.zeros((2, 0), np.float32)}
    ps = {"w": np.zeros((0,), np.float32)} if op == "rms_norm" else {}
    with pytest.raises(RlxError, match=r"(input 'x'|param 'w'): shape \(.*\) has no elements"):
        r.run(empty, ps)
    if op != "rms_norm":  # the interpreter computes what is defined (an empty rms_norm is empty)
        with pytest.raises(RlxError, match=rf"node '{op}_1' \({op}\) cannot run on these inputs: .*empty: 'x' \(2, 0\)"):
            interpret(g, empty, ps)


def test_nan_sizes_are_errors():
    text = json.dumps(doc()).replace('"B"', "NaN")  # json reads NaN, and writes it too
    with pytest.raises(RlxError, match=r"node 'x' \(input\): attribute 'shape' expects dims, got \[nan, 4\]"):
        Graph.from_json(text)
    g = small_graph()
    with pytest.raises(RlxError, match="symbol B bound to nan"):
        interpret(g, GOOD, T, binding={"B": float("nan")})
    with pytest.raises(RlxError, match="symbol B bound to nan"):
        rlx.ir.random_arrays(g, {"B": float("nan")})


# ---------------------------------------------------------------------------- fuzz
def _llama_doc() -> dict:
    from rlx.cli import main
    import contextlib
    import io
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()):
        path = Path(d) / "llama.json"
        assert main(["model", "llama", "--layers", "1", "--d-model", "16", "--heads", "2", "--seq", "4",
                     "--out", str(path)]) == 0
        return json.loads(path.read_text())


BASES = [_llama_doc(), doc(), json.loads(rlx.models.mlp(layers=1, d_in=4, d_hidden=8, batch="B").to_json())]
DEEP = "__deep__"
ODD = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1, 2 ** 63, 2 ** 64, -2 ** 70, 10 ** 30, 1e308, -0.0, 1.5,
                     float("inf"), float("nan"), "", "x", "B", "f32", "i64", "bool", "[/]", 'a"b', "B*", "-3",
                     [], [1], [[1, 2], [3]], {}, ["B", -3], [0], [2 ** 40, 2 ** 40], {"tensor": 1},
                     {"tensor": [1, 2], "shape": [3]}, {"tensor": "ab", "shape": []}, ["$", 0], ["exp", {}, ["$", 0]],
                     "add", "softmax", "max", "frob", "constant", "input", "region", "gather", DEEP]),
    st.integers(), st.floats(), st.text(max_size=8),
)
MUTATION = st.tuples(st.sampled_from(["set", "delete", "duplicate", "rename", "nest"]),
                     st.integers(min_value=0, max_value=10 ** 6), ODD, st.sampled_from([2, 20, 200, 3000]))


def _paths(o, p=()):
    yield p
    if len(p) < 12:
        items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else ()
        for k, v in items:
            yield from _paths(v, p + (k,))


def mutate(base: dict, mutations, strip: bool) -> str:
    """The document as text after the mutations (a path index picks the field)."""
    d = json.loads(json.dumps(base))
    if strip:  # drop declared output types, so changed attributes reach shape inference
        for nd in d["nodes"]:
            nd.pop("outputs", None)
    deep = 0
    for kind, index, value, depth in mutations:
        paths = [p for p in _paths(d) if p]
        if not paths:
            break
        path = paths[index % len(paths)]
        parent = d
        for k in path[:-1]:
            parent = parent[k]
        k = path[-1]
        if kind == "set":
            parent[k] = value
            deep = depth if value == DEEP else deep
        elif kind == "delete":
            del parent[k]
        elif kind == "duplicate" and isinstance(parent, list):
            parent.insert(k, json.loads(json.dumps(parent[k])))
        elif kind == "rename" and isinstance(parent, dict):
            parent[k + "_"] = parent.pop(k)
        elif kind == "nest":
            parent[k] = {"tensor": parent[k], "shape": [1]} if depth == 2 else [parent[k]] * 2
    text = json.dumps(d)
    return text.replace(json.dumps(DEEP), "[" * deep + "1" + "]" * deep)


FUZZ = {"cases": 0, "loaded": 0}


@settings(max_examples=settings().max_examples * 8)  # 320; 3200 with RLX_HYPOTHESIS_PROFILE=thorough
@given(st.sampled_from(range(len(BASES))), st.lists(MUTATION, min_size=1, max_size=4), st.booleans())
def test_fuzz_from_json_raises_only_rlx_errors(base, mutations, strip):
    text = mutate(BASES[base], mutations, strip)
    t = time.perf_counter()
    try:
        Graph.from_json(text)
        FUZZ["loaded"] += 1
    except RlxError as e:
        assert "\n" not in str(e), str(e)  # one line each
    FUZZ["cases"] += 1
    assert time.perf_counter() - t < 3.0


def test_fuzz_is_not_vacuous():
    """The mutations keep some documents loadable and make most invalid (run after the fuzz)."""
    if FUZZ["cases"] < 50:
        pytest.skip("run with the fuzz test")
    assert 0 < FUZZ["loaded"] < FUZZ["cases"]


def test_mutate_reaches_deep_nesting_and_huge_numbers():
    rnd = random.Random(0)
    text = mutate(BASES[1], [("set", rnd.randrange(100), DEEP, 3000)], False)
    assert text.count("[") > 3000
    with pytest.raises(RlxError):
        Graph.from_json(text)
