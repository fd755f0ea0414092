"""Monarch, butterfly and Householder products: compiled torch against their baselines, 2 threads.

* monarch / butterfly: the dense n x n matrix (built from the definition, in torch) times X;
* householder: a sequential loop of k reflector applications in torch (float64), each an
  in-place rank-1 update (BLAS-2), which is what the blocked compact-WY lowering replaces.
"""
from __future__ import annotations

import math
import time

import torch

import opdsl
from opdsl.kinds.basic import stride_perm_index
from opdsl.kinds.butterfly import split_levels
from opdsl.kinds.householder import HH_BLOCK

from .common import export_flops, median_ms, other_backends, row, setup_threads


def one_thread(f_opdsl, f_base, reps=3):
    """(opdsl ms, baseline ms) with torch on 1 thread: a cross-check for the 2-thread numbers, which
    on a shared, oversubscribed machine also measure how long each parallel kernel waits for its
    second thread (many small kernels suffer more than one large GEMM or an in-place loop)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return median_ms(f_opdsl, reps, warmup=1), median_ms(f_base, reps, warmup=1)
    finally:
        torch.set_num_threads(n)


MONARCH = ("dim b\ndim k\ninput L : [b, b, b]\ninput R : [b, b, b]\ninput x : [b * b, k]\n"
           "export apply = monarch(L, R) @ x")


def monarch_matrix(L, R):
    """P · blockdiag(L) · Pᵀ · blockdiag(R), P = perm(b, b), built from the definition (not the lowering)."""
    b = L.shape[0]
    n = b * b
    idx = torch.from_numpy(stride_perm_index(b, b))
    m = torch.block_diag(*R)[idx]                                  # Pᵀ blockdiag(R)  (P = Pᵀ here)
    m = (L @ m.reshape(b, b, n)).reshape(n, n)                     # blockdiag(L) ·
    return m[idx]                                                  # P ·


def monarch_rows(quick):
    out = []
    cases = [(64, 1024, 6), (128, 1024, 12)] + ([] if quick else [(64, 2048, 6), (128, 2048, 12)])
    for b, k, target in cases:
        n = b * b
        prog = opdsl.compile(MONARCH, backend="torch", dims={"b": b})
        gen = torch.Generator().manual_seed(0)
        L = torch.randn(b, b, b, generator=gen) / math.sqrt(b)
        R = torch.randn(b, b, b, generator=gen) / math.sqrt(b)
        x = torch.randn(n, k, generator=gen)
        M = monarch_matrix(L, R)
        f_o = lambda: prog.apply(L=L, R=R, x=x)  # noqa: E731
        reps = 3 if quick else 7
        t_o = median_ms(f_o, reps)
        note = ""
        if quick and n > 8192:
            # dense time measured on 256 columns and scaled (a GEMM this size is linear in columns)
            xs = x[:, :256].contiguous()
            t_d = median_ms(lambda: M @ xs, 2, warmup=1) * (k / 256)
            err = float((f_o()[:, :256] - M @ xs).abs().max() / (M @ xs).abs().max())
            note = "quick: dense time from 256 columns x k/256; "
        else:
            y = M @ x
            err = float((f_o() - y).abs().max() / y.abs().max())
            t_d = median_ms(lambda: M @ x, max(2, reps // 2), warmup=1)
            if n <= 4096:
                o1, d1 = one_thread(f_o, lambda: M @ x, 2)
                note += f"1 thread: {o1:.0f} vs {d1:.0f} ms ({d1 / o1:.1f}x); "
        ratio = 2.0 * n * n * k / export_flops(prog, "apply", k=k)
        out.append(row(f"monarch n={n} (b={b}), {k} cols, float32", "dense torch matmul", t_o, t_d, ratio,
                       target, note + f"rel err {err:.1e}", other_backends(prog, "apply", {"L": L, "R": R, "x": x},
                                                                           reps)))
        del M
    return out


def butterfly_stages(T, x):
    """The stage-by-stage application (log2 n broadcast passes over x), for reference."""
    lv, half = T.shape[0], T.shape[1]
    n, k = 2 * half, x.shape[-1]
    for s in range(lv):
        st = 1 << s
        t = T[s].reshape(n // (2 * st), st, 2, 2)
        xs = x.reshape(n // (2 * st), 2, st, k)
        x = torch.stack([t[:, :, 0, 0, None] * xs[:, 0] + t[:, :, 0, 1, None] * xs[:, 1],
                         t[:, :, 1, 0, None] * xs[:, 0] + t[:, :, 1, 1, None] * xs[:, 1]], dim=1)
        x = x.reshape(n, k)
    return x


def butterfly_rows(quick):
    out = []
    for lv, k, target in [(12, 1024, 10)] + ([] if quick else [(14, 1024, None)]):
        n = 2 ** lv
        src = (f"dim k\ninput T : [{lv}, {n // 2}, 2, 2]\ninput x : [{n}, k]\n"
               "export apply = butterfly(T) @ x")
        prog = opdsl.compile(src, backend="torch")
        gen = torch.Generator().manual_seed(1)
        T = torch.randn(lv, n // 2, 2, 2, generator=gen) / math.sqrt(2)
        x = torch.randn(n, k, generator=gen)
        M = butterfly_stages(T, torch.eye(n))                       # the dense matrix, from the definition
        f_o = lambda: prog.apply(T=T, x=x)  # noqa: E731
        reps = 3 if quick else 7
        y = M @ x
        err = float((f_o() - y).abs().max() / y.abs().max())
        t_o = median_ms(f_o, reps)
        t_d = median_ms(lambda: M @ x, max(2, reps // 2), warmup=1)
        t_s = median_ms(lambda: butterfly_stages(T, x), max(2, reps // 2), warmup=1)
        o1, d1 = one_thread(f_o, lambda: M @ x, 2)
        b1, b2 = (2 ** a for a in split_levels(lv))
        ratio = 2.0 * n * n * k / export_flops(prog, "apply", k=k)
        out.append(row(f"butterfly n={n}, {k} cols, float32", "dense torch matmul", t_o, t_d, ratio, target,
                       f"Monarch form b1={b1}, b2={b2} (factors built per call); stage-by-stage "
                       f"{t_s:.0f} ms ({t_d / t_s:.1f}x dense); 1 thread: {o1:.0f} vs {d1:.0f} ms ({d1 / o1:.1f}x); "
                       f"rel err {err:.1e}", other_backends(prog, "apply", {"T": T, "x": x}, reps)))
        del M
    return out


def householder_loop(V, x):
    """H_1 ··· H_k x as k rank-1 updates, H_k first (the baseline)."""
    x = x.clone()
    coef = 2.0 / (V * V).sum(0)
    for i in range(V.shape[1] - 1, -1, -1):
        v = V[:, i]
        x.addr_(v, v @ x, alpha=-float(coef[i]))
    return x


def householder_naive(V, x):
    """The textbook loop x <- x - (2 / vᵀv) v (vᵀx), allocating: slower than householder_loop."""
    for i in range(V.shape[1] - 1, -1, -1):
        v = V[:, i]
        x = x - (2.0 / (v @ v)) * torch.outer(v, v @ x)
    return x


def householder_rows(quick):
    out = []
    n = k = 1024
    c = 256
    src = f"dim c\ninput V : [{n}, {k}]\ninput x : [{n}, c]\nexport apply = householder(V) @ x"
    prog = opdsl.compile(src, backend="torch", dtype="float64")
    gen = torch.Generator().manual_seed(2)
    V = torch.randn(n, k, generator=gen, dtype=torch.float64)
    x = torch.randn(n, c, generator=gen, dtype=torch.float64)
    reps = 3 if quick else 7
    y = householder_loop(V, x)
    err = float((prog.apply(V=V, x=x) - y).abs().max() / y.abs().max())
    t_o = median_ms(lambda: prog.apply(V=V, x=x), reps)
    t_l = median_ms(lambda: householder_loop(V, x), reps)
    o1, l1 = one_thread(lambda: prog.apply(V=V, x=x), lambda: householder_loop(V, x))
    naive = "" if quick else f"textbook allocating loop {median_ms(lambda: householder_naive(V, x), 3, 1):.0f} ms; "
    ratio = 2.0 * n * n * c / export_flops(prog, "apply", c=c)
    out.append(row(f"householder n=k={n}, {c} cols, float64", "sequential reflector loop (torch, addr_)",
                   t_o, t_l, ratio, 7, f"compact WY, blocks of {HH_BLOCK}; flop ratio is dense/opdsl; "
                   f"1 thread: {o1:.0f} vs {l1:.0f} ms ({l1 / o1:.1f}x); {naive}rel err vs loop {err:.1e}",
                   other_backends(prog, "apply", {"V": V, "x": x}, reps)))
    # orthogonality in float32 at n = 4096: ‖HᵀH − I‖, largest entry
    n = 4096
    cols = 256 if quick else n
    src = (f"dim c\ninput V : [{n}, {n}]\ninput x : [{n}, c]\n"
           "export apply = householder(V).T @ householder(V) @ x")
    prog = opdsl.compile(src, backend="torch", dtype="float32")
    V = torch.randn(n, n, generator=gen)
    e = torch.eye(n)[:, :cols].contiguous()
    t0 = time.perf_counter()
    err = float((prog.apply(V=V, x=e) - e).abs().max())
    t_o = (time.perf_counter() - t0) * 1e3
    r = {"workload": f"householder n=k={n} float32: max |HᵀH − I| over {cols} columns of I",
         "baseline": "‖HᵀH − I‖ (largest entry)", "flop_ratio": None, "opdsl_ms": t_o, "baseline_ms": None,
         "speedup": None, "target": "<= 1e-4", "met": err <= 1e-4,
         "note": f"max |HᵀH − I| = {err:.2e}, Hᵀ and H both compiled; opdsl_ms is one HᵀH application"}
    out.append(r)
    return out


def rows(quick: bool = False):
    setup_threads()
    return monarch_rows(quick) + butterfly_rows(quick) + householder_rows(quick)


if __name__ == "__main__":
    import sys
    for r in rows("--full" not in sys.argv):
        print(r)
