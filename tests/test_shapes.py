import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlx.errors import BindingError, ShapeError
from rlx.ir.shapes import (DimBinding, broadcast_shapes, dim, dim_add, dim_div, dim_mul, dim_sub,
                           numel, shape, symbols)

SYMS = {"B": 7, "S": 11, "T": 13}  # distinct primes stand in for symbols


@pytest.mark.parametrize("raw,canon", [
    ("S*B", "B*S"), ("2+S-2", "S"), ("B*S*2", "2*B*S"), ("S+S", "2*S"), ("(B*S)//S", "B"),
    ("S-1+1", "S"), (5, 5), ("3", 3), ("B*S-S*B", 0),
])
def test_dims_have_one_canonical_spelling(raw, canon):
    assert dim(raw) == canon


def test_dim_arithmetic():
    assert dim_mul("B", "S") == "B*S"
    assert dim_mul(4, "S") == "4*S"
    assert dim_add("S", "S") == "2*S"
    assert dim_sub("S", 1) == "S-1"
    assert dim_div("B*S", "S") == "B"
    assert dim_div("B*S", 2) is None
    assert dim_div(12, 4) == 3
    assert numel(("B", "S", 768)) == "768*B*S"
    assert symbols(("B", "S*T", 3)) == {"B", "S", "T"}


@pytest.mark.parametrize("bad", ["S/2", "S**2", "f(S)", "S+", "1.5"])
def test_invalid_symbolic_dims_are_rejected(bad):
    with pytest.raises(ShapeError, match="symbolic dim"):
        dim(bad)


def test_negative_static_dim_rejected():
    with pytest.raises(ShapeError, match="negative"):
        shape((2, -3))


dims = st.one_of(st.integers(1, 5), st.sampled_from(list(SYMS)))


@st.composite
def broadcastable(draw, n=2):
    base = draw(st.lists(dims, min_size=0, max_size=4))
    out = []
    for _ in range(n):
        drop = draw(st.integers(0, len(base)))
        s = [1 if draw(st.booleans()) and draw(st.booleans()) else d for d in base[drop:]]
        out.append(tuple(s))
    return out


def _concrete(s):
    return tuple(SYMS[d] if isinstance(d, str) else d for d in s)


@given(broadcastable(3))
def test_broadcast_agrees_with_numpy(shapes):
    got = broadcast_shapes(*shapes)
    assert _concrete(got) == np.broadcast_shapes(*map(_concrete, shapes))


@pytest.mark.parametrize("a,b", [((3,), (4,)), (("B",), ("S",)), (("S",), (4,)), ((2, "B"), ("S", "B"))])
def test_broadcast_rejects_incompatible(a, b):
    with pytest.raises(ShapeError, match="cannot broadcast"):
        broadcast_shapes(a, b)


def test_binding_resolves_and_names_unbound_symbols():
    b = DimBinding(B=2, S=5)
    assert b.resolve_shape(("B", "S*B", "S-1", 4)) == (2, 10, 4, 4)
    with pytest.raises(BindingError, match="T"):
        b.resolve("T*S", where="node 'x'")
    with pytest.raises(BindingError, match="non-negative int"):
        DimBinding(B=-1)
    with pytest.raises(BindingError, match="non-negative int"):
        DimBinding(B="2")


def test_unify_binds_symbols_and_rejects_conflicts():
    b = DimBinding().unify(("B", "S", 8), (2, 3, 8), "input 'x'")
    assert dict(b) == {"B": 2, "S": 3}
    with pytest.raises(BindingError, match="input 'y'"):
        b.unify(("B", 8), (4, 8), "input 'y'")
    with pytest.raises(BindingError, match="rank"):
        b.unify(("B",), (4, 8), "input 'z'")
