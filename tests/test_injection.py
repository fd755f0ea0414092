"""Compiling an untrusted .op file runs no code (issue 12, docs/reliability.md "Generated code").

User text reaches generated modules in comments, docstrings and the file name; opdsl/pytext.py is
the only way it gets there.  The tests here compile programs whose comments and file names carry
Python payloads and control characters, on every backend, and check two things:
- nothing ran: every payload would create a file, and none exists afterwards;
- the generated module has the same statements as the same program with harmless text: its AST,
  string constants blanked (docstrings and messages may quote the user), is unchanged.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import opdsl
from opdsl import cli
from opdsl.errors import OpdslError
from opdsl.pytext import comment, docstring, literal

from .harness import CATALOGUE, PY_BACKENDS, assert_located, call

EXAMPLES = Path(__file__).parent.parent / "examples"
BASE = "dim n = 4\ninput A : [n, n]\ninput x : [n]\nexport y = A @ x{}\n"


def payloads(marker: Path) -> dict[str, str]:
    """The injection forms of issue 12, each writing `marker` if it ever runs."""
    run = f'__import__("os").system("touch {marker}")'
    return {
        "docstring": f'  # """; {run}; """',
        "docstring-single": f"  # '''; {run}; '''",
        "cr": f"  # z\r    {run}",
        "cr-column-0": f"  # z\r{run}",
        "crlf-inside": "  # z\r\n",
        "backslashes": "  # C:\\Users\\me\\A.npy \\x \\N \\u \\",
        "separators": f"  # a\u2028{run}\u2029b\x0b{run}\x0c\x1c\x85{run}",
        "nul": f"  # a\x00{run}",
    }


def skeleton(source: str) -> str:
    """The statements of a module: its AST with every string constant blanked (docstrings, the
    messages that quote the source), without line numbers."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = ""
    return ast.dump(tree, include_attributes=False)


def compiled_source(text: str, backend: str, filename: str = "m.op") -> str:
    return opdsl.compile(text, backend=backend, filename=filename).source


@pytest.fixture(scope="module")
def tvm_baseline():
    return skeleton(compiled_source(BASE.format(""), "tvm"))


@pytest.mark.parametrize("backend", PY_BACKENDS)
def test_payloads_in_comments_run_nothing(tmp_path, backend):
    baseline = skeleton(compiled_source(BASE.format(""), backend))
    a = np.eye(4, dtype=np.float32) * 2
    x = np.arange(4, dtype=np.float32)
    for form, tail in payloads(tmp_path / "pwned").items():
        text = BASE.format(tail)
        try:
            prog = opdsl.compile(text, backend=backend, filename="m.op")
        except OpdslError as e:          # a NUL or CR the lexer refuses is fine, located
            assert_located(e, text)
            continue
        assert skeleton(prog.source) == baseline, form
        np.testing.assert_allclose(call(prog, "y", {"A": a, "x": x}), 2 * x)
        assert not (tmp_path / "pwned").exists(), form


def test_payloads_run_nothing_on_tvm(tmp_path, tvm_baseline):
    """TVM ran the column-0 form at compile time, through its stage-table comments."""
    for form in ("docstring", "cr-column-0", "backslashes", "separators"):
        text = BASE.format(payloads(tmp_path / "pwned")[form])
        prog = opdsl.compile(text, backend="tvm", filename="m.op")
        assert skeleton(prog.source) == tvm_baseline, form
        assert not (tmp_path / "pwned").exists(), form


EVIL_NAMES = ['q"""+str(__import__("os").system("touch {m}"))+""".op',
              "q'''+str(__import__('os').system('touch {m}'))+'''.op",
              'a\n__import__("os").system("touch {m}")\n.op',
              'a\r__import__("os").system("touch {m}")#.op',
              "C:\\Users\\me\\x\\N.op"]


@pytest.mark.parametrize("backend", PY_BACKENDS)
def test_file_names_run_nothing(tmp_path, backend):
    baseline = skeleton(compiled_source(BASE.format(""), backend))
    for name in EVIL_NAMES:
        name = name.format(m=tmp_path / "pwned")
        prog = opdsl.compile(BASE.format(""), backend=backend, filename=name)
        assert skeleton(prog.source) == baseline, name
        call(prog, "y", {"A": np.eye(4, dtype=np.float32), "x": np.ones(4, np.float32)})
        assert not (tmp_path / "pwned").exists(), name


def test_file_names_run_nothing_through_the_cli(tmp_path, monkeypatch):
    """A real file with such a name, compiled by `opdsl compile` / `check` on every backend (the
    payload touches `pwned` in the working directory: a file name holds no slash)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / EVIL_NAMES[0].format(m="pwned")
    path.write_text(BASE.format(payloads(Path("pwned"))["cr-column-0"]))
    for backend in PY_BACKENDS + ("tvm",):
        assert cli.main(["check", str(path), "--backend", backend]) == 0
    out = tmp_path / "out.py"
    assert cli.main(["compile", str(path), "--backend", "torch", "-o", str(out)]) == 0
    assert skeleton(out.read_text()) == skeleton(compiled_source(BASE.format(""), "torch"))
    assert not (tmp_path / "pwned").exists()


def test_every_example_has_only_compiler_statements(tmp_path):
    """Every example on the Python backends, with a payload after each statement and an evil
    file name, has the statements of the plain example and nothing else."""
    marker = tmp_path / "pwned"
    tails = list(payloads(marker).values())
    for path in sorted(EXAMPLES.glob("*.op")):
        text = path.read_text()
        lines = text.split("\n")
        evil = "\n".join(line + tails[i % len(tails)] if line.startswith(("export", "let", "input")) and "#" not in
                         line else line for i, line in enumerate(lines))
        evil = evil.replace("\x00", "")   # NUL is refused by the lexer (tested above)
        for backend in PY_BACKENDS:
            plain = compiled_source(text, backend, filename=path.name)
            got = compiled_source(evil, backend, filename=EVIL_NAMES[0].format(m=marker))
            assert skeleton(got) == skeleton(plain), (path.name, backend)
    assert not marker.exists()


# random text: printable characters, control characters, every Unicode line separator
LINE_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
TEXT = st.text(st.one_of(st.characters(codec="utf-8", exclude_characters="\n"),
                         st.sampled_from(list(LINE_BREAKS + "\"'\\#{}\x00\x7f\ufeff\u200b"))), max_size=40)


@given(TEXT, st.text(st.characters(codec="utf-8"), min_size=1, max_size=30), st.sampled_from(PY_BACKENDS))
def test_random_comments_and_file_names(tmp_path_factory, text, name, backend):
    """Random text in a comment and as the file name: the program compiles with the plain
    program's statements and computes its result, or it is a located OpdslError."""
    src = BASE.format("  # " + text)
    try:
        prog = opdsl.compile(src, backend=backend, filename=name)
    except OpdslError as e:
        assert_located(e, src)
        return
    assert skeleton(prog.source) == skeleton(compiled_source(BASE.format(""), backend))
    x = np.arange(4, dtype=np.float32)
    np.testing.assert_allclose(call(prog, "y", {"A": np.eye(4, dtype=np.float32), "x": x}), x)


@settings(max_examples=4, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(TEXT, st.text(st.characters(codec="utf-8"), min_size=1, max_size=30))
def test_random_comments_and_file_names_on_tvm(tvm_baseline, text, name):
    """The same on TVM (a few cases: each is a kernel build)."""
    src = BASE.format("  # " + text)
    try:
        prog = opdsl.compile(src, backend="tvm", filename=name)
    except OpdslError as e:
        assert_located(e, src)
        return
    assert skeleton(prog.source) == tvm_baseline
    x = np.arange(4, dtype=np.float32)
    np.testing.assert_allclose(prog.y(A=np.eye(4, dtype=np.float32), x=x), x)


@given(st.text(st.characters(codec="utf-8"), max_size=60))
def test_pytext_round_trips(text):
    """literal and docstring read back as the text itself; a comment stays one printable line."""
    assert ast.literal_eval(literal(text)) == text
    doc = ast.parse(f"def f():\n    {docstring(text)}\n").body[0]
    assert ast.get_docstring(doc, clean=False) == text
    c = comment(text)
    assert c.isprintable()
    assert ast.parse(f"x = 1  # {c}\ny = 2\n").body[1].targets[0].id == "y"


# ---- names the generated module uses (issue 12, item 5) ------------------------------------

CLASHES = ["torch", "np", "jnp", "jax", "functools", "PARAMS", "X64", "init_params", "init", "generator",
           "names", "device", "self", "key", "keys", "out", "params", "ArgumentError", "SingularError",
           "getattr", "isinstance", "tvm"]


def programs(name: str) -> dict[str, tuple[str, dict]]:
    """`name` as a free dim, a known dim, an input, a param and an export of a layer program:
    (text, the shapes of its inputs)."""
    return {
        "free dim": (f"dim {name}\ninput x : [{name}, 4]\nparam W : [4, 4]\nexport y = (W @ x.T).T",
                     {"x": (5, 4)}),
        "known dim": (f"dim {name} = 3\ninput x : [{name}, 4]\nparam W : [4, 4]\nexport y = (W @ x.T).T",
                      {"x": (3, 4)}),
        "param dim": (f"dim {name}\ninput x : [4, 2]\nparam W : [4, {name}]\nparam V : [{name}, 4]\n"
                      "export y = W @ V @ x", {"x": (4, 2)}),
        "input": (f"input {name} : [3, 4]\nparam W : [4, 4]\nexport y = (W @ {name}.T).T", {name: (3, 4)}),
        "param": (f"input x : [3, 4]\nparam {name} : [4, 4]\nexport y = ({name} @ x.T).T", {"x": (3, 4)}),
        "export": (f"input x : [3, 4]\nparam W : [4, 4]\nexport {name} = (W @ x.T).T\nexport z = (W @ x.T).T",
                   {"x": (3, 4)}),
    }


@pytest.mark.parametrize("backend", PY_BACKENDS)
def test_names_the_generated_code_uses_are_refused_or_work(backend):
    """Each name in each position: a located error naming it, or a program that compiles and runs
    with params from its own initializers, whose torch layer builds and agrees — never a call-time
    crash or a layer that calls itself."""
    refused = 0
    for name in CLASHES:
        for where, (text, shapes) in programs(name).items():
            try:
                prog = opdsl.compile(text, backend=backend, filename="m.op")
            except OpdslError as e:
                assert_located(e, text)
                assert name in e.message, (name, where, e.message)
                refused += 1
                continue
            dims = {name: 3} if where == "param dim" else {}
            if backend == "numpy":      # no initializers: params drawn here
                rng = np.random.default_rng(0)
                params = {a: rng.standard_normal(s).astype(np.float32) for a, s in
                          {"W": (4, dims.get(name, 4)), "V": (dims.get(name, 4), 4), name: (4, 4)}.items()}
            else:
                params = prog.module.init_params(0, **dims)
            inputs = {a: np.ones(s, np.float32) for a, s in shapes.items()}
            for export in prog.functions:
                out = cli.to_numpy(prog[export](params, **cli.to_backend(backend, inputs)))
                p = {k: cli.to_numpy(v) for k, v in params.items()}
                w = p["W"] @ p["V"] if where == "param dim" else p[name] if where == "param" else p["W"]
                want = w @ inputs["x"] if where == "param dim" else next(iter(inputs.values())) @ w.T
                np.testing.assert_allclose(out, want, rtol=1e-5, err_msg=f"{name} as {where}")
            if backend == "torch":
                import torch
                layer = next(c for c in vars(prog.module).values() if isinstance(c, type) and
                             issubclass(c, torch.nn.Module) and c.__module__ == prog.module.__name__)
                torch_inputs = cli.to_backend("torch", inputs)
                assert layer(**dims)(*torch_inputs.values()).shape == out.shape
    assert refused        # the list holds names each backend needs


def test_the_issue_s_clashes_are_located_errors():
    """The names issue 12 found breaking at call time, each on the backend it broke."""
    cases = [("torch", "dim torch\ninput x : [torch, 4]\ninput A : [4, 4]\nexport y = (A @ x.T).T", "torch"),
             ("numpy", "dim np\ninput x : [np, 4]\ninput A : [4, 4]\nexport y = (A @ x.T).T", "np"),
             ("jax", "dim jnp\ninput x : [jnp, 4]\ninput A : [4, 4]\nexport y = (A @ x.T).T", "jnp"),
             ("torch", "input x : [3, 4]\nparam W : [4, 4]\nexport PARAMS = (W @ x.T).T", "PARAMS"),
             ("jax", "input x : [3, 4]\ninput W : [4, 4]\nexport X64 = (W @ x.T).T", "X64"),
             ("torch", "dim generator\ninput x : [4, 2]\nparam W : [4, generator]\nparam V : [generator, 4]\n"
                       "export y = W @ V @ x", "generator"),
             ("torch", "dim device\ninput x : [4, 2]\nparam W : [4, device]\nparam V : [device, 4]\n"
                       "export y = W @ V @ x", "device"),
             ("torch", "input x : [3, 4]\nparam W : [4, 4]\nexport self = (W @ x.T).T", "self"),
             ("jax", "dim key\ninput x : [4, 2]\nparam W : [4, key]\nparam V : [key, 4]\nexport y = W @ V @ x",
              "key")]
    for backend, text, name in cases:
        with pytest.raises(OpdslError) as e:
            opdsl.compile(text, backend=backend, filename="m.op")
        assert_located(e.value, text)
        assert repr(name) in e.value.message


def test_generated_builtins_are_declared():
    """Every builtin that a generated module loads (other than through a source name) is in
    GENERATED_BUILTINS, so check_names refuses a source name that would shadow it."""
    import builtins
    from opdsl.backends.pynames import GENERATED_BUILTINS, user_names
    texts = [p.read_text() for p in sorted(EXAMPLES.glob("*.op"))] + [src for _, _, src in CATALOGUE[::3]]
    for backend in PY_BACKENDS:
        for text in texts:
            prog = opdsl.compile(text, backend=backend)
            user, _ = user_names(prog.primitive)
            loads = {x.id for x in ast.walk(ast.parse(prog.source)) if isinstance(x, ast.Name)
                     and isinstance(x.ctx, ast.Load)}
            assert (loads & set(dir(builtins))) - user <= GENERATED_BUILTINS, (backend, text)


def test_out_and_names_are_plain_names():
    """`out`, `names`, `params`, `keys` were locals of generated helpers; now they are the user's."""
    for backend in ("numpy", "jax", "tvm"):
        text = "dim out\ninput names : [out, 4]\ninput keys : [4, 4]\nexport y = (keys @ names.T).T"
        prog = opdsl.compile(text, backend=backend, filename="m.op")
        a = np.arange(20, dtype=np.float32).reshape(5, 4)
        k = np.eye(4, dtype=np.float32) * 3
        np.testing.assert_allclose(cli.to_numpy(prog.y(names=a, keys=k)), 3 * a)


def test_wrong_library_and_positional_arguments_are_call_errors():
    """A numpy array to a torch program names the library; positional arguments are a CallError
    with the signature on every backend (they were raw errors, or 'missing' on numpy)."""
    from opdsl.errors import CallError
    text = BASE.format("")
    prog = opdsl.compile(text, backend="torch")
    with pytest.raises(CallError, match="is a numpy array, expected a torch.Tensor"):
        prog.y(A=np.eye(4, dtype=np.float32), x=np.ones(4, np.float32))
    for backend in PY_BACKENDS:
        prog = opdsl.compile(text, backend=backend)
        args = cli.to_backend(backend, {"A": np.eye(4, dtype=np.float32), "x": np.ones(4, np.float32)})
        for bad_call in (lambda: prog.y(args["A"], args["x"]), lambda: prog.y(args["A"], x=args["x"])):
            with pytest.raises(CallError, match="keyword arguments") as e:
                bad_call()
            assert "y(A=..., x=...)" in e.value.hint


def test_generated_modules_have_no_unescaped_text_in_a_fresh_process(tmp_path, monkeypatch):
    """`opdsl compile -o` output imports in a fresh interpreter and runs nothing on import."""
    import subprocess
    import sys
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    src = tmp_path / EVIL_NAMES[0].format(m="pwned")
    src.write_text("input x : [3, 4]\nparam W : [4, 4]\nexport y = (W @ x.T).T" + payloads(marker)["docstring"])
    for backend in PY_BACKENDS:
        out = tmp_path / f"m_{backend}.py"
        assert cli.main(["compile", str(src), "--backend", backend, "-o", str(out)]) == 0
        r = subprocess.run([sys.executable, "-c", f"import runpy; runpy.run_path({str(out)!r})"],
                           capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        assert r.returncode == 0, r.stderr
    assert not marker.exists()
