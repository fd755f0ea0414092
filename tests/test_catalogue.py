"""The catalogue: every registered kind x every backend x float32/float64 against the dense reference.

A kind is covered the moment it is registered: its `examples` are collected
here, and a kind without examples fails `test_every_kind_has_examples`.
"""
import pytest

from opdsl import backends
from opdsl.kinds import REGISTRY

BACKENDS = backends.available()


def cases():
    for name in sorted(REGISTRY):
        for i, src in enumerate(REGISTRY[name].examples):
            yield name, i, src


CASES = list(cases())


def test_every_kind_has_examples():
    missing = [name for name, kind in REGISTRY.items() if not kind.examples]
    assert not missing, f"kinds without catalogue examples: {missing}"


def test_reference_backends_present():
    assert "numpy" in BACKENDS and "torch" in BACKENDS


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind,i,src", CASES, ids=[f"{k}-{i}" for k, i, _ in CASES])
def test_kind_against_dense(kind, i, src, backend, dtype, check_against_dense):
    check_against_dense(src, backend, dtype)
