"""The ONNX importer against hostile and malformed models: every failure is an RlxError that
names the place (node, op type, value name), import-time folding is bounded, integer Div folds
as ONNX Runtime computes it, and a seeded fuzzer mutates small valid models (drop, duplicate
and rename values, corrupt attributes and initializers, shuffle nodes, change dtypes and
shapes, insert huge dims) to check that ``load`` either succeeds or raises an RlxError, within
a time bound per model."""
from __future__ import annotations

import contextlib
import os
import random
import signal
import time

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from rlx.errors import RlxError  # noqa: E402
from rlx.frontends import onnx as onnx_frontend  # noqa: E402
from rlx.frontends.onnx import MAX_FOLD_ELEMENTS, load  # noqa: E402

F32, I64, I32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32
THOROUGH = os.environ.get("RLX_HYPOTHESIS_PROFILE") == "thorough"
FUZZ_CASES = 20000 if THOROUGH else 1000
TIME_BOUND = 5.0  # seconds per model


def _model(nodes, inputs, outputs, inits=(), opset=20):
    graph = helper.make_graph(nodes, "hostile", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, shape, dtype=F32):
    return helper.make_tensor_value_info(name, dtype, shape)


def _i64(*v):
    return np.array(v, dtype=np.int64)


X = _vi("x", ["B", 4])
Y = _vi("y", None)


# ---------------------------------------------------------------------------- seed models
def _seeds():
    """Small valid models, between them every op the importer handles."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 4)).astype(np.float32)
    n = helper.make_node
    return [
        _model([n("MatMul", ["x", "w"], ["m"]), n("Add", ["m", "b"], ["a"]), n("Relu", ["a"], ["y"])],
               [X], [Y], [("w", w), ("b", np.ones(4, np.float32))]),
        _model([n("Shape", ["x"], ["s"]), n("Gather", ["s", "zero"], ["b"], axis=0),
                n("Mul", ["b", "two"], ["b2"]), n("Div", ["four", "two"], ["h"]),
                n("Concat", ["b2", "h"], ["t"], axis=0), n("Reshape", ["x", "t"], ["y"])],
               [X], [Y], [("zero", _i64(0)), ("two", _i64(2)), ("four", _i64(4))]),
        _model([n("Shape", ["x"], ["s"]),
                n("ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(np.float32([0.5]))),
                n("Mul", ["x", "c"], ["y"])], [X], [Y]),
        _model([n("Range", ["a", "l", "d"], ["r"]), n("Cast", ["r"], ["rf"], to=F32),
                n("Add", ["x", "rf"], ["y"])], [X], [Y], [("a", np.int64(0)), ("l", np.int64(4)), ("d", np.int64(1))]),
        _model([n("Split", ["x", "sp"], ["p", "q"], axis=1), n("Sub", ["p", "q"], ["d"]),
                n("Unsqueeze", ["d", "ax"], ["u"]), n("Squeeze", ["u", "ax"], ["y"])],
               [X], [Y], [("sp", _i64(2, 2)), ("ax", _i64(0))]),
        _model([n("Slice", ["x", "st", "en", "ax1", "one"], ["sl"]), n("Concat", ["sl", "sl"], ["y"], axis=1)],
               [X], [Y], [("st", _i64(1)), ("en", _i64(3)), ("ax1", _i64(1)), ("one", _i64(1))]),
        _model([n("LayerNormalization", ["x", "g", "b"], ["l"], epsilon=1e-3), n("Softmax", ["l"], ["s"], axis=-1),
                n("ReduceMean", ["s", "ax"], ["r"], keepdims=1), n("Transpose", ["r"], ["t"], perm=[1, 0]),
                n("Gemm", ["x", "w"], ["gm"], transB=1, alpha=0.5), n("ReduceSum", ["gm"], ["rs"], keepdims=0),
                n("ReduceMax", ["t"], ["y"], keepdims=0)],
               [X], [Y], [("g", np.ones(4, np.float32)), ("b", np.zeros(4, np.float32)), ("ax", _i64(1)), ("w", w)]),
        _model([n("Less", ["x", "z"], ["c"]), n("Where", ["c", "x", "z"], ["wh"]),
                n("Pow", ["wh", "e"], ["p"]), n("Gelu", ["p"], ["ge"]), n("Expand", ["ge", "sh"], ["ex"]),
                n("Trilu", ["ex", "k"], ["tr"], upper=0), n("Identity", ["tr"], ["id"]), n("Sqrt", ["id"], ["sq"]),
                n("Max", ["sq", "id", "x"], ["mx"]), n("Min", ["mx", "z"], ["y"])],
               [X, _vi("z", ["B", 4])], [Y], [("e", np.float32(2.0)), ("sh", _i64(1, 4)), ("k", np.int64(1))]),
        _model([n("Constant", [], ["c7"], value=numpy_helper.from_array(_i64(-7, 7, 9))),
                n("Constant", [], ["c2"], value_ints=[2, -2, 4]), n("Div", ["c7", "c2"], ["q"]),
                n("Equal", ["q", "q"], ["eq"]), n("Cast", ["eq"], ["f"], to=F32), n("Greater", ["x", "x"], ["g"]),
                n("Cast", ["g"], ["gf"], to=F32), n("Add", ["gf", "f"], ["y"])],
               [_vi("x", ["B", 3])], [Y]),
        _model([n("ConstantOfShape", ["cs"], ["c"], value=numpy_helper.from_array(np.float32([2.0]))),
                n("ReduceSum", ["c", "ax"], ["r"], keepdims=0), n("Reshape", ["r", "t"], ["rr"]),
                n("Expand", ["rr", "sh"], ["e"]), n("Add", ["x", "e"], ["y"])],
               [X], [Y], [("cs", _i64(3, 4)), ("ax", _i64(0)), ("t", _i64(1, -1)), ("sh", _i64(1, 4))]),
    ]


SEEDS = _seeds()


def test_seed_models_load():
    for m in SEEDS:
        load(m)


def _load_error(model, *patterns):
    """The RlxError ``load`` raises; every pattern must be in its message."""
    with pytest.raises(RlxError) as info:
        load(model)
    for p in patterns:
        assert p in str(info.value), (p, str(info.value))
    return str(info.value)


N = helper.make_node


# ---------------------------------------------------------------------------- malformed graphs
def test_dangling_input_names_the_node_and_the_value():
    model = _model([N("Relu", ["x"], ["r"], name="act"), N("Add", ["r", "nowhere"], ["y"], name="plus")], [X], [Y])
    _load_error(model, "ONNX node 'plus' (Add", "'nowhere' is produced by no node, initializer or graph input")


def test_missing_initializer_is_a_dangling_input():
    model = _model([N("MatMul", ["x", "w"], ["y"], name="proj")], [X], [Y])  # w was never written
    _load_error(model, "'proj' (MatMul", "input 'w' is produced by no node")


def test_cycle_names_the_nodes_on_it():
    model = _model([N("Add", ["x", "b"], ["a"], name="first"), N("Relu", ["a"], ["b"], name="second"),
                    N("Relu", ["a"], ["y"])], [X], [Y])
    _load_error(model, "cycle", "'first' (Add", "'second' (Relu")


def test_a_node_reading_its_own_output_is_a_cycle():
    _load_error(_model([N("Add", ["x", "y"], ["y"], name="loop")], [X], [Y]), "cycle", "'loop'")


def test_nodes_out_of_order_are_sorted():
    nodes = [N("Relu", ["a"], ["y"]), N("Mul", ["m", "x"], ["a"]), N("Add", ["x", "x"], ["m"])]
    g = load(_model(nodes, [X], [Y]))
    assert set(g.op_counts()) == {"relu", "mul", "add"}
    from rlx.ir import interpret
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
    np.testing.assert_allclose(interpret(g, {"x": x}, g.weights)["y"], np.maximum(2 * x * x, 0))


def test_undeclared_graph_output():
    _load_error(_model([N("Relu", ["x"], ["r"])], [X], [_vi("z", None)]),
                "graph output 'z' is produced by no node")


def test_two_nodes_writing_one_output():
    model = _model([N("Relu", ["x"], ["y"], name="one"), N("Neg", ["x"], ["y"], name="two")], [X], [Y])
    _load_error(model, "'two' (Neg", "writes 'y'", "'one' (Relu")


def test_a_node_writing_a_graph_input():
    _load_error(_model([N("Relu", ["x"], ["x"], name="clobber"), N("Neg", ["x"], ["y"])], [X], [Y]),
                "'clobber'", "writes 'x', which is already a graph input")


@pytest.mark.parametrize("node, text", [
    (N("Concat", ["x", "x"], ["y"], name="cat"), "Concat requires attribute 'axis'"),
    (N("Cast", ["x"], ["y"], name="cast"), "Cast requires attribute 'to'"),
    (N("Relu", [], ["y"], name="act"), "Relu takes 1 inputs, the node has 0"),
    (N("Add", ["x"], ["y"], name="plus"), "Add takes 2 inputs, the node has 1"),
    (N("Gather", ["x", ""], ["y"], name="pick"), "input 1 (indices) is required"),
    (N("Softmax", ["x"], ["y"], name="sm", axis=[1]), "attribute 'axis' must be INT, got INTS"),
    (N("Relu", ["x"], ["y"], name="act", alpha=0.5), "Relu has no attribute 'alpha'"),
    (N("Relu", ["x"], ["y", "extra"], name="act"), "Relu has 1 outputs, the node names 2"),
    (N("Gelu", ["x"], ["y"], name="gelu", approximate="sigmoid"), "approximate='sigmoid'"),
])
def test_node_against_its_schema(node, text):
    _load_error(_model([node], [X], [Y]), f"ONNX node '{node.name}' ({node.op_type}, opset 20)", text)


def test_outputs_rlx_does_not_make():
    """Split naming more outputs than its sizes make is an error; LayerNormalization's Mean
    and InvStdDev named but unused are fine (rlx computes Y only)."""
    model = _model([N("Split", ["x", "sp"], ["p", "q", "r"], name="cut", axis=1), N("Add", ["p", "r"], ["y"])],
                   [X], [Y], [("sp", _i64(2, 2))])
    _load_error(model, "'cut' (Split", "split sizes [2, 2] for 3 outputs")
    ln = _model([N("LayerNormalization", ["x", "g"], ["y", "mean", ""])], [X], [Y], [("g", np.ones(4, np.float32))])
    assert load(ln).op_counts()["layer_norm"] == 1


def test_an_op_missing_from_the_models_opset():
    _load_error(_model([N("Gelu", ["x"], ["y"], name="g")], [X], [Y], opset=17),
                "'g' (Gelu, opset 17)", "not an op of ONNX opset 17")


def test_an_opset_from_the_future():
    _load_error(_model([N("Relu", ["x"], ["y"])], [X], [Y], opset=10**6), "opset 1000000 is newer")


def test_duplicate_unsqueeze_axes():
    model = _model([N("Unsqueeze", ["x", "ax"], ["y"], name="unsq")], [X], [Y], [("ax", _i64(0, 0))])
    _load_error(model, "'unsq' (Unsqueeze", "repeat an axis")


def test_unsqueeze_axis_out_of_range():
    model = _model([N("Unsqueeze", ["x", "ax"], ["y"], name="unsq")], [X], [Y], [("ax", _i64(5))])
    _load_error(model, "'unsq' (Unsqueeze", "axis 5 out of range for rank 3")


def _raw_init(name, data_type, dims, raw):
    t = TensorProto(name=name, data_type=data_type, dims=dims)
    t.raw_data = raw
    return t


@pytest.mark.parametrize("tensor, text", [
    (_raw_init("w", F32, [4, 4], b"\0" * 60), "its data does not match dtype FLOAT and dims [4, 4]"),
    (_raw_init("w", F32, [4, 4], b"\0" * 65), "its data does not match dtype FLOAT"),
    (_raw_init("w", TensorProto.COMPLEX64, [4, 4], b"\0" * 128), "dtype COMPLEX64 is not supported"),
    (_raw_init("w", TensorProto.UNDEFINED, [4, 4], b"\0" * 64), "dtype UNDEFINED is not supported"),
    (_raw_init("w", 999, [4, 4], b"\0" * 64), "dtype #999 is not supported"),
    (_raw_init("w", TensorProto.STRING, [1], b""), "dtype STRING is not supported"),
    (_raw_init("w", F32, [4, -4], b""), "invalid dims [4, -4]"),
    (_raw_init("w", F32, [2**40, 2**40], b"\0" * 64), "does not match dtype FLOAT"),
])
def test_bad_initializer_data(tensor, text):
    model = _model([N("MatMul", ["x", "w"], ["y"])], [X], [Y])
    model.graph.initializer.append(tensor)
    _load_error(model, "initializer 'w'", text)


def test_initializer_disagreeing_with_its_graph_input():
    model = _model([N("MatMul", ["x", "w"], ["y"])], [X, _vi("w", [4, 4], I64)], [Y],
                   [("w", np.ones((4, 4), np.float32))])
    _load_error(model, "initializer 'w' has dtype FLOAT, its graph input declares INT64")


def test_empty_graph():
    _load_error(_model([], [X], []), "the graph has no outputs")
    _load_error(_model([], [], [Y]), "graph output 'y' is produced by no node")
    g = load(_model([], [X], [_vi("x", ["B", 4])]))  # a graph that returns its input is valid ONNX
    assert [name for name, _ in g.outputs] == ["x"]


@pytest.mark.parametrize("bad", ["a\tb", "a\nb", "a\rb", "a\x00b"])
def test_names_with_tabs_or_newlines_are_refused(bad):
    model = _model([N("Relu", ["x"], [bad], name="act"), N("Neg", [bad], ["y"])], [X], [Y])
    _load_error(model, "'act' (Relu", repr(bad), "tab-separated files")
    _load_error(_model([N("Relu", [bad], ["y"])], [_vi(bad, [2])], [Y]), f"graph input {bad!r}")
    _load_error(_model([N("Relu", ["x"], [bad])], [X], [_vi(bad, None)]), f"{bad!r}")


def test_external_data_through_a_model_proto(tmp_path):
    from onnx.external_data_helper import convert_model_to_external_data
    w = np.arange(16, dtype=np.float32).reshape(4, 4)
    model = _model([N("MatMul", ["x", "w"], ["y"])], [X], [Y], [("w", w)])
    convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    onnx.save(model, str(tmp_path / "m.onnx"))
    g = load(tmp_path / "m.onnx")  # from its path, the data is read next to the file
    np.testing.assert_array_equal(g.weights["w"], w)
    unresolved = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    _load_error(unresolved, "initializer 'w'", "external file 'weights.bin'", "load the model from its path")
    (tmp_path / "weights.bin").unlink()
    _load_error(tmp_path / "m.onnx", "m.onnx: cannot read an ONNX model")


def test_external_data_never_reads_outside_files():
    model = _model([N("MatMul", ["x", "w"], ["y"])], [X], [Y])
    t = TensorProto(name="w", data_type=F32, dims=[4, 4], data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value="/etc/passwd")
    model.graph.initializer.append(t)
    _load_error(model, "initializer 'w'", "'/etc/passwd' that was not loaded")


def test_not_a_model():
    _load_error(b"\x08\x07", "load takes a path or an onnx.ModelProto, got bytes")


# ---------------------------------------------------------------------------- silent acceptance
def test_input_without_a_shape_is_refused():
    model = _model([N("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", F32, None)], [Y])
    _load_error(model, "graph input 'x': no shape")


def test_input_with_a_negative_dim_is_refused():
    _load_error(_model([N("Relu", ["x"], ["y"])], [_vi("x", [2, -3])], [Y]), "graph input 'x': negative dim -3")


def test_distinct_dim_params_are_distinct_symbols():
    model = _model([N("Add", ["x", "z"], ["y"], name="plus")], [_vi("x", ["a b", 4]), _vi("z", ["a_b", 4])], [Y])
    msg = _load_error(model, "'plus' (Add", "cannot broadcast")
    assert "a_b_2 is dim_param 'a b'" in msg  # the sanitized symbol is explained
    g = load(_model([N("Relu", ["x"], ["y"])], [_vi("x", ["a b", "a_b", "a-b", "if", "2x", "é", ""])], [Y]))
    shape = g.inputs[0].outputs[0].shape
    assert len(set(shape)) == 7 and all(s.isidentifier() for s in shape), shape
    assert shape[1] == "a_b"  # an identifier stays itself


def test_same_dim_param_is_one_symbol():
    g = load(_model([N("Add", ["x", "z"], ["y"])], [_vi("x", ["a b", 4]), _vi("z", ["a b", 4])], [Y]))
    assert g.outputs[0][1].shape == ("a_b", 4)


# ---------------------------------------------------------------------------- integer division
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_division_folds_as_onnxruntime(dtype):
    from rlx.frontends.onnx import run_onnxruntime
    from rlx.ir import interpret
    pytest.importorskip("onnxruntime")
    a = np.array([-7, 7, -7, 7, -1, 1, 0, -9, 2**31 - 1], dtype)
    b = np.array([2, 2, -2, -2, 3, -3, 5, 3, -2], dtype)
    tp = I32 if dtype == np.int32 else I64
    model = _model([N("Div", ["a", "b"], ["q"]), N("Add", ["q", "x"], ["y"])],
                   [_vi("x", [9], tp)], [_vi("y", [9], tp)], [("a", a), ("b", b)])
    g = load(model)
    assert "div" not in g.op_counts()  # folded at import time
    x = np.zeros(9, dtype)
    got = interpret(g, {"x": x}, g.weights)["y"]
    want = run_onnxruntime(model, {"x": x})["y"]
    np.testing.assert_array_equal(got, want)
    assert got[0] == -3  # -7 / 2 truncates toward zero


def test_shape_arithmetic_division_truncates():
    """[B, 6] / [1, -4] is [B, -1] (truncated; floor would give -2, an invalid target)."""
    from rlx.frontends.onnx import run_onnxruntime
    from rlx.ir import interpret
    pytest.importorskip("onnxruntime")
    model = _model([N("Shape", ["x"], ["s"]), N("Div", ["s", "d"], ["t"]), N("Reshape", ["x", "t"], ["y"])],
                   [_vi("x", ["B", 6])], [Y], [("d", _i64(1, -4))])
    g = load(model)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_array_equal(interpret(g, {"x": x}, g.weights)["y"], run_onnxruntime(model, {"x": x})["y"])


def test_integer_division_by_zero_at_import_time():
    model = _model([N("Div", ["a", "b"], ["q"], name="div0"), N("Add", ["q", "x"], ["y"])],
                   [_vi("x", [2], I64)], [Y], [("a", _i64(4, 4)), ("b", _i64(2, 0))])
    _load_error(model, "'div0' (Div", "integer division by zero")


# ---------------------------------------------------------------------------- bounded work
def _fast_error(model, *patterns, seconds=2.0):
    t0 = time.perf_counter()
    msg = _load_error(model, *patterns)
    assert time.perf_counter() - t0 < seconds
    return msg


def test_constant_of_shape_beyond_the_bound_fails_fast():
    model = _model([N("ConstantOfShape", ["s"], ["c"], name="huge", value=numpy_helper.from_array(np.float32([1]))),
                    N("ReduceSum", ["c"], ["y"], keepdims=0)], [], [Y], [("s", _i64(2**20, 2**20))])
    assert len(model.SerializeToString()) < 300
    _fast_error(model, "'huge' (ConstantOfShape", f"{2**40} elements", "MAX_FOLD_ELEMENTS = 2**24")
    assert MAX_FOLD_ELEMENTS == 2**24


def test_fold_within_the_bound_is_computed():
    model = _model([N("ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(np.float32([1]))),
                    N("ReduceSum", ["c"], ["y"], keepdims=0)], [], [Y], [("s", _i64(256, 256))])
    g = load(model)
    assert float(g.outputs[0][1].node.attrs["value"]) == 65536.0


@pytest.mark.parametrize("start, limit, delta, text", [
    (0, 2**40, 1, f"has {2**40} elements"),
    (0, 2**62, 3, "MAX_FOLD_ELEMENTS"),
    (0, 10, 0, "delta 0"),
    (0.0, float("inf"), 1.0, "non-finite"),
    (0.0, 1.0, float("nan"), "non-finite"),
])
def test_range_is_bounded(start, limit, delta, text):
    dt = np.float32 if isinstance(start, float) else np.int64
    model = _model([N("Range", ["a", "l", "d"], ["y"], name="rng")], [], [Y],
                   [("a", dt(start)), ("l", dt(limit)), ("d", dt(delta))])
    _fast_error(model, "'rng' (Range", text)


def test_expand_beyond_the_bound_fails_fast():
    model = _model([N("Expand", ["v", "s"], ["y"], name="big")], [], [Y],
                   [("v", np.float32(1)), ("s", _i64(2**31, 2**31, 4))])
    _fast_error(model, "'big' (Expand", "MAX_FOLD_ELEMENTS")


def test_expand_of_shape_data_is_bounded():
    """Tensors of symbolic dims are Python objects: they have a smaller bound."""
    model = _model([N("Shape", ["x"], ["s"]), N("Expand", ["s", "n"], ["e"], name="many"),
                    N("Concat", ["e", "e"], ["y"], axis=0)], [X], [Y], [("n", _i64(2**20, 2))])
    _fast_error(model, "'many' (Expand", "MAX_SHAPE_ELEMENTS")


def test_repeated_squaring_of_a_dim_is_bounded():
    nodes = [N("Shape", ["x"], ["s0"])]
    for i in range(40):
        nodes.append(N("Mul", [f"s{i}", f"s{i}"], [f"s{i + 1}"]))
    nodes.append(N("Reshape", ["x", "s40"], ["y"]))
    _fast_error(_model(nodes, [_vi("x", ["B", 5])], [Y]), "ONNX node")


def test_repeated_squaring_of_a_static_dim_does_not_overflow_silently():
    nodes = [N("Shape", ["x"], ["s0"])]
    for i in range(8):
        nodes.append(N("Mul", [f"s{i}", f"s{i}"], [f"s{i + 1}"]))
    nodes.append(N("Reshape", ["x", "s8"], ["y"]))
    _fast_error(_model(nodes, [_vi("x", ["B", 5])], [Y]), "ONNX node", "does not fit int64")


def test_matmul_of_known_tensors_is_bounded_in_flops():
    w = np.zeros((2048, 2048), np.float32)
    model = _model([N("MatMul", ["w", "w"], ["y"], name="mm")], [], [Y], [("w", w)])
    _fast_error(model, "'mm' (MatMul", "MAX_FOLD_FLOPS")


# ---------------------------------------------------------------------------- the fuzzer
OPS = sorted(onnx_frontend.HANDLERS)
HUGE = [2**40, 2**62, -(2**63), 2**31, -1, 0, 1 << 24, 10**12]
NASTY_NAMES = ["", "x", "y", "a\tb", "a\nb", "ghost", "w", "s", "a b", "0"]


def _any_name(r: random.Random, m) -> str:
    g = m.graph
    names = [v.name for v in g.input] + [i.name for i in g.initializer]
    names += [o for nd in g.node for o in nd.output] + NASTY_NAMES
    return r.choice(names)


def _corrupt_attr(r: random.Random, a) -> None:
    kind = r.randrange(7)
    if kind == 0:
        a.type = r.choice([t for t in onnx.AttributeProto.AttributeType.values()])
    elif kind == 1:
        a.CopyFrom(helper.make_attribute(a.name, r.choice(HUGE)))
    elif kind == 2:
        a.CopyFrom(helper.make_attribute(a.name, [r.choice(HUGE + [0, 1, -2]) for _ in range(r.randrange(1, 4))]))
    elif kind == 3:
        a.CopyFrom(helper.make_attribute(a.name, r.choice(["bogus", "a\tb", ""])))
    elif kind == 4:
        a.CopyFrom(helper.make_attribute(a.name, r.choice([0.5, float("nan"), float("inf"), -1e30])))
    elif kind == 5:
        a.CopyFrom(helper.make_attribute(a.name, numpy_helper.from_array(
            r.choice([np.zeros((2, 3), np.float32), np.array([], np.int64), np.array(["s"], dtype=object),
                      np.array([2**40], np.int64), np.array([1, 2], np.int8)]))))
    else:
        a.name = r.choice(["axis", "axes", "perm", "to", "value", "junk", "keepdims", "split", "num_outputs"])


def _retype_value(r: random.Random, a) -> None:
    """A new value of the attribute's own type: it passes the schema check and reaches the op."""
    if a.type == onnx.AttributeProto.INT:
        a.i = r.choice(HUGE + [0, 1, 2, -2, 5])
    elif a.type == onnx.AttributeProto.INTS:
        a.ClearField("ints")
        a.ints.extend(r.choice(HUGE + [0, 1, 2, -2]) for _ in range(r.randrange(5)))
    elif a.type == onnx.AttributeProto.FLOAT:
        a.f = r.choice([0.0, -1.0, float("nan"), float("inf"), 1e38])
    elif a.type == onnx.AttributeProto.STRING:
        a.s = r.choice([b"bogus", b"\xff\xfe", b"tanh", b""])
    elif a.type == onnx.AttributeProto.TENSOR:
        a.t.CopyFrom(numpy_helper.from_array(r.choice(
            [np.zeros((2, 2), np.float32), np.array([], np.int64), np.int64(2**40), np.array([1], np.int8)])))


def _corrupt_init(r: random.Random, t) -> None:
    kind = r.randrange(7)
    if kind == 0:
        t.data_type = r.choice([v for v in TensorProto.DataType.values()] + [999])
    elif kind == 1 and t.raw_data:
        t.raw_data = t.raw_data[:r.randrange(len(t.raw_data) + 1)] + b"\x01" * r.randrange(3)
    elif kind == 2:
        t.dims.append(r.choice(HUGE))
    elif kind == 3:
        del t.dims[:]
        t.dims.extend(r.choice(HUGE) for _ in range(r.randrange(3)))
    elif kind == 4:
        arr = np.array([r.choice(HUGE) for _ in range(r.randrange(1, 4))], np.int64)
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
    elif kind == 5:
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=r.choice(["missing.bin", "../../etc/passwd"]))
    else:
        with np.errstate(all="ignore"):
            data = np.asarray(r.choice([0, 0.0, -1, True, 2**40])).astype(
                r.choice([np.int64, np.int32, np.float32, np.float64, np.bool_, np.float16, np.int8]))
        t.CopyFrom(numpy_helper.from_array(data, t.name))


def _corrupt_type(r: random.Random, vi) -> None:
    t = vi.type.tensor_type
    kind = r.randrange(6)
    if kind == 0:
        t.elem_type = r.choice(TensorProto.DataType.values())
    elif kind == 1:
        t.ClearField("shape")
    elif kind == 2 and len(t.shape.dim):
        r.choice(t.shape.dim).dim_value = r.choice(HUGE)
    elif kind == 3 and len(t.shape.dim):
        r.choice(t.shape.dim).dim_param = r.choice(["a b", "a_b", "B", "1x", "if", "", "a\tb", "S*S", "é"])
    elif kind == 4:
        t.shape.dim.add().dim_value = r.choice([1, 3, 2**40])
    elif len(t.shape.dim):
        del t.shape.dim[r.randrange(len(t.shape.dim))]


def _mutate(r: random.Random, m) -> None:
    g = m.graph
    kind = r.randrange(24)
    nodes = list(g.node)
    nd = r.choice(nodes) if nodes else None
    if kind == 0 and nd is not None and nd.input:
        del nd.input[r.randrange(len(nd.input))]
    elif kind == 1 and nd is not None and nd.input:
        nd.input[r.randrange(len(nd.input))] = _any_name(r, m)
    elif kind == 2 and nd is not None and nd.input:
        nd.input.append(r.choice(list(nd.input)))
    elif kind == 3 and nd is not None and nd.output:
        nd.output[r.randrange(len(nd.output))] = _any_name(r, m)
    elif kind == 4 and nd is not None:
        nd.output.append(_any_name(r, m))
    elif kind == 5 and nodes:
        del g.node[r.randrange(len(nodes))]
    elif kind == 6 and nd is not None:
        g.node.insert(r.randrange(len(nodes) + 1), nd)
    elif kind == 7:
        r.shuffle(nodes)
        del g.node[:]
        g.node.extend(nodes)
    elif kind == 8 and nd is not None:
        nd.op_type = r.choice(OPS)
    elif kind == 9 and nd is not None and nd.attribute:
        del nd.attribute[r.randrange(len(nd.attribute))]
    elif kind == 10 and nd is not None and nd.attribute:
        _corrupt_attr(r, r.choice(list(nd.attribute)))
    elif kind == 11 and nd is not None:
        a = nd.attribute.add()
        a.CopyFrom(helper.make_attribute(r.choice(["axis", "perm", "to", "junk", "value"]), 1))
        _corrupt_attr(r, a)
    elif kind == 12 and g.initializer:
        del g.initializer[r.randrange(len(g.initializer))]
    elif kind == 13 and g.initializer:
        _corrupt_init(r, r.choice(list(g.initializer)))
    elif kind == 14 and g.input:
        _corrupt_type(r, r.choice(list(g.input)))
    elif kind == 15 and g.output:
        o = r.choice(list(g.output))
        choice = r.randrange(4)
        if choice == 0:
            o.name = _any_name(r, m)
        elif choice == 1:
            g.output.add().CopyFrom(o)
        elif choice == 2:
            o.type.tensor_type.elem_type = r.choice(TensorProto.DataType.values())
        else:
            del g.output[:]
    elif kind == 16:
        m.opset_import[0].version = r.choice([1, 12, 13, 18, 21, 10**6])
    elif kind == 17 and nd is not None:
        nd.name = r.choice(["n\t1", "n\n", "node"])
    elif kind == 18 and g.input:
        g.input.add().CopyFrom(r.choice(list(g.input)))
    elif kind == 19 and nd is not None:
        nd.domain = r.choice(["com.microsoft", "ai.onnx", "", "bogus"])
    elif kind in (20, 21) and nd is not None and nd.attribute:
        _retype_value(r, r.choice(list(nd.attribute)))
    elif kind in (22, 23) and g.initializer:
        t = r.choice(list(g.initializer))
        dtype = helper.tensor_dtype_to_np_dtype(t.data_type) if t.data_type in (F32, I64, I32) else np.int64
        shape = r.choice([tuple(t.dims) if len(t.dims) < 3 and all(0 <= d < 9 for d in t.dims) else (1,),
                          (), (2,), (0,), (1, 3)])
        values = r.choice([HUGE, [0, 1, -1], [2**40, 2**20], [0.5, float("nan"), -3.0]])
        with np.errstate(all="ignore"):
            data = np.resize(np.array(values, dtype=np.float64).astype(dtype), shape)
        t.CopyFrom(numpy_helper.from_array(data, t.name))


def _mutant(seed: int):
    r = random.Random(seed)
    m = onnx.ModelProto()
    m.CopyFrom(r.choice(SEEDS))
    for _ in range(r.randint(1, 3)):
        _mutate(r, m)
    return m


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_bound(seconds: float):
    """Interrupt the block after ``seconds`` (SIGALRM; the main thread only)."""
    def on_alarm(signum, frame):
        raise _Timeout(f"took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _try_load(model) -> tuple[str, str]:
    """('ok' | 'rlx' | 'crash' | 'slow', detail) for one model."""
    t0 = time.perf_counter()
    try:
        with _time_bound(TIME_BOUND):
            load(model)
    except RlxError as e:
        return "rlx", str(e)
    except _Timeout as e:
        return "slow", str(e)
    except Exception as e:  # what the fuzzer is looking for
        return "crash", f"{type(e).__name__}: {e}"
    if time.perf_counter() - t0 > TIME_BOUND:
        return "slow", f"took {time.perf_counter() - t0:.1f} s"
    return "ok", ""


PLACES = ("ONNX node", "graph input", "graph output", "initializer", "opset", "the graph")


def test_fuzzed_models_load_or_raise_rlx_errors():
    """Mutants of the seed models: ``load`` succeeds or raises an RlxError naming the place,
    each in TIME_BOUND seconds. Both outcomes must occur, or the fuzzer exercises nothing."""
    seen: dict[str, int] = {}
    bad = []
    start = time.perf_counter()
    for seed in range(FUZZ_CASES):
        kind, detail = _try_load(_mutant(seed))
        seen[kind] = seen.get(kind, 0) + 1
        if kind in ("crash", "slow") or (kind == "rlx" and not any(p in detail for p in PLACES)):
            bad.append(f"seed {seed}: {kind}: {detail[:300]}")
    assert not bad, f"{len(bad)} of {FUZZ_CASES} mutants crashed or ran long:\n" + "\n".join(bad[:20])
    assert seen.get("ok") and seen.get("rlx"), seen
    assert time.perf_counter() - start < 60 * (10 if THOROUGH else 1)
