"""`tune=TRIALS`: search for a faster schedule of one export's PrimFunc, keeping the fastest.

1. MetaSchedule (tvm.s_tir.meta_schedule.tune_tir, TRIALS measured candidates,
   a random cost model when xgboost is not installed) runs in a child process:
   with apache-tvm-ffi 0.1.15 its search strategies crash the process that
   creates them (a segfault in save_json; 0.1.14.post1 works, with psutil and
   cloudpickle installed), and a crash there must not take the user's program
   with it.  The module goes to the child and comes back as TVMScript.
2. Where MetaSchedule fails, the built-in CPU schedule's parameters are
   searched instead: row tile x column tile (in vectors) x unrolling of the row
   loop, the first TRIALS combinations in a fixed order, each compiled and timed.

The template candidates run in both cases; every candidate is timed on random
arguments of the function's own shapes against the built-in schedule, and
whichever is fastest is kept; the compile
cache then keeps the result, so a program is tuned once.  Functions with free
dims are not tuned (the search needs sizes): bind them (dims={...} / --dim).
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import warnings

CHILD = r'''
import sys, json
import tvm
from tvm.script import ir as I, tirx as T
from tvm.s_tir import meta_schedule as ms
spec, trials, cost_model, text_path, out_path, work = sys.argv[1:7]
mod = tvm.script.from_source(open(text_path).read())
target = tvm.target.Target(json.loads(spec))
# generous timeouts: each builder / runner worker imports TVM first, slow on a loaded machine
db = ms.tune_tir(mod, target, work_dir=work, max_trials_global=int(trials),
                 num_trials_per_iter=min(int(trials), 16), cost_model=cost_model, database="memory",
                 builder=ms.builder.LocalBuilder(max_workers=1, timeout_sec=300),
                 runner=ms.runner.LocalRunner(timeout_sec=120))
sch = ms.tir_integration.compile_tir(db, mod, target)
if sch is None:
    sys.exit(3)
open(out_path, "w").write(sch.mod.script())
'''


def _concrete(mod) -> bool:
    for p in mod["main"].params:       # each parameter is a buffer-typed var
        for d in getattr(p, "shape", ()):
            if not hasattr(d, "value"):
                return False
    return True


def _script_body(mod) -> str:
    """TVMScript without its import lines (tvm.script.from_source supplies I and T)."""
    return "\n".join(line for line in mod.script().splitlines()
                     if not line.startswith("#") and not line.startswith("from "))


def time_function(mod, target, repeat: int = 5) -> float:
    """Median seconds of one call of mod["main"] on random arguments."""
    import numpy as np
    import tvm
    lib = tvm.compile(mod, target=target)
    dev = tvm.cuda(0) if "gpu" in target.keys else tvm.cpu(0)
    rng = np.random.default_rng(0)
    args = []
    for p in mod["main"].params:
        shape = tuple(int(d) for d in p.shape)
        args.append(tvm.runtime.tensor(rng.standard_normal(shape).astype(str(p.dtype)), dev))
    ev = lib.jit().time_evaluator("main", dev, number=3, repeat=repeat)
    return float(ev(*args).median)


def metaschedule(mod, target, trials: int, work_dir=None, gpu: bool = False):
    """MetaSchedule's best module for mod (in a child process), or (None, why)."""
    import json

    import tvm
    spec = {"kind": target.kind.name}
    for key in ("mcpu", "arch", "mtriple"):
        if key in target.attrs:
            spec[key] = str(target.attrs[key])
    if not gpu:
        spec["num-cores"] = os.cpu_count() or 1
    try:
        import xgboost  # noqa: F401
        cost_model = "xgb"
    except ImportError:
        cost_model = "random"
    with tempfile.TemporaryDirectory(dir=work_dir) as wd:
        src, dst = os.path.join(wd, "in.py"), os.path.join(wd, "out.py")
        with open(src, "w") as f:
            f.write(_script_body(mod))
        try:
            r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec, default=str), str(trials), cost_model,
                                src, dst, os.path.join(wd, "ms")], capture_output=True, text=True,
                               timeout=600 + 30 * trials)
        except subprocess.TimeoutExpired:
            return None, "MetaSchedule timed out"
        if r.returncode != 0 or not os.path.exists(dst):
            tail = [ln for ln in (r.stderr or "").splitlines() if ln.strip() and not ln.startswith("  ")]
            why = "crashed (segfault)" if r.returncode < 0 or "Segfault" in (r.stderr or "") else \
                (tail[-1][:160] if tail else f"exit status {r.returncode}")
            return None, f"MetaSchedule failed: {why}"
        with open(dst) as f:
            return tvm.script.from_source(f.read()), "MetaSchedule"


def template_candidates(trials: int):
    """The built-in schedule's parameters to try, most promising first (the ones that won on the
    benchmark workloads, then the rest of the grid)."""
    first = [(16, 1, True), (6, 1, False), (4, 4, True), (16, 2, True), (8, 2, True), (8, 4, False), (4, 1, True)]
    grid = [c for c in itertools.product((8, 4, 16, 6, 2), (1, 2, 4, 8), (True, False)) if c not in first]
    return [{"it": it, "jvecs": jv, "unroll_i": u} for it, jv, u in first + grid][:max(1, trials)]


def tune_and_pick(mod, smod, target, trials: int, work_dir=None, gpu: bool = False, stages=None, out_name=None):
    """(module, how): the fastest of MetaSchedule's best (or the template search's) and the built-in
    schedule `smod`; None when the function cannot be tuned (free dims)."""
    if not _concrete(mod):
        warnings.warn("tvm backend: not tuning a kernel with free dims; give them values to tune",
                      RuntimeWarning, stacklevel=4)
        return None
    try:
        base_t = time_function(smod, target)
    except Exception:  # noqa: BLE001 - cannot run here (e.g. a GPU target without a GPU)
        if not gpu:
            raise
        base_t = None
    found, how = metaschedule(mod, target, trials, work_dir, gpu)
    candidates = []
    if found is not None:
        candidates.append((found, f"MetaSchedule, {trials} trials"))
    elif gpu or stages is None:
        warnings.warn(f"tvm backend: {how}; keeping the built-in schedule", RuntimeWarning, stacklevel=4)
        return None
    else:
        warnings.warn(f"tvm backend: {how}; searching the built-in schedule's tile sizes instead",
                      RuntimeWarning, stacklevel=4)
    if not gpu and stages is not None:      # the built-in schedule's tiles compete too
        from .schedule import schedule_cpu
        where = "template search" + ("" if found is not None else f" ({how})")
        for params in template_candidates(trials):
            cand, _ = schedule_cpu(mod, stages, out_name, params)
            candidates.append((cand, f"{where}, {trials} trials: row tile {params['it']}, "
                                     f"{params['jvecs']} vectors per column tile"
                                     + (", rows unrolled" if params["unroll_i"] else "")))
    if base_t is None:
        return candidates[0] if found is not None else None
    best, best_t, best_how = smod, base_t, None
    for cand, label in candidates:
        try:
            t = time_function(cand, target)
        except Exception:  # noqa: BLE001 - a candidate that does not build is skipped
            continue
        if t < best_t:
            best, best_t, best_how = cand, t, label
    if best_how is None:
        return smod, f"built-in schedule, fastest after tuning ({trials} trials; {best_t * 1e3:.3g} ms)"
    return best, f"{best_how}; {best_t * 1e3:.3g} ms vs built-in {base_t * 1e3:.3g} ms"
