"""Scale of programs (docs/reliability.md, "Scale"): a 10,000-operator program and expressions
nested 1,000 deep compile without RecursionError, each in under 10 s of CPU.

The frontend and Graph.live walk trees iteratively; lowering recurses through the kinds
(Kind.lower calls Lowerer.apply / Lowerer.tensor on its operands), so a graph deeper than
opdsl.ir.DEEP is compiled on a thread with a big stack and a raised recursion limit
(opdsl.ir.run_deep).  Time is measured as CPU time (this process, all threads), so a shared
CI machine does not make the limits flaky; verify=False: the budget is for a normal compile.
"""
from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

import opdsl
from opdsl.ir import DEEP

LIMIT_S = 10.0


def compile_timed(src: str, backend: str = "numpy"):
    cpu = time.process_time()
    prog = opdsl.compile(src, backend=backend, verify=False)
    spent = time.process_time() - cpu
    assert spent < LIMIT_S, f"compiling took {spent:.1f} s of CPU"
    return prog


def ten_thousand_operators() -> str:
    """10,000 operator applications in a chain of lets over 100 inputs (orthogonal in the test)."""
    lines = ["dim n = 4", "dim k", "input x : [n, k]"] + [f"input A{i} : [n, n]" for i in range(100)]
    prev = "x"
    for i in range(10_000):
        op = f"A{i % 100}" if i % 7 else f"(A{i % 100} @ A{(i + 1) % 100}.T)"
        lines.append(f"let t{i} = {op} @ {prev}")
        prev = f"t{i}"
    lines.append(f"export y = {prev}")
    lines.append("export z = A0 @ x")
    return "\n".join(lines) + "\n"


def test_ten_thousand_operators():
    src = ten_thousand_operators()
    cpu = time.process_time()
    prog = opdsl.compile(src, backend="numpy", dtype="float64", verify=False)
    assert time.process_time() - cpu < LIMIT_S
    assert prog.functions == ["y", "z"]
    assert prog.graph.count() > 10_000
    rng = np.random.default_rng(0)
    a = {f"A{i}": np.linalg.qr(rng.standard_normal((4, 4)))[0] for i in range(100)}
    x = rng.standard_normal((4, 3))
    y = x
    for i in range(10_000):
        m = a[f"A{i % 100}"] if i % 7 else a[f"A{i % 100}"] @ a[f"A{(i + 1) % 100}"].T
        y = m @ y
    np.testing.assert_allclose(prog.y(x=x, **a), y, atol=1e-9)


def nested(n: int, form: str) -> str:
    """An expression nested n deep (parentheses n deep in the source)."""
    e = "x" if form in ("apply", "tensor") else "A"
    for i in range(n):
        if form == "apply":        # A @ (Aᵀ @ (2 * (A @ ... x)))
            e = [f"(A @ {e})", f"(A.T @ {e})", f"(2 * {e})"][i % 3]
        elif form == "tensor":     # sums and scales of tensors
            e = f"(A @ {e} + x)" if i % 2 else f"({e} - 0.5 * x)"
        elif form == "operator":   # products, sums, scalars, transposes of operators
            e = [f"({e} @ A)", f"({e} + B)", f"(0.5 * {e})", f"({e}).T", f"kron({e}, eye(1))"][i % 5]
        elif form == "sum":
            e = f"({e} + A)"
    body = e if form in ("apply", "tensor") else f"{e} @ x"
    return f"input A : [4, 4]\ninput B : [4, 4]\ninput x : [4, 3]\nexport y = {body}\n"


@pytest.mark.parametrize("form", ["apply", "tensor", "operator", "sum"])
def test_nested_1000_deep(form):
    src = nested(1000, form)
    assert src.count("(") >= 1000
    cpu = time.process_time()
    prog = opdsl.compile(src, backend="numpy", dtype="float64", verify=False)
    assert time.process_time() - cpu < LIMIT_S
    assert prog.graph.depth() >= 1000
    rng = np.random.default_rng(1)
    inputs = {"A": np.eye(4) + 0.001 * rng.standard_normal((4, 4)), "B": 0.001 * rng.standard_normal((4, 4)),
              "x": rng.standard_normal((4, 3))}
    from opdsl.reference import dense_eval      # iterative over the graph: no recursion either
    ref = dense_eval(prog.graph, prog.graph.exports["y"], inputs)
    out = prog.y(**{k: v for k, v in inputs.items() if k in prog.y.params})
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())


def test_deep_program_on_torch_and_in_a_thread():
    """Deep compiles work from any thread (the big-stack thread is nested), on torch too."""
    src = nested(1000, "apply")
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("prog", compile_timed(src, backend="torch")))
    t.start()
    t.join()
    assert "prog" in result
    assert sys.getrecursionlimit() < 50 * 1000      # restored after the deep compile


def test_shallow_programs_stay_on_the_calling_thread(monkeypatch):
    import opdsl.ir as ir
    seen = []
    real = threading.Thread

    class Spy(real):
        def __init__(self, *a, **kw):
            seen.append(kw.get("name"))
            super().__init__(*a, **kw)

    monkeypatch.setattr(threading, "Thread", Spy)
    opdsl.compile(nested(DEEP // 2, "apply"), backend="numpy")
    assert "opdsl-deep-compile" not in seen
    opdsl.compile(nested(DEEP * 2, "apply"), backend="numpy")
    assert "opdsl-deep-compile" in seen
    assert ir.DEEP == DEEP


def test_deep_compile_errors_propagate():
    src = nested(600, "apply").replace("export y = ", "export y = diag(x) @ ")
    with pytest.raises(opdsl.errors.OpdslError):
        opdsl.compile(src, backend="numpy")
    deep_bad = nested(600, "apply").replace("input x : [4, 3]", "input x : [5, 3]")
    with pytest.raises(opdsl.errors.ShapeError) as e:
        opdsl.compile(deep_bad, backend="numpy")
    assert e.value.span is not None and e.value.span.line == 4


def test_deep_dimension_expressions():
    src = "dim n = " + "(" * 1000 + "1" + " + 1)" * 1000 + "\ninput x : [n]\nexport y = 2 * x\n"
    prog = compile_timed(src)
    assert prog.graph.dims.values[prog.graph.dims.symbols["n"]] == 1001


def test_deep_program_through_explain_and_the_cli(tmp_path, capsys):
    """Explain (cost rules recurse through the kinds) and every CLI command on a 1,000-deep program."""
    from opdsl import cli
    src = nested(1000, "operator")
    assert "optimized" in opdsl.compile(src, backend="numpy", verify=False).explain()
    path = tmp_path / "deep.op"
    path.write_text(src)
    for argv in (["check", str(path), "--backend", "numpy"], ["explain", str(path)],
                 ["graph", str(path), "-o", str(tmp_path / "deep.dot")],
                 ["compile", str(path), "--backend", "torch", "-o", str(tmp_path / "deep.py")]):
        assert cli.main(argv) == 0, argv
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "PASS" in out
