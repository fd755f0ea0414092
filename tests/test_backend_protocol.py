"""The Backend protocol (backends/base.py): backends are declared tables, the rest of opdsl asks a
backend for what it needs instead of comparing its name, and a new Python-source backend is one
file plus its registration."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import opdsl
from opdsl import backends
from opdsl.primitives import PRIMS

from .harness import BACKENDS, CATALOGUE, run_against_dense

ROOT = Path(__file__).resolve().parent.parent

# A throw-away backend: numpy under another name (`import numpy as xp`, so nothing may assume `np`),
# subclassing only the Python-source protocol base and declaring its whole table.  No constants
# (`const`, e.g. FAVOR+ features): a program that needs them is refused with the backend's name.
XP_BACKEND = '''
"""numpy as `xp`: a test backend."""
from opdsl.backends.array_api import array_api_emit, emit_cg
from opdsl.backends.pycodegen import PythonBackend
from opdsl.backends.pyruntime import site


class XpBackend(PythonBackend):
    name = "xp"
    imports = ("import numpy as xp",)
    dtypes = {"float32": "xp.float32", "float64": "xp.float64"}
    reserved = ("xp",)
    array_module, arrays, convert = "numpy", "numpy arrays", "xp.asarray(...)"
    emit = {
        **array_api_emit("xp"),
        "einsum": lambda c, n, a: f"xp.einsum({n.attrs['spec']!r}, {', '.join(a)}, optimize=True)",
        "solve": lambda c, n, a: f"_linalg({site(n.span)!r}, xp.linalg.solve, {a[0]}, {a[1]})",
        "cholesky": lambda c, n, a: f"_linalg({site(n.span)!r}, xp.linalg.cholesky, {a[0]})",
        "cho_solve": lambda c, n, a: (f"_linalg({site(n.span)!r}, xp.linalg.solve, xp.swapaxes({a[0]}, -1, -2), "
                                      f"xp.linalg.solve({a[0]}, {a[1]}))"),
        "solve_triangular": lambda c, n, a: (f"xp.linalg.solve(xp.{'triu' if n.attrs.get('upper', True) else 'tril'}"
                                             f"({a[0]}), {a[1]})"),
        "checked": lambda c, n, a: f"_finite({site(n.span)!r}, {a[0]})",
        "cg": emit_cg,
    }
'''

XP_KINDS = ("kron", "blockdiag", "monarch", "lowrank", "conv", "inv", "logdet")
XP_PROGRAMS = [(k, i, src) for k, i, src in CATALOGUE if k in XP_KINDS]


@pytest.fixture(scope="module")
def xp_backend(tmp_path_factory):
    d = tmp_path_factory.mktemp("xp_backend")
    (d / "opdsl_test_xp_backend.py").write_text(XP_BACKEND)
    sys.path.insert(0, str(d))
    backends.register_backend("xp", "opdsl_test_xp_backend", "XpBackend", "numpy")
    yield "xp"
    backends.unregister_backend("xp")
    sys.path.remove(str(d))
    sys.modules.pop("opdsl_test_xp_backend", None)


def test_a_new_backend_is_one_file_and_its_registration(xp_backend):
    assert "xp" in backends.names() and "xp" in backends.available()
    prog = opdsl.compile(XP_PROGRAMS[0][2], backend="xp")
    assert "import numpy as xp" in prog.source and "np." not in prog.source
    with pytest.raises(opdsl.OpdslError, match="the xp backend has no primitive 'const'"):
        opdsl.compile("input Q : [8, 4]\ninput K : [8, 4]\ninput V : [8, 2]\n"
                      "export y = softmax_attention(Q, K) @ V", backend="xp", softmax_to_favor=16)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind,i,src", XP_PROGRAMS, ids=[f"{k}-{i}" for k, i, _ in XP_PROGRAMS])
def test_the_new_backend_runs_the_catalogue(xp_backend, kind, i, src, dtype):
    try:
        run_against_dense(src, xp_backend, dtype)
    except opdsl.OpdslError as e:     # only the primitives its table leaves out (a stochastic logdet's probes)
        assert any(f"the xp backend has no primitive {p!r}" in str(e) for p in XP_MISSING), str(e)


XP_MISSING = ("const", "kernel_apply", "slq")


def test_jit_asks_the_backend_which_arrays_it_takes(xp_backend):
    torch = pytest.importorskip("torch")

    @opdsl.jit(backend="xp")
    def f(A, x):
        return opdsl.dense(A) @ x

    with pytest.raises(opdsl.OpdslError, match=r"argument 'A' is a torch.Tensor; the xp backend takes numpy "
                                                r"arrays(.|\n)*xp.asarray"):
        f(torch.ones(2, 2), torch.ones(2))


@pytest.mark.parametrize("name", BACKENDS)
def test_every_backend_declares_a_complete_table(name):
    """Every primitive has an entry in each backend's class-level emit table (TVM's `cg` entry
    refuses with a message: it has no such loop)."""
    cls = backends.backend_class(name)
    missing = sorted(set(PRIMS) - set(cls.emit) - {"arg"})
    assert not missing, f"primitives the {name} backend has no emit entry for: {missing}"


def _module_level_mutations(path: Path) -> list[str]:
    """`X.attr = ...`, `X[key] = ...` and `X.update(...)` at a module's top level: a table or class
    changed after it was defined (it must be complete where it is declared)."""
    out = []
    for st in ast.parse(path.read_text()).body:
        targets = st.targets if isinstance(st, ast.Assign) else [st.target] if isinstance(st, ast.AugAssign) else []
        for t in targets:
            if isinstance(t, (ast.Attribute, ast.Subscript)):
                out.append(f"{path.name}:{st.lineno}: {ast.unparse(t)} = ...")
        if isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) and isinstance(st.value.func, ast.Attribute) \
                and st.value.func.attr in ("update", "setdefault", "__setitem__"):
            out.append(f"{path.name}:{st.lineno}: {ast.unparse(st.value)}")
    return out


def test_backend_tables_are_complete_where_they_are_declared(tmp_path):
    files = sorted((ROOT / "backends").rglob("*.py"))
    assert any(f.parent.name == "tvm" for f in files)
    found = [m for f in files for m in _module_level_mutations(f)]
    assert not found, "tables changed after their declaration:\n" + "\n".join(found)
    late = tmp_path / "late.py"         # what the check is for (torch's table before issue 13)
    late.write_text("class B:\n    emit = {}\n\n\nB.emit.update({})\nUNARY = {}\nUNARY['elu1'] = ''\n"
                    "B.layer_lines = None\n")
    assert [m.split(": ", 1)[0] for m in _module_level_mutations(late)] == ["late.py:5", "late.py:7", "late.py:8"]


def test_no_backend_is_asked_for_by_name():
    """The compiler, the command line and @opdsl.jit compare no backend's name with a string: what
    differs between backends is an attribute or method of the backend (backends/base.py)."""
    names = set(backends.names())
    found = []

    def about_a_backend(e):           # `backend == "torch"`, `self.backend_name not in (...)`
        return "backend" in ast.unparse(e)
    for rel in ("opdsl/api.py", "opdsl/cli.py", "opdsl/explain.py", "opdsl/trace.py", "opdsl/jit_function.py",
                "opdsl/jit_cache.py"):
        tree = ast.parse((ROOT / rel).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(about_a_backend(c) for c in [node.left, *node.comparators]):
                for c in [node.left, *node.comparators]:
                    consts = c.elts if isinstance(c, (ast.Tuple, ast.List, ast.Set)) else [c]
                    for k in consts:
                        if isinstance(k, ast.Constant) and k.value in names:
                            found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)
