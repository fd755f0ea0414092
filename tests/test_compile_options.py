"""Compile options that change the program: softmax_to_favor."""
import importlib.util

import numpy as np
import pytest
import torch

import opdsl

SRC = """
input Q : [2, 64, 16]
input K : [2, 64, 16]
input V : [2, 64, 8]
export y = softmax_attention(Q, K) @ V
"""


@pytest.fixture(scope="module")
def exact():
    return opdsl.compile(SRC, backend="torch")


@pytest.fixture(scope="module")
def favor256():
    return opdsl.compile(SRC, backend="torch", softmax_to_favor=256)


def qkv():
    g = torch.Generator().manual_seed(0)
    return {n: torch.randn(2, 64, s, generator=g) * 0.3 for n, s in (("Q", 16), ("K", 16), ("V", 8))}


def test_softmax_to_favor_replaces_the_exact_kind(exact, favor256):
    approx = favor256
    kinds = {approx.graph.kind(v) for v in approx.graph.live()}
    assert "softmax_attention" not in kinds and "attention" in kinds
    ye, ya = exact.y(**qkv()), approx.y(**qkv())
    rel = float((ye - ya).norm() / ye.norm())
    assert np.isfinite(rel) and rel < 0.5      # an approximation, unbiased in expectation
    assert not torch.allclose(ye, ya)


def test_cli_flag(tmp_path, exact, favor256):
    """`opdsl compile --softmax-to-favor 64 -o a.py` writes the FAVOR+ program with 64 random features:
    the written module computes what the API's softmax_to_favor=64 program computes, which is neither
    the exact softmax nor FAVOR+ with another number of features."""
    from opdsl.cli import main
    src = tmp_path / "a.op"
    src.write_text(SRC)
    out = tmp_path / "a.py"
    assert main(["compile", str(src), "--softmax-to-favor", "64", "-o", str(out)]) == 0
    spec = importlib.util.spec_from_file_location("favor64_written", out)
    written = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(written)
    got = written.y(**qkv())
    torch.testing.assert_close(got, opdsl.compile(SRC, backend="torch", softmax_to_favor=64).y(**qkv()))
    for other in (exact, favor256):
        assert not torch.allclose(got, other.y(**qkv()))
