"""Shared timing helpers: median of several runs after warm-up, 2 threads, FLOPs from the cost rules."""
from __future__ import annotations

import statistics
import time

import sympy as sp


def setup_threads(n: int = 2):
    """n threads for torch and for TVM's runtime (XLA sizes its pool from the machine)."""
    import torch
    torch.set_num_threads(n)
    try:
        from opdsl.backends.tvm.target import set_num_threads
        set_num_threads(n)
    except ImportError:
        pass


def median_ms(fn, reps: int = 7, warmup: int = 2, min_time: float = 0.0) -> float:
    """Median wall time of fn() in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def export_flops(prog, export: str, **free) -> float:
    """FLOPs of one call of an export, from each kind's cost rule, with free dims bound."""
    g = prog.graph
    root = g.exports[export]
    expr = sp.sympify(g.spec(root).flops(g, root, None))
    expr = g.dims.subs(expr)
    expr = expr.subs({s: free[s.name] for s in expr.free_symbols if s.name in free})
    return float(expr)


def row(workload, baseline, opdsl_ms, baseline_ms, flop_ratio=None, target=None, note="", others=None):
    """One result row; `target` is the minimum speed-up asked for (None: no target); `others`:
    the jax / tvm columns (other_backends), whose note is appended to the row's."""
    speedup = baseline_ms / opdsl_ms if opdsl_ms and baseline_ms else None
    others = others or {}
    if others.get("backends_note"):
        note = f"{note}; {others['backends_note']}" if note else others["backends_note"]
    return {
        "jax_ms": others.get("jax_ms"), "tvm_ms": others.get("tvm_ms"),
        "workload": workload, "baseline": baseline, "flop_ratio": flop_ratio,
        "opdsl_ms": opdsl_ms, "baseline_ms": baseline_ms, "speedup": speedup,
        "target": f">= {target}x" if target else "",
        "met": (speedup >= target) if (target and speedup) else None,
        "note": note,
    }


def aligned(t):
    """A CPU torch tensor as the TVM kernels take it without a copy (contiguous, 64-byte aligned)."""
    t = t.contiguous()
    return t.clone() if t.data_ptr() % 64 else t


def intermediate_gb(prog, export: str) -> float:
    """GB of intermediates a call holds at once: a TVM kernel's memory plan (backends/tvm/memory.py:
    a dead intermediate's buffer serves a later one), else every value the export computes (the
    primitive graph's live nodes with known sizes)."""
    import numpy as np
    planned = getattr(prog._backend, "memory", {}).get(export, {}).get("peak")
    if planned is not None:
        return planned / 1e9
    g = prog.primitive
    total = 0
    for v in g.live([g.exports[export]]):
        t = g.type(v)
        try:
            n = int(np.prod([int(g.dims.subs(d)) for d in t.shape]))
            total += n * np.dtype(t.dtype or "float32").itemsize
        except (TypeError, AttributeError):     # a free size, or not an array
            continue
    return total / 1e9


def available_gb() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return float("inf")


def other_backends(prog, export: str, args: dict, reps: int = 5, max_call_s: float = 5.0, **options) -> dict:
    """The jax and tvm columns of a row: the program `prog` (compiled for torch) compiled again for
    jax and tvm and timed on the same arguments, each backend in a block of its own (a short pause
    first lets the previous runtime's worker threads go idle: on 2 cores their spinning would be
    timed too).  A call slower than max_call_s is timed once.  Returns {"jax_ms", "tvm_ms",
    "backends_note"}; a backend that cannot run the program has None and the reason in the note.
    Compile times: jax includes the first call (tracing + XLA), tvm is without the compile cache."""
    import numpy as np

    import opdsl
    from opdsl import backends

    have = backends.available()
    host = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)) for k, v in args.items()}
    ref = None
    out = {"jax_ms": None, "tvm_ms": None}
    notes = []
    for name in ("jax", "tvm"):
        if name not in have:
            notes.append(f"{name}: not installed")
            continue
        try:
            t0 = time.perf_counter()
            p = opdsl.compile(prog.text, backend=name, dims=prog.dims, dtype=prog.dtype, filename=prog.filename,
                              **({"cache": False} if name == "tvm" else {}), **options)
            need, have_gb = intermediate_gb(p, export), available_gb()
            if name == "tvm" and need > 0.5 * have_gb:
                notes.append(f"tvm: not run, its kernel would hold {need:.0f} GB of intermediates at once "
                             f"(its memory plan; {have_gb:.0f} GB available)")
                continue
            if name == "jax":
                import jax
                import jax.numpy as jnp
                with jax.enable_x64(any(v.dtype == np.float64 for v in host.values())):
                    a = {k: jnp.asarray(v) for k, v in host.items()}
                fn = p[export]
                call = lambda: jax.block_until_ready(fn(**a))  # noqa: E731
            else:
                import torch
                a = {k: aligned(torch.from_numpy(v)) for k, v in host.items()}
                fn = p[export]
                call = lambda: fn(**a)  # noqa: E731
            time.sleep(0.05)
            t1 = time.perf_counter()
            res = call()
            first = time.perf_counter() - t1
            compile_s = (time.perf_counter() - t0) if name == "jax" else (t1 - t0)
            ms = first * 1e3 if first > max_call_s else median_ms(call, reps, warmup=1)
            out[f"{name}_ms"] = ms
            if ref is None:        # the torch result of the same program, compiled with the same options
                base = prog if not options else opdsl.compile(prog.text, backend="torch", dims=prog.dims,
                                                              dtype=prog.dtype, filename=prog.filename, **options)
                ref = np.asarray(base[export](**{k: (v.clone() if hasattr(v, "clone") else v)
                                                  for k, v in args.items()}))
            got = np.asarray(res)
            err = float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-30))
            notes.append(f"{name}: compile {compile_s:.2f} s" + (", timed once" if first > max_call_s else "")
                         + (f", max rel diff vs torch {err:.0e}" if err > 1e-4 else ""))
        except Exception as e:  # noqa: BLE001 - the reason goes into the table
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            notes.append(f"{name}: {type(e).__name__}: {msg}"[:140])
    out["backends_note"] = "; ".join(notes)
    return out


def same_columns(others: dict) -> dict:
    """The jax / tvm columns of another row of the same program (its note is on that row)."""
    return {**others, "backends_note": ""}
