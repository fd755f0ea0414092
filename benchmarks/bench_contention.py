"""Shared cores (issue 20, item 4): the Woodbury solve and the Householder product, and their dense
baselines, with the machine idle and with a second CPU-bound process running.

Each configuration runs in a process of its own, because OpenMP reads OMP_WAIT_POLICY once, when
torch loads it: GNU OpenMP's default (unset) lets a thread that reaches a barrier spin for a while
before it sleeps; PASSIVE makes it sleep at once.  "before" configurations turn opdsl's thread
default off (OPDSL_THREAD_DEFAULTS=0: what a process got before this change); "after" ones have it
(`import opdsl` sets OMP_WAIT_POLICY=PASSIVE when torch is not loaded yet, unless the user set a
policy).  TVM's thread pool spins too (TVM_THREAD_POOL_SPIN_COUNT): one configuration turns that
off by hand, to see whether it matters when both runtimes share the process.  The competing
process is a Python busy loop (one core's worth of work, as another job on the machine), started
before the timings and stopped after them.  Each
workload is timed in a block of its own (not interleaved: the small kernels would then be timed
right after the dense solve's long parallel regions).  Rows: opdsl against the dense solve / the
reflector loop, contended, with the idle figures and the slowdowns in the note.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time

N, R, K = 4096, 64, 16            # the Woodbury rows of bench_linalg
HN, HC = 1024, 256                # the Householder rows of bench_families_mbh

CONFIGS = {       # name -> (environment, torch threads, flags); "torch first": imported before opdsl
    "before: OpenMP's default wait policy (torch first), 2 threads": ({"OPDSL_THREAD_DEFAULTS": "0"}, 2, []),
    "after: opdsl first (it sets OMP_WAIT_POLICY=PASSIVE), 2 threads": ({}, 2, ["--opdsl-first"]),
    "PASSIVE, 1 thread": ({"OMP_WAIT_POLICY": "PASSIVE"}, 1, []),
    "before: a TVM kron call before each call, torch first, no thread defaults": (
        {"OPDSL_THREAD_DEFAULTS": "0"}, 2, ["--tvm"]),
    "experiment: a TVM kron call before each call, torch first, TVM_THREAD_POOL_SPIN_COUNT=0": (
        {"OPDSL_THREAD_DEFAULTS": "0", "TVM_THREAD_POOL_SPIN_COUNT": "0"}, 2, ["--tvm"]),
    "after: a TVM kron call before each call, opdsl first (PASSIVE)": ({}, 2, ["--tvm", "--opdsl-first"]),
}

WOODBURY = f"""dim n = {N}
input d : [n] float64
input U : [n, {R}] float64
input V : [n, {R}] float64
input B : [n, {K}] float64
export solve = inv(diag(d) + lowrank(U, V)) @ B
"""
HOUSEHOLDER = f"input V : [{HN}, {HN}] float64\ninput x : [{HN}, {HC}] float64\nexport apply = householder(V) @ x\n"


def _hog():
    """A second CPU-bound process: a Python busy loop."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _block_ms(fn, reps: int, before=None):
    """Median and fastest ms of fn over reps calls after one warm-up, timed as one block: interleaving
    with the dense baseline would time the small kernels right after its long parallel regions.
    before(): called, untimed, before each call."""
    import statistics
    fn()
    times = []
    for _ in range(reps):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def measure(threads: int, reps: int, opdsl_first: bool = False, tvm: bool = False) -> dict:
    """{workload: {"idle": ms, "busy": ms, ...}} in this process.  opdsl_first: import opdsl before
    torch (as a script that starts with `import opdsl` does); tvm: call a TVM export before each
    timed call (both runtimes' thread pools in one process)."""
    if opdsl_first:
        importlib.import_module("opdsl")     # before torch: its thread default applies
    import torch

    import opdsl

    from .bench_families_mbh import householder_loop as reflector_loop     # the families_mbh baseline
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    d = 1 + torch.rand(N, generator=g, dtype=torch.float64)
    U, V = (torch.randn(N, R, generator=g, dtype=torch.float64) / N ** 0.5 for _ in range(2))
    B = torch.randn(N, K, generator=g, dtype=torch.float64)
    dense = torch.diag(d) + U @ V.T
    wood = opdsl.compile(WOODBURY, backend="torch")
    HV = torch.randn(HN, HN, generator=g, dtype=torch.float64)
    hx = torch.randn(HN, HC, generator=g, dtype=torch.float64)
    hh = opdsl.compile(HOUSEHOLDER, backend="torch")
    assert torch.allclose(wood.solve(d=d, U=U, V=V, B=B), torch.linalg.solve(dense, B), rtol=1e-8, atol=1e-10)
    assert torch.allclose(hh.apply(V=HV, x=hx), reflector_loop(HV, hx), rtol=1e-9, atol=1e-9)
    cands = {"woodbury": lambda: wood.solve(d=d, U=U, V=V, B=B), "dense LU": lambda: torch.linalg.solve(dense, B),
             "householder": lambda: hh.apply(V=HV, x=hx), "reflector loop": lambda: reflector_loop(HV, hx)}
    if tvm:
        from opdsl.backends.tvm.target import set_num_threads
        set_num_threads(threads)
        kp = opdsl.compile("input A : [64, 64]\ninput B : [64, 64]\ninput x : [4096, 256]\n"
                           "export y = kron(A, B) @ x\n", backend="tvm", cache=False)
        ka = {k: torch.randn(*s) for k, s in (("A", (64, 64)), ("B", (64, 64)), ("x", (4096, 256)))}
        kp.y(**ka)
    before = (lambda: kp.y(**ka)) if tvm else None           # a TVM call, then the timed torch call
    out = {k: {} for k in cands}
    for state in ("idle", "busy"):
        hog = _hog() if state == "busy" else None
        try:
            time.sleep(0.3 if hog else 0.0)
            for k, f in cands.items():
                out[k][state], out[k][state + "_min"] = _block_ms(f, reps if k != "dense LU" else 3, before)
        finally:
            if hog:
                hog.kill()
                hog.wait()
    return out


def rows(quick: bool = False):
    from .common import row
    out = []
    reps = 3 if quick else 15
    for name, (extra, threads, flags) in CONFIGS.items():
        env = {k: v for k, v in os.environ.items()
               if k not in ("OMP_WAIT_POLICY", "TVM_THREAD_POOL_SPIN_COUNT", "OPDSL_THREAD_DEFAULTS")}
        env.update(extra)
        p = subprocess.run([sys.executable, "-m", "benchmarks.bench_contention", "--threads", str(threads),
                            "--reps", str(reps)] + flags, capture_output=True, text=True, env=env, timeout=1800)
        if p.returncode:
            out.append(row(f"contention [{name}]", "", None, None, note=f"failed: {p.stderr.strip()[-200:]}"))
            continue
        m = json.loads(p.stdout.strip().splitlines()[-1])
        for ours, base, target in (("woodbury", "dense LU", 300), ("householder", "reflector loop", 7)):
            o, b = m[ours], m[base]
            out.append(row(
                f"{ours} (n={N if ours == 'woodbury' else HN}) with a second CPU-bound process [{name}]",
                f"{base}, same conditions", o["busy"], b["busy"], None, None,
                f"idle: opdsl {o['idle']:.3g} ms, {base} {b['idle']:.3g} ms ({b['idle'] / o['idle']:.1f}x; "
                f"target idle >= {target}x); contended: opdsl {o['busy'] / o['idle']:.1f}x slower, {base} "
                f"{b['busy'] / b['idle']:.1f}x slower; fastest contended runs {o['busy_min']:.3g} vs "
                f"{b['busy_min']:.3g} ms"))
    return out


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--opdsl-first", action="store_true")
    ap.add_argument("--tvm", action="store_true")
    ns = ap.parse_args()
    if ns.threads:
        print(json.dumps(measure(ns.threads, ns.reps, ns.opdsl_first, ns.tvm)))
    else:
        for r in rows():
            print(r)
