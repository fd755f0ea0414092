"""The torch backend's compile=True (issue 20, item 2) against the plain torch backend, float32, 2 threads.

Each program compiled twice for torch — plainly and with compile=True (every export through
torch.compile(fullgraph=True), inductor) — checked against each other, then timed interleaved
(median of 9 rounds after the warm-up call, which is where inductor compiles; its time is in
the note).  Workloads: diagonal plus low rank n = 16384, r = 64, 256 columns (an elementwise
diagonal term beside two GEMMs), causal elu+1 linear attention L = 4096, 8 heads, d = 64 (feature
maps, masks and normalizers around the chunked products), Kronecker 64⊗64 with 256 columns and
Monarch n = 4096 with 1024 columns (two GEMMs / batched GEMMs and reshapes: little to fuse).
Quick mode: n = 4096, L = 1024.
"""
from __future__ import annotations

import time

import torch

import opdsl

from .bench_linalg import interleaved
from .common import row, setup_threads

PROGRAMS = {
    "diag + lowrank n={n}, r=64, 256 cols": "dim n = {n}\ninput d : [n]\ninput U : [n, 64]\ninput V : [n, 64]\n"
                                            "input x : [n, 256]\nexport y = (diag(d) + lowrank(U, V)) @ x\n",
    "causal elu1 attention L={L}, 8 heads, d=64": "dim L = {L}\ninput Q : [1, 8, L, 64]\ninput K : [1, 8, L, 64]\n"
                                                  "input V : [1, 8, L, 64]\nexport y = attention(Q, K, causal=true) @ V\n",
    "kron 64x64 (n=4096), 256 cols": "dim a = 64\ninput A : [a, a]\ninput B : [a, a]\ninput x : [a * a, 256]\n"
                                     "export y = kron(A, B) @ x\n",
    "monarch n=4096 (b=64), 1024 cols": "dim b = 64\ndim n = b * b\ninput L : [b, b, b]\ninput R : [b, b, b]\n"
                                        "input x : [n, 1024]\nexport y = monarch(L, R) @ x\n",
}


def rows(quick: bool = False):
    from opdsl.reference import random_inputs
    setup_threads()
    n, L = (4096, 1024) if quick else (16384, 4096)
    out = []
    for title, src in PROGRAMS.items():
        src = src.format(n=n, L=L)
        plain = opdsl.compile(src, backend="torch")
        fast = opdsl.compile(src, backend="torch", compile=True)
        args = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in random_inputs(plain.graph, "y", seed=0).items()}
        t0 = time.perf_counter()
        got = fast.y(**args)                       # inductor compiles here
        first_s = time.perf_counter() - t0
        want = plain.y(**args)
        err = float((got - want).abs().max() / want.abs().max())
        t = interleaved({"fast": lambda: fast.y(**args), "plain": lambda: plain.y(**args)}, reps=3 if quick else 9)
        out.append(row(title.format(n=n, L=L) + " [compile=True]", "torch backend (compile=False)", t["fast"],
                       t["plain"], note=f"first call (inductor's compile) {first_s:.1f} s; max rel. difference "
                                        f"{err:.1e}; fastest runs {t.min['fast']:.2f} / {t.min['plain']:.2f} ms"))
    return out


if __name__ == "__main__":
    import sys
    for r in rows("--quick" in sys.argv):
        print(r)
