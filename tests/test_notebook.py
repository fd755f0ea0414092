"""Programs in notebooks: _repr_html_ / _repr_markdown_ (opdsl/notebook.py), the %%opdsl magic
(opdsl/magic.py) under IPython's own shell, and examples/monarch.ipynb run cell by cell."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

IPython = pytest.importorskip("IPython")
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

import opdsl  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SRC = """dim b = 8
dim n = b * b
dim k ~ 16
input x : [n, k]
input A : [b, b]
input B : [b, b]
export y = (kron(A, B) @ x)
export z = inv(kron(A, B)) @ x
"""


@pytest.fixture(scope="module")
def shell():
    os.environ.setdefault("MPLBACKEND", "Agg")          # plt.show() draws nowhere
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "opdsl")
    yield ip
    InteractiveShell.clear_instance()


def test_html_display_has_signatures_costs_rules_and_the_plan():
    prog = opdsl.compile(SRC, backend="numpy")
    html = prog._repr_html_()
    assert "<code>x : [n, k] float32</code>" in html and "<code>A : [b, b] float32</code>" in html
    assert "<code>y</code>" in html and "<code>z</code>" in html
    assert "inv-kron" in html and "fewer" in html
    assert "<svg" in html and "<?xml" not in html                 # inlined, without its prologue
    md = prog._repr_markdown_()
    assert "| `y(x : [n, k] float32, A : [b, b] float32, B : [b, b] float32)` |" in md
    assert md.count("\n| `") == 2


def test_html_escapes_user_text():
    prog = opdsl.compile("input x : [2, 2]\nexport y = x @ x\n", backend="numpy",
                         filename="<script>alert(1)</script>.op")
    html = prog._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;.op" in html


def test_ipython_display_formatter_uses_the_reprs(shell):
    data, _ = shell.display_formatter.format(opdsl.compile(SRC, backend="numpy"))
    assert "<svg" in data["text/html"] and "inv-kron" in data["text/markdown"]


def test_cell_magic_binds_a_program(shell):
    r = shell.run_cell("%%opdsl prog --backend numpy --dim b=4 --dtype float64\n" + SRC)
    assert r.success and r.result is None
    prog = shell.user_ns["prog"]
    assert isinstance(prog, opdsl.Program) and prog.backend_name == "numpy" and prog.filename == "<cell prog>"
    r = shell.run_cell("import numpy as np\n"
                       "A, B, x = np.eye(4), 2 * np.eye(4), np.ones((16, 3))\n"
                       "float(np.abs(prog.y(A=A, B=B, x=x) - 2 * x).max())")
    assert r.success and r.result == 0.0


def test_cell_magic_without_a_name_displays_the_program(shell):
    r = shell.run_cell("%%opdsl --backend numpy\n" + SRC)
    assert r.success and isinstance(r.result, opdsl.Program)


def test_cell_magic_errors_show_the_caret_without_a_traceback(shell, capsys):
    r = shell.run_cell("%%opdsl bad --backend numpy\ninput x : [3, 4]\nexport y = x @ x\n")
    err = capsys.readouterr().err
    assert "bad" not in shell.user_ns or not isinstance(shell.user_ns.get("bad"), opdsl.Program)
    assert "<cell bad>:2:" in err and "^" in err and "Traceback" not in err
    assert r.error_in_exec is None                    # reported, not raised
    r = shell.run_cell("%%opdsl p --backend nope\ninput x : [2, 2]\nexport y = x\n")
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err


def notebook_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_example_notebook_runs(shell, capsys):
    """examples/monarch.ipynb, every code cell in order in one shell (as a kernel runs them)."""
    cells = notebook_cells(ROOT / "examples" / "monarch.ipynb")
    assert any(c.startswith("%%opdsl") for c in cells)
    for src in cells:
        r = shell.run_cell(src, store_history=False)
        assert r.success, (src, r.error_before_exec or r.error_in_exec)
        if src.strip() == "mon":
            data, _ = shell.display_formatter.format(r.result)
            assert "monarch" in data["text/html"] and "<svg" in data["text/html"]
    out = capsys.readouterr().out
    assert "max |Monarch x - M x|" in out and "{64:" in out
