"""Adding a kind is one file (issue 13): examples/negate_kind.py, copied to a temporary directory
and imported, is a complete kind — the catalogue runs it on every backend and dtype, it composes
with the other kinds through the rules, `@opdsl.jit` and `opdsl explain` know it — with no other
edit to opdsl."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

import opdsl
from opdsl.kinds import CONSTRUCTORS, REGISTRY
from opdsl.kinds.base import unregister

from .harness import BACKENDS, run_against_dense

EXAMPLE = Path(__file__).parent.parent / "examples" / "negate_kind.py"


@pytest.fixture(scope="module")
def negate(tmp_path_factory):
    """The kind, imported from a copy of the example in a temporary directory; removed afterwards."""
    path = tmp_path_factory.mktemp("plugin") / "my_negate.py"
    shutil.copy(EXAMPLE, path)
    assert "negate" not in REGISTRY
    spec = importlib.util.spec_from_file_location("my_negate", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    yield REGISTRY["negate"]
    unregister("negate")
    assert "negate" not in REGISTRY and "negate" not in CONSTRUCTORS


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_catalogue_of_a_kind_from_one_file(negate, dtype):
    assert negate.examples
    for src in negate.examples:
        for backend in BACKENDS:
            run_against_dense(src, backend, dtype)


def test_the_new_kind_composes_with_the_others(negate):
    """Through rules and reassociation: transposes, products with structured kinds, inverse."""
    src = ("dim n = 16\ninput A : [4, 4]\ninput B : [4, 4]\ninput x : [n, 3]\n"
           "export y = negate(kron(A, B)).T @ (2 * x)\n"
           "export z = inv(negate(kron(A, B)) + 20 * eye(n)) @ x")
    for backend in BACKENDS:
        run_against_dense(src, backend, "float64")


def test_jit_and_explain_know_the_new_kind(negate):
    @opdsl.jit(backend="numpy")
    def f(a, x):
        return opdsl.negate(a) @ x

    a = np.arange(12.0).reshape(4, 3)
    x = np.ones((3, 2))
    np.testing.assert_allclose(f(a, x), -(a @ x))
    prog = opdsl.compile("input A : [4, 3]\ninput x : [3, 2]\nexport y = negate(A) @ x", backend="numpy")
    assert "negate" in prog.explain()
