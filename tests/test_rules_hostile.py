"""Hostile rule files: every failure is an RlxError naming the place, and every phase (reading,
parsing, checking, expanding, compiling to egglog, symbolic dim arithmetic) is bounded.

The fuzz tests at the end feed random token sequences from the grammar's vocabulary, files
generated from its productions and mutations of the shipped rule files; each case must load
(and compile) or raise an RlxError within a few seconds."""
import os
import random
import re
import signal
import stat
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rlx
from rlx.errors import RlxError, ShapeError
from rlx.ir import DType, Graph
from rlx.ir.registry import TensorType
from rlx.ir.shapes import MAX_DIM_CHARS, MAX_DIM_TERMS, DimBinding, dim, dim_mul
from rlx.rules import MAX_LOAD_BYTES, SHIPPED, RuleError, load, parse_text
from rlx.rules.check import MAX_VARIANTS
from rlx.rules.compile import _unary_elementwise, compile_rules
from rlx.rules.guards import evaluate
from rlx.rules.parse import MAX_NESTING

UNARY = _unary_elementwise()


def write(tmp_path, text, name="r.rlx"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


@contextmanager
def deadline(seconds: float):
    """Fail (TimeoutError) instead of hanging when a case runs past ``seconds``."""
    def alarm(signum, frame):
        raise TimeoutError(f"ran past {seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def rule_error(path, line, col, *fragments) -> RuleError:
    """load(path) raises a RuleError at line:col whose message has every fragment."""
    with deadline(10), pytest.raises(RuleError) as e:
        load(path)
    assert (e.value.span.line, e.value.span.col) == (line, col), str(e.value)
    assert str(e.value).startswith(f"{path}:{line}:{col}: "), str(e.value)
    for f in fragments:
        assert f in str(e.value)
    return e.value


def nested(op: str, n: int, leaf: str = "x") -> str:
    return f"{op}(" * n + leaf + ")" * n


# ---------------------------------------------------------------------------------- nesting

def test_deep_nesting_is_a_rule_error_not_a_recursion_error(tmp_path):
    p = write(tmp_path, f"rule deep: {nested('relu', 400)} => x\n")
    err = rule_error(p, 1, 12 + 5 * MAX_NESTING, f"nested more than {MAX_NESTING} deep")
    assert len(str(err)) < 500  # the line is shown around the caret
    p = write(tmp_path, f"fused f(x) {{ {nested('exp', 3000)} }}\n")
    rule_error(p, 1, 14 + 4 * MAX_NESTING, "nested more than")


def test_nesting_at_the_bound_loads_compiles_and_runs(tmp_path):
    rs = load(write(tmp_path, f"rule deep: {nested('relu', MAX_NESTING)} => relu(x)\n"))
    compile_rules(rs)
    g = Graph()
    y = g.input("x", (3,), "f32")
    for _ in range(MAX_NESTING):
        y = g.relu(y)
    g.output(y)
    assert rlx.compile(g, rules=rs).graph.op_counts() == {"relu": 1}


def test_a_very_long_guard_sum_is_a_rule_error(tmp_path):
    p = write(tmp_path, "rule a: relu(x) => x where rank(x) == " + " + ".join(["1"] * 5000) + "\n")
    err = rule_error(p, 1, 39, "nested more than")  # a left-deep sum: every level starts at its first term
    assert "one per term" in str(err)
    rs = load(write(tmp_path, "rule a: relu(x) => x where rank(x) * 0 == " + " + ".join(["0"] * 50) + "\n"))
    compile_rules(rs)


def test_a_sum_needs_no_spaces(tmp_path):
    rs = load(write(tmp_path, "rule a: relu(x) => x where rank(x) == 1+1, rank(x) != 3-1-1, dim(x, -1) >= -2--1\n"))
    assert [g.text for g in rs.rules[0].guards] == ["rank(x) == 1+1", "rank(x) != 3-1-1", "dim(x, -1) >= -2--1"]
    compile_rules(rs)


# ---------------------------------------------------------------------------------- bytes and literals

def test_a_file_that_is_not_utf8_is_a_rule_error_at_the_byte(tmp_path):
    p = tmp_path / "r.rlx"
    p.write_bytes(b"ruleset fusion\nrule a: relu(x) => x # caf\xe9\n")
    rule_error(p, 2, 27, "not UTF-8: byte 0xe9")


@pytest.mark.parametrize("text,col", [
    ("rule a: relu(x) => x where rank(x) == 9223372036854775808\n", 39),
    ("rule a: relu(x) => x where rank(x) == -99999999999999999999999999\n", 39),
    ("rule a: relu(x) => x where dim(x, 9223372036854775808) == 1\n", 35),
    ("rule a: softmax(x; axis=9223372036854775808) => x\n", 25),
    ("rule a: softmax(x; axis=k) => x where k in [1, 9223372036854775808]\n", 48),
    ("rule a: transpose(x; perm=[1, 18446744073709551616]) => x\n", 31),
    ("rule a: add(x, 1e400) => x\n", 16),
    ("rule a: relu(x) => x where rank(x) == " + "9" * 5000 + "\n", 39),
])
def test_numbers_beyond_64_bits_are_rule_errors(tmp_path, text, col):
    rule_error(write(tmp_path, text), 1, col, "out of range")


def test_numbers_at_the_64_bit_edge_compile(tmp_path):
    rs = load(write(tmp_path, "rule a: relu(x) => x where rank(x) < 9223372036854775807, "
                              "rank(x) > -9223372036854775808, rank(x) != 000000000000000000000001\n"))
    g = Graph()
    g.output(g.relu(g.input("x", (3,), "f32")))
    rlx.compile(g, rules=rs)


@pytest.mark.parametrize("literal", ['"f32\u00e9"', '"\u2200"', '"a\tb"', '"a\x01"'])
def test_strings_in_guards_and_attributes_are_printable_ascii(tmp_path, literal):
    rule_error(write(tmp_path, f"rule a: relu(x) => x where dtype(x) == {literal}\n"), 1, 40, "not printable ASCII")
    rule_error(write(tmp_path, f"rule a: cast(x; dtype={literal}) => x\n"), 1, 23, "not printable ASCII")


def test_descriptions_may_use_any_characters(tmp_path):
    rs = load(write(tmp_path, 'rule a "x\u2218x \u00e9": relu(relu(x)) => relu(x)\n'
                              '    where dtype(x) == "f32" "d\u00e9j\u00e0"\n'))
    assert rs.rules[0].doc == "x\u2218x \u00e9"


@pytest.mark.parametrize("guard,col,hint", [
    ("dtype(x) == f33", 28, "did you mean 'f32'?"),
    ('"bf61" == dtype(x)', 28, "did you mean 'bf16'?"),
    ("dtype(x) != float32", 28, "unknown dtype 'float32'"),
])
def test_an_unknown_dtype_in_a_guard_is_an_error_with_a_did_you_mean(tmp_path, guard, col, hint):
    rule_error(write(tmp_path, f"rule a: relu(x) => x where {guard}\n"), 1, col, "unknown dtype", hint)


def test_an_unknown_dtype_in_a_dtype_attribute_guard_is_an_error(tmp_path):
    rule_error(write(tmp_path, "rule a: cast(x; dtype=d) => x where d in [f32, f33]\n"), 1, 37,
               "unknown dtype 'f33'", "did you mean 'f32'?")
    rule_error(write(tmp_path, "rule a: cast(x; dtype=d) => x where d == bf17\n"), 1, 37, "did you mean 'bf16'?")


@pytest.mark.parametrize("guard,message", [
    ("c != 4", "the float attribute 'c' can only be compared with a float literal (2.0, not 2)"),
    ("4 == c", "the float attribute 'c' can only be compared with a float literal"),
    ("c == rank(q)", "the float attribute 'c' can only be compared"),
    ("c + 1 == 2.0", "the float attribute 'c' cannot take part in arithmetic"),
    ("c > 0.5", "float attributes can only be compared with == and !="),
])
def test_float_attributes_compare_with_float_literals_only(tmp_path, guard, message):
    p = write(tmp_path, f"rule a: sdpa(q, k, v; scale=c) => q where {guard}\n")
    rule_error(p, 1, 43, message)
    rs = load(write(tmp_path, "rule a: sdpa(q, k, v; scale=c) => q where c != 4.0, c != None\n"))
    compile_rules(rs)


def test_guard_evaluation_compares_strings_that_are_no_dims_as_strings():
    (guard,) = parse_text('rule a: relu(x) => x where dtype(x) == "f-"').rules[0].guards  # the checker refuses it
    assert evaluate(guard, {"x": TensorType((3,), DType.f32)}, {}) is False


def test_guard_evaluation_leaves_dims_past_the_bound_undecided():
    (guard,) = parse_text("rule a: relu(x) => x where dim(x, 0) * dim(x, 1) == 1").rules[0].guards
    p, q = "+".join(f"a{i}" for i in range(17)), "+".join(f"b{i}" for i in range(16))
    assert evaluate(guard, {"x": TensorType((p, q), DType.f32)}, {}) is None
    assert evaluate(guard, {"x": TensorType((p, 1), DType.f32)}, {}) is False


def test_a_fused_op_binds_each_name_once(tmp_path):
    p = write(tmp_path, "fused f(x, r) {\n    s = add(x, r)\n    s = add(x, r)\n    s\n}\n")
    rule_error(p, 1, 1, "'s' is already bound")
    rule_error(write(tmp_path, "fused f(x, r) { x = add(x, r)\n x }\n"), 1, 1, "'x' is already bound")


# ---------------------------------------------------------------------------------- rule set names

@pytest.mark.parametrize("name", ["load", "near", "types", "N", "T", "a", "Arg", "Cst", "Region", "uses", "Len",
                                  "ArgAt", "Nil", "Body", "O_relu", "L_input", "Near_0", "region_eval", "legalize",
                                  "algebra", "regions", "axioms", "user_x", "i64", "String"])
def test_any_rule_set_name_compiles_and_its_rules_run(tmp_path, name):
    rs = load(write(tmp_path, f"ruleset {name}\nregions\nrule neg_neg: neg(neg(x)) => x\n"))
    assert rs.sets() == [name]
    g = Graph()
    g.output(g.relu(g.neg(g.neg(g.input("x", (3,), "f32")))))
    r = rlx.compile(g, rules=rs)
    assert "neg" not in r.graph.op_counts()


# ---------------------------------------------------------------------------------- includes

@pytest.mark.parametrize("target", ["/dev/zero", "/dev/stdin", "/dev/null", "/proc/self/fd/0", ".", "fifo.rlx",
                                    "loop.rlx", "big.rlx", "a\x00b.rlx"])
def test_includes_are_regular_files_of_bounded_size(tmp_path, target):
    if target in ("/dev/stdin", "/proc/self/fd/0") and stat.S_ISREG(os.fstat(0).st_mode):
        pytest.skip("stdin is a regular file here")
    os.mkfifo(tmp_path / "fifo.rlx")
    (tmp_path / "loop.rlx").symlink_to(tmp_path / "loop.rlx")
    (tmp_path / "big.rlx").write_text("# " + "x" * MAX_LOAD_BYTES + "\n")
    p = write(tmp_path, f'ruleset fusion\n  include "{target}"\n')
    t0 = time.perf_counter()
    err = rule_error(p, 2, 3, f"cannot include {str(tmp_path / target) if not target.startswith('/') else target!r}")
    why = r"not a regular file|Is a directory|would pass 524288 bytes|loop|null|No such"
    assert re.search(why, str(err)), str(err)
    assert time.perf_counter() - t0 < 2 and "^" in str(err).splitlines()[-1]


@pytest.mark.parametrize("target", ["/dev/zero", "fifo.rlx"])
def test_top_level_rule_files_are_bounded_too(tmp_path, target):
    if target == "fifo.rlx":
        os.mkfifo(tmp_path / target)
    path = Path(target) if target.startswith("/") else tmp_path / target
    with deadline(5), pytest.raises(RuleError, match="not a regular file"):
        load(path)


def test_a_file_at_the_size_bound_loads(tmp_path):
    line = "# " + "x" * 1000 + "\n"
    p = tmp_path / "r.rlx"
    p.write_text("rule a: relu(relu(x)) => relu(x)\n" + line * ((MAX_LOAD_BYTES - 40) // len(line)))
    assert p.stat().st_size <= MAX_LOAD_BYTES
    assert len(load(p)) == 1


def test_the_size_bound_covers_all_the_files_a_load_includes(tmp_path):
    chunk = "# " + "x" * (MAX_LOAD_BYTES // 8) + "\n"
    for i in range(10):
        write(tmp_path, chunk, f"part{i}.rlx")
    p = write(tmp_path, "".join(f'include "part{i}.rlx"\n' for i in range(10)), "main.rlx")
    rule_error(p, 8, 1, "cannot include", "would pass 524288 bytes (MAX_LOAD_BYTES)")


# ---------------------------------------------------------------------------------- expansion bounds

def adds(n: int) -> str:
    e = "x0"
    for i in range(1, n + 1):
        e = f"add({e}, x{i})"
    return e


def test_commutative_expansion_is_counted_before_it_is_expanded(tmp_path):
    rs = load(write(tmp_path, f"ruleset algebra\ncommutative add\nrule big: {adds(18)} => x0\n"))
    t0 = time.perf_counter()
    message = f"to {2**18} forms, more than MAX_VARIANTS = {MAX_VARIANTS}"
    with deadline(5), pytest.raises(RuleError, match=message) as e:
        compile_rules(rs)
    assert e.value.span.line == 3 and time.perf_counter() - t0 < 1


def test_commutative_expansion_at_the_bound_compiles(tmp_path):
    rs = load(write(tmp_path, f"ruleset algebra\ncommutative add\nrule big: {adds(12)} => x0\n"))
    with deadline(20):
        c = compile_rules(rs)
    assert sum(1 for name in c.rule_of if name.startswith("big@")) == 2**12 == MAX_VARIANTS


def test_op_variables_are_counted_before_they_are_expanded(tmp_path):
    ops = ", ".join(UNARY)
    lhs = nested("f0", 1, "x")
    for i in range(1, 7):
        lhs = f"f{i}({lhs})"
    guards = ", ".join(f"f{i} in [{ops}]" for i in range(7))
    rs = load(write(tmp_path, f"rule many: {lhs} => x where {guards}\n"))
    t0 = time.perf_counter()
    with deadline(5), pytest.raises(RuleError, match=f"rule 'many' expands to {len(UNARY) ** 7} variants") as e:
        compile_rules(rs)
    assert e.value.span.line == 1 and time.perf_counter() - t0 < 1


def test_a_near_miss_relation_too_wide_ranges_over_the_listed_ops(tmp_path):
    lhs = "f3(f2(f1(f0(x))))"  # widened: 14**4 variants; listed: 2**4
    guards = ", ".join(f"f{i} in [relu, exp]" for i in range(4))
    rs = load(write(tmp_path, f"ruleset fusion\nrule four: {lhs} => x where {guards}\n"))
    c = compile_rules(rs)
    assert sum(1 for name in c.rule_of if name.startswith("four@")) == 16
    assert len(c.near) == 1
    g = Graph()
    g.output(g.exp(g.relu(g.exp(g.relu(g.input("x", (3,), "f32"))))))
    assert rlx.compile(g, rules=rs).graph.op_counts() == {}


def test_fused_op_attributes_are_counted_before_their_definition_is_expanded(tmp_path):
    p = write(tmp_path, "fused f(x; a: op, b: op, c: op, d: op) { a(b(c(d(x)))) }\n")
    rule_error(p, 1, 1, f"expand its definition to {(len(UNARY) + 1) ** 4} rules", "MAX_VARIANTS")


# ---------------------------------------------------------------------------------- symbolic dims

def test_a_product_of_sums_is_a_shape_error_not_an_hour():
    d = "*".join(f"(a{i}+b{i})" for i in range(22))
    t0 = time.perf_counter()
    with deadline(5), pytest.raises(ShapeError, match=f"more than {MAX_DIM_TERMS} terms") as e:
        dim(d)
    assert "(a0+b0)*(a1+b1)" in str(e.value) and time.perf_counter() - t0 < 0.5
    with pytest.raises(ShapeError, match="more than"):
        dim_mul("*".join(f"(a{i}+b{i})" for i in range(8)), "*".join(f"(c{i}+d{i})" for i in range(8)))
    assert str(dim("*".join(f"(a{i}+b{i})" for i in range(8)))).count("+") == MAX_DIM_TERMS - 1


@pytest.mark.parametrize("d", ["a+" * 600 + "a", "-" * (MAX_DIM_CHARS + 1) + "a", "(" * 300 + "a" + ")" * 300,
                               "a" * (MAX_DIM_CHARS + 1), "9" * 5000, "a\x00", "2**64", "a*" * 511 + "a"])
def test_long_or_deep_dims_are_shape_errors(d):
    with deadline(5):
        try:
            dim(d)
        except ShapeError as e:
            assert len(str(e)) < 300
        else:
            assert len(d) <= MAX_DIM_CHARS


def test_long_sums_within_the_bound_are_evaluated_without_recursion():
    assert dim("+".join(["S"] * 500)) == "500*S"
    assert dim("-" * 1000 + "S") == "S"
    assert DimBinding(S=3).resolve("S*" * 30 + "1") == 3**30
    with pytest.raises(ShapeError, match="beyond 64 bits"):
        dim("4294967296*4294967296*S")


# ---------------------------------------------------------------------------------- fuzz
# Three sources of rule files: random token sequences from the grammar's vocabulary, files
# generated from the grammar's productions (most of them parse, so checking and compiling get
# exercised), and mutations of the shipped files. Each is a function of a random.Random, so a
# hypothesis test drives it (and shrinks a failure) and a long run can call it directly.

WORDS = ["include", "ruleset", "fused", "rule", "regions", "commutative", "where", "as", "in", "=>", "<=>", "->",
         "(", ")", "[", "]", "{", "}", ",", ";", ":", "=", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "//",
         "%", "x", "y", "w", "b", "act", "relu", "add", "mul", "matmul", "softmax", "sdpa", "transpose", "reshape",
         "scalar", "rank", "dim", "dtype", "f32", "f33", "none", "op", "float", "int", "axis", "perm", "eps",
         "fusion", "algebra", "legalize", "load", "near", "N", "0", "1", "-1", "2.5", "1e400",
         "9223372036854775808", '"doc"', '"f32"', '"\u00e9"', '"/dev/zero"', "#", "\n", "\u00e9", "\x00", "\\"]
SHIPPED_TEXT = {str(p.relative_to(SHIPPED)): p.read_text() for p in sorted(SHIPPED.rglob("*.rlx"))}
NASTY = ["9223372036854775808", "1e400", "(", ")", "relu(" * 150, "f33", '"\u00e9"', "\x00", "\udcff", ",",
         "where", "commutative add, mul, sub", "ruleset load\n", "ruleset N\n", "as y", "<=>", "-> (s, root)",
         'include "/dev/zero"\n', "act in [relu, gelu, silu, exp, tanh, neg, abs]", " + 1" * 200, "#"]
OPS = ["neg", "exp", "relu", "gelu", "silu", "tanh", "cast", "add", "sub", "mul", "div", "maximum", "matmul",
       "transpose", "reshape", "softmax", "sum", "mean", "rms_norm", "layer_norm", "sdpa", "swiglu",
       "matmul_bias_act", "neg", "exp", "add", "mul", "matmul", "concat", "region", "act", "relux"]
ATTRS = {"cast": ["dtype"], "transpose": ["perm"], "reshape": ["shape"], "softmax": ["axis"],
         "sum": ["axes", "keepdims"], "mean": ["axes", "keepdims"], "rms_norm": ["eps"],
         "layer_norm": ["axis", "eps"], "sdpa": ["causal", "scale"], "swiglu": ["act"], "matmul_bias_act": ["act"],
         "concat": ["axis"]}
ARITY = {"matmul": 2, "add": 2, "sub": 2, "mul": 2, "div": 2, "maximum": 2, "rms_norm": 2, "layer_norm": 3,
         "sdpa": 3, "swiglu": 3, "matmul_bias_act": 3}
NAMES = ["x", "y", "x", "y", "w", "b", "r", "s", "c", "e", "p", "act", "root", "f"]
VALUES = ["0", "1", "-1", "2", "2.0", "1e-6", "9223372036854775807", "-9223372036854775808", "true", "false",
          "none", "f32", "f33", "relu", "[0, 1]", "[1, 0]", "[]", '"f32"', '"s"', "None"]
RULESETS = ["fusion", "algebra", "legalize", "regions", "mine", "load", "near", "types", "N", "T", "a", "Region"]
NUMBERS = ["0", "-1", str(2**70), str(2**63), str(-2**63), "1e309", "3.5", "65"]


def random_tokens(rng: random.Random) -> str:
    return "".join(rng.choice(WORDS) + rng.choice([" ", "", "\n"]) for _ in range(rng.randrange(60)))


def generate(rng: random.Random) -> str:
    """A rule file from the grammar's productions, with names mostly from the registry."""
    def expr(depth: int, names: list[str]) -> str:
        k = rng.random()
        if depth > 3 or depth and k < 0.3:
            return rng.choice(names) if rng.random() < 0.9 else rng.choice(["1.0", "0.5", "2"])
        if depth and k < 0.35:
            return f"scalar({rng.choice(NAMES)})"
        if depth and k < 0.4:
            return f"{expr(depth + 1, names)} as {rng.choice(NAMES)}"
        op = rng.choice(OPS)
        arity = ARITY.get(op, 1) + (rng.random() < 0.05) - (rng.random() < 0.05)
        args = [expr(depth + 1, names) for _ in range(arity)]
        kw = [f"{a}={rng.choice(VALUES + NAMES)}" for a in ATTRS.get(op, []) if rng.random() < 0.6]
        return f"{op}({', '.join(args)}{'; ' + ', '.join(kw) if kw else ''})"

    def term() -> str:
        x = rng.choice(["x", "y", rng.choice(NAMES)])
        t = rng.choice([f"rank({x})", f"dim({x}, {rng.choice(['0', '-1', '1', '3'])})", f"dtype({x})",
                        rng.choice(VALUES), rng.choice(NAMES)])
        return t if rng.random() < 0.8 else f"{t} {rng.choice(['+', '-', '*', '//', '%'])} {term()}"

    def guard() -> str:
        if rng.random() < 0.3:
            values = rng.sample(UNARY + ["none", "1", "[0, 1]"], rng.randint(1, 4))
            return f"{rng.choice(['act', 'c', rng.choice(NAMES)])} in [{', '.join(values)}]"
        why = ' "why"' if rng.random() < 0.3 else ""
        return f"{term()} {rng.choice(['==', '!=', '<', '<=', '>', '>='])} {term()}{why}"

    items = []
    for i in range(rng.randint(1, 3)):
        k = rng.random()
        if k < 0.15:
            items.append(f"ruleset {rng.choice(RULESETS)}")
        elif k < 0.22:
            ops = rng.sample(["add", "mul", "maximum", "sub", "matmul", "f"], rng.randint(1, 3))
            items.append(f"commutative {', '.join(ops)}")
        elif k < 0.27:
            items.append('regions "elementwise"')
        elif k < 0.37:
            attrs = rng.sample(["a: op", "k: float = 2.0", "n: int = 1", "d: dtype = f32", "a: op = none"],
                               rng.randint(0, 2))
            params = "x, y" + ("; " + ", ".join(attrs) if attrs else "")
            items.append(f"fused g{i}({params}) \"doc\" {{ {expr(0, ['x', 'y'])} }}")
        else:
            guards = [guard() for _ in range(rng.randint(0, 3))]
            where = f" where {', '.join(guards)}" if guards else ""
            items.append(f"rule r{i} \"doc\": {expr(0, NAMES)} {rng.choice(['=>', '=>', '<=>'])} "
                         f"{expr(rng.randint(0, 2), ['x', 'y'])}{where}")
    return "\n".join(items) + "\n"


def mutate(text: str, rng: random.Random) -> str:
    tokens = re.findall(r'"[^"\n]*"|\w+|[^\w\s]+|\s+', text)
    for _ in range(rng.randint(1, 4)):
        kind, i, j = rng.choice(["delete", "insert", "swap", "dup", "nasty", "truncate", "number"]), \
            rng.randrange(len(tokens) + 1), rng.randrange(len(tokens) + 1)
        if kind == "delete":
            del tokens[i:i + rng.randint(1, 8)]
        elif kind == "insert" and tokens:
            tokens.insert(i, tokens[min(j, len(tokens) - 1)])
        elif kind == "swap" and max(i, j) < len(tokens):
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif kind == "dup":
            tokens[i:i] = tokens[i:i + rng.randint(1, 40)]
        elif kind == "nasty":
            tokens.insert(i, rng.choice(NASTY))
        elif kind == "truncate":
            del tokens[i:]
        elif kind == "number":
            tokens = [rng.choice(NUMBERS) if t.isdigit() and rng.random() < 0.5 else t for t in tokens]
    return "".join(tokens)


FUZZ = {"cases": 0, "rlx errors": 0, "loaded": 0, "compiled": 0}


@pytest.fixture(scope="module", autouse=True)
def fuzz_counts():
    """The fuzz figures (shown with ``pytest -s``): a crash fails its test, so none are counted here."""
    yield
    if FUZZ["cases"]:
        print(f"\n{__name__}: fuzz {FUZZ}")


G = Graph()
G.output(G.relu(G.add(G.matmul(G.input("x", (4, 8), "f32"), G.param("w", (8, 8), "f32")), G.param("b", (8,), "f32"))))


def run_case(path: Path, text: str, compile_graph: bool, seconds: float = 10) -> None:
    """Load a rule file, compile it to egglog and (``compile_graph``) run it on a small graph:
    it works or raises an RlxError, within ``seconds``."""
    FUZZ["cases"] += 1
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        with deadline(seconds):
            rs = load(path)
            FUZZ["loaded"] += 1
            compile_rules(rs)
            if compile_graph:
                rlx.compile(G, rules=rs)
                FUZZ["compiled"] += 1
    except RlxError as e:
        FUZZ["rlx errors"] += 1
        assert str(e)


FUZZ_EXAMPLES = settings().max_examples * 5   # 200 each by default; 2000 with RLX_HYPOTHESIS_PROFILE=thorough


@settings(max_examples=FUZZ_EXAMPLES)
@given(st.randoms(use_true_random=False))
def test_fuzz_random_token_sequences(tmp_path_factory, rng):
    run_case(tmp_path_factory.getbasetemp() / "tokens.rlx", random_tokens(rng), compile_graph=False)


@settings(max_examples=FUZZ_EXAMPLES)
@given(st.randoms(use_true_random=False), st.booleans())
def test_fuzz_rule_files_from_the_grammar(tmp_path_factory, rng, compile_graph):
    run_case(tmp_path_factory.getbasetemp() / "generated.rlx", generate(rng), compile_graph)


@settings(max_examples=FUZZ_EXAMPLES)
@given(st.sampled_from(sorted(SHIPPED_TEXT)), st.randoms(use_true_random=False), st.booleans())
def test_fuzz_mutated_shipped_rule_files(tmp_path_factory, name, rng, compile_graph):
    run_case(tmp_path_factory.getbasetemp() / "mutated.rlx", mutate(SHIPPED_TEXT[name], rng), compile_graph)
