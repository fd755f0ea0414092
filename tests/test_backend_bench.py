"""`opdsl bench` and backend="auto" (opdsl/backend_bench.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

import opdsl
from opdsl import backend_bench
from opdsl.backend_bench import Timing, choose, table
from opdsl.cli import main
from opdsl.errors import OpdslError

ROOT = Path(__file__).resolve().parent.parent
SRC = "dim a = 4\ndim k ~ 8\ninput A : [a, a]\ninput B : [a, a]\ninput x : [a * a, k]\n" \
      "export y = kron(A, B) @ x\nexport z = kron(A, B).T @ x\n"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPDSL_CACHE_DIR", str(tmp_path / "cache"))


def test_measure_times_every_export_on_each_backend():
    timings = backend_bench.measure(lambda b: opdsl.compile(SRC, backend=b), ["numpy", "torch"], reps=2)
    assert {(t.backend, t.export) for t in timings} == {(b, e) for b in ("numpy", "torch") for e in ("y", "z")}
    assert all(t.ms is not None and t.ms > 0 and t.compile_s >= 0 for t in timings)
    text = table(timings)
    assert text.splitlines()[0].split() == ["export", "numpy", "torch"] and text.count("*") >= 2
    assert "fastest over all exports:" in text


def test_the_free_dims_take_their_size_hints():
    prog = opdsl.compile(SRC, backend="numpy")
    assert backend_bench.inputs_for(prog, "y")["x"].shape == (16, 8)


def test_choose_takes_the_least_total_among_backends_that_ran_everything():
    t = [Timing("numpy", "y", 1.0, 0.1), Timing("numpy", "z", 5.0, 0.1),
         Timing("torch", "y", 2.0, 0.1), Timing("torch", "z", 2.0, 0.1),
         Timing("tvm", "y", 0.1, 0.1), Timing("tvm", "z", None, 0.1, "BackendError: refused")]
    assert choose(t) == "torch"
    assert "tvm z: BackendError: refused" in table(t)
    with pytest.raises(OpdslError, match="no backend ran every export"):
        choose([Timing("tvm", "y", None, None, "no")])


def test_a_refusal_is_a_row_not_a_crash():
    src = "dim n = 5\ninput W : [n, n] psd\ninput b : [n, 1]\nexport x = inv(W, method=cg) @ b\n"
    timings = backend_bench.measure(lambda b: opdsl.compile(src, backend=b), ["numpy", "tvm"], reps=1)
    tvm = [t for t in timings if t.backend == "tvm"]
    assert tvm and tvm[0].ms is None and "cg" in tvm[0].note
    assert choose(timings) == "numpy"


def test_auto_picks_the_fastest_and_keeps_the_choice(monkeypatch):
    monkeypatch.setattr("opdsl.backends.available", lambda: ["numpy", "torch"])
    prog = opdsl.compile(SRC, backend="auto")
    assert prog.backend_name in ("numpy", "torch") and prog.auto["cached"] is False
    assert prog.backend_name == choose(prog.auto["timings"])

    def no(*a, **k):
        raise AssertionError("measured again")
    monkeypatch.setattr(backend_bench, "measure", no)
    again = opdsl.compile(SRC, backend="auto")
    assert again.auto["cached"] is True and again.backend_name == prog.backend_name
    with pytest.raises(AssertionError, match="measured again"):     # another dtype is another choice
        opdsl.compile(SRC, backend="auto", dtype="float64")


def test_auto_takes_no_backend_options():
    with pytest.raises(OpdslError, match="backend='auto' takes no backend options"):
        opdsl.compile(SRC, backend="auto", target="llvm")


def test_cli_bench(capsys):
    assert main(["bench", str(ROOT / "examples" / "kron.op"), "--backends", "numpy,torch", "--reps", "2"]) == 0
    out = capsys.readouterr().out
    assert "examples/kron.op: 2 backends, dtype float32" in out and "apply" in out and "fastest" in out
    assert main(["bench", str(ROOT / "examples" / "kron.op"), "--backends", "numpy,cuda9"]) == 1
    assert "--backends: cuda9 not available here" in capsys.readouterr().err
