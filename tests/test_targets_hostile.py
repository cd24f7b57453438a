"""Hostile target files: strict keys (with a did-you-mean), finite numbers, integers where
integers are meant, bounded reading; and a fuzz over mutations of the shipped targets that
must load and compile or raise an RlxError, within a few seconds."""
import json
import math
import os
import random
import signal
import stat
import time
import tomllib
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rlx
from rlx.errors import RlxError
from rlx.extract.target import BACKENDS, MAX_FILE_BYTES, TargetError, load_target
from rlx.ir import Graph
from rlx.rules import load

RULES = load()
CPU = (BACKENDS / "cpu.toml").read_text()
G = Graph()
G.output(G.relu(G.add(G.matmul(G.input("x", (4, 8), "f32"), G.param("w", (8, 8), "f32")), G.param("b", (8,), "f32"))))


@contextmanager
def deadline(seconds: float):
    def alarm(signum, frame):
        raise TimeoutError(f"ran past {seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def target_file(tmp_path, text, name="t.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def target_error(path, *fragments):
    """Loading (and resolving) ``path`` raises a TargetError naming the file and every fragment."""
    with deadline(5), pytest.raises(TargetError) as e:
        load_target(path).resolve_claims()
    assert str(path) in str(e.value)
    for f in fragments:
        assert f in str(e.value), str(e.value)
    return e.value


@pytest.mark.parametrize("old,new,message", [
    ("iterations = 24", "iteration = 24",
     "unknown key 'saturation.iteration'; did you mean 'saturation.iterations'?"),
    ("bandwidth = 34e9", "bandwith = 34e9", "unknown key 'memory.bandwith'; did you mean 'memory.bandwidth'?"),
    ("alignment = 64", "alignment = 64\nallignment = 64", "unknown key 'allignment'; did you mean 'alignment'?"),
    ("[regions]", "[regoins]", "unknown key 'regoins'; did you mean 'regions'?"),
    ("exact_seconds = 10.0", "exact_second = 10.0", "did you mean 'extraction.exact_seconds'?"),
    ("view = 5e-7", "view = 5e-7\nlaunch_overhead = 1e-6", "unknown key 'overhead.launch_overhead'"),
    ("[memory]", "[memory.cache]\nsize = 1\n[memory]", "unknown key 'memory.cache'"),
    ("f16 = 20e9", "f33 = 20e9", "key 'peak_flops.f33': unknown dtype; did you mean 'f32'?"),
])
def test_unknown_keys_are_errors_with_a_did_you_mean(tmp_path, old, new, message):
    assert old in CPU
    target_error(target_file(tmp_path, CPU.replace(old, new, 1)), message)


def test_a_table_must_be_a_table(tmp_path):
    table = CPU[CPU.index("[efficiency]"):CPU.index("[ops]")]
    assert "sdpa" in table
    text = CPU.replace(table, "").replace(
        'name = "cpu"', 'name = "cpu"\nefficiency = 5')
    target_error(target_file(tmp_path, text), "key 'efficiency': expected a table, got 5")


def test_an_unknown_op_in_efficiency_is_an_error_not_a_lost_factor(tmp_path):
    p = target_file(tmp_path, CPU.replace("sdpa = 1.0", "sdpaa = 0.8"))
    target_error(p, "key 'efficiency': unknown op 'sdpaa'; did you mean 'sdpa'?")
    with pytest.raises(TargetError, match="did you mean 'sdpa'"):
        rlx.compile(G, target=p, rules=RULES)
    with pytest.raises(TargetError, match="unknown op '\\*'"):
        load_target(target_file(tmp_path, CPU.replace("sdpa = 1.0", '"*" = 0.8'))).resolve_claims()


def test_efficiency_may_name_the_fused_ops_of_the_rules_in_use(tmp_path):
    rules = load(target_file(tmp_path, "fused twice_exp(x) { exp(exp(x)) }\n", "r.rlx"))
    p = target_file(tmp_path, CPU.replace("sdpa = 1.0", "sdpa = 1.0\ntwice_exp = 0.5"))
    with pytest.raises(TargetError, match="unknown op 'twice_exp'"):
        rlx.compile(G, target=p, rules=RULES)
    with rules.active():
        assert load_target(p).resolve_claims().cost.efficiency["twice_exp"] == 0.5


@pytest.mark.parametrize("old,new,message", [
    ("launch = 4e-6", "launch = inf",
     "key 'overhead.launch': expected a non-negative number, got inf (numbers must be finite)"),
    ("view = 5e-7", "view = nan", "key 'overhead.view': expected a non-negative number, got nan"),
    ("bandwidth = 34e9", "bandwidth = +inf", "key 'memory.bandwidth': expected a positive number, got inf"),
    ("f32 = 160e9", "f32 = -inf", "key 'peak_flops.f32': expected a positive number, got -inf"),
    ("sdpa = 1.0", "sdpa = nan", "key 'efficiency.sdpa': expected a positive number, got nan"),
    ("seconds = 30.0", "seconds = inf", "key 'saturation.seconds': expected a positive number, got inf"),
    ("exact_seconds = 10.0", "exact_seconds = -1", "expected a positive number, got -1"),
    ("algebra_iterations = 2", "algebra_iterations = 2.5",
     "key 'saturation.algebra_iterations': expected a non-negative integer, got 2.5"),
    ("exact_below = 400", "exact_below = 400.5", "key 'extraction.exact_below': expected a non-negative integer"),
    ("enodes = 2000000", "enodes = 2e6", "key 'saturation.enodes': expected a positive integer, got 2000000.0"),
    ("max_inputs = 16", "max_inputs = 9223372036854775808", "integers must fit in 64 bits"),
    ("alignment = 64", "alignment = 0", "key 'alignment': expected a positive integer, got 0"),
    ("alignment = 64", "alignment = true", "expected a positive integer, got True"),
    ("iterations = 24", "iterations = -3", "expected a positive integer, got -3"),
    ('name = "cpu"', 'name = ["cpu"]', "key 'name': expected a string"),
    ('claim = ["*"]', "claim = [1, 2]", "key 'ops.claim': expected a list of op names"),
])
def test_numbers_must_be_finite_and_integers_integers(tmp_path, old, new, message):
    assert old in CPU
    target_error(target_file(tmp_path, CPU.replace(old, new, 1)), message)


def test_saturation_limits_are_honored_as_written(tmp_path):
    text = CPU.replace("seconds = 30.0", "seconds = 2").replace("iterations = 24", "iterations = 5")
    p = target_file(tmp_path, text.replace("algebra_iterations = 2", "algebra_iterations = 0"))
    t = load_target(p)
    assert t.limits.seconds == 2.0 and isinstance(t.limits.seconds, float)
    assert (t.limits.iterations, t.limits.algebra_iterations) == (5, 0)
    big = load_target(target_file(tmp_path, CPU.replace("max_inputs = 16", f"max_inputs = {2**63 - 1}"), "b.toml"))
    rlx.compile(G, target=big, rules=RULES)


@pytest.mark.parametrize("what", ["/dev/zero", "/dev/stdin", "fifo.toml", "dir.toml", "big.toml", "latin1.toml",
                                  "deep.toml", "digits.toml"])
def test_target_files_are_read_with_bounds(tmp_path, what):
    if what == "/dev/stdin" and stat.S_ISREG(os.fstat(0).st_mode):
        pytest.skip("stdin is a regular file here")
    os.mkfifo(tmp_path / "fifo.toml")
    (tmp_path / "dir.toml").mkdir()
    (tmp_path / "big.toml").write_text(CPU + "# " + "x" * MAX_FILE_BYTES + "\n")
    (tmp_path / "latin1.toml").write_bytes(CPU.replace('name = "cpu"', 'name = "caf\xe9"').encode("latin-1"))
    (tmp_path / "deep.toml").write_text(CPU.replace('claim = ["*"]', "claim = " + "[" * 5000 + "]" * 5000))
    (tmp_path / "digits.toml").write_text(CPU.replace("max_ops = 32", "max_ops = " + "9" * 5000))
    path = what if what.startswith("/") else tmp_path / what
    t0 = time.perf_counter()
    with deadline(5), pytest.raises(TargetError) as e:
        load_target(path)
    assert str(path) in str(e.value) and time.perf_counter() - t0 < 2 and len(str(e.value)) < 400


# ---------------------------------------------------------------------------------- fuzz

SHIPPED = {p.name: tomllib.loads(p.read_text()) for p in sorted(BACKENDS.glob("*.toml"))}
ODD = [float("inf"), float("-inf"), float("nan"), 0, -1, 2**63, 2**64, -2**63, 1e308, 5e-324, 0.5, 2.5, True, "",
       "x", "\u00e9", [], ["*"], ["sdpa", "nope"], {}, {"a": 1}, 10**40]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def toml_text(data: dict) -> str:
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += [f"[{json.dumps(k)}]"] + [f"{json.dumps(kk)} = {toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def mutate_target(data: dict, rng: random.Random) -> str:
    """A shipped target with keys deleted, retyped, scaled, set to odd values or misspelt, keys
    added; sometimes its text damaged too."""
    data = json.loads(json.dumps(data))
    for _ in range(rng.randint(0, 3)):
        table = data if rng.random() < 0.3 else data.get(rng.choice(sorted(data)), data)
        if not isinstance(table, dict) or not table:
            continue
        key = rng.choice(sorted(table))
        kind = rng.choice(["delete", "odd", "odd", "rename", "add", "scale"])
        if kind == "delete":
            del table[key]
        elif kind == "odd":
            table[key] = rng.choice(ODD)
        elif kind == "rename":
            table[key[:-1] or "x"] = table.pop(key)
        elif kind == "add":
            table[rng.choice(["sdpaa", "iteration", "bandwith", "f33", "extra", key + "s"])] = rng.choice(ODD)
        elif kind == "scale" and isinstance(table[key], (int, float)) and not isinstance(table[key], bool):
            table[key] = type(table[key])(table[key] * rng.choice([-1, 0, 1e-3, 10, 10**6, 10**20]))
    text = toml_text(data)
    if rng.random() < 0.2:
        i = rng.randrange(len(text))
        text = text[:i] + rng.choice(["", "[", "]", "=", "\n", '"', "\x00", "\udcff", "[[x]]\n"]) + text[i + 1:]
    return text


FUZZ = {"cases": 0, "rlx errors": 0, "loaded": 0, "compiled": 0}


@pytest.fixture(scope="module", autouse=True)
def fuzz_counts():
    """The fuzz figures (shown with ``pytest -s``): a crash fails its test, so none are counted here."""
    yield
    if FUZZ["cases"]:
        print(f"\n{__name__}: fuzz {FUZZ}")


def run_case(path, text: str, compile_graph: bool, seconds: float = 10) -> None:
    FUZZ["cases"] += 1
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        with deadline(seconds):
            target = load_target(path).resolve_claims()
            FUZZ["loaded"] += 1
            if compile_graph:
                rlx.compile(G, target=target, rules=RULES)
                FUZZ["compiled"] += 1
    except RlxError as e:
        FUZZ["rlx errors"] += 1
        assert str(e)


def test_the_toml_writer_round_trips_the_shipped_targets():
    for data in SHIPPED.values():
        assert tomllib.loads(toml_text(data)) == data


@settings(max_examples=settings().max_examples * 5)   # 200 by default; 2000 with RLX_HYPOTHESIS_PROFILE=thorough
@given(st.sampled_from(sorted(SHIPPED)), st.randoms(use_true_random=False), st.integers(0, 7))
def test_fuzz_mutated_target_files(tmp_path_factory, name, rng, k):
    run_case(tmp_path_factory.getbasetemp() / "fuzz.toml", mutate_target(SHIPPED[name], rng), compile_graph=k == 0)
