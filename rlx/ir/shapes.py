"""Shapes with static and symbolic dims, dim arithmetic, broadcasting, and DimBinding.

A dim is an ``int`` or a string. A string is a polynomial over symbols with integer
coefficients ("B", "B*S", "S+1"): it is kept in one canonical spelling so that two dims
are equal exactly when their strings are equal, which is what shape inference, the
e-graph and the rule guards compare. A floor division by a positive constant that is not
exact (a strided convolution's output size) is an *atom* of the polynomial, spelled
``((H+1)//2)``: what divides exactly is taken out first, so the atom's numerator has
coefficients in [0, c) and one value has one spelling along one computation.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from collections.abc import Iterable, Mapping
from typing import Union

from rlx.errors import BindingError, ShapeError

Dim = Union[int, str]
Shape = tuple[Dim, ...]
_Poly = dict[tuple[str, ...], int]  # monomial (sorted symbols) -> coefficient


# Bounds on a symbolic dim, so that its polynomial arithmetic is bounded in time and memory:
# its spelling, its number of terms (a product of sums multiplies out), the size of a coefficient.
MAX_DIM_CHARS = 1024
MAX_DIM_TERMS = 256
MAX_COEFFICIENT = 2**63 - 1
_ALLOWED = "only + - * and // (exact, or by a positive constant) are allowed"


def _short(d: Dim) -> str:
    text = repr(d)
    return text if len(text) <= 80 else text[:76] + "...'"


def _poly_of(d: Dim) -> _Poly:
    if isinstance(d, bool):
        raise ShapeError(f"invalid dim {d!r}")
    if isinstance(d, int):
        return _checked({(): d} if d else {}, d)
    if not isinstance(d, str):
        raise ShapeError(f"invalid dim {_short(d)}: expected an int or a symbol")
    return dict(_parsed(d))  # a copy: callers may build on it


@lru_cache(maxsize=16384)
def _parsed(d: str) -> tuple[tuple[tuple[str, ...], int], ...]:
    """A symbolic dim's polynomial, parsed once per spelling (shape inference, planning and
    the cost model resolve the same few dims many times)."""
    if len(d) > MAX_DIM_CHARS:
        raise ShapeError(f"symbolic dim {_short(d)} is longer than {MAX_DIM_CHARS} characters "
                         "(MAX_DIM_CHARS)")
    try:
        tree = ast.parse(d, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: NUL; the rest: deep nesting
        raise ShapeError(f"invalid symbolic dim {_short(d)}") from None
    return tuple(_poly_expr(tree, d).items())


def _poly_expr(tree: ast.AST, src: str) -> _Poly:
    """Evaluate a dim's syntax tree in post-order, without recursion (a long sum is a deep tree)."""
    values: list[_Poly] = []
    todo: list[tuple[ast.AST, bool]] = [(tree, False)]
    while todo:
        node, ready = todo.pop()
        if isinstance(node, ast.Name):
            values.append({(node.id,): 1})
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            values.append(_checked({(): node.value} if node.value else {}, src))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            if not ready:
                todo += [(node, True), (node.operand, False)]
            else:
                values.append({m: -c for m, c in values.pop().items()})
        elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv)):
            if not ready:
                todo += [(node, True), (node.right, False), (node.left, False)]
                continue
            b = values.pop()
            a = values.pop()
            if isinstance(node.op, ast.Add):
                values.append(_padd(a, b, src))
            elif isinstance(node.op, ast.Sub):
                values.append(_padd(a, {m: -c for m, c in b.items()}, src))
            elif isinstance(node.op, ast.Mult):
                values.append(_pmul(a, b, src))
            else:
                q = _pdiv(a, b)
                if q is None and list(b) == [()] and b[()] > 0:
                    q = _floor_div(a, b[()], src)
                if q is None:
                    raise ShapeError(f"invalid symbolic dim {_short(src)}: {_ALLOWED}")
                values.append(q)
        else:
            raise ShapeError(f"invalid symbolic dim {_short(src)}: {_ALLOWED}")
    return values[0]


def _checked(p: _Poly, src: Dim) -> _Poly:
    if len(p) > MAX_DIM_TERMS:
        raise ShapeError(f"symbolic dim {_short(src)} has more than {MAX_DIM_TERMS} terms (MAX_DIM_TERMS)")
    if any(abs(c) > MAX_COEFFICIENT for c in p.values()):
        raise ShapeError(f"symbolic dim {_short(src)} has a coefficient beyond 64 bits")
    return p


def _padd(a: _Poly, b: _Poly, src: Dim) -> _Poly:
    out = dict(a)
    for m, c in b.items():
        out[m] = out.get(m, 0) + c
    return _checked({m: c for m, c in out.items() if c}, src)


def _pmul(a: _Poly, b: _Poly, src: Dim) -> _Poly:
    """The product, refused before it is computed when it could have more than MAX_DIM_TERMS terms."""
    if len(a) * len(b) > MAX_DIM_TERMS:
        raise ShapeError(f"symbolic dim {_short(src)} multiplies out to more than {MAX_DIM_TERMS} terms "
                         "(MAX_DIM_TERMS)")
    out: _Poly = {}
    for ma, ca in a.items():
        for mb, cb in b.items():
            m = tuple(sorted(ma + mb))
            out[m] = out.get(m, 0) + ca * cb
    return _checked({m: c for m, c in out.items() if c}, src)


def _pdiv(a: _Poly, b: _Poly) -> _Poly | None:
    """Exact division by a single-term divisor, else None."""
    if len(b) != 1:
        return None
    (mb, cb), = b.items()
    out: _Poly = {}
    for ma, ca in a.items():
        rest = list(ma)
        for s in mb:
            if s not in rest:
                return None
            rest.remove(s)
        if ca % cb:
            return None
        out[tuple(rest)] = ca // cb
    return out


def _floor_div(a: _Poly, c: int, src: Dim) -> _Poly:
    """floor(a / c): the exact part of every coefficient comes out (a polynomial is integer
    valued); the remainders, when not a lone constant below c, form one atom."""
    out: _Poly = {}
    rest: _Poly = {}
    for m, k in a.items():
        q, r = divmod(k, c)
        if q:
            out[m] = q
        if r:
            rest[m] = r
    if rest and list(rest) != [()]:
        out = _padd(out, {(f"(({_dim_of(rest)})//{c})",): 1}, src)
    return out


def _is_atom(name: str) -> bool:
    return name.startswith("(")


def _atom_parts(name: str) -> tuple[str, int]:
    """``((N)//c)`` -> (N, c): the outer division is the last ``)//`` (nested atoms are inside N)."""
    k = name.rindex(")//")
    return name[2:k], int(name[k + 3:-1])


def _dim_of(p: _Poly) -> Dim:
    if not p:
        return 0
    if list(p) == [()]:
        return p[()]
    terms = []
    for m in sorted(p, key=lambda m: (-len(m), m)):
        c = p[m]
        body = "*".join(m) if m else str(abs(c))
        if m and abs(c) != 1:
            body = f"{abs(c)}*{body}"
        terms.append(("-" if c < 0 else "+", body))
    text = "".join(f"{s}{b}" for s, b in terms)
    return text[1:] if text.startswith("+") else text


def dim(d: Dim) -> Dim:
    """The canonical spelling of a dim ("S*B" -> "B*S", "2+S-2" -> "S")."""
    return d if isinstance(d, int) and not isinstance(d, bool) else _dim_of(_poly_of(d))


def shape(dims: Iterable[Dim]) -> Shape:
    """A canonical shape tuple; negative static dims are rejected."""
    out = tuple(dim(d) for d in dims)
    for d in out:
        if isinstance(d, int) and d < 0:
            raise ShapeError(f"negative dim {d} in shape {out}")
    return out


def is_static(d: Dim) -> bool:
    return isinstance(d, int)


def symbols(s: Iterable[Dim]) -> set[str]:
    """The symbols a shape (or any iterable of dims) mentions."""
    out: set[str] = set()
    for d in s:
        if isinstance(d, str):
            for m in _poly_of(d):
                for name in m:
                    out.update(symbols([_atom_parts(name)[0]]) if _is_atom(name) else (name,))
    return out


def dim_floordiv(a: Dim, c: int) -> Dim:
    """floor(a / c) for a positive int c; symbolic when it does not divide exactly."""
    if isinstance(a, int):
        return a // c
    q = _pdiv(_poly_of(a), {(): c})
    return _dim_of(q if q is not None else _floor_div(_poly_of(a), c, f"({a}) // {c}"))


def dim_add(a: Dim, b: Dim) -> Dim:
    return _dim_of(_padd(_poly_of(a), _poly_of(b), f"{a} + {b}"))


def dim_sub(a: Dim, b: Dim) -> Dim:
    return _dim_of(_padd(_poly_of(a), {m: -c for m, c in _poly_of(b).items()}, f"{a} - {b}"))


def dim_mul(a: Dim, b: Dim) -> Dim:
    return _dim_of(_pmul(_poly_of(a), _poly_of(b), f"({a}) * ({b})"))


def dim_div(a: Dim, b: Dim) -> Dim | None:
    """a / b when it divides exactly (symbolically), else None."""
    q = _pdiv(_poly_of(a), _poly_of(b))
    return None if q is None else _dim_of(q)


def numel(s: Iterable[Dim]) -> Dim:
    out: Dim = 1
    for d in s:
        out = dim_mul(out, d)
    return out


def broadcast_shapes(*shapes: Shape) -> Shape:
    """NumPy broadcasting over static and symbolic dims.

    A symbol broadcasts with 1 and with itself. A symbol against a different symbol or a
    static dim other than 1 is rejected: it could only be valid for some bindings, and rlx
    does not guess (the caller names the node).
    """
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(rank):
        ds = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        chosen: Dim = 1
        for d in ds:
            if d == 1 or d == chosen:
                continue
            if chosen == 1:
                chosen = d
            else:
                raise ShapeError(f"cannot broadcast {' and '.join(map(fmt_shape, shapes))}")
        out.append(chosen)
    return tuple(out)


def fmt_shape(s: Shape) -> str:
    return "(" + ", ".join(str(d) for d in s) + ("," if len(s) == 1 else "") + ")"


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


class DimBinding(Mapping[str, int]):
    """Concrete sizes for symbolic dims: ``DimBinding(B=2, S=128)``."""

    def __init__(self, values: Mapping[str, int] | None = None, **kw: int) -> None:
        merged = {**(values or {}), **kw}
        for k, v in merged.items():
            if not isinstance(k, str) or not k.isidentifier():
                raise BindingError(f"invalid symbol name {k!r}")
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise BindingError(f"symbol {k} bound to {v!r}: expected a non-negative int")
        self._values = dict(merged)

    def __getitem__(self, k: str) -> int:
        return self._values[k]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"DimBinding({', '.join(f'{k}={v}' for k, v in sorted(self._values.items()))})"

    def resolve(self, d: Dim, where: str = "") -> int:
        """The concrete value of a dim; BindingError names the unbound symbols."""
        if isinstance(d, int):
            return d
        missing = sorted(s for s in symbols([d]) if s not in self._values)
        if missing:
            raise BindingError(f"{where + ': ' if where else ''}symbol"
                               f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                               f"in dim {d!r} not bound (bound: {self!r})")
        total = self._resolve_any(d)
        if total < 0:
            raise BindingError(f"{where + ': ' if where else ''}dim {d!r} is {total} under {self!r}")
        return total

    def _resolve_any(self, d: Dim) -> int:
        """A dim's value, negative allowed (an atom's numerator, such as H-1, may be)."""
        if isinstance(d, int):
            return d
        total = 0
        for m, c in _poly_of(d).items():
            for s in m:
                if _is_atom(s):
                    num, k = _atom_parts(s)
                    c *= self._resolve_any(num) // k
                else:
                    c *= self._values[s]
            total += c
        return total

    def resolve_shape(self, s: Shape, where: str = "") -> tuple[int, ...]:
        return tuple(self.resolve(d, where) for d in s)

    def unify(self, s: Shape, actual: tuple[int, ...], where: str) -> "DimBinding":
        """Bind the plain symbols of ``s`` from a concrete shape; a conflict is an error."""
        if len(s) != len(actual):
            raise BindingError(f"{where}: expected rank {len(s)} {fmt_shape(s)}, got shape {actual}")
        values = dict(self._values)
        for d, a in zip(s, actual):
            if isinstance(d, str) and d.isidentifier() and d not in values:
                values[d] = int(a)
        out = DimBinding(values)
        got = out.resolve_shape(s, where)
        if got != tuple(actual):
            raise BindingError(f"{where}: expected shape {fmt_shape(s)} = {got} under {out!r}, got {tuple(actual)}")
        return out
