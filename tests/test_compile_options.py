"""Compile options that change the program: softmax_to_favor."""
import numpy as np
import torch

import opdsl

SRC = """
input Q : [2, 64, 16]
input K : [2, 64, 16]
input V : [2, 64, 8]
export y = softmax_attention(Q, K) @ V
"""


def test_softmax_to_favor_replaces_the_exact_kind():
    exact = opdsl.compile(SRC, backend="torch")
    approx = opdsl.compile(SRC, backend="torch", softmax_to_favor=256)
    kinds = {approx.graph.kind(v) for v in approx.graph.live()}
    assert "softmax_attention" not in kinds and "attention" in kinds
    g = torch.Generator().manual_seed(0)
    Q, K, V = (torch.randn(2, 64, s, generator=g) * 0.3 for s in (16, 16, 8))
    ye, ya = exact.y(Q=Q, K=K, V=V), approx.y(Q=Q, K=K, V=V)
    rel = float((ye - ya).norm() / ye.norm())
    assert np.isfinite(rel) and rel < 0.5      # an approximation, unbiased in expectation
    assert not torch.allclose(ye, ya)


def test_cli_flag(tmp_path):
    from opdsl.cli import main
    src = tmp_path / "a.op"
    src.write_text(SRC)
    out = tmp_path / "a.py"
    assert main(["compile", str(src), "--softmax-to-favor", "64", "-o", str(out)]) == 0
    body = [ln for ln in out.read_text().split("def y(")[1].splitlines() if ln.strip().startswith("t")]
    assert body and not any("softmax" in ln for ln in body) and any("torch.exp" in ln for ln in body)
