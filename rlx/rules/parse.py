"""Parse rule files (grammar/rlx.lark, with lark) into the syntax tree of ``rlx.rules.ast``."""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import lark
from lark import Token, Transformer, v_args

from rlx.rules.ast import (AttrParam, AttrRef, Bind, Call, FusedDecl, GArith, GFunc, GLit, GName, Guard,
                           Num, RegionsDecl, Rule, RuleFile, Span, Var)
from rlx.rules.errors import RuleError

GRAMMAR = Path(__file__).resolve().parents[2] / "grammar" / "rlx.lark"
MAX_NESTING = 100  # calls, `as` bindings and guard operators nested in one another (shipped rules: 10)
_NESTING = {"call", "bind", "arith"}
_NAMES = {"NAME": "a name", "STRING": "a string", "SIGNED_NUMBER": "a number", "CMP": "a comparison",
          "ARROW": "'=>' or '<=>'", "ADDOP": "'+' or '-'", "MULOP": "'*', '//' or '%'", "$END": "end of file"}


@lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(GRAMMAR.read_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _describe(p: lark.Lark, terminal: str) -> str:
    if terminal in _NAMES:
        return _NAMES[terminal]
    try:
        pattern = p.get_terminal(terminal).pattern
    except KeyError:
        return terminal
    return f"'{pattern.value}'" if isinstance(pattern, lark.lexer.PatternStr) else terminal.lower()


def parse_text(text: str, path: str = "<string>") -> RuleFile:
    """Parse one file's text. Syntax errors become RuleError at the offending token."""
    p = _parser()
    try:
        tree = p.parse(text)
    except lark.UnexpectedInput as e:
        line, col = getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1
        expected = sorted({_describe(p, t) for t in (getattr(e, "expected", None) or getattr(e, "allowed", None) or [])})
        if isinstance(e, lark.UnexpectedToken) and e.token.type == "$END":
            got = "end of file"
        elif isinstance(e, lark.UnexpectedToken):
            got = repr(str(e.token))
        else:
            got = repr(text[e.pos_in_stream]) if e.pos_in_stream is not None else "input"
        msg = f"syntax error: unexpected {got}"
        if expected:
            msg += f"; expected {', '.join(expected[:8])}{' ...' if len(expected) > 8 else ''}"
        raise RuleError(Span(path, line, col), msg, text) from None
    _check_nesting(tree, path, text)
    try:
        return _Build(path, text).transform(tree)
    except lark.exceptions.VisitError as e:  # lark wraps what a callback raises
        if isinstance(e.orig_exc, RuleError):
            raise e.orig_exc from None
        raise


def _check_nesting(tree: lark.Tree, path: str, text: str) -> None:
    """Bound the nesting (iteratively), so that every recursive walk of the syntax tree
    (here and in checking, compiling, proving) stays far from Python's recursion limit."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in _NESTING:
            depth += 1
            if depth > MAX_NESTING:
                raise RuleError(Span(path, getattr(node.meta, "line", 1), getattr(node.meta, "column", 1)),
                                f"expression nested more than {MAX_NESTING} deep (calls, 'as' and guard "
                                "operators count; a long sum counts one per term)", text)
        stack.extend((c, depth) for c in node.children if isinstance(c, lark.Tree))


def _number(tok: Token, path: str, text: str) -> int | float:
    """An integer that fits egglog's i64 or a finite float."""
    s = str(tok)
    if any(c in s for c in ".eE"):
        v = float(s)
        if math.isfinite(v):
            return v
    elif len(s.lstrip("+-").lstrip("0")) <= 19 and -2**63 <= int(s) < 2**63:
        return int(s)
    shown = s if len(s) <= 24 else s[:20] + "..."
    raise RuleError(Span(path, tok.line, tok.column),
                    f"number {shown} is out of range (integers must fit in 64 bits; floats must be finite)",
                    text)


def _string(tok: Token, path: str, text: str) -> str:
    """A string value (an attribute or guard literal): printable ASCII, as egglog spells it."""
    s = str(tok)[1:-1]
    if not (s.isascii() and s.isprintable()):
        raise RuleError(Span(path, tok.line, tok.column),
                        f"string {str(tok)!r} is not printable ASCII (only descriptions may use other "
                        "characters)", text)
    return s


@v_args(meta=True)
class _Build(Transformer):
    def __init__(self, path: str, text: str) -> None:
        super().__init__()
        self.path, self.text = path, text
        self.file = RuleFile(path)
        self.current_set = "fusion"

    def _span(self, meta) -> Span:
        return Span(self.path, getattr(meta, "line", 1), getattr(meta, "column", 1))

    def _src(self, meta) -> str:
        return " ".join(self.text[meta.start_pos:meta.end_pos].split())

    def _lit(self, tok) -> object:
        """A literal from a number/STRING/list subtree or token."""
        if isinstance(tok, Token):
            if tok.type == "STRING":
                return _string(tok, self.path, self.text)
            if tok.type == "SIGNED_NUMBER":
                return _number(tok, self.path, self.text)
            return str(tok)
        return tok

    # -- literals
    def number(self, meta, c):
        return self._lit(c[0])

    def signed(self, meta, c):
        return self._lit(c[0])

    def list(self, meta, c):
        return tuple(x for x in c if x is not None)

    def literal(self, meta, c):
        return self._lit(c[0])

    # -- expressions
    def var(self, meta, c):
        return Var(str(c[0]), self._span(meta))

    def num(self, meta, c):
        return Num(float(c[0]), self._span(meta))

    def bind(self, meta, c):
        return Bind(c[0], str(c[1]), self._span(meta))

    def kwarg(self, meta, c):
        name, value = str(c[0]), c[1]
        if isinstance(value, Token) and str(value) in ("true", "false"):
            value = str(value) == "true"
        elif isinstance(value, Token) and value.type == "NAME":
            value = AttrRef(str(value), Span(self.path, value.line, value.column))
        elif isinstance(value, Token):
            value = self._lit(value)
        return (name, value)

    def kwargs(self, meta, c):
        return tuple(c)

    def args(self, meta, c):
        pos = tuple(x for x in c if not isinstance(x, tuple))
        kw = next((x for x in c if isinstance(x, tuple)), ())
        return pos, kw

    def call(self, meta, c):
        pos, kw = c[1] if c[1] is not None else ((), ())
        return Call(str(c[0]), pos, kw, self._span(meta))

    # -- guards
    def glit(self, meta, c):
        return GLit(c[0])

    def gstr(self, meta, c):
        return GLit(_string(c[0], self.path, self.text))

    def glist(self, meta, c):
        return GLit(tuple(x for x in c if x is not None))

    def gname(self, meta, c):
        return GName(str(c[0]), self._span(meta))

    def gfunc(self, meta, c):
        return GFunc(str(c[0]), str(c[1]), c[2], self._span(meta))

    def arith(self, meta, c):
        return GArith(str(c[1]), c[0], c[2])

    def compare(self, meta, c):
        return ("compare", str(c[1]), c[0], c[2], meta)

    def atomlist(self, meta, c):
        return tuple(self._lit(x) for x in c)

    def member(self, meta, c):
        return ("member", "in", str(c[0]), c[1], meta)

    def guard(self, meta, c):
        kind, op, a, b, m = c[0]
        msg = str(c[1])[1:-1] if c[1] is not None else None
        return Guard(kind, op, a, b, msg, self._src(m), self._span(meta))

    def guards(self, meta, c):
        return tuple(c)

    def outputs(self, meta, c):
        return tuple(str(x) for x in c)

    # -- items
    def include(self, meta, c):
        self.file.includes.append((str(c[0])[1:-1], self._span(meta)))

    def ruleset(self, meta, c):
        self.current_set = str(c[0])

    def commutative(self, meta, c):
        self.file.commutative.extend((str(x), Span(self.path, x.line, x.column)) for x in c)

    def regions(self, meta, c):
        self.file.regions.append(RegionsDecl(self.current_set, str(c[0])[1:-1] if c[0] else "", self._span(meta)))

    def rule(self, meta, c):
        name, doc, lhs, arrow, rhs, outputs, guards = c
        self.file.rules.append(Rule(str(name), str(doc)[1:-1] if doc else "", lhs, rhs, outputs,
                                    str(arrow) == "<=>", guards or (), self.current_set,
                                    self._span(meta), self._src(meta)))

    def tparams(self, meta, c):
        return tuple(str(x) for x in c)

    def aparam(self, meta, c):
        default = c[2]
        if isinstance(default, Token) and str(default) in ("true", "false"):
            default = str(default) == "true"
        elif isinstance(default, Token):
            default = self._lit(default)
        return AttrParam(str(c[0]), str(c[1]), default, default is not None)

    def aparams(self, meta, c):
        return tuple(c)

    def binding(self, meta, c):
        return (str(c[0]), c[1])

    def result(self, meta, c):
        return (c[0],)

    def tuple_result(self, meta, c):
        return tuple(c)

    def fused(self, meta, c):
        name, inputs, attrs, doc, *bindings, results = c
        self.file.fused.append(FusedDecl(str(name), str(doc)[1:-1] if doc else "", inputs, attrs or (),
                                         tuple(bindings), results, self._span(meta), self._src(meta)))

    def start(self, meta, c):
        return self.file
