"""The MIR builder: errors name the node and the cause; topo order, DCE, JSON, binding."""
import json

import numpy as np
import pytest

import rlx
from rlx.errors import ArityError, AttrError, BindingError, DTypeError, GraphError, RlxError, ShapeError, UnknownOpError
from rlx.ir import Graph, interpret, random_arrays


def test_unknown_op_suggests_a_name():
    g = Graph()
    with pytest.raises(UnknownOpError, match="unknown op 'softmx'; did you mean 'softmax'"):
        g.softmx(g.input("x", (2,)))
    with pytest.raises(UnknownOpError, match="'matmull'.*'matmul'"):
        g.add_node("matmull", ())


def test_wrong_arity_names_node_and_expected_inputs():
    g = Graph()
    x = g.input("x", (2, 2))
    with pytest.raises(ArityError, match=r"node 'mm' \(matmul\): expects 2 inputs \(a, b\), got 1"):
        g.add_node("matmul", [x], name="mm")
    with pytest.raises(ArityError, match=r"expects 3 to 4 inputs"):
        g.sdpa(x, x)
    with pytest.raises(ArityError, match="too many arguments"):
        g.softmax(x, -1, "extra")


def test_attribute_errors():
    g = Graph()
    x = g.input("x", (2, 3))
    with pytest.raises(AttrError, match=r"node 'softmax_1' \(softmax\): attribute 'axis' expects int, got 'last'"):
        g.softmax(x, axis="last")
    with pytest.raises(AttrError, match="has no attribute 'axes'; did you mean 'axis'"):
        g.softmax(x, axes=1)
    with pytest.raises(AttrError, match="requires attribute 'shape'"):
        g.reshape(x)
    with pytest.raises(DTypeError, match="attribute 'dtype': unknown dtype 'float128'"):
        g.cast(x, "float128")
    with pytest.raises(AttrError, match="expects bool"):
        g.sum(x, (0,), keepdims="yes")


def test_shape_error_names_op_node_and_both_shapes():
    g = Graph()
    with pytest.raises(ShapeError) as e:
        g.add(g.input("a", ("B", 768)), g.input("b", (3072,)), name="residual")
    msg = str(e.value)
    assert "node 'residual' (add)" in msg and "(B, 768)" in msg and "(3072,)" in msg


def test_dtype_errors():
    with pytest.raises(DTypeError, match="unknown dtype 'f8'"):
        Graph().input("x", (2,), "f8")
    g = Graph()
    with pytest.raises(DTypeError, match=r"\(matmul\).*f32, bf16"):
        g.matmul(g.input("a", (2, 2)), g.input("b", (2, 2), "bf16"))


def test_unbound_symbol_at_specialization_names_node():
    g = rlx.models.mlp(layers=2, batch="B", d_in=8, d_hidden=16)
    with pytest.raises(BindingError, match=r"node 'x' \(input\).*symbol B"):
        g.bind({"N": 3})
    bound = g.bind({"B": 3})
    assert bound.node("x").outputs[0].shape == (3, 8)
    with pytest.raises(BindingError, match="missing input 'x'"):
        interpret(g, {}, {})


def test_inconsistent_binding_from_inputs():
    g = Graph()
    a, b = g.input("a", ("B", 2)), g.input("b", ("B", 2))
    g.output(g.add(a, b))
    with pytest.raises(BindingError, match="input 'b'"):
        interpret(g, {"a": np.ones((3, 2)), "b": np.ones((4, 2))})


def test_every_error_is_an_rlx_error():
    for cls in (ArityError, AttrError, BindingError, DTypeError, GraphError, ShapeError, UnknownOpError):
        assert issubclass(cls, RlxError)


def test_names_are_unique_and_scoped():
    g = Graph()
    x = g.input("x", (2,))
    with g.scope("layer0"):
        y = g.relu(x)
    assert y.name == "layer0.relu_1"
    with pytest.raises(GraphError, match="already exists"):
        g.input("x", (3,))
    with pytest.raises(GraphError, match="another graph"):
        Graph().relu(x)


def test_topo_order_and_dce():
    g = Graph()
    x = g.input("x", (4,))
    unused_in = g.input("unused", (4,))
    dead = g.exp(g.param("w_dead", (4,)))
    y = g.relu(g.neg(x))
    g.output(y)
    order = [n.name for n in g.topo_order()]
    assert order.index("x") < order.index(y.node.inputs[0].node.name) < order.index(y.name)
    assert g.dce() == 2  # the exp and its param; graph inputs stay
    names = {n.name for n in g.nodes}
    assert dead.name not in names and "w_dead" not in names and unused_in.name in names


def test_deep_graph_topo_order_is_iterative():
    g = Graph()
    v = g.input("x", (2,))
    for _ in range(20000):
        v = g.neg(v)
    g.output(v)
    assert len(g.topo_order()) == 20001


@pytest.mark.parametrize("build", [
    lambda: rlx.models.mlp(layers=3, batch="B"),
    lambda: rlx.models.llama(layers=2, d_model=64, n_heads=4, seq="S", batch="B"),
    lambda: rlx.models.llama(layers=1, d_model=64, n_heads=4, seq=8, vocab=50, policy="direct"),
    lambda: rlx.models.bert(layers=2, d_model=64, n_heads=4, seq=16, batch=2, dtype="f16"),
    lambda: rlx.models.bert(layers=1, d_model=32, n_heads=2, vocab=30, policy="direct"),
])
def test_json_round_trip_of_every_model_builder(build):
    g = build()
    text = g.to_json()
    g2 = Graph.from_json(text)
    assert g2.to_json() == text
    assert [n.op for n in g2.topo_order()] == [n.op for n in g.topo_order()]
    assert json.loads(text)["format"] == "rlx.mir/1"


def test_json_round_trip_keeps_semantics():
    g = rlx.models.llama(layers=1, d_model=32, n_heads=2, seq=4)
    g2 = Graph.from_json(g.to_json())
    a = random_arrays(g, seed=3)
    ins = {n.name: a[n.name] for n in g.inputs}
    ps = {n.name: a[n.name] for n in g.params}
    for (k, v), (k2, v2) in zip(interpret(g, ins, ps).items(), interpret(g2, ins, ps).items()):
        assert k == k2
        np.testing.assert_array_equal(v, v2)


@pytest.mark.parametrize("text,match", [
    ("{", "malformed MIR JSON at line 1"),
    ("[]", "expected an object"),
    ('{"format": "other"}', "not an rlx MIR document"),
    ('{"format": "rlx.mir/1", "name": "g"}', "missing or invalid field 'nodes'"),
    ('{"format": "rlx.mir/1", "name": "g", "nodes": [{"name": "r", "op": "relu", "inputs": ["nope"], "attrs": {}}], "outputs": []}',
     "input 'nope' is not defined"),
    ('{"format": "rlx.mir/1", "name": "g", "nodes": [{"name": "r", "op": "frob", "inputs": [], "attrs": {}}], "outputs": []}',
     "unknown op 'frob'"),
])
def test_malformed_json_is_a_clear_error(text, match):
    with pytest.raises(RlxError, match=match):
        Graph.from_json(text)


def test_to_text_lists_every_node():
    g = rlx.models.mlp(layers=2, d_in=4, d_hidden=8)
    text = g.to_text()
    assert text.count(" = ") == len(g.nodes)
    assert "matmul(%x, %fc0.weight)" in text


def test_value_operators_build_ops():
    g = Graph()
    a, b = g.input("a", (2, 2)), g.input("b", (2, 2))
    (a + b) * a - b / a @ b
    -a
    assert g.op_counts() == {"add": 1, "mul": 1, "sub": 1, "div": 1, "matmul": 1, "neg": 1}
