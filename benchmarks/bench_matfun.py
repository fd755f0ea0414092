"""Matrix functions (issue 15, docs/matfun.md): Shampoo's and M-FAC's preconditioners against the dense
eigendecomposition, the code a user writes by hand, and CoLA (torch CPU, float32, same run).

Workloads (the generated torch code of opdsl.kinds.matfun's rules):
- Shampoo: pow(kron(L, R), -1/4) @ G with psd L, R [64, 64] (N = 4096) and G [N, 256] (256 gradients
  [64, 64], each flattened row-major as a column: examples/shampoo.op's convention).  The rule pow-kron
  makes it two 64 x 64 eigendecompositions.  Against
    * the dense route: eigh of the 4096 x 4096 kron(L, R) (built outside the timing), then
      V diag(λ^(-1/4)) Vᵀ G: target >= 1000x.  One eigh takes 10-30 s here, so it runs twice
      (once when quick) without warm-up;
    * the per-factor code a Shampoo user writes: eigh of L and of R, L^(-1/4) and R^(-1/4) formed,
      then L^(-1/4) G_j R^(-1/4) for every column as two matrix products over all 256: target >= 1x;
    * CoLA's pow of a Kronecker of PSD Dense factors (the bench extra; a row with the reason when absent);
    * method=newton (the coupled Newton inverse root: matrix products only) against method=eigh.
- M-FAC: pow(c I + U Uᵀ, -1/2) @ g (examples/mfac.op's `whitened`, c = 1e-2, U [n, 64]): the rule
  matfun-eye-lowrank, one 64 x 64 eigendecomposition and O(n r²), never n x n.  At n = 16384 the dense
  eigh (a 1 GB matrix, about 64x the n = 4096 time: minutes) is not run: its time is estimated from the
  dense time measured at n = 4096 by n³ scaling, and a second row measures both at n = 4096.

Each opdsl result is checked against its baseline (allclose) before it is timed; the cheap candidates of
a workload are timed round-robin (bench_linalg.interleaved: medians, and the fastest runs in the note).
FLOP counts use the cost rules' convention (an n x n eigh costs 10 n³): the dense side is the cost of the
program as written, the opdsl side that of the optimized program.

Threads: a 64 x 64 eigh takes ~0.15 ms on one thread but 70-150 ms on two when another process keeps
the second core busy (OpenMP's spinning barriers, OMP_WAIT_POLICY unset), and that load comes and goes
within a minute.  Each workload runs with 2 threads (as the other modules) unless a 64 x 64 eigh
probe shows the stall, before its timings or after them (then it runs again on 1 thread): see
timed_workload; every note says which setting, with the probe times.
"""
from __future__ import annotations

import math
import os
import time
import warnings

import torch

import opdsl

from .bench_linalg import fastest, interleaved, opt_flops
from .common import export_flops, other_backends, row, same_columns, setup_threads

SHAMPOO = """dim m = {m}
dim n = {n}
dim k = {k}
input L : [m, m] psd
input R : [n, n] psd
input G : [m * n, k]
export eigh = pow(kron(L, R), -0.25) @ G
export newton = pow(kron(L, R), -0.25, method=newton) @ G
"""
MFAC_C = 1e-2           # examples/mfac.op's damping λ


def _close(got, ref, rtol=2e-3) -> float:
    """The max error of got relative to ref's largest entry; raises when above rtol (a benchmark of a
    wrong answer is not a result)."""
    err = float((got.double() - ref.double()).abs().max() / ref.double().abs().max())
    if not err <= rtol:
        raise AssertionError(f"result differs from the baseline: max rel error {err:.2e} > {rtol:g}")
    return err


def _spd(n, g):
    """A well-conditioned psd factor (eigenvalues within ~[0.35, 2.4]), like an accumulated G Gᵀ + damping."""
    x = torch.randn(n, 4 * n, generator=g)
    return x @ x.T / (4 * n) + 0.1 * torch.eye(n)


def _eigh_probe_ms(threads: int) -> float:
    torch.set_num_threads(threads)
    a = _spd(64, torch.Generator().manual_seed(9))
    times = []
    for _ in range(12):
        t0 = time.perf_counter()
        torch.linalg.eigh(a)
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def _wait_policy() -> str:
    """OMP_WAIT_POLICY as the process started: OpenMP reads it when torch loads it, so a later change
    of os.environ (bench_linalg's setdefault, after benchmarks/run.py has imported torch) does nothing."""
    try:
        env = dict(kv.split(b"=", 1) for kv in open("/proc/self/environ", "rb").read().split(b"\0") if b"=" in kv)
        return env.get(b"OMP_WAIT_POLICY", b"unset").decode()
    except OSError:
        return os.environ.get("OMP_WAIT_POLICY", "unset")


STALL = 5     # a program this many times slower with 2 threads than with 1: OpenMP threads stalling


def _median_ms(fn, threads, reps=5):
    torch.set_num_threads(threads)
    return interleaved({"f": fn}, reps)["f"]


def timed_workload(workload, quick, reps) -> list[dict]:
    """The rows of workload(quick, reps, note) -> (rows, [(name, ms, call)]), timed with 2 torch threads
    as the other modules, or with 1 when 2 stall: before the timings a 64 x 64 eigh probe, after them
    each opdsl call the workload timed (ms: its median with 2 threads) is timed again with 1 thread;
    more than STALL x slower with 2 than with 1 runs the workload again with 1 thread (the load of the
    machine changes within a minute).  Every row's note says which setting, with the probe times."""
    t2, t1 = _eigh_probe_ms(2), _eigh_probe_ms(1)
    policy = f"OMP_WAIT_POLICY at start: {_wait_policy()}"
    threads = 1 if t2 > STALL * t1 else 2
    setup_threads(threads)
    note = (f"torch threads = {threads} (probe before the timings, a 64x64 eigh: {t2:.3g} ms with 2 threads, "
            f"{t1:.3g} ms with 1; {policy})")
    got, calls = workload(quick, reps, note)
    if threads == 2:
        one = {name: _median_ms(call, 1) for name, _, call in calls}
        stalled = [f"{name} {ms:.3g} ms with 2 vs {one[name]:.3g} ms with 1" for name, ms, _ in calls
                   if ms > STALL * one[name]]
        setup_threads(2)
        if stalled:
            threads = 1
            setup_threads(threads)
            note = (f"torch threads = 1, run again: 2 threads stalled during the first run (after it: "
                    f"{'; '.join(stalled)}); {policy}")
            got, _ = workload(quick, reps, note)
        else:
            for r in got:
                r["note"] += "; no stall: after the timings, with 1 thread " + ", ".join(
                    f"{name} {one[name]:.3g} ms" for name, _, _ in calls)
    return got


def _apply_pow(w, v, x, p):
    """V diag(w^p) Vᵀ x for an eigendecomposition (w ascending, v columns), eigenvalues clamped at tiny."""
    return v @ (w.clamp_min(torch.finfo(w.dtype).tiny).pow(p)[:, None] * (v.T @ x))


def _factor_pow(a, p):
    """a^p [n, n] for a symmetric psd a, formed from its eigendecomposition."""
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(torch.finfo(w.dtype).tiny).pow(p)) @ v.T


def shampoo_by_hand(L, R, G):
    """What a Shampoo user writes: L^(-1/4) G_j R^(-1/4) for the gradients G_j [m, n] stored as the
    row-major columns of G [m n, k].  G viewed as [m, n k] puts G_j's row i in row i, so L^(-1/4)
    applies as one product; the result viewed as [m, n, k] has G_j's columns along axis 1, where
    R^(-1/4) applies (symmetric: vec(A G Bᵀ) = kron(A, B) vec(G), and Bᵀ = B)."""
    m, n, k = L.shape[0], R.shape[0], G.shape[1]
    left = _factor_pow(L, -0.25) @ G.reshape(m, n * k)
    return (_factor_pow(R, -0.25) @ left.reshape(m, n, k)).reshape(m * n, k)


def _cola():
    try:
        import cola  # noqa: F401
        return cola
    except Exception as e:          # noqa: BLE001 - a broken optional install is "absent" too
        return e


def shampoo_rows(quick, reps, note):
    m = 32 if quick else 64
    k = 64 if quick else 256
    big = m * m
    prog = opdsl.compile(SHAMPOO.format(m=m, n=m, k=k), backend="torch")
    g = torch.Generator().manual_seed(0)
    L, R = _spd(m, g), _spd(m, g)
    G = torch.randn(big, k, generator=g)
    args = dict(L=L, R=R, G=G)
    f_o = lambda: prog.eigh(**args)  # noqa: E731
    f_n = lambda: prog.newton(**args)  # noqa: E731
    work = f"pow(kron(L, R), -1/4) @ G, L, R {m}x{m} (N={big}), {k} cols"
    flops_o = opt_flops(prog, "eigh")
    out = []

    # the dense route, timed first: its result is the check of opdsl's
    K = torch.kron(L, R)
    dense_out = []

    def dense():
        w, v = torch.linalg.eigh(K)
        dense_out.append(_apply_pow(w, v, G, -0.25))
    dense_runs = 1 if quick else 2
    td = interleaved({"dense": dense}, dense_runs, warmup=0)
    err_d = _close(f_o(), dense_out[0])
    dense_out.clear()

    cands = {"o": f_o, "hand": lambda: shampoo_by_hand(L, R, G), "newton": f_n}
    cola_note = ""
    cola = _cola()
    if not isinstance(cola, Exception):
        from cola.ops import Dense, Kronecker
        # CoLA 0.0.7 dispatches pow(Kronecker, alpha, alg) to its factors only when an algorithm is
        # passed: cola.linalg.pow(K, p) without one takes the generic rule (a dense eigh of the product)
        cands["cola"] = lambda: cola.linalg.pow(Kronecker(cola.PSD(Dense(L)), cola.PSD(Dense(R))), -0.25,
                                                cola.linalg.Auto()) @ G
        small = Kronecker(cola.PSD(Dense(L[:4, :4])), cola.PSD(Dense(R[:2, :2])))
        generic = type(cola.linalg.pow(small, -0.25)).__name__.split("[")[0]
        cola_note = (f"CoLA {getattr(cola, '__version__', '?')}: pow(Kronecker(PSD(Dense(L)), PSD(Dense(R))), -0.25, "
                     f"Auto()), factor-wise eigh; without the alg argument its pow is a {generic} "
                     "(the dense eigendecomposition of the product)")
    errs = {"hand": _close(f_o(), cands["hand"]()), "newton": _close(f_n(), f_o(), rtol=1e-2)}
    steps, res = next(iter(prog.module.NEWTON_RESIDUALS.values()))     # both factors record under one site: the last
    if "cola" in cands:
        errs["cola"] = _close(f_o(), cands["cola"]())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # CoLA's casts; Newton's non-convergence is in the note
        t = interleaved(cands, reps)
    others = other_backends(prog, "eigh", args, reps)

    out.append(row(f"Shampoo {work}", f"dense torch eigh of the {big}x{big} kron(L, R)", t["o"], td["dense"],
                   export_flops(prog, "eigh") / flops_o, 1000,
                   f"rule pow-kron: two {m}x{m} eigh; dense eigh timed {dense_runs}x without warm-up "
                   f"(median of {dense_runs}); max rel err vs dense {err_d:.1e}; {note}", others))

    # by hand: two eigh (10 m³ each, the cost rules' convention), forming each power (2 m³), two products
    hand_flops = 2 * (10 + 2) * m ** 3 + 2 * 2 * big * k * m
    out.append(row(f"Shampoo {work}", "hand-written torch: eigh(L), eigh(R), L^-1/4 G R^-1/4", t["o"], t["hand"],
                   hand_flops / flops_o, 1,
                   f"opdsl applies Vᵀ, diag, V to the [{m}, {m * k}] block (4 products) where the hand code forms "
                   f"L^-1/4 = V diag Vᵀ ({m}³) and applies it once (2 products); max rel diff {errs['hand']:.1e}; "
                   f"{fastest(t, 'o', 'hand')}; {note}", same_columns(others)))

    if isinstance(cola, Exception):
        out.append(row(f"Shampoo {work}", "CoLA pow(Kronecker)", t["o"], None,
                       note=f"skipped: CoLA not available ({type(cola).__name__}: {str(cola)[:60]}); "
                       "pip install -e '.[bench]' into .venv", others=same_columns(others)))
    else:
        out.append(row(f"Shampoo {work}", "CoLA pow(Kronecker)", t["o"], t["cola"], None, None,
                       f"{cola_note}; max rel diff {errs['cola']:.1e}; {fastest(t, 'o', 'cola')}; {note}",
                       same_columns(others)))

    # Newton: per step and factor, root + 1 = 5 products of m x m (x M_p, M_p⁴ M), then two applications
    newton_flops = 2 * steps * 5 * 2 * m ** 3 + 2 * 2 * big * k * m
    out.append(row(f"Shampoo {work}, method=newton", "the same with method=eigh (opdsl)", t["newton"], t["o"],
                   flops_o / newton_flops, None,
                   f"coupled Newton inverse root (tol 1e-6, float32): {steps} steps, max |M - I| {res:.1e}"
                   f"{' (not converged)' if not res <= 1e-6 else ''}; max rel diff vs eigh {errs['newton']:.1e}; "
                   f"FLOPs counted from the steps taken; {fastest(t, 'newton', 'o')}; {note}",
                   other_backends(prog, "newton", args, reps)))
    return out, [("opdsl eigh", t["o"], f_o), ("newton", t["newton"], f_n)]


def _mfac(n, r):
    prog = opdsl.compile_file("examples/mfac.op", backend="torch", dims={"d": n, "m": r})
    g = torch.Generator().manual_seed(1)
    U = torch.randn(n, r, generator=g) / math.sqrt(n)      # Uᵀ U ~ I: F's spectrum is 1e-2 and ~1
    x = torch.randn(n, generator=g)
    return prog, U, x


def mfac_rows(quick, reps, note):
    r = 64
    n_big, n_dense = (4096, 1024) if quick else (16384, 4096)
    scale = (n_big / n_dense) ** 3
    out = []

    # at n_dense: opdsl and the dense route, both measured
    small, U_s, x_s = _mfac(n_dense, r)
    F = MFAC_C * torch.eye(n_dense) + U_s @ U_s.T
    dense_out = []

    def dense():
        w, v = torch.linalg.eigh(F)
        dense_out.append(_apply_pow(w, v, x_s[:, None], -0.5)[:, 0])
    dense_runs = 1 if quick else 2
    td = interleaved({"dense": dense}, dense_runs, warmup=0)
    f_small = lambda: small.whitened(Gs=U_s, g=x_s)  # noqa: E731
    err = _close(f_small(), dense_out[0])
    t_small = interleaved({"o": f_small}, reps)
    ratio_small = export_flops(small, "whitened") / opt_flops(small, "whitened")

    # at n_big: opdsl measured; checked without a dense matrix: F y = x for y = F^(-1/2) F^(-1/2) x
    prog, U, x = _mfac(n_big, r)
    f_o = lambda: prog.whitened(Gs=U, g=x)  # noqa: E731
    half = prog.whitened(Gs=U, g=f_o())
    back = MFAC_C * half + U @ (U.T @ half)
    err_big = _close(back, x)
    t_big = interleaved({"o": f_o}, reps)
    est_ms = td["dense"] * scale
    dense_flops_big = export_flops(prog, "whitened")
    args = dict(Gs=U, g=x)
    out.append(row(f"M-FAC pow(1e-2 I + U Uᵀ, -1/2) @ g, n={n_big}, r={r} (examples/mfac.op whitened)",
                   f"dense eigh of the {n_big}x{n_big} matrix, ESTIMATED", t_big["o"], est_ms,
                   dense_flops_big / opt_flops(prog, "whitened"), None,
                   f"rule matfun-eye-lowrank ({r}x{r} eigh, O(n r²)); dense ms is an estimate, not run: the dense "
                   f"time measured at n={n_dense} ({td['dense']:.0f} ms) x ({n_big}/{n_dense})³; check without a "
                   f"dense matrix: F (F^-1/2 F^-1/2 g) = g to {err_big:.1e}; {note}",
                   other_backends(prog, "whitened", args, reps)))
    out.append(row(f"M-FAC pow(1e-2 I + U Uᵀ, -1/2) @ g, n={n_dense}, r={r}",
                   f"dense eigh of the {n_dense}x{n_dense} matrix (measured)", t_small["o"], td["dense"],
                   ratio_small, None,
                   f"dense eigh timed {dense_runs}x without warm-up (median); max rel err vs dense {err:.1e}; {note}"))
    return out, [(f"opdsl n={n_dense}", t_small["o"], f_small), (f"opdsl n={n_big}", t_big["o"], f_o)]


def rows(quick: bool = False) -> list[dict]:
    torch.set_grad_enabled(False)
    reps = 5 if quick else 15
    out = []
    try:
        for workload in (shampoo_rows, mfac_rows):     # the thread setting is chosen for each workload
            out += timed_workload(workload, quick, reps)
        return out
    finally:
        torch.set_grad_enabled(True)
        setup_threads()


if __name__ == "__main__":
    import sys
    for r in rows("--quick" in sys.argv):
        print(r)
