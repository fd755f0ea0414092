"""Fuzzing the front end (docs/reliability.md, "Errors").

Random text, token soups and mutations of every example (deleted, duplicated or
swapped tokens and lines, wrong dims, zero / negative / huge sizes, unicode
identifiers, 10,000-line files) are compiled with the numpy backend.  Each case
must either compile or raise an OpdslError whose span lies inside the input; no
other exception escapes, and no case takes more than CASE_CPU_S seconds of CPU.
A mutated program that compiles, and is small, must also agree with the dense
reference.  The CLI exits 1 with a message and never prints a traceback.

Budget: a small number of cases per test in CI; OPDSL_FUZZ_LONG=1 runs many
(and sweeps every single-token deletion of every example).  Hypothesis shrinks a
failure to a small program and prints it.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import opdsl
from opdsl import cli
from opdsl.errors import OpdslError, text_lines
from opdsl.kinds import CONSTRUCTORS

from .harness import assert_located, assert_matches, call, reference
from .mutations import CORPUS, LONG, budget, mutated, tokens

ROOT = Path(__file__).resolve().parent.parent
CASE_CPU_S = 2.0       # CPU seconds one case may take (CPU, not wall: CI machines are shared)
HANG_S = 60            # wall-clock alarm: a case still running after this has hung


STATS = {"cases": 0, "compiled": 0, "errors": 0, "checked_numerics": 0}


class Hang(Exception):
    pass


@contextmanager
def wall_limit(seconds: float):
    def alarm(*_):
        raise Hang(f"no answer after {seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def compile_checked(text: str, check_numerics: bool = False):
    """Compile text: OpdslError with a location, or a program; each within CASE_CPU_S of CPU."""
    from hypothesis.control import _current_build_context
    if _current_build_context.value is not None:
        note(f"source:\n{text}")
    STATS["cases"] += 1
    cpu = time.process_time()
    prog = None
    with wall_limit(HANG_S):
        try:
            prog = opdsl.compile(text, backend="numpy", filename="fuzz.op")
        except OpdslError as e:
            STATS["errors"] += 1
            assert_located(e, text)
    spent = time.process_time() - cpu
    assert spent < CASE_CPU_S, f"compiling took {spent:.2f} s of CPU"
    if prog is not None:
        STATS["compiled"] += 1
        if check_numerics:
            check_small_program(prog)
    return prog


def biggest_node(g, root, env) -> float:
    """The most entries of any value below root (an operator [m, n] counts m·n: the dense reference
    materializes it), with the free dims at their small test values."""
    out = 0.0
    for v in g.live([root]):
        t = g.type(v)
        dims = (*t.batch, t.rows, t.cols) if t.is_op else t.shape
        size = 1.0
        for d in dims:
            size *= float(g.dims.subs(d).subs(env))
        out = max(out, size)
    return out


def check_small_program(prog):
    """A compiled program whose arguments are small agrees with the dense reference."""
    from opdsl.reference import bind_free_dims, random_inputs
    g = prog.graph
    env = bind_free_dims(g)
    for name in prog.functions:
        sizes = [int(g.dims.subs(d).subs(env)) for _, shape, _, _ in g.meta["signatures"][name] for d in shape]
        if any(s > 64 for s in sizes) or g.depth() > 60 or biggest_node(g, g.exports[name], env) > 1e5:
            continue
        inputs = random_inputs(g, name, seed=3)
        with np.errstate(all="ignore"):
            try:
                ref = reference(prog, name, inputs)
            except np.linalg.LinAlgError:      # e.g. inv() of a mutated low-rank sum: no reference value
                continue
            if not np.all(np.isfinite(ref)) or (ref.size and np.max(np.abs(ref)) > 1e30):
                continue
            out = call(prog, name, inputs)
        dtype = g.type(g.exports[name]).dtype
        # any dtype a mutation may declare, looser than the catalogue's (the values are not controlled)
        tol = {"float64": 1e-8, "float32": 1e-3, "float16": 5e-2, "bfloat16": 1e-1}.get(dtype, 1e-3)
        assert_matches(out, ref, dtype, tol, what=f"export {name}")
        STATS["checked_numerics"] += 1


# ---- random text and token soups ------------------------------------------------------------

@budget(150, 5000)
@given(st.text(max_size=300))
def test_random_text(text):
    compile_checked(text)


PUNCT = ["(", ")", "[", "]", ",", ":", "=", "+", "-", "*", "/", "@", ".", "~", ".T", "#", "\n", "\t"]
WORDS = ["dim", "input", "param", "let", "export", "true", "false", "T", "x", "y", "A", "B", "n", "k",
         "float16", "float32", "float64", "bfloat16", "psd", "orthogonal", "symmetric", "normal", "eye",
         "zeros", "ones", "causal", "rank", "feature", "chunk", "normalize", "λ", "é", "名", "None", "class",
         "_x", "__init__", "np", "torch", "getattr"] + sorted(CONSTRUCTORS)
NUMBERS = ["0", "1", "2", "3", "4", "8", "16", "-1", "0.5", "1e3", "1e308", "1e400", "99999999999999999999999"]


@budget(150, 5000)
@given(st.lists(st.sampled_from(PUNCT + WORDS + NUMBERS), max_size=60),
       st.lists(st.sampled_from([" ", "", "\n", "  "]), min_size=60, max_size=60))
def test_token_soup(tokens, seps):
    compile_checked("".join(t + s for t, s in zip(tokens, seps)))


STATEMENTS = [
    "dim n = 4", "dim m = n * 2", "dim k", "dim h = n / 2", "dim z = n - 4", "dim w ~ 64",
    "input x : [n, k]", "input v : [n]", "input A : [n, n]", "input B : [m, n]", "input W : [2, h, h]",
    "param P : [n, n] = orthogonal", "param d : [n] = ones", "input U : [n, 2]", "input V : [n, 2]",
    "let C = A @ A.T", "let D = diag(v) + lowrank(U, V)", "let E = kron(eye(2), A)",
    "export y = A @ x", "export y2 = (A + A.T) @ x", "export y3 = B @ x", "export y4 = blockdiag(W) @ x",
    "export y5 = D @ x - 2 * x", "export y6 = C @ (P @ x)", "export y7 = E @ B @ x", "export y8 = D.T @ v",
]


@budget(150, 3000)
@given(st.lists(st.sampled_from(STATEMENTS), min_size=1, max_size=12))
def test_statement_soup(stmts):
    """Whole statements in random order: names used before, after or without their declaration."""
    compile_checked("\n".join(stmts) + "\n", check_numerics=True)


# ---- mutations of every example -------------------------------------------------------------

@budget(200, 10000)
@given(mutated())
def test_mutated_examples(text):
    compile_checked(text, check_numerics=True)


def test_mutations_change_the_program():
    """The mutator is not vacuous: over fixed seeds its programs differ from their sources, and some
    still compile while others fail to parse or fail later (names, shapes, dims, types).  About 3% of
    the mutants compile: 600 draws (the 300 of before drew none that compiled once the corpus grew
    by the select examples — the derandomized draws follow the corpus)."""
    seen = set()

    @settings(max_examples=600, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(mutated())
    def record(text):
        if text in CORPUS:
            return
        try:
            opdsl.compile(text, backend="numpy")
            seen.add("compiles")
        except OpdslError as e:
            seen.add(type(e).__name__)

    record()
    assert {"compiles", "ParseError", "NameError_", "ShapeError", "DimError", "TypeError_"} <= seen, seen


def test_single_token_deletions():
    """Delete each token of an example in turn (every example in the long mode)."""
    corpus = CORPUS if LONG else CORPUS[::7]
    for src in corpus:
        toks = tokens(src)
        real = [i for i, t in enumerate(toks) if not t.isspace() and not t.startswith("#")]
        for i in (real if LONG else real[::5]):
            compile_checked("".join(toks[:i] + toks[i + 1:]))


@pytest.mark.parametrize("size", ["0", "-1", "(1 - 2)", "0.5", "3 / 2", "2**3", "9223372036854775808",
                                  "99999999999999999999999", "1e3"])
def test_bad_sizes_are_located(size):
    for src in ["dim n = {s}\ninput x : [n]\nexport y = x",
                "input A : [{s}, 4]\ninput x : [4]\nexport y = A @ x",
                "dim n\ninput x : [n, {s}]\nexport y = x",
                "input d : [4]\ninput x : [4]\nexport y = kron(diag(d), eye({s})) @ kron(x, x)"]:
        text = src.format(s=size)
        with pytest.raises(OpdslError) as e:
            opdsl.compile(text, backend="numpy", filename="m.op")
        assert_located(e.value, text)


@pytest.mark.parametrize("hint", ["0", "9223372036854775808"])
def test_bad_size_hints_are_located(hint):
    text = f"dim k ~ {hint}\ninput x : [4, k]\nexport y = 2 * x"
    with pytest.raises(OpdslError) as e:
        opdsl.compile(text, backend="numpy", filename="m.op")
    assert_located(e.value, text)
    assert (e.value.span.line, e.value.span.column) == (1, 9)


@pytest.mark.parametrize("expr,column", [("1e400 * A", 12), ("1e200 * 1e200 * A", 12), ("A / 1e-320", 16),
                                         ("1e39 * A", 12), ("-1e39 * A", 13), ("A / 1e-39", 16),
                                         ("1e-320 * A", 12)])
def test_constants_out_of_range(expr, column):
    """Constants are finite float64 numbers, and a scale neither overflows the float32 it multiplies
    nor rounds to 0 there."""
    text = f"input A : [4, 4]\ninput x : [4]\nexport y = ({expr}) @ x"
    with pytest.raises(OpdslError) as e:
        opdsl.compile(text, backend="numpy", filename="m.op")
    assert_located(e.value, text)
    assert e.value.span.line == 3 and e.value.span.column >= column - 1
    ok = opdsl.compile(text.replace("[4, 4]", "[4, 4] float64").replace("[4]", "[4] float64"), backend="numpy") \
        if expr in ("1e39 * A", "-1e39 * A", "A / 1e-39", "1e-320 * A") else None   # fine in float64
    assert ok is None or ok.functions == ["y"]


@pytest.mark.parametrize("name", ["λ", "名前", "x̃", "None", "class", "lambda", "_hidden", "__init__"])
def test_unusable_identifiers(name):
    text = f"input {name} : [4]\nexport y = {name}"
    with pytest.raises(OpdslError) as e:
        opdsl.compile(text, backend="numpy", filename="m.op")
    assert_located(e.value, text)
    assert e.value.span.line == 1


def test_names_that_clash_with_generated_code():
    """Names the generated module needs (np, torch, builtins it calls) are refused, not broken."""
    for backend, name in [("numpy", "np"), ("torch", "torch"), ("numpy", "getattr"), ("numpy", "ArgumentError")]:
        for text in [f"input {name} : [4, 4]\ninput x : [4]\nexport y = {name} @ x",
                     f"input A : [4, 4]\ninput x : [4]\nexport {name} = A @ x\nexport z = A @ x"]:
            with pytest.raises(OpdslError) as e:
                opdsl.compile(text, backend=backend, filename="m.op")
            assert_located(e.value, text)
            assert name in e.value.message
    # a `let` named like a builtin is renamed in the generated code and works
    prog = opdsl.compile("input A : [2, 2]\ninput x : [2, 2]\nlet getattr = A @ x\nexport y = getattr",
                         backend="numpy")
    a, x = np.eye(2, dtype=np.float32), np.ones((2, 2), np.float32)
    assert np.allclose(prog.y(A=a, x=x), x)


def test_ten_thousand_line_files():
    """An error on the last of 10,000 lines is found and located; garbage fails at its first token.
    (A valid 10,000-line program compiles: tests/test_scale.py.)"""
    body = ["dim n = 4", "input x : [n, 2]"] + [f"input A{i} : [n, n]" for i in range(10)]
    body += [f"let t{i} = A{i % 10} @ {'x' if i == 0 else f't{i - 1}'}" for i in range(9987)]
    bad = "\n".join(body + ["export y = t9986 @@ x"]) + "\n"
    assert len(text_lines(bad)) == 10001      # 10,000 lines and the empty one after the last newline
    with pytest.raises(OpdslError) as e:
        opdsl.compile(bad, backend="numpy", filename="big.op")
    assert (e.value.span.line, e.value.span.column) == (10000, 19)   # the second @
    assert_located(e.value, bad)
    garbage = "\n".join(f"{i} ) ( ]" for i in range(10000))
    with pytest.raises(OpdslError) as e:
        opdsl.compile(garbage, backend="numpy")
    assert (e.value.span.line, e.value.span.column) == (1, 1)
    comments = "# nothing\n" * 10000
    with pytest.raises(OpdslError) as e:
        opdsl.compile(comments, backend="numpy")
    assert "exports nothing" in e.value.message


# ---- the command line ---------------------------------------------------------------------

def run_cli(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "internal error" not in err
    return rc, out, err


@budget(25, 1000)
@given(mutated())
def test_cli_compile_never_shows_a_traceback(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cli") / "m.op"
    path.write_text(text)
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(["compile", str(path), "--backend", "numpy", "-o", str(path.with_suffix(".py"))])
    assert rc in (0, 1)
    assert "internal error" not in err.getvalue() and "Traceback" not in err.getvalue()
    assert rc == 0 or err.getvalue().startswith(f"{path}:"), err.getvalue()


def test_cli_internal_errors_are_a_message(tmp_path, capsys, monkeypatch):
    """A bug in opdsl (simulated) is reported as one, with exit code 1 and no traceback."""
    good = tmp_path / "good.op"
    good.write_text("dim n = 4\ninput x : [n]\nexport y = 2 * x\n")

    def broken(*a, **k):
        raise KeyError("simulated bug")

    monkeypatch.setattr(cli, "cmd_compile", broken)     # parser() binds it when main() builds it
    monkeypatch.delenv("OPDSL_TRACEBACK", raising=False)
    rc = cli.main(["compile", str(good)])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("opdsl: internal error: KeyError") and "Traceback" not in err
    monkeypatch.setenv("OPDSL_TRACEBACK", "1")
    with pytest.raises(KeyError):
        cli.main(["compile", str(good)])



def test_cli_errors_exit_1_with_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.op"
    bad.write_text("dim n = 4\ninput x : [n]\nexport y = x $ x\n")
    rc, _, err = run_cli(["check", str(bad), "--backend", "numpy"], capsys)
    assert rc == 1 and err.startswith(f"{bad}:3:14: error: unexpected character '$'")
    binary = tmp_path / "binary.op"
    binary.write_bytes(b"dim n = 4\n\xff\xfe")
    rc, _, err = run_cli(["compile", str(binary)], capsys)
    assert rc == 1 and f"{binary}:2:1: error:" in err and "UTF-8" in err
    rc, _, err = run_cli(["compile", str(tmp_path / "missing.op")], capsys)
    assert rc == 1 and "cannot read" in err
    rc, _, err = run_cli(["compile", str(tmp_path)], capsys)
    assert rc == 1 and "cannot read" in err
    good = tmp_path / "good.op"
    good.write_text("dim n = 4\ninput x : [n]\nexport y = 2 * x\n")
    for argv in (["--dim", "n=abc"], ["--dim", "n=0"], ["--dim", "q=3"], ["--dim", "n"], ["--dtype", "int7"],
                 ["--dim", "n=99999999999999999999999"]):
        rc, _, err = run_cli(["compile", str(good), *argv], capsys)
        assert rc == 1 and "error" in err, argv


def test_cli_process_exit_code_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.op"
    bad.write_text("dim n = 4\ninput x : [n, n]\nexport y = kron(x) @ x\n")
    r = subprocess.run([sys.executable, "-m", "opdsl", "compile", str(bad)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and f"{bad}:3:12: error:" in r.stderr, r.stderr


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    """In the long mode, print how many cases were tried (the counts docs/reliability.md quotes)."""
    yield
    if LONG:
        sys.__stderr__.write(f"\nfuzz: {STATS['cases']} cases, {STATS['compiled']} compiled, {STATS['errors']} "
                             f"OpdslErrors, {STATS['checked_numerics']} exports checked against the dense "
                             "reference\n")
