"""The ONNX frontend, checked against ONNX Runtime: PyTorch-exported blocks (both exporters)
with the fusions they must get, one single-op model per supported op, dynamic batch and
sequence, and the errors. Tolerance: f32, max |rlx - onnxruntime| <= 1e-4 * max(1, max |ref|)."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import rlx  # noqa: E402
from rlx.errors import RlxError  # noqa: E402
from rlx.frontends.onnx import OnnxImportError, load, run_onnxruntime  # noqa: E402
from rlx.ir import interpret, random_arrays  # noqa: E402
from rlx.pipeline import max_error  # noqa: E402

F32 = TensorProto.FLOAT


def assert_matches_onnxruntime(model, binding=None, seed=None, target="cpu"):
    """Import, compile and run ``model``; compare every output with ONNX Runtime on the same
    random inputs (and the unfused import on the interpreter). Returns the compile result."""
    graph = load(model)
    result = rlx.compile(graph, target=target)
    seed = int(np.random.default_rng().integers(1 << 31)) if seed is None else seed
    feeds = random_arrays(graph, binding or {}, seed=seed, which=("input",))
    want = run_onnxruntime(model, feeds)
    got = result.run(feeds)
    unfused = interpret(graph, feeds, graph.weights, dtype="native")
    for name, ref in want.items():
        assert got[name].shape == ref.shape, name
        assert got[name].dtype == ref.dtype, (name, got[name].dtype, ref.dtype)
        dt = str(dict(graph.outputs)[name].dtype)
        if ref.dtype.kind in "fc":
            err, tol = max_error(got[name], ref.astype(np.float64), dt)
            assert err <= tol, f"{name}: rlx differs from onnxruntime by {err:.3g} (tolerance {tol:.3g}, seed {seed})"
            err, tol = max_error(unfused[name], ref.astype(np.float64), dt)
            assert err <= tol, f"{name}: the import differs from onnxruntime by {err:.3g} (seed {seed})"
        else:
            np.testing.assert_array_equal(got[name], ref)
    return result


# ---------------------------------------------------------------------------- exported models
torch = pytest.importorskip("torch")

EXPECTED = {  # fused ops each exported model must show in its report
    "mlp": {"matmul_bias_act"},
    "bert": {"matmul_bias_act", "sdpa"},          # LayerNormalization imports as layer_norm
    "llama": {"rms_norm", "add_rms_norm", "sdpa", "swiglu"},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from onnx_models import export
    out = {}
    for dynamo in (True, False):
        for name in EXPECTED:
            path = tmp_path_factory.mktemp("onnx") / f"{name}_{'dynamo' if dynamo else 'torchscript'}.onnx"
            export(name, str(path), dynamo=dynamo)
            out[name, dynamo] = path
    return out


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exported_model_matches_onnxruntime_and_fuses(exported, name, dynamo):
    path = exported[name, dynamo]
    for b, s in ((1, 5), (3, 16), (2, 64)):  # dynamic batch and sequence
        r = assert_matches_onnxruntime(path, {"B": b, "S": s})
    fused = set(r.report.fused)
    assert EXPECTED[name] <= fused, f"{name}: expected fusions {EXPECTED[name] - fused} missing; got {r.report.fused}"
    assert not r.report.missed, r.report.missed


def test_layer_norm_written_as_primitives_is_fused(tmp_path):
    """Opset 14 has no LayerNormalization: the TorchScript exporter writes mean/sub/pow/sqrt/div,
    and the layer_norm rule puts it back together."""
    from onnx_models import export
    path = tmp_path / "bert14.onnx"
    export("bert", str(path), dynamo=False, opset=14)
    assert "layer_norm" not in load(path).op_counts()
    r = assert_matches_onnxruntime(path, {"B": 2, "S": 7})
    assert r.report.fused.get("layer_norm") == 2 and {"matmul_bias_act", "sdpa"} <= set(r.report.fused)


def test_exported_llama_keeps_batch_and_sequence_symbolic(exported):
    g = load(exported["llama", True])
    (x,) = g.inputs
    assert x.outputs[0].shape == ("B", "S", 64)
    reshapes = [n.attrs["shape"] for n in g.nodes if n.op == "reshape"]
    assert ("B", "S", 4, 16) in reshapes  # Shape -> Concat -> Reshape folded to symbols
    assert [n.name for n in g.inputs] == ["x"]  # initializers are params, not inputs
    assert {n.name for n in g.params} == set(g.weights) and g.weights
    result = rlx.compile(g, target="cpu")
    assert set(result.lir.symbols) == {"B", "S"}


def test_cli_run_check_against_onnxruntime(exported, capsys):
    from rlx.cli import main
    assert main(["run", str(exported["bert", True]), "--check", "--bind", "B=2", "S=12"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out and "output y" in out and "ok" in out
    assert main(["compile", str(exported["llama", True])]) == 0
    assert "sdpa" in capsys.readouterr().out


# ---------------------------------------------------------------------------- one op at a time
def _model(nodes, inputs, outputs, inits=(), opset=20):
    graph = helper.make_graph(nodes, "single", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, shape, dtype=F32):
    return helper.make_tensor_value_info(name, dtype, shape)


def _i64(*v):
    return np.array(v, dtype=np.int64)


X = _vi("x", ["B", 6])
Y = _vi("y", None)
RNG = np.random.default_rng(5)
W = RNG.standard_normal((6, 5)).astype(np.float32)

# op: (nodes, inputs, initializers); every model maps x (B, 6) [and more] to y
SINGLE = {
    "MatMul": ([helper.make_node("MatMul", ["x", "w"], ["y"])], [X], [("w", W)]),
    "Gemm": ([helper.make_node("Gemm", ["x", "w", "c"], ["y"], transB=1, alpha=0.5, beta=2.0)], [X],
             [("w", W.T.copy()), ("c", RNG.standard_normal(5).astype(np.float32))]),
    **{op: ([helper.make_node(op, ["x", "z"], ["y"])], [X, _vi("z", ["B", 6])], [])
       for op in ("Add", "Sub", "Mul", "Div", "Max", "Min")},
    "Pow": ([helper.make_node("Pow", ["x", "e"], ["y"])], [X], [("e", np.float64(2.0))]),
    **{op: ([helper.make_node(op, ["x"], ["y"])], [X], [])
       for op in ("Neg", "Exp", "Tanh", "Erf", "Sigmoid", "Relu", "Abs", "Identity")},
    **{op: ([helper.make_node("Abs", ["x"], ["a"]), helper.make_node(op, ["a"], ["y"])], [X], [])
       for op in ("Sqrt", "Reciprocal", "Log")},
    "Gelu": ([helper.make_node("Gelu", ["x"], ["y"])], [X], []),
    "Gelu_tanh": ([helper.make_node("Gelu", ["x"], ["y"], approximate="tanh")], [X], []),
    "Softmax": ([helper.make_node("Softmax", ["x"], ["y"], axis=1)], [X], []),
    "LayerNormalization": ([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], epsilon=1e-3)], [X],
                           [("g", RNG.random(6).astype(np.float32) + 0.5), ("b", RNG.random(6).astype(np.float32))]),
    "LayerNormalization_nobias": ([helper.make_node("LayerNormalization", ["x", "g"], ["y"])], [X],
                                  [("g", RNG.random(6).astype(np.float32) + 0.5)]),
    "ReduceMean": ([helper.make_node("ReduceMean", ["x", "ax"], ["y"], keepdims=1)], [X], [("ax", _i64(1))]),
    "ReduceSum": ([helper.make_node("ReduceSum", ["x", "ax"], ["y"], keepdims=0)], [X], [("ax", _i64(-1))]),
    "ReduceMax": ([helper.make_node("ReduceMax", ["x"], ["y"], keepdims=0)], [X], []),
    "Reshape": ([helper.make_node("Reshape", ["x", "s"], ["y"])], [X], [("s", _i64(0, 3, -1))]),
    "Transpose": ([helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])], [X], []),
    "Unsqueeze": ([helper.make_node("Unsqueeze", ["x", "ax"], ["y"])], [X], [("ax", _i64(0, -1))]),
    "Squeeze": ([helper.make_node("Unsqueeze", ["x", "ax"], ["u"]), helper.make_node("Squeeze", ["u", "ax"], ["y"])],
                [X], [("ax", _i64(1))]),
    "Concat": ([helper.make_node("Concat", ["x", "z"], ["y"], axis=1)], [X, _vi("z", ["B", 3])], []),
    "Split": ([helper.make_node("Split", ["x", "sp"], ["p", "q"], axis=1), helper.make_node("Sub", ["p", "q"], ["y"])],
              [X], [("sp", _i64(3, 3))]),
    "Split_num_outputs": ([helper.make_node("Split", ["x"], ["p", "q"], axis=1, num_outputs=2),
                           helper.make_node("Mul", ["p", "q"], ["y"])], [X], []),
    "Slice": ([helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], [X],
              [("st", _i64(1)), ("en", _i64(9223372036854775807)), ("ax", _i64(1)), ("sp", _i64(2))]),
    "Gather": ([helper.make_node("Gather", ["t", "i"], ["y"], axis=0)], [_vi("i", ["B", 6], TensorProto.INT64)],
               [("t", RNG.standard_normal((4, 3)).astype(np.float32))]),
    "Cast": ([helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE),
              helper.make_node("Mul", ["d", "d"], ["m"]), helper.make_node("Cast", ["m"], ["y"], to=F32)], [X], []),
    "Constant": ([helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.float32([1, 2, 3, 4, 5, 6]))),
                  helper.make_node("Add", ["x", "c"], ["y"])], [X], []),
    "Shape": ([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["y"])], [X], []),
    "Expand": ([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Expand", ["v", "s"], ["y"])], [X],
               [("v", RNG.standard_normal(6).astype(np.float32))]),
    "Where": ([helper.make_node("Less", ["x", "z"], ["c"]), helper.make_node("Where", ["c", "x", "z"], ["y"])],
              [X, _vi("z", ["B", 6])], []),
    **{op: ([helper.make_node(op, ["i", "j"], ["c"]), helper.make_node("Cast", ["c"], ["y"], to=F32)],
            [_vi("i", ["B", 6], TensorProto.INT64), _vi("j", ["B", 6], TensorProto.INT64)], [])
       for op in ("Equal", "Less", "Greater")},
    "Range": ([helper.make_node("Range", ["a", "b", "d"], ["r"]), helper.make_node("Cast", ["r"], ["rf"], to=F32),
               helper.make_node("Add", ["x", "rf"], ["y"])], [X],
              [("a", np.int64(0)), ("b", np.int64(6)), ("d", np.int64(1))]),
    "Trilu": ([helper.make_node("Trilu", ["x", "k"], ["y"], upper=0)], [_vi("x", ["B", 6, 6])], [("k", np.int64(1))]),
    "ConstantOfShape": ([helper.make_node("Shape", ["x"], ["s"]),
                         helper.make_node("ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(np.float32([0.5]))),
                         helper.make_node("Mul", ["x", "c"], ["y"])], [X], []),
    **{op: ([helper.make_node(op, ["x"], ["y"])], [X], [])
       for op in ("Floor", "Ceil", "Sin", "Cos", "Sign", "Softplus", "HardSwish", "HardSigmoid", "LeakyRelu")},
    **{op: ([helper.make_node(op, ["x"], ["c"]), helper.make_node("Cast", ["c"], ["y"], to=F32)], [X], [])
       for op in ("IsNaN", "IsInf")},
    **{op: ([helper.make_node("Less", ["x", "z"], ["c"]), helper.make_node("Greater", ["x", "w"], ["d"]),
             helper.make_node(op, ["c", "d"], ["e"]), helper.make_node("Not", ["e"], ["n"]),
             helper.make_node("Cast", ["n"], ["y"], to=F32)], [X, _vi("z", ["B", 6]), _vi("w", [6])], [])
       for op in ("And", "Or", "Xor")},
    **{op: ([helper.make_node(op, ["x", "z"], ["c"]), helper.make_node("Cast", ["c"], ["y"], to=F32)],
            [X, _vi("z", ["B", 6])], []) for op in ("LessOrEqual", "GreaterOrEqual")},
    "Mod": ([helper.make_node("Mod", ["i", "j"], ["m"]), helper.make_node("Cast", ["m"], ["y"], to=F32)],
            [_vi("i", ["B", 6], TensorProto.INT64)], [("j", _i64(3, -3, 4, -4, 5, 7))]),
    "Mod_fmod": ([helper.make_node("Mod", ["x", "z"], ["y"], fmod=1)], [X, _vi("z", ["B", 6])], []),
    "Clip": ([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], [X],
             [("lo", np.float32(-0.5)), ("hi", np.float32(0.7))]),
    "CumSum": ([helper.make_node("CumSum", ["x", "ax"], ["y"], exclusive=1, reverse=1)], [X], [("ax", np.int64(1))]),
    "GatherElements": ([helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1)],
                       [X], [("i", np.array([[0, 5, -1, 2, 2, 1]], np.int64))]),
    "GatherND": ([helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
                  helper.make_node("GatherND", ["t", "i"], ["y"])],
                 [X], [("i", np.array([[5, 0], [-1, 0], [2, 0]], np.int64))]),
    "ArgMax": ([helper.make_node("ArgMax", ["x"], ["i"], axis=1, keepdims=0),
                helper.make_node("Cast", ["i"], ["y"], to=F32)], [X], []),
    "ArgMin": ([helper.make_node("ArgMin", ["x"], ["i"], axis=-1, select_last_index=1),
                helper.make_node("Cast", ["i"], ["y"], to=F32)], [X], []),
    "Flatten": ([helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Flatten", ["r"], ["y"], axis=-2)],
                [X], [("s", _i64(0, 2, 3))]),
    "Dropout": ([helper.make_node("Dropout", ["x"], ["y"], seed=1)], [X], []),
    "Size": ([helper.make_node("Size", ["x"], ["n"]), helper.make_node("Cast", ["n"], ["nf"], to=F32),
              helper.make_node("Mul", ["x", "nf"], ["y"])], [X], []),
    "Conv": ([helper.make_node("Conv", ["img", "cw", "cb"], ["y"], pads=[1, 1, 1, 1], strides=[2, 1], group=2)],
             [_vi("img", ["B", 4, 7, 6])], [("cw", RNG.standard_normal((6, 2, 3, 3)).astype(np.float32)),
                                            ("cb", RNG.standard_normal(6).astype(np.float32))]),
    "Conv_same": ([helper.make_node("Conv", ["img", "cw"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
                  [_vi("img", ["B", 2, 7, 6])], [("cw", RNG.standard_normal((3, 2, 2, 3)).astype(np.float32))]),
    "MaxPool": ([helper.make_node("MaxPool", ["img"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                  ceil_mode=1)], [_vi("img", ["B", 3, 7, 6])], []),
    "AveragePool": ([helper.make_node("AveragePool", ["img"], ["y"], kernel_shape=[2, 3], pads=[0, 1, 1, 1])],
                    [_vi("img", ["B", 3, 7, 6])], []),
    **{op: ([helper.make_node(op, ["img"], ["y"])], [_vi("img", ["B", 3, 5, 4])], [])
       for op in ("GlobalAveragePool", "GlobalMaxPool")},
    "BatchNormalization": ([helper.make_node("BatchNormalization", ["img", "sc", "bi", "mu", "var"], ["y"],
                                             epsilon=1e-3)], [_vi("img", ["B", 3, 5, 4])],
                           [("sc", RNG.random(3).astype(np.float32) + 0.5), ("bi", RNG.random(3).astype(np.float32)),
                            ("mu", RNG.random(3).astype(np.float32)), ("var", RNG.random(3).astype(np.float32) + 0.1)]),
    # positions arange(S) over a symbolic bound, as transformers export them
    "Range_symbolic": ([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "one"], ["n"]),
                        helper.make_node("Range", ["zero", "n", "step"], ["r"]),
                        helper.make_node("Cast", ["r"], ["rf"], to=F32), helper.make_node("Add", ["x", "rf"], ["y"])],
                       [_vi("x", ["B", "S"])], [("zero", np.int64(0)), ("one", np.int64(1)), ("step", np.int64(1))]),
    "Resize_linear": ([helper.make_node("Resize", ["img", "", "rs"], ["y"], mode="linear")],
                      [_vi("img", ["B", 3, 5, 4])], [("rs", np.array([1, 1, 2, 1.5], np.float32))]),
    "Resize_nearest_sizes": ([helper.make_node("Resize", ["img", "", "", "sz"], ["y"], mode="nearest",
                                               coordinate_transformation_mode="asymmetric", nearest_mode="floor",
                                               axes=[2, 3])],
                             [_vi("img", ["B", 3, 5, 4])], [("sz", _i64(9, 7))]),
    "Resize_cubic": ([helper.make_node("Resize", ["img", "", "rs"], ["y"], mode="cubic",
                                       coordinate_transformation_mode="align_corners")],
                     [_vi("img", ["B", 2, 6, 5])], [("rs", np.array([1, 1, 0.5, 1.6], np.float32))]),
    # shape arithmetic over a symbolic dim: (B, 6) -> (B*3, 2) by Shape, Gather, Mul, Div, Concat
    "shape_arithmetic": ([helper.make_node("Shape", ["x"], ["s"]),
                          helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
                          helper.make_node("Mul", ["b", "three"], ["b3"]),
                          helper.make_node("Div", ["six", "three"], ["two"]),
                          helper.make_node("Concat", ["b3", "two"], ["t"], axis=0),
                          helper.make_node("Reshape", ["x", "t"], ["y"])], [X],
                         [("zero", _i64(0)), ("three", _i64(3)), ("six", _i64(6))]),
}


@pytest.mark.parametrize("case", sorted(SINGLE))
def test_single_op_model_matches_onnxruntime(case):
    nodes, inputs, inits = SINGLE[case]
    model = _model(nodes, inputs, [Y], inits)
    rng = np.random.default_rng()
    assert_matches_onnxruntime(model, {"B": int(rng.integers(1, 6)), "S": int(rng.integers(1, 9))})


def test_every_supported_op_has_a_single_op_model():
    from rlx.frontends.onnx import HANDLERS
    covered = {n.op_type for nodes, _, _ in SINGLE.values() for n in nodes}
    assert set(HANDLERS) - covered == set()


def test_opset_13_forms():
    """Opset 13: ReduceMean and ReduceMax take their axes as an attribute."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1], keepdims=1),
             helper.make_node("ReduceMax", ["x"], ["n"], axes=[1], keepdims=1),
             helper.make_node("Sub", ["x", "m"], ["d"]), helper.make_node("Sub", ["d", "n"], ["y"])]
    assert_matches_onnxruntime(_model(nodes, [X], [Y], opset=13), {"B": 3})


def test_division_by_a_constant_is_multiplication_by_its_reciprocal():
    model = _model([helper.make_node("Div", ["x", "c"], ["y"])], [X], [Y], [("c", np.float32(8.0))])
    g = load(model)
    assert g.op_counts()["mul"] == 1 and "div" not in g.op_counts()
    assert_matches_onnxruntime(model, {"B": 2})


# ---------------------------------------------------------------------------- errors
def test_unsupported_op_names_the_op_the_node_and_the_opset():
    model = _model([helper.make_node("NonZero", ["x"], ["y"], name="find_them")], [X], [Y])
    with pytest.raises(OnnxImportError, match=r"ONNX node 'find_them' \(NonZero, opset 20\): unsupported ONNX op 'NonZero'"):
        load(model)
    custom = _model([helper.make_node("FusedGemm", ["x"], ["y"], domain="com.microsoft")], [X], [Y])
    with pytest.raises(OnnxImportError, match="of domain 'com.microsoft'"):
        load(custom)


def test_old_opsets_are_converted_by_onnxs_version_converter():
    """Opset 11 spells Squeeze axes, ReduceSum axes and Split sizes as attributes."""
    x = _vi("x", ["B", 4, 6])
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], axis=2, split=[2, 4]),
             helper.make_node("ReduceSum", ["b"], ["s"], axes=[2], keepdims=1),
             helper.make_node("Mul", ["a", "s"], ["m"]),
             helper.make_node("Unsqueeze", ["m"], ["u"], axes=[0]),
             helper.make_node("Squeeze", ["u"], ["y"], axes=[0])]
    for opset in (9, 11, 12):
        model = _model(nodes, [x], [_vi("y", ["B", 4, 2])], opset=opset)
        assert_matches_onnxruntime(model, {"B": 3})


def test_an_opset_the_converter_cannot_convert_is_an_rlx_error():
    model = _model([helper.make_node("NotAnOp", ["x"], ["y"])], [_vi("x", [2, 3])], [_vi("y", [2, 3])], opset=9)
    with pytest.raises(OnnxImportError, match="opset 9 is below 13 and ONNX's version converter could not"):
        load(model)


def test_a_reshape_target_computed_at_run_time_is_an_error():
    model = _model([helper.make_node("Reshape", ["x", "s"], ["y"], name="dyn")],
                   [X, _vi("s", [2], TensorProto.INT64)], [Y])
    with pytest.raises(OnnxImportError, match=r"'dyn' \(Reshape.*the Reshape target must be known at import time"):
        load(model)


def test_unreadable_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(RlxError, match="bad.onnx: cannot read an ONNX model"):
        load(bad)
