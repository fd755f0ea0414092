"""Shared cores (issue 20, item 4): the Woodbury solve and the Householder product, and their dense
baselines, with the machine idle and with a second CPU-bound process running.

Each configuration runs in a process of its own, because OpenMP reads OMP_WAIT_POLICY once, when
torch loads it: GNU OpenMP's default (unset) lets a thread that reaches a barrier spin for a while
before it sleeps; PASSIVE makes it sleep at once.  Configurations: the default policy with 2
threads (what a user's process gets), PASSIVE with 2 threads, and 1 thread.  The competing process
is a Python busy loop (one core's worth of work, as another job on the machine), started before
the timings and stopped after them.  Rows: opdsl against the dense solve / the reflector loop,
contended, with the idle figures and the slowdowns in the note.

What the measurements said and what changed is written up in benchmarks/results.md
("contention"); the fix that belongs to opdsl (the generated torch code runs an export whose
kernels are all small on one thread: backends/torch_threads.py) is what the "opdsl" rows time.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

N, R, K = 4096, 64, 16            # the Woodbury rows of bench_linalg
HN, HC = 1024, 256                # the Householder rows of bench_families_mbh

CONFIGS = {                       # name -> (OMP_WAIT_POLICY or None for unset, torch threads)
    "OpenMP default wait policy, 2 threads": (None, 2),
    "OMP_WAIT_POLICY=PASSIVE, 2 threads": ("PASSIVE", 2),
    "1 thread": ("PASSIVE", 1),
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


def reflector_loop(V, x):
    """H x one reflector at a time, last first, in place (the bench_families_mbh baseline)."""
    x = x.clone()
    for j in reversed(range(V.shape[1])):
        v = V[:, j]
        x.addr_(v, v @ x, alpha=-2.0 / float(v @ v))
    return x


def measure(threads: int, reps: int) -> dict:
    """{workload: {"idle": ms, "busy": ms}} in this process."""
    import torch

    import opdsl

    from .bench_linalg import interleaved
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
    out = {k: {} for k in cands}
    for state in ("idle", "busy"):
        hog = _hog() if state == "busy" else None
        try:
            time.sleep(0.3 if hog else 0.0)
            t = interleaved(cands, reps=reps, warmup=1)
        finally:
            if hog:
                hog.kill()
                hog.wait()
        for k in cands:
            out[k][state] = t[k]
            out[k][state + "_min"] = t.min[k]
    return out


def rows(quick: bool = False):
    from .common import row
    out = []
    reps = 3 if quick else 9
    for name, (policy, threads) in CONFIGS.items():
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        p = subprocess.run([sys.executable, "-m", "benchmarks.bench_contention", "--threads", str(threads),
                            "--reps", str(reps)], capture_output=True, text=True, env=env, timeout=1800)
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
    ns = ap.parse_args()
    if ns.threads:
        print(json.dumps(measure(ns.threads, ns.reps)))
    else:
        for r in rows():
            print(r)
