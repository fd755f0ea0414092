"""The catalogue: every registered kind x every backend x float32/float64 against the dense reference.

A kind is covered the moment it is registered: its `examples` are collected
(tests/harness.py, CATALOGUE), and a kind without examples fails `test_every_kind_has_examples`.
"""
import pytest

from opdsl.kinds import REGISTRY

from opdsl.errors import BackendError

from .harness import BACKENDS, CATALOGUE, run_against_dense

try:
    from opdsl.backends.tvm.emit import REFUSED as TVM_REFUSED
except ImportError:              # no tvm installed
    TVM_REFUSED = ()
REFUSED = {"tvm": TVM_REFUSED}


def test_every_kind_has_examples():
    missing = [name for name, kind in REGISTRY.items() if not kind.examples]
    assert not missing, f"kinds without catalogue examples: {missing}"


def test_reference_backends_present():
    assert "numpy" in BACKENDS and "torch" in BACKENDS


# Every kind on every backend in both dtypes.  TVM compiles are the suite's slowest (1-6 s each, FFT
# kinds the most), so on TVM a kind's further examples run in float32 only: its first example covers
# float64 there (the Python backends run every example in both).
CASES = [(kind, i, src, backend, dtype) for kind, i, src in CATALOGUE for backend in BACKENDS
         for dtype in ("float32", "float64") if not (backend == "tvm" and dtype == "float64" and i > 0)]
CASE_IDS = [f"{k}-{i}-{b}-{d}" for k, i, _, b, d in CASES]


@pytest.mark.parametrize("kind,i,src,backend,dtype", CASES, ids=CASE_IDS)
def test_kind_against_dense(kind, i, src, backend, dtype):
    try:
        run_against_dense(src, backend, dtype)
    except BackendError as e:      # only a refusal by name of a primitive the backend declares it refuses
        refused = [p for p in REFUSED.get(backend, ()) if f"primitive {p!r}" in str(e)]
        assert refused, str(e)


def test_refusals_are_declared_and_raised():
    """The TVM backend's emit table refuses exactly what it declares (backends/tvm/emit.py REFUSED)."""
    if "tvm" not in BACKENDS:
        pytest.skip("tvm is not installed")
    from opdsl.backends.tvm.emit import EMIT
    for prim in REFUSED["tvm"]:
        with pytest.raises(BackendError, match=f"primitive {prim!r}"):
            EMIT[prim](None, type("N", (), {"kind": prim, "span": None})(), [])


def test_the_dense_check_is_not_vacuous(monkeypatch):
    """A value off by 1e-3 (relative), or of another shape, fails the check every test above makes."""
    from . import harness
    src = "input A : [3, 3]\ninput B : [2, 2]\ninput x : [6, 2]\nexport y = kron(A, B) @ x"
    prog = run_against_dense(src, "numpy", "float64")
    right = harness.reference
    for wrong in (lambda *a: right(*a) * 1.001, lambda *a: right(*a)[:, :1]):
        monkeypatch.setattr(harness, "reference", wrong)
        with pytest.raises(AssertionError):
            run_against_dense(prog, dtype="float64")
