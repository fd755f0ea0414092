"""opdsl against the same algorithm written by hand in plain torch, and against torch.compile of
that code (issue 20, item 6): every core and family workload of benchmarks/handwritten.py.

Each workload runs in a process of its own (`python -m benchmarks.bench_handwritten --one NAME`),
so that no workload inherits another's allocator state, inductor threads or warm caches; the
process prints its rows as JSON.  In it: the program compiled for the torch backend plainly and
with compile=True, the hand-written function and torch.compile of it (inductor, static shapes),
all checked against each other, then timed interleaved (median of the rounds; the fastest runs in
the note), 2 threads, OMP_WAIT_POLICY=PASSIVE.  Three rows a workload, each with target >= 1.0x:
the torch backend against the hand-written code, against torch.compile of it, and opdsl's
compile=True against torch.compile of it.  A row under its target carries a profile: the three
ops with the most self CPU time on each side (torch.profiler, a few calls), which says where the
time goes.  The Kronecker workload also times the TVM backend against linear_operator and CoLA
(target >= 1.5x).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings

TARGET = 1.0
PEER_TARGET = 1.5
TIMEOUT_S = 900


def _profile(fn, calls: int = 3) -> str:
    """The three ops with the most self CPU time over `calls` calls of fn, as 'op share%'."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    ev = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in ev) or 1.0
    top = sorted(ev, key=lambda e: -e.self_cpu_time_total)[:3]
    return ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.0f}%" for e in top)


def _relerr(a, b) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def one(name: str, quick: bool) -> list[dict]:
    """The rows of workload `name`, measured in this process."""
    import torch

    import opdsl

    from .bench_linalg import interleaved
    from .common import row, setup_threads
    from .handwritten import WORKLOADS

    setup_threads()
    w = WORKLOADS[name]
    sizes = w.quick if quick else w.full
    src, title = w.source.format(**sizes), w.title.format(**sizes)
    args = w.args(sizes, torch.Generator().manual_seed(0))
    plain = opdsl.compile(src, backend="torch", filename=f"handwritten_{name}")
    t0 = time.perf_counter()
    fast = opdsl.compile(src, backend="torch", compile=True, filename=f"handwritten_{name}")
    hand_c = torch.compile(w.hand, dynamic=False)
    cands = {"opdsl": lambda: plain[w.export](**args), "opdsl_c": lambda: fast[w.export](**args),
             "hand": lambda: w.hand(**args), "hand_c": lambda: hand_c(**args)}
    with torch.no_grad():
        ref = cands["hand"]()
        first = {}
        for k in ("opdsl_c", "hand_c"):          # inductor compiles on the first call
            t1 = time.perf_counter()
            cands[k]()
            first[k] = time.perf_counter() - t1
        errs = {k: _relerr(f(), ref) for k, f in cands.items() if k != "hand"}
        bad = {k: e for k, e in errs.items() if not e <= w.rtol}
        if bad:
            raise AssertionError(f"{name}: results differ from the hand-written code by {bad} (rtol {w.rtol}): "
                                 "the rows would time a wrong answer")
        reps = 5 if quick else 11
        t = interleaved(cands, reps=reps, warmup=2)
    setup_s = time.perf_counter() - t0
    err = max(errs.values())

    def note(a, b):
        return (f"fastest runs {t.min[a]:.3g} vs {t.min[b]:.3g} ms ({t.min[b] / t.min[a]:.2f}x); max rel diff "
                f"{err:.0e}")

    def profiled(a, b, speedup):
        if speedup >= TARGET:
            return ""
        with torch.no_grad():
            return f"; profile (self CPU, 3 calls): opdsl: {_profile(cands[a])} | baseline: {_profile(cands[b])}"

    compiled_note = (f"inductor's first calls: hand {first['hand_c']:.1f} s, opdsl {first['opdsl_c']:.1f} s "
                     f"(on-disk caches as they are)")
    out = []
    for a, b, base, extra in (("opdsl", "hand", f"hand-written torch: {w.hand_name}", ""),
                              ("opdsl", "hand_c", "torch.compile(hand-written), inductor", compiled_note),
                              ("opdsl_c", "hand_c", "torch.compile(hand-written), inductor", compiled_note)):
        label = f"{title} [{w.family}]" + (" [compile=True]" if a == "opdsl_c" else "")
        sp = t[b] / t[a]
        out.append(row(label, base, t[a], t[b], None, TARGET,
                       "; ".join(x for x in (note(a, b), extra) if x) + profiled(a, b, sp)))
    out += _peer_rows(w, sizes, src, title, args, reps, interleaved, row)
    print(f"# {name}: {setup_s:.0f} s", file=sys.stderr)
    return out


def _peer_rows(w, sizes, src, title, args, reps, interleaved, row):
    """The TVM backend against the runtime libraries (Kronecker): target PEER_TARGET."""
    if not w.peers:
        return []
    import torch

    import opdsl
    from opdsl import backends

    from .common import aligned
    if "tvm" not in backends.available():
        return [row(f"{title} [TVM backend]", peer, None, None, note="skipped: TVM is not installed")
                for peer in w.peers]
    tvm = opdsl.compile(src, backend="tvm", cache=False, filename="handwritten_tvm")
    targs = {k: aligned(v) for k, v in args.items()}
    cands = {"tvm": lambda: tvm[w.export](**targs)}
    skipped = {}
    for peer, make in w.peers.items():
        try:
            cands[peer] = make(sizes, args)
        except ImportError as e:
            skipped[peer] = f"skipped: {e}"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = w.hand(**args)
        errs = {k: _relerr(torch.as_tensor(f()), ref) for k, f in cands.items()}
        t = interleaved(cands, reps=reps, warmup=2)
    out = []
    for peer in w.peers:
        if peer in skipped:
            out.append(row(f"{title} [TVM backend]", peer, t["tvm"], None, note=skipped[peer]))
            continue
        out.append(row(f"{title} [TVM backend]", peer, t["tvm"], t[peer], None, PEER_TARGET,
                       f"opdsl ms is the TVM backend's; fastest runs {t.min['tvm']:.3g} vs {t.min[peer]:.3g} ms; "
                       f"max rel diff {max(errs['tvm'], errs[peer]):.0e}"))
    return out


def rows(quick: bool = False, only=None):
    """Every workload in its own process; a workload that fails gives a row saying why."""
    from .common import row
    from .handwritten import WORKLOADS
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    out = []
    for name in only or WORKLOADS:
        cmd = [sys.executable, "-m", "benchmarks.bench_handwritten", "--one", name] + (["--quick"] if quick else [])
        print(f"  handwritten: {name} ...", file=sys.stderr, flush=True)
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
        except subprocess.TimeoutExpired:
            out.append(row(name, "", None, None, note=f"did not finish in {TIMEOUT_S} s"))
            continue
        lines = [line for line in p.stdout.splitlines() if line.startswith("[")]
        if p.returncode or not lines:
            why = (p.stderr.strip().splitlines() or ["no output"])[-1][:200]
            out.append(row(name, "", None, None, note=f"failed: {why}"))
            continue
        out += json.loads(lines[-1])
    return out


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--one")
    ap.add_argument("--quick", action="store_true")
    ns = ap.parse_args()
    if ns.one:
        print(json.dumps(one(ns.one, ns.quick)))
    else:
        for r in rows(ns.quick):
            print(r)
