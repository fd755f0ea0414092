"""Foundation workloads: compiled torch vs the dense matrix in torch, same run, 2 threads."""
from __future__ import annotations

import torch

import opdsl

from .common import export_flops, median_ms, other_backends, row, setup_threads

WORKLOADS = [
    # (name, example, dims, free dims, target speed-up)
    ("kron 64x64 (N=4096), 256 cols", "examples/kron.op", {"a": 64, "b": 64}, {"k": 256}, 25),
    ("blockdiag n=4096, 64 blocks, 1024 cols", "examples/blockdiag.op", {"nb": 64, "p": 64}, {"k": 1024}, 8),
    ("diag + lowrank n=16384 r=64, 256 cols", "examples/diag_lowrank.op", {"n": 16384, "r": 64}, {"k": 256}, 60),
]


def dense_matrix(prog, inputs, n):
    """The operator of export `apply` materialized by applying it to the identity (columns in chunks)."""
    cols = []
    for j in range(0, n, 2048):
        eye = torch.zeros(n, min(2048, n - j))
        eye[j:j + eye.shape[1]].copy_(torch.eye(eye.shape[1]))
        cols.append(prog.apply(**{**inputs, "x": eye}))
    return torch.cat(cols, dim=1)


def rows(quick: bool = False):
    setup_threads()
    out = []
    for name, path, dims, free, target in WORKLOADS:
        prog = opdsl.compile_file(path, backend="torch", dims=dims)
        g = prog.graph
        gen = torch.Generator().manual_seed(0)
        inputs = {}
        for arg, shape, dtype, role in g.meta["signatures"]["apply"]:
            concrete = [int(g.dims.subs(d).subs({s: free[s.name] for s in g.dims.subs(d).free_symbols}))
                        for d in shape]
            inputs[arg] = torch.randn(*concrete, generator=gen) / (concrete[-1] ** 0.5)
        x = inputs.pop("x")
        n = x.shape[0]
        M = dense_matrix(prog, inputs, n)
        f_opdsl = lambda: prog.apply(x=x, **inputs)  # noqa: E731
        f_dense = lambda: M @ x  # noqa: E731
        err = float((f_opdsl() - f_dense()).abs().max() / f_dense().abs().max())
        reps = 3 if quick else 9
        t_o = median_ms(f_opdsl, reps)
        t_d = median_ms(f_dense, max(3, reps // 2))
        ratio = 2.0 * n * n * x.shape[1] / export_flops(prog, "apply", **free)
        others = other_backends(prog, "apply", {**inputs, "x": x}, reps)
        out.append(row(name, "dense torch matmul", t_o, t_d, ratio, target, f"rel err {err:.1e}", others))
        del M
    return out
