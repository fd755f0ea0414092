"""The functions the Python-source backends write (backends/pycodegen.py, pychecks.py): each
statement's `# file:line` comment cites a statement of the function's own export (opdsl/provenance.py),
and each argument is checked by one `_check_arg(...)` call (plus the lines binding its free dims)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import opdsl
from opdsl.errors import CallError

from .harness import PY_BACKENDS, assert_matches, reference

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.op"))
KEYWORDS = ("dim", "input", "param", "let", "export")
COMMENT = re.compile(r"    # (.+):(\d+)  (.*)$")


def statements(text: str) -> list[tuple[str, str, int, set]]:
    """(keyword, name, line, names its text reads) of each statement, read from the .op text by
    itself (not through opdsl): a statement starts at a keyword and runs to the next one."""
    code = re.sub(r"#[^\n]*", "", text)
    starts = [m for m in re.finditer(r"\b(%s)\b" % "|".join(KEYWORDS), code)]
    out = []
    for m, nxt in zip(starts, starts[1:] + [None]):
        body = code[m.end():nxt.start() if nxt else len(code)]
        name, _, rhs = body.partition("=")
        out.append((m.group(1), name.split(":")[0].strip(), code.count("\n", 0, m.start()) + 1,
                    set(re.findall(r"[A-Za-z_]\w*", rhs))))
    return out


def allowed_lines(text: str, export: str) -> set[int]:
    """The lines function `export` may cite: its export statement's, and those of the lets it
    reads, transitively."""
    st = statements(text)
    lets = {name: (line, uses) for kw, name, line, uses in st if kw == "let"}
    (line, uses), = [(line, uses) for kw, name, line, uses in st if kw == "export" and name == export]
    out, todo = {line}, list(uses)
    while todo:
        name = todo.pop()
        if name in lets and lets[name][0] not in out:
            out.add(lets[name][0])
            todo.extend(lets[name][1])
    return out


def citations(source: str) -> dict[str, list[tuple[str, int, str]]]:
    """function name -> the (file, line, quoted text) of each source comment in its body."""
    out: dict = {}
    fn = None
    for line in source.splitlines():
        m = re.match(r"def (\w+)\(", line)
        if m:
            fn = m.group(1)
            out.setdefault(fn, [])
        m = COMMENT.match(line)
        if m and fn is not None:
            out[fn].append((m.group(1), int(m.group(2)), m.group(3)))
    return out


def check_citations(source: str, text: str, exports) -> dict:
    """Every comment of every export's function cites one of its allowed lines, quoting that line."""
    lines = text.split("\n")
    cited = citations(source)
    for export in exports:
        ok = allowed_lines(text, export)
        assert cited[export], f"{export}: no source comment"
        for _, line, quoted in cited[export]:
            assert line in ok, f"{export} cites line {line} ({quoted!r}); its statements are on lines {sorted(ok)}"
            assert lines[line - 1].strip() == quoted
    return cited


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_comments_cite_the_functions_own_statements(path, backend):
    if backend not in PY_BACKENDS:
        pytest.skip(f"{backend} is not installed")
    prog = opdsl.compile_file(path, backend=backend)
    check_citations(prog.source, path.read_text(), prog.functions)


def _lines_cited(path: str, backend: str = "numpy") -> dict:
    prog = opdsl.compile_file(ROOT / "examples" / path, backend=backend)
    return {fn: sorted({line for _, line, _ in c}) for fn, c in citations(prog.source).items()}


def test_monarch_transpose_cites_its_own_export():
    """`monarch(L, R)` is one node in both exports; apply_t's body is its own statement's (line 16)."""
    cited = _lines_cited("monarch.op")
    assert cited["apply"] == [15] and cited["apply_t"] == [16]


def test_woodbury_logdet_cites_logdet_and_the_let_it_uses():
    """logdet_K shares the capacitance matrix with alpha = inv(K) @ y: it cites `let K` and itself."""
    cited = _lines_cited("woodbury.op")
    assert cited["logdet_K"] == [16, 18]
    assert cited["alpha"] == [16, 17] and cited["trace_K"] == [16, 19] and cited["diag_K"] == [16, 20]


SHARED = """dim n = 4
input x : [n, 2]
input A : [n, n]
let B = A @ A
  + A
let C = B @ A
export y = C @ x
export z = (A @ A + A) @ x
"""


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_shared_expression_cites_the_statement_of_the_function(backend):
    """`A @ A + A` is built first for `let B` (a statement over two lines): y reads B through C and
    cites B's first line; z does not read B and cites only itself."""
    prog = opdsl.compile(SHARED, backend=backend, filename="shared.op")
    cited = check_citations(prog.source, SHARED, ["y", "z"])
    assert {line for _, line, _ in cited["z"]} == {8}
    assert 4 in {line for _, line, _ in cited["y"]} and 5 not in {line for _, line, _ in cited["y"]}


def test_traced_functions_cite_their_own_lines():
    """@opdsl.jit programs have no statements: each node cites the Python line it was traced at."""
    import torch

    @opdsl.jit(backend="torch")
    def f(x, d):
        y = opdsl.diag(d) @ x
        return y + opdsl.diag(d) @ y

    x, d = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(f(x, d), d[:, None] * x + d[:, None] * (d[:, None] * x))
    source = next(iter(f._cache.values())).program.source
    here = Path(__file__).read_text().split("\n")
    cited = [c for cs in citations(source).values() for c in cs]
    assert cited and all(here[line - 1].strip() == quoted for _, line, quoted in cited)


# ---- argument checks: one _check_arg call per argument ---------------------------------------------

def _check_lines(source: str, fn: str) -> list[str]:
    body = source.split(f"\ndef {fn}(")[1].split("\n\n\n")[0].splitlines()[2:]
    return [line for line in body[:next(i for i, line in enumerate(body) if COMMENT.match(line))]]


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_one_check_call_per_argument(backend):
    if backend not in PY_BACKENDS:
        pytest.skip(f"{backend} is not installed")
    prog = opdsl.compile_file(ROOT / "examples" / "kron.op", backend=backend)
    lines = _check_lines(prog.source, "apply")
    calls = [line for line in lines if line.startswith("    _check_arg(")]
    assert [re.match(r"    _check_arg\('apply', '(\w+)'", c).group(1) for c in calls] == ["x", "A", "B"]
    # x binds the free dim k and compares its other size; A and B ([a, a], [b, b]) are one line each
    assert lines[1:4] == ["    k = x.shape[1]", "    if x.shape[0] != n:",
                          "        _shape_error('apply', 'x', x, '[n, k]', {'k': k, 'n': n})"]
    assert len(lines) == 6
    assert "_dtype_error(" not in "\n".join(lines) and "_device_error(" not in "\n".join(lines)
    if backend == "torch":         # the device of every argument after the first is compared with x's
        assert all(c.endswith(", x, 'x')") for c in calls[1:])


def test_checks_keep_their_order_and_messages():
    """Within one call: the rank, then the sizes, then the dtype, then the device."""
    import torch
    prog = opdsl.compile("dim n = 4\ninput x : [n, 2]\ninput A : [n, n]\nexport y = A @ x", backend="torch")
    x = torch.ones(4, 2)

    def error(**kw):
        with pytest.raises(CallError) as e:
            prog.y(**kw)
        return e.value.message

    assert error(x=x, A=torch.ones(4, dtype=torch.float64)) == "y(): argument 'A' has shape [4], expected [n, n]"
    assert error(x=x, A=torch.ones(5, 5, dtype=torch.float64)) == \
        "y(): argument 'A' has shape [5, 5], expected [n, n] with n = 4"
    assert error(x=x, A=torch.ones(4, 4, dtype=torch.float64)) == \
        "y(): argument 'A' has dtype float64, expected float32"
    assert error(x=x, A=torch.ones(4, 4, device="meta")) == \
        "y(): argument 'A' is on meta, but 'x' is on cpu; all arguments must be on one device"
    assert error(x=x, A=np.ones((4, 4), np.float32)) == "y(): argument 'A' is a numpy array, expected a torch.Tensor"


GOLDEN = ROOT / "tests" / "golden" / "kron_torch.py"

# Run a generated module in a process where opdsl cannot be imported: drop the
# editable-install finder and the repo from sys.path before anything else.
NO_OPDSL = """
import sys, importlib.util
sys.meta_path = [f for f in sys.meta_path if 'opdsl' not in repr(f).lower() and '__editable__' not in repr(f)]
sys.path = [p for p in sys.path if p not in ('', {root!r}) and '__editable__' not in p]
assert importlib.util.find_spec('opdsl') is None, 'opdsl is importable'
"""


def test_golden_torch_source():
    prog = opdsl.compile_file("examples/kron.op", backend="torch")
    if os.environ.get("OPDSL_UPDATE_GOLDEN"):
        GOLDEN.write_text(prog.source)
    assert prog.source == GOLDEN.read_text(), "generated source changed; rerun with OPDSL_UPDATE_GOLDEN=1 if intended"


def test_one_statement_per_node_with_source_comments():
    src = opdsl.compile_file("examples/diag_lowrank.op", backend="torch").source
    assert "# examples/diag_lowrank.op:12  let A = diag(d) + lowrank(U, V)" in src
    assert "def apply(*, x, d, U, V):" in src
    assert "@ x" in src and "V.mT" in src


def test_deterministic_across_processes():
    code = "import opdsl, sys; sys.stdout.write(opdsl.compile_file('examples/diag_lowrank.op').source)"
    outs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}, check=True).stdout
            for seed in (1, 2, 3)}
    assert len(outs) == 1


def test_compiled_module_imports_without_opdsl(tmp_path):
    from opdsl.cli import main
    out = tmp_path / "kron_layer.py"
    assert main(["compile", "examples/kron.op", "--backend", "torch", "-o", str(out)]) == 0
    script = NO_OPDSL.format(root=str(ROOT)) + f"""
sys.path.insert(0, {str(tmp_path)!r})
import torch, kron_layer
A = torch.randn(64, 64); B = torch.randn(64, 64); x = torch.randn(4096, 5)
y = kron_layer.apply(x=x, A=A, B=B)
ref = torch.kron(A, B) @ x
print(float((y - ref).abs().max() / ref.abs().max()))
"""
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) < 1e-5


def test_numpy_backend_output():
    """The numpy module imports no torch and computes the dense meaning of the program: the stride
    permutation's Cooley-Tukey factorization, (I ⊗ B) L (I ⊗ A) x, on numpy arrays."""
    prog = opdsl.compile_file("examples/stride_perm.op", backend="numpy")
    assert "import torch" not in prog.source
    rng = np.random.default_rng(0)
    x, A, B = (rng.standard_normal(s).astype(np.float32) for s in ((32, 2), (4, 4), (8, 8)))
    y = prog.apply(x=x, A=A, B=B)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    perm = np.eye(32)[np.arange(32).reshape(8, 4).T.reshape(-1)]      # (L x)[i*8 + j] = x[j*4 + i]: stride 4
    by_hand = np.kron(np.eye(4), B) @ perm @ np.kron(np.eye(8), A) @ x
    assert_matches(y, reference(prog, "apply", {"x": x, "A": A, "B": B}), "float32")
    assert_matches(y, by_hand, "float32")


def test_device_follows_arguments():
    prog = opdsl.compile("input x : [4, 2]\nexport y = zeros(3, 4) @ x")
    y = prog.y(x=torch.ones(4, 2, dtype=torch.float32))
    assert y.shape == (3, 2) and y.device == torch.device("cpu") and y.dtype == torch.float32
