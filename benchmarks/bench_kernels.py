"""Kernel operators for Gaussian processes (issue 16, docs/kernels.md) against the dense matrix,
linear_operator, GPyTorch and dense Cholesky (torch CPU, float32, 2 threads unless a note says otherwise).

Data: X [n, 3] uniform in the unit cube; the rbf kernel with lengthscale ℓ = 0.5 and outputscale s = 1
(GPyTorch's conventions: s · exp(−‖x − y‖² / 2ℓ²)); the GP's noise variance σ² = 0.1 and targets
y = sin(2π x₁) + x₃ cos(π x₂) + 0.3 ε.

- Kernel matvec `kernel(X, X, rbf, lengthscale=0.5) @ v`, v [n, 1], at n = 10⁴ and 10⁵, forward only
  (torch.no_grad for every candidate): time and peak extra memory.  Memory is measured in a subprocess
  per configuration (peak_extra_mb): after a warm-up at n = 1,000, /proc/self/clear_refs resets the
  peak resident size, and the extra memory is the peak during the one call minus what was resident
  before it.  Baselines: the dense matrix K = s·exp(−cdist(X/ℓ, X/ℓ)²/2) formed and applied, the product
  alone with K formed beforehand, linear_operator's KernelLinearOperator with that covariance function
  (a new operator per call: one keeps its matrix), and GPyTorch's ScaleKernel(RBFKernel())(X) @ v.
  The opdsl side is also timed with 1 thread (the note).  At n = 10⁵ every baseline holds the 40 GB
  matrix (KernelLinearOperator._matmul is `self.covar_mat @ rhs`; GPyTorch evaluates the kernel unless
  its kernel checkpointing is on): not run, recorded as infeasible with what each took at 10⁴.  opdsl
  at 10⁵ evaluates 10¹⁰ kernel values, minutes on this machine: it runs once, in its subprocess, which
  then checks 200 rows of the result against the dense rows.  Each subprocess is capped at CHILD_CAP_GB
  of address space; when opdsl's run fails there, it runs again with glibc's mmap threshold fixed
  (MMAP_ENV), the note says so and the memory target counts as missed.
- GP marginal log-likelihood L = −½ yᵀK⁻¹y − ½ logdet K − n/2 log 2π, K = kernel + σ² I, and its
  gradient with respect to ℓ, s and σ², at n = 10⁴: opdsl's scalable program (CG with pivchol(15) at
  tol 1e-2, SLQ with GPyTorch's 10 probes and 20 steps, its gradient's solves at tol 1e-2), the
  program as a user writes it with method=auto (CG and SLQ above AUTO_CG_ROWS, at tol 1e-4), and its
  Cholesky program (method=cholesky), against
  GPyTorch's ExactGP + ExactMarginalLogLikelihood with its default settings (above 800 points: CG with
  a rank-15 pivoted-Cholesky preconditioner and tolerance 1 while training, 10 probes, at most 20
  Lanczos steps) and against dense Cholesky in torch, which is also the accuracy reference (float32:
  it agreed with a float64 dense Cholesky to ~1e-6 in L and ~3e-5 in the gradient when this module was
  written).  GPyTorch draws new probes every call: its error is the median over its timed calls (the
  worst in the note).  The opdsl and dense Cholesky paths take tens of seconds here: each runs once.
  The target (>= 1x GPyTorch's speed) counts as met only at an accuracy no worse than GPyTorch's.
- Cholesky / CG crossover: `inv(K, method=cholesky) @ y` with K = kernel + 0.1 I against
  `inv(K, method=cg, tol=1e-4, maxiter=1000) @ y`, without a preconditioner and with pivchol(15) (the
  kernel formed once for the loop: below LOOP_MATRIX_VALUES), forward only, interleaved, at n = 1000,
  2000, 4000, 8000; the speed-up column is CG's over Cholesky (> 1: CG wins).  It is what sets
  method=auto's AUTO_CG_ROWS.

Quick mode: n = 2000 and 5000 for the matvec, 1000 for the GP, 250 to 1000 for the crossover.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

import opdsl
from opdsl.kinds.linalg import AUTO_CG_ROWS

from .bench_linalg import fastest, interleaved
from .common import available_gb, row, setup_threads

ROOT = Path(__file__).resolve().parent.parent
D = 3
LENGTHSCALE, OUTPUTSCALE, NOISE = 0.5, 1.0, 0.1
CG_TOL_GP = 1e-2           # opdsl's CG tolerance in the GP row (relative residual)
CG_TOL_CROSSOVER = 1e-4
CG_SOLUTION_RTOL = 1e-2    # CG stops at a relative residual of 1e-4; the error in x can be up to κ(K) times that
THREADS = 2
CHILD_CAP_GB = 8           # address space of a memory subprocess
MAIN_CAP_GB = 16           # extra address space of this process while the rows run (see rows)
# glibc's malloc raises its mmap threshold as large blocks are freed; the tiles' 4 MB temporaries then
# come from the heap, and with the small per-tile results kept for torch.cat between them the heap can
# fragment without bound (kernel_apply at n = 10⁵, 2 threads: 300 MB in some runs, out of memory in
# others).  A fixed threshold keeps every 4 MB block an mmap of its own.
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}

MATVEC = """dim n = {n}
input X : [n, 3]
input v : [n, 1]
export y = kernel(X, X, rbf, lengthscale={ls}) @ v
"""

GP = """dim n = {n}
input X : [n, 3]
input y : [n, 1]
input lengthscale : [1]
input outputscale : [1]
input noise : [n] positive
let K = kernel(X, X, rbf, lengthscale=lengthscale, outputscale=outputscale) + diag(noise)
export scalable = -0.5 * trace(y.T @ inv(K, method=cg, tol={tol}, maxiter=1000, precond=pivchol(15)) @ y)
                  - 0.5 * logdet(K, method=slq, probes=10, steps=20, tol={tol})
export auto = -0.5 * trace(y.T @ inv(K) @ y) - 0.5 * logdet(K)
export cholesky = -0.5 * trace(y.T @ inv(K, method=cholesky) @ y) - 0.5 * logdet(K, method=cholesky)
"""
# The noise is a vector (σ² repeated) because `c * eye(n)` takes a number, not a tensor that autograd
# can differentiate; declared positive, it makes K known positive definite (examples/gp.op), so
# method=auto may choose CG and SLQ (n above AUTO_CG_ROWS) and Cholesky is valid.

CROSSOVER = """dim n = {n}
input X : [n, 3]
input y : [n, 1]
let K = kernel(X, X, rbf, lengthscale={ls}) + {noise} * eye(n)
export cholesky = inv(K, method=cholesky) @ y
export cg = inv(K, method=cg, tol={tol}, maxiter=1000) @ y
export pivchol = inv(K, method=cg, tol={tol}, maxiter=1000, precond=pivchol(15)) @ y
"""


# ---- data and the torch baselines --------------------------------------------------------------------

def points(n, seed=0):
    """X [n, 3] uniform in the unit cube and v [n, 1] standard normal (float32)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, D, generator=g), torch.randn(n, 1, generator=g)


def gp_data(n, seed=0):
    """X [n, 3] and y [n, 1] = sin(2π x₁) + x₃ cos(π x₂) + 0.3 ε (float32)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, D, generator=g)
    f = torch.sin(2 * math.pi * x[:, 0]) + x[:, 2] * torch.cos(math.pi * x[:, 1])
    return x, (f + 0.3 * torch.randn(n, generator=g))[:, None]


def rbf_dense(x1, x2, lengthscale, outputscale):
    """The n x m rbf kernel matrix s · exp(−‖x − y‖² / 2ℓ²) (torch.cdist: what a user writes)."""
    return outputscale * torch.exp(-0.5 * torch.cdist(x1 / lengthscale, x2 / lengthscale).square())


def dense_cholesky_mll(x, y, lengthscale, outputscale, noise):
    """L = −½ yᵀK⁻¹y − ½ logdet K − n/2 log 2π by a dense Cholesky of K = kernel + σ² I."""
    n = x.shape[0]
    k = rbf_dense(x, x, lengthscale, outputscale) + noise * torch.eye(n, dtype=x.dtype)
    factor = torch.linalg.cholesky(k)
    alpha = torch.cholesky_solve(y, factor)
    return -0.5 * (y * alpha).sum() - torch.log(torch.diagonal(factor)).sum() - 0.5 * n * math.log(2 * math.pi)


def hyperparameters(dtype=torch.float32):
    """Leaf tensors ℓ [1], s [1], σ² [1] that require grad."""
    return [torch.tensor([v], dtype=dtype, requires_grad=True) for v in (LENGTHSCALE, OUTPUTSCALE, NOISE)]


def value_and_grad(fn):
    """fn(ℓ, s, σ²) -> L; returns (L, [∂L/∂ℓ, ∂L/∂s, ∂L/∂σ²]) as floats."""
    hp = hyperparameters()
    value = fn(*hp)
    value.backward()
    return float(value.detach()), [float(h.grad) for h in hp]


def accuracy(got, ref):
    """(relative error of L, largest relative error of the three gradient entries) against ref."""
    (v, g), (rv, rg) = got, ref
    return abs(v - rv) / abs(rv), max(abs(a - b) / abs(b) for a, b in zip(g, rg))


def _peers():
    """{'linear_operator': module or the import error, 'gpytorch': likewise}."""
    out = {}
    for name in ("linear_operator", "gpytorch"):
        try:
            out[name] = __import__(name)
        except Exception as e:      # noqa: BLE001 - a broken optional install is "absent" too
            out[name] = e
    return out


def _absent(mod) -> str:
    return f"not installed ({type(mod).__name__}: {str(mod).splitlines()[0][:80] if str(mod) else ''})"


# ---- the matvec candidates (also run in the memory subprocess) ----------------------------------------

def matvec_candidate(config, n):
    """A zero-argument callable computing kernel(X, X, rbf) @ v at size n by `config`: opdsl, dense
    (formed and applied), prebuilt (K formed here, the product alone), linear_operator, gpytorch."""
    x, v = points(n)
    if config == "opdsl":
        prog = opdsl.compile(MATVEC.format(n=n, ls=LENGTHSCALE), backend="torch", filename="bench_kernels")
        return lambda: prog.y(X=x, v=v)
    if config == "dense":
        return lambda: rbf_dense(x, x, LENGTHSCALE, OUTPUTSCALE) @ v
    if config == "prebuilt":
        k = rbf_dense(x, x, LENGTHSCALE, OUTPUTSCALE)
        return lambda: k @ v
    if config == "linear_operator":
        from linear_operator.operators import KernelLinearOperator
        ls, s = torch.tensor([[LENGTHSCALE]]), torch.tensor(OUTPUTSCALE)
        return lambda: KernelLinearOperator(x, x, covar_func=rbf_dense, lengthscale=ls, outputscale=s,
                                            num_nonbatch_dimensions={"outputscale": 0}) @ v
    if config == "gpytorch":
        import gpytorch
        kern = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())
        kern.base_kernel.lengthscale, kern.outputscale = LENGTHSCALE, OUTPUTSCALE
        return lambda: kern(x) @ v
    raise ValueError(config)


def _status_kb():
    out = {}
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, val = line.split(":")
            out[key] = int(val.split()[0])
    return out


def _child(config, n, threads):
    """The memory subprocess: warm up at n = 1,000, then one call at n, timed, with its peak extra
    resident memory; then the result's first 200 rows against the dense rows.  Prints one JSON line
    {"ms", "extra_mb", "err"}."""
    torch.set_num_threads(threads)
    with torch.no_grad():
        matvec_candidate(config, 1000)()
        fn = matvec_candidate(config, n)
        open("/proc/self/clear_refs", "w").write("5")     # reset VmHWM to the current VmRSS
        before = _status_kb()["VmRSS"]
        t0 = time.perf_counter()
        got = fn()
        ms = (time.perf_counter() - t0) * 1e3
        extra_mb = (_status_kb()["VmHWM"] - before) / 1024
        x, v = points(n)
        want = rbf_dense(x[:200], x, LENGTHSCALE, OUTPUTSCALE) @ v
        err = float((got[:200] - want).abs().max() / want.abs().max())
    print(json.dumps({"ms": ms, "extra_mb": extra_mb, "err": err}))


def _cap_address_space(gb):
    """Limit this process's address space to gb GB (a runaway allocation fails instead of swamping
    the machine other jobs share)."""
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (int(gb * 2**30), int(gb * 2**30)))


def peak_extra_mb(config, n, threads=THREADS, env=None, timeout=1200):
    """{'ms', 'extra_mb', 'err'} of one call of matvec_candidate(config, n) in a fresh process whose
    address space is capped at CHILD_CAP_GB, with `env` added to its environment; {'error': why}
    when it fails (an allocation past the cap among others)."""
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench_kernels", "--child", config, str(n), str(threads)],
                       cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
                       preexec_fn=lambda: _cap_address_space(CHILD_CAP_GB))
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        if "can't allocate memory" in last:
            last = f"ran out of its {CHILD_CAP_GB} GB address-space cap"
        return {"error": last[:160]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def opdsl_matvec_memory(n):
    """peak_extra_mb for opdsl at n with glibc's malloc as it comes and, when that run fails, again
    with MALLOC_MMAP_THRESHOLD_ fixed (see MMAP_ENV).  Returns (result, note)."""
    res = peak_extra_mb("opdsl", n)
    if "error" not in res:
        return res, ""
    again = peak_extra_mb("opdsl", n, env=MMAP_ENV)
    return again, (f"with glibc malloc's defaults the call failed ({res['error']}: its resident memory grows "
                   f"without bound in some runs, one reached 23 GB); this run sets MALLOC_MMAP_THRESHOLD_=65536")


def _check(name, got, want, rtol=1e-4) -> float:
    """Raise unless got ≈ want (entries within rtol of want's largest); returns the max relative error."""
    err = float((got.double() - want.double()).abs().max() / want.double().abs().max())
    if not err <= rtol:
        raise AssertionError(f"{name}: opdsl and the baseline differ by {err:.1e} of the largest entry "
                             f"(tolerance {rtol:.0e}): the row would time a wrong answer")
    return err


# ---- rows ---------------------------------------------------------------------------------------------

def _mb(res) -> str:
    return f"{res['extra_mb']:.0f} MB" if "error" not in res else f"failed: {res['error']}"


def matvec_rows(quick):
    small, big = (2000, 5000) if quick else (10_000, 100_000)
    peers = _peers()
    configs = ["opdsl", "dense", "prebuilt"] + [p for p in ("linear_operator", "gpytorch")
                                                if not isinstance(peers[p], Exception)]
    workload = f"kernel(X, X, rbf) @ v, n={small:,}, d=3, 1 column"
    with torch.no_grad():
        cands = {c: matvec_candidate(c, small) for c in configs}
        mine = cands["opdsl"]()
        errs = {c: _check(f"matvec n={small} vs {c}", mine, cands[c]()) for c in configs[1:]}

        def one_thread():
            torch.set_num_threads(1)
            try:
                return cands["opdsl"]()
            finally:
                torch.set_num_threads(THREADS)
        t = interleaved({**cands, "opdsl 1 thread": one_thread}, reps=3 if quick else 5)
    mine_mem, mine_mem_note = opdsl_matvec_memory(small)
    mem = {c: peak_extra_mb(c, small) for c in configs[1:]}
    titles = {"dense": "dense matrix: K formed (torch.cdist, exp) and K @ v",
              "prebuilt": "dense K @ v with K formed beforehand (the product alone)",
              "linear_operator": "linear_operator KernelLinearOperator(X, X, covar_func) @ v",
              "gpytorch": "GPyTorch ScaleKernel(RBFKernel())(X) @ v (LazyEvaluatedKernelTensor)"}
    threads = (f"torch threads = {THREADS}; opdsl with 1 thread {t['opdsl 1 thread']:.4g} ms "
               f"(fastest {t.min['opdsl 1 thread']:.4g})")
    out = []
    for c in configs[1:]:
        held = " (K itself, formed outside the call, not counted)" if c == "prebuilt" else ""
        out.append(row(workload, titles[c], t["opdsl"], t[c], None, None,
                       f"peak extra memory (one call, own process): opdsl {_mb(mine_mem)}, baseline {_mb(mem[c])}"
                       f"{held}; max rel diff {errs[c]:.0e}; {fastest(t, 'opdsl', c)}; {threads}"
                       + (f"; opdsl's memory: {mine_mem_note}" if mine_mem_note else "")))
    for p in ("linear_operator", "gpytorch"):
        if isinstance(peers[p], Exception):
            out.append(row(workload, p, t["opdsl"], None, note=_absent(peers[p])))

    # n = 10⁵: opdsl once in its subprocess; the baselines would hold the 40 GB matrix
    res, res_note = opdsl_matvec_memory(big)
    matrix_gb = 4 * big * big / 1e9
    workload = f"kernel(X, X, rbf) @ v, n={big:,}, d=3, 1 column"
    dense_note = (f"the dense matrix is {matrix_gb:.3g} GB (float32), {available_gb():.0f} GB available: "
                  "infeasible, not run")
    if "error" in res:
        r = row(workload, "the dense matrix", None, None, None, None,
                f"opdsl failed: {res['error']}; {res_note}; {dense_note}")
    else:
        r = row(workload, "the dense matrix", res["ms"], None, None, None,
                f"opdsl timed once ({big * big:.0e} kernel values: {res['ms'] / 1e3:.0f} s, torch threads = "
                f"{THREADS}), peak extra memory {res['extra_mb']:.0f} MB, first 200 rows within {res['err']:.0e} "
                f"of the dense rows" + (f"; {res_note}" if res_note else "") + f"; {dense_note}")
    r["target"] = "< 2 GB extra memory"
    r["met"] = not res_note and "error" not in res and res["extra_mb"] < 2048
    out.append(r)
    for p in ("linear_operator", "gpytorch"):
        why = (_absent(peers[p]) if isinstance(peers[p], Exception) else
               f"infeasible, not run: it forms the {matrix_gb:.3g} GB matrix (at n={small:,} its peak extra "
               f"memory was {_mb(mem[p])}; the n² · 4 B matrix is {4 * small * small / 1e6:.0f} MB)")
        out.append(row(workload, titles[p], res.get("ms"), None, note=why))
    return out


def _gpytorch_mll(gpytorch, x, y):
    """A callable returning (L, [∂L/∂ℓ, ∂L/∂s, ∂L/∂σ²]) from GPyTorch's ExactGP with its defaults.
    Its loss is L / n over raw parameters (θ = softplus(raw), σ² = 1e-4 + softplus(raw)): the
    gradient is mapped back through dθ/draw = sigmoid(raw)."""
    n = x.shape[0]

    class Model(gpytorch.models.ExactGP):
        def __init__(self, likelihood):
            super().__init__(x, y[:, 0], likelihood)
            self.mean = gpytorch.means.ZeroMean()
            self.covar = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, inputs):
            return gpytorch.distributions.MultivariateNormal(self.mean(inputs), self.covar(inputs))

    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = Model(likelihood)
    model.covar.base_kernel.lengthscale, model.covar.outputscale, likelihood.noise = LENGTHSCALE, OUTPUTSCALE, NOISE
    model.train()
    likelihood.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    raws = [model.covar.base_kernel.raw_lengthscale, model.covar.raw_outputscale, likelihood.noise_covar.raw_noise]

    def call():
        model.zero_grad()
        loss = mll(model(x), y[:, 0])
        loss.backward()
        return float(loss.detach()) * n, [float(r.grad) / float(torch.sigmoid(r.detach())) * n for r in raws]
    return call


def _cg_report(residuals, export) -> str:
    """The steps and residuals of the CG solves one export ran (forward and gradient), from the
    module's CG_RESIDUALS (keyed by solve site: `... at bench_kernels:LINE:COL`)."""
    line = {"scalable": (8, 9), "auto": (10,), "cholesky": (11,)}[export]
    mine = [(k, v) for k, v in residuals.items() if any(f"bench_kernels:{ln}:" in k for ln in line)]
    return "; ".join(f"{'gradient ' if 'gradient' in k else ''}{'SLQ' if 'logdet' in k else 'solve'} {s} steps "
                     f"(residual {r:.1e})" for k, (s, r) in mine) or "no CG solve"


def gp_rows(quick):
    n = 1000 if quick else 10_000
    x, y = gp_data(n)
    prog = opdsl.compile(GP.format(n=n, tol=CG_TOL_GP), backend="torch", filename="bench_kernels")
    const = 0.5 * n * math.log(2 * math.pi)

    def opdsl_fn(export):
        return lambda ls, s, noise: getattr(prog, export)(X=x, y=y, lengthscale=ls, outputscale=s,
                                                         noise=noise.expand(n)) - const

    def once(fn):
        t0 = time.perf_counter()
        res = fn()
        return res, (time.perf_counter() - t0) * 1e3

    # the dense Cholesky first: it is the accuracy reference
    ref, dense_ms = once(lambda: value_and_grad(lambda ls, s, noise: dense_cholesky_mll(x, y, ls, s, noise)))
    peers = _peers()
    gpy = peers["gpytorch"]
    if not isinstance(gpy, Exception):
        gpy_call = _gpytorch_mll(gpy, x, y)
        gpy_call()                                     # warm-up
        runs = []
        for _ in range(3 if quick else 5):
            res, ms = once(gpy_call)
            runs.append((ms, accuracy(res, ref)))
        gpy_ms = statistics.median(ms for ms, _ in runs)
        gpy_acc = tuple(statistics.median(a[i] for _, a in runs) for i in (0, 1))
        gpy_worst = tuple(max(a[i] for _, a in runs) for i in (0, 1))
    mine = {}                    # export: (note, accuracy (L, gradient, finite) or None, ms or None)
    for export in ("cholesky", "scalable", "auto"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res, ms = once(lambda: value_and_grad(opdsl_fn(export)))
            except (RuntimeError, MemoryError) as e:      # an allocation past the cap (see rows), or a bug
                mine[export] = (f"opdsl {export} failed: {type(e).__name__}: {str(e).splitlines()[0][:140]}",
                                None, None)
                continue
        v_err, g_err = accuracy(res, ref)
        finite = all(math.isfinite(g) for g in res[1])
        grads = ", ".join(f"{g:.4g}" for g in res[1])
        note = (f"L {res[0]:.6g} (rel err {v_err:.1e}), gradient (ℓ, s, σ²) ({grads}), "
                + (f"max rel err {g_err:.1e}" if finite else "**not finite**"))
        solves = _cg_report(prog.module.CG_RESIDUALS, export)
        if export == "scalable":
            note = (f"opdsl CG (pivchol(15), tol {CG_TOL_GP:g}: {solves}) + SLQ (10 probes, 20 steps; its "
                    f"gradient's solves at tol {CG_TOL_GP:g}), timed once: {note}")
        elif export == "auto":
            note = (f"opdsl method=auto (n > AUTO_CG_ROWS: CG with pivchol(15) at tol 1e-4, SLQ with 10 probes, "
                    f"20 steps: {solves}), timed once: {note}")
        else:
            note = f"opdsl Cholesky (method=cholesky), timed once: {note}"
        note += "".join(f"; warning: {str(w.message)[:100]}" for w in caught)
        mine[export] = (note, (v_err, g_err, finite), ms)

    workload = (f"GP log-likelihood + gradient (ℓ, s, σ²), n={n:,}, d=3, rbf (ℓ={LENGTHSCALE}, s={OUTPUTSCALE}, "
                f"σ²={NOISE}), float32")
    ref_note = (f"reference (dense Cholesky): L {ref[0]:.6g}, gradient "
                f"({', '.join(f'{g:.4g}' for g in ref[1])})")
    out = []
    for export in ("scalable", "auto", "cholesky"):
        note, acc, ms = mine[export]
        if isinstance(gpy, Exception):
            out.append(row(workload, "GPyTorch ExactGP", ms, None, note=f"{_absent(gpy)}; {note}"))
        else:
            r = row(workload, "GPyTorch ExactGP + ExactMarginalLogLikelihood, default settings", ms, gpy_ms, None, 1,
                    f"{note}; GPyTorch {gpy.__version__} defaults, median of {len(runs)} calls: L rel err "
                    f"{gpy_acc[0]:.1e}, gradient max rel err {gpy_acc[1]:.1e} (worst call {gpy_worst[0]:.1e}, "
                    f"{gpy_worst[1]:.1e}); torch threads = {THREADS}")
            as_accurate = acc is not None and acc[2] and acc[0] <= gpy_acc[0] and acc[1] <= gpy_acc[1]
            r["target"] = ">= 1x at equal or better accuracy"
            r["met"] = bool(r["met"]) and as_accurate
            if acc is not None and not as_accurate:
                r["note"] += "; less accurate than GPyTorch"
            out.append(r)
    for export in ("scalable", "auto", "cholesky"):
        note, _, ms = mine[export]
        out.append(row(workload, "dense Cholesky in torch (cdist, cholesky, cholesky_solve), timed once", ms,
                       dense_ms, None, None, f"{note}; {ref_note}; torch threads = {THREADS}"))
    return out


def crossover_rows(quick):
    """CG (plain and pivchol(15)-preconditioned, the kernel formed once for the loop while it fits)
    against Cholesky for inv(K) @ y, interleaved, forward only; where CG wins sets AUTO_CG_ROWS."""
    sizes = (250, 500, 1000) if quick else (1000, 2000, 4000, 8000)
    out, wins = [], []
    for n in sizes:
        x, _ = points(n)
        _, y = gp_data(n)
        prog = opdsl.compile(CROSSOVER.format(n=n, ls=LENGTHSCALE, noise=NOISE, tol=CG_TOL_CROSSOVER),
                             backend="torch", filename="bench_kernels")
        cands = {name: (lambda name=name: getattr(prog, name)(X=x, y=y)) for name in ("cholesky", "cg", "pivchol")}
        with torch.no_grad():
            want = cands["cholesky"]()
            report = {}
            for name in ("cg", "pivchol"):
                got = cands[name]()
                err = float((got - want).norm() / want.norm())
                if not err <= CG_SOLUTION_RTOL:
                    raise AssertionError(f"crossover n={n}: {name} and Cholesky differ by {err:.1e}")
                steps, residual = next(v for k, v in prog.module.CG_RESIDUALS.items()
                                       if ("pivchol" in k) == (name == "pivchol"))
                report[name] = (steps, residual, err)
            t = interleaved(cands, reps=3 if n >= 4000 else 5, warmup=0)
        for name, label in (("cg", "no preconditioner"), ("pivchol", "precond=pivchol(15)")):
            steps, residual, err = report[name]
            out.append(row(f"inv(K) @ y, K = kernel(X, X, rbf) + {NOISE} I, n={n:,}, d=3: CG ({label}) vs Cholesky",
                           "opdsl Cholesky (method=cholesky)", t[name], t["cholesky"], None, None,
                           f"CG tol {CG_TOL_CROSSOVER:g}, maxiter 1000, {label}, the kernel formed once for the "
                           f"loop: {steps} steps, residual {residual:.1e}, rel diff from Cholesky {err:.0e}; "
                           f"{fastest(t, name, 'cholesky')}; torch threads = {THREADS}"))
        if t["pivchol"] < t["cholesky"]:
            wins.append(n)
    measured = (f"CG with pivchol(15) faster than Cholesky at n = {', '.join(f'{m:,}' for m in wins)}" if wins
                else "Cholesky faster at every size measured")
    out.append(row("Cholesky / CG crossover (inv(K) @ y above)", "", None, None, None, None,
                   f"{measured}; method=auto switches to CG above AUTO_CG_ROWS = "
                   f"{AUTO_CG_ROWS:,} rows"))
    return out


def rows(quick: bool = False):
    """The rows, with this process's address space capped at MAIN_CAP_GB more than it holds now (the
    soft limit, restored after): an allocation past it fails the call that made it (see guarded)
    instead of taking the memory of the machine's other jobs."""
    import resource
    setup_threads(THREADS)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    vm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:"))
    cap = vm_kb * 1024 + MAIN_CAP_GB * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        return matvec_rows(quick) + gp_rows(quick) + crossover_rows(quick)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        for r in rows("--quick" in sys.argv):
            print(r)
