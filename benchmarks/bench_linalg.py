"""Structured inverses and log-determinants (docs/linalg.md) against dense torch, CoLA and linear_operator.

Workloads (float64, torch backend, 2 threads):
- Woodbury solve  inv(diag(d) + U Vᵀ) @ B, n = 4096, r = 64, 16 right-hand sides, vs torch.linalg.solve
  (LU) on the dense matrix: target >= 300x;
- the symmetric case diag(d) + U Uᵀ (solve and logdet by the determinant lemma) vs dense Cholesky,
  CoLA and linear_operator (LowRankRootAddedDiagLinearOperator: its own Woodbury);
- Kronecker 64 ⊗ 64 solve (16 right-hand sides) and logdet vs dense LU / slogdet: target >= 50x,
  and CoLA / linear_operator on the same operators;
- conjugate gradients on a Kronecker kernel plus noise (no closed form) vs dense Cholesky;
- per-call overhead of a 2 x 2 and an 8 x 8 dense solve vs calling torch.linalg.solve directly:
  target within 2x (speed-up >= 0.5).

Every workload times its candidates round-robin (each repetition runs all of them once) so that
the load of a shared machine hits them alike; the times are medians after a warm-up.  The dense
matrices are built once, outside the timing.  Peer libraries are optional: a missing one gives a
row with a note instead of a time.
"""
from __future__ import annotations

import os
import statistics
import time
import warnings

# On a shared machine, OpenMP threads that spin while waiting steal the CPU from the other thread
# of the same process: programs of many small kernels (a Woodbury solve) then wait ~ms per kernel
# while one big LU does not.  Passive waiting (set before torch is first imported) measures what an
# unloaded machine would show; benchmarks/run.py should set it before importing torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import opdsl  # noqa: E402
from opdsl.cost import Evaluator, graph_flops  # noqa: E402

from .common import other_backends, row, same_columns, setup_threads  # noqa: E402

N, R, K = 4096, 64, 16
A_SIZE = 64

WOODBURY = f"""dim n = {N}
dim r = {R}
dim k = {K}
input d : [n] float64
input U : [n, r] float64
input V : [n, r] float64
input B : [n, k] float64
export solve = inv(diag(d) + lowrank(U, V)) @ B
export solve_spd = inv(diag(d) + lowrank(U, U)) @ B
export logdet_spd = logdet(diag(d) + lowrank(U, U))
"""

KRON = f"""dim a = {A_SIZE}
dim b = {A_SIZE}
dim k = {K}
input KA : [a, a] float64
input KB : [b, b] float64
input B : [a * b, k] float64
export solve = inv(kron(KA, KB)) @ B
export logdet = logdet(kron(KA, KB))
"""

CG = """dim a = 64
dim b = 64
dim k = 16
input KA : [a, a] float64
input KB : [b, b] float64
input B : [a * b, k] float64
export solve = inv(kron(KA, KB) + 0.1 * eye(a * b), method=cg, tol=1e-8, maxiter=500, precond=jacobi) @ B
"""

SMALL = "input W : [{n}, {n}] float64\ninput b : [{n}, 1] float64\nexport y = inv(W) @ b"


class Times(dict):
    """Median milliseconds per candidate; .min holds the fastest run of each."""


def interleaved(cands: dict, reps: int, inner: int = 1, warmup: int = 1) -> Times:
    """Median milliseconds per call of each candidate, timed round-robin (and the minimum, in .min)."""
    for f in cands.values():
        for _ in range(warmup):
            f()
    times = {k: [] for k in cands}
    for _ in range(reps):
        for k, f in cands.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            times[k].append((time.perf_counter() - t0) * 1e3 / inner)
    out = Times({k: statistics.median(v) for k, v in times.items()})
    out.min = {k: min(v) for k, v in times.items()}
    return out


def fastest(t: Times, a: str = "o", b: str = "dense") -> str:
    """A note comparing the fastest runs (less sensitive to a loaded machine than the medians)."""
    return f"fastest runs {t.min[a]:.3g} vs {t.min[b]:.3g} ms ({t.min[b] / t.min[a]:.1f}x)"


def relerr(a, b) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).norm() / b.norm())


def opt_flops(prog, export) -> float:
    g = prog.optimized
    return Evaluator(g.dims).num(graph_flops(g, [g.exports[export]]))


def _peers():
    out = {}
    try:
        import cola  # noqa: F401
        out["cola"] = cola
    except Exception as e:          # noqa: BLE001 - a broken optional install is "absent" too
        out["cola"] = e
    try:
        import linear_operator  # noqa: F401
        out["linear_operator"] = linear_operator
    except Exception as e:          # noqa: BLE001
        out["linear_operator"] = e
    return out


def _absent(workload, peer, err, t_o):
    return row(workload, peer, t_o, None, note=f"{peer} not available ({type(err).__name__}); "
                "pip install cola-ml linear_operator into .venv (torch stays 2.13.0)")


def woodbury_rows(reps, peers):
    prog = opdsl.compile(WOODBURY, backend="torch")
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    d = torch.rand(N, generator=g, dtype=torch.float64) + 1.0
    U, V, B = r(N, R) / 8, r(N, R) / 8, r(N, K)
    M = torch.diag(d) + U @ V.T
    S = torch.diag(d) + U @ U.T
    dense_lu = 2 / 3 * N ** 3 + 2 * N * N * K
    dense_chol = 1 / 3 * N ** 3 + 2 * N * N * K
    rows = []

    # general D + U Vᵀ vs dense LU
    ref = torch.linalg.solve(M, B)
    f_o = lambda: prog.solve(d=d, U=U, V=V, B=B)  # noqa: E731
    err = relerr(f_o(), ref)
    t = interleaved({"o": f_o, "dense": lambda: torch.linalg.solve(M, B)}, reps)
    rows.append(row(f"Woodbury solve diag+UVᵀ n={N} r={R} k={K} f64", "dense torch.linalg.solve (LU)",
                     t["o"], t["dense"], dense_lu / opt_flops(prog, "solve"), 300,
                     f"rel err {err:.1e}; {fastest(t)}", other_backends(prog, "solve", dict(d=d, U=U, V=V, B=B), reps)))
    cola = peers["cola"]
    if isinstance(cola, Exception):
        rows.append(_absent("Woodbury solve diag+UVᵀ", "CoLA", cola, t["o"]))
    else:
        from cola.ops import Dense, Diagonal, Product, Sum   # (`+` is ambiguous under plum here: build Sum)
        op = lambda: Sum(Diagonal(d), Product(Dense(U), Dense(V.T)))  # noqa: E731
        f_c = lambda: cola.solve(op(), B, cola.LU())  # noqa: E731
        e = relerr(f_c(), ref)
        tc = interleaved({"o": f_o, "c": f_c}, max(2, reps // 2))
        rows.append(row(f"Woodbury solve diag+UVᵀ n={N} r={R} k={K} f64", "CoLA 0.0.7 solve (LU)",
                         tc["o"], tc["c"], note=f"CoLA has no Woodbury rule for a general U Vᵀ (its default, "
                         f"GMRES, is slower); its rel err {e:.1e}; {fastest(tc, 'o', 'c')}"))

    # symmetric D + U Uᵀ: solve and logdet vs dense Cholesky and the peers
    ref = torch.linalg.solve(S, B)
    ref_ld = float(torch.linalg.slogdet(S)[1])
    f_s = lambda: prog.solve_spd(d=d, U=U, B=B)  # noqa: E731
    f_l = lambda: prog.logdet_spd(d=d, U=U)  # noqa: E731
    cands_s = {"o": f_s, "dense": lambda: torch.cholesky_solve(B, torch.linalg.cholesky(S))}
    cands_l = {"o": f_l, "dense": lambda: torch.linalg.slogdet(S)[1]}
    notes_s, notes_l = {}, {}
    if not isinstance(cola, Exception):
        from cola.ops import Dense, Diagonal, Product, Sum
        spd = lambda: cola.PSD(Sum(Diagonal(d), Product(Dense(U), Dense(U.T))))  # noqa: E731
        cands_s["cola"] = lambda: cola.solve(spd(), B)
        cands_l["cola"] = lambda: cola.logdet(spd(), cola.Cholesky())
        notes_s["cola"] = "CoLA auto algorithm (CG, tol 1e-6)"
        notes_l["cola"] = "CoLA logdet (Cholesky of the dense matrix: no determinant lemma)"
    lo = peers["linear_operator"]
    if not isinstance(lo, Exception):
        from linear_operator.operators import (DiagLinearOperator, LowRankRootAddedDiagLinearOperator,
                                               LowRankRootLinearOperator)
        lop = lambda: LowRankRootAddedDiagLinearOperator(LowRankRootLinearOperator(U), DiagLinearOperator(d))  # noqa
        cands_s["lo"] = lambda: lop().solve(B)
        cands_l["lo"] = lambda: lop().logdet()
        notes_s["lo"] = notes_l["lo"] = "linear_operator LowRankRootAddedDiag (its own Woodbury / lemma)"
    errs_s = {k: relerr(f(), ref) for k, f in cands_s.items()}
    errs_l = {k: abs(float(f()) - ref_ld) / abs(ref_ld) for k, f in cands_l.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = interleaved(cands_s, reps)
        tl = interleaved(cands_l, reps)
    w = f"diag+UUᵀ n={N} r={R}"
    os_, ol = other_backends(prog, "solve_spd", dict(d=d, U=U, B=B), reps), other_backends(prog, "logdet_spd",
                                                                                          dict(d=d, U=U), reps)
    rows.append(row(f"Woodbury solve {w} k={K} f64", "dense torch Cholesky solve", ts["o"], ts["dense"],
                    dense_chol / opt_flops(prog, "solve_spd"), None, f"rel err {errs_s['o']:.1e}; {fastest(ts)}",
                    os_))
    rows.append(row(f"logdet {w} (determinant lemma) f64", "dense torch.linalg.slogdet", tl["o"], tl["dense"],
                    (2 / 3 * N ** 3) / opt_flops(prog, "logdet_spd"), None,
                    f"rel err {errs_l['o']:.1e}; {fastest(tl)}", ol))
    for key, label in (("cola", "CoLA 0.0.7"), ("lo", "linear_operator 0.6")):
        peer = peers["cola" if key == "cola" else "linear_operator"]
        if isinstance(peer, Exception):
            rows.append(_absent(f"Woodbury solve {w}", label, peer, ts["o"]))
            continue
        rows.append(row(f"Woodbury solve {w} k={K} f64", label, ts["o"], ts[key],
                        note=f"{notes_s[key]}; its rel err {errs_s[key]:.1e}; {fastest(ts, 'o', key)}",
                        others=same_columns(os_)))
        rows.append(row(f"logdet {w} f64", label, tl["o"], tl[key],
                        note=f"{notes_l[key]}; its rel err {errs_l[key]:.1e}; {fastest(tl, 'o', key)}",
                        others=same_columns(ol)))
    return rows


def kron_rows(reps, peers):
    prog = opdsl.compile(KRON, backend="torch")
    g = torch.Generator().manual_seed(2)

    def spd(m):
        q = torch.randn(m, m, generator=g, dtype=torch.float64)
        return q @ q.T / m + torch.eye(m, dtype=torch.float64)
    KA, KB = spd(A_SIZE), spd(A_SIZE)
    B = torch.randn(A_SIZE * A_SIZE, K, generator=g, dtype=torch.float64)
    M = torch.kron(KA, KB)
    n = A_SIZE * A_SIZE
    ref = torch.linalg.solve(M, B)
    ref_ld = float(torch.linalg.slogdet(M)[1])
    cands_s = {"o": lambda: prog.solve(KA=KA, KB=KB, B=B), "dense": lambda: torch.linalg.solve(M, B)}
    cands_l = {"o": lambda: prog.logdet(KA=KA, KB=KB), "dense": lambda: torch.linalg.slogdet(M)[1]}
    notes = {}
    cola = peers["cola"]
    if not isinstance(cola, Exception):
        from cola.ops import Dense, Kronecker
        cands_s["cola"] = lambda: cola.solve(Kronecker(Dense(KA), Dense(KB)), B)
        cands_l["cola"] = lambda: cola.logdet(Kronecker(Dense(KA), Dense(KB)))
        notes["cola"] = "CoLA Kronecker (factor-wise LU)"
    lo = peers["linear_operator"]
    if not isinstance(lo, Exception):
        from linear_operator.operators import DenseLinearOperator, KroneckerProductLinearOperator
        kp = lambda: KroneckerProductLinearOperator(DenseLinearOperator(KA), DenseLinearOperator(KB))  # noqa
        cands_s["lo"] = lambda: kp().solve(B)
        cands_l["lo"] = lambda: kp().logdet()
        notes["lo"] = "linear_operator KroneckerProduct (factor-wise)"
    errs_s = {k: relerr(f(), ref) for k, f in cands_s.items()}
    errs_l = {k: abs(float(f()) - ref_ld) / abs(ref_ld) for k, f in cands_l.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = interleaved(cands_s, reps)
        tl = interleaved(cands_l, reps)
    w = f"kron {A_SIZE}⊗{A_SIZE} (N={n})"
    os_, ol = other_backends(prog, "solve", dict(KA=KA, KB=KB, B=B), reps), other_backends(prog, "logdet",
                                                                                          dict(KA=KA, KB=KB), reps)
    rows = [row(f"{w} solve k={K} f64", "dense torch.linalg.solve (LU)", ts["o"], ts["dense"],
                (2 / 3 * n ** 3 + 2 * n * n * K) / opt_flops(prog, "solve"), 50,
                f"rel err {errs_s['o']:.1e}; {fastest(ts)}", os_),
            row(f"{w} logdet f64", "dense torch.linalg.slogdet", tl["o"], tl["dense"],
                (2 / 3 * n ** 3) / opt_flops(prog, "logdet"), 50, f"rel err {errs_l['o']:.1e}; {fastest(tl)}", ol)]
    for key, label in (("cola", "CoLA 0.0.7"), ("lo", "linear_operator 0.6")):
        peer = peers["cola" if key == "cola" else "linear_operator"]
        if isinstance(peer, Exception):
            rows.append(_absent(w, label, peer, ts["o"]))
            continue
        rows.append(row(f"{w} solve k={K} f64", label, ts["o"], ts[key],
                        note=f"{notes[key]}; its rel err {errs_s[key]:.1e}; {fastest(ts, 'o', key)}",
                        others=same_columns(os_)))
        rows.append(row(f"{w} logdet f64", label, tl["o"], tl[key],
                        note=f"{notes[key]}; its rel err {errs_l[key]:.1e}; {fastest(tl, 'o', key)}",
                        others=same_columns(ol)))
    return rows


def cg_rows(reps):
    prog = opdsl.compile(CG, backend="torch")
    g = torch.Generator().manual_seed(3)

    def spd(m):
        q = torch.randn(m, m, generator=g, dtype=torch.float64)
        return q @ q.T / m
    KA, KB = spd(64), spd(64)
    B = torch.randn(4096, K, generator=g, dtype=torch.float64)
    M = torch.kron(KA, KB) + 0.1 * torch.eye(4096, dtype=torch.float64)
    f_o = lambda: prog.solve(KA=KA, KB=KB, B=B)  # noqa: E731
    err = relerr(f_o(), torch.linalg.solve(M, B))
    steps, res = next(iter(prog.module.CG_RESIDUALS.values()))
    t = interleaved({"o": f_o, "dense": lambda: torch.cholesky_solve(B, torch.linalg.cholesky(M))}, reps)
    return [row("CG kron 64⊗64 + 0.1 I, k=16, tol 1e-8, Jacobi f64", "dense torch Cholesky solve", t["o"], t["dense"],
                None, None, f"{steps} steps, relative residual {res:.1e}, rel err {err:.1e}; {fastest(t)}",
                other_backends(prog, "solve", dict(KA=KA, KB=KB, B=B), reps))]


def small_rows(reps):
    rows = []
    for n in (2, 8):
        prog = opdsl.compile(SMALL.format(n=n), backend="torch")
        g = torch.Generator().manual_seed(n)
        W = torch.randn(n, n, generator=g, dtype=torch.float64) + 3 * torch.eye(n, dtype=torch.float64)
        b = torch.randn(n, 1, generator=g, dtype=torch.float64)
        y = prog.y
        t = interleaved({"o": lambda: y(W=W, b=b), "torch": lambda: torch.linalg.solve(W, b)},
                        reps * 6, inner=200, warmup=50)
        rows.append(row(f"dense {n}x{n} solve f64, per call", "torch.linalg.solve called directly",
                         t["o"], t["torch"], 1.0, 0.5,
                        "overhead: argument checks + the singular check; target: opdsl within 2x of torch; "
                        + fastest(t, "o", "torch"), other_backends(prog, "y", dict(W=W, b=b), reps * 20)))
    return rows


def rows(quick: bool = False) -> list[dict]:
    setup_threads()
    torch.set_grad_enabled(False)
    reps = 3 if quick else 5
    peers = _peers()
    out = []
    out += small_rows(reps)
    out += kron_rows(reps, peers)
    out += woodbury_rows(reps, peers)
    out += cg_rows(reps)
    torch.set_grad_enabled(True)
    return out


if __name__ == "__main__":
    import sys
    for r in rows(quick="--quick" in sys.argv):
        sp = f"{r['speedup']:.1f}x" if r["speedup"] else "-"
        fr = f"{r['flop_ratio']:.0f}" if r["flop_ratio"] else "-"
        om = f"{r['opdsl_ms']:.3f}" if r["opdsl_ms"] else "-"
        bm = f"{r['baseline_ms']:.3f}" if r["baseline_ms"] else "-"
        print(f"{r['workload'][:52]:52s} | {r['baseline'][:34]:34s} | {om:>9s} | {bm:>9s} | {sp:>8s} | "
              f"flops {fr:>6s} | {r['target']:8s} {r['met']} | {r['note']}", flush=True)
