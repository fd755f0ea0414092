"""The cost of argument validation (docs/reliability.md, "Calls"): under 5% on the benchmark workloads.

Every generated function starts with checks of its arguments (rank, the size of every
dimension against the declared dims, dtype, device).  For each workload this module times:

- the generated function as emitted (checks included): `opdsl_ms`;
- the same module with the check statements removed (`if ...: _..._error(...)` pairs; the
  lines binding free dims stay): `baseline_ms`;
- the checks alone (the function cut after its last check), many calls: `check_us`.

The overhead is check_us / baseline_ms (the difference of two medians is within the noise of
a millisecond-scale workload); `met` compares it with the 5% target.
"""
from __future__ import annotations

import re
import time
import types

import torch

import opdsl

from .common import median_ms, setup_threads

WORKLOADS = [
    # (name, example, dims, free dims)
    ("kron 64x64 (N=4096), 256 cols", "examples/kron.op", {"a": 64, "b": 64}, {"k": 256}),
    ("blockdiag n=4096, 64 blocks, 1024 cols", "examples/blockdiag.op", {"nb": 64, "p": 64}, {"k": 1024}),
    ("diag + lowrank n=16384 r=64, 256 cols", "examples/diag_lowrank.op", {"n": 16384, "r": 64}, {"k": 256}),
    ("monarch n=4096, 1024 cols", "examples/monarch.op", {"b": 64}, {"k": 1024}),
    ("householder n=1024 k=256, 256 cols", "examples/householder.op", {}, {"c": 256}),
    # not a benchmark workload: a call of ~20 us, where the fixed cost of the checks shows (no target)
    ("kron 8x8 (N=64), 8 cols (tiny)", "examples/kron.op", {"a": 8, "b": 8}, {"k": 8}),
]
TARGET = 0.05


def strip_checks(source: str) -> str:
    """The module without its argument checks: every `_check_arg(...)` call and every `if ...:`
    whose body raises through a `_..._error(...)` helper is dropped; bindings of free dims
    (`k = x.shape[1]`) stay."""
    lines = source.splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("    _check_arg("):
            i += 1
            continue
        if re.match(r"    if .*:$", lines[i]) and i + 1 < len(lines) and re.match(r"        _\w+_error\(", lines[i + 1]):
            i += 2
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out) + "\n"


def checks_only(source: str, export: str) -> str:
    """Function `export` cut after its checks (and the bindings among them): `return None`."""
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"def {export}("))
    end = start + 1
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("    # "):          # the first body statement's source comment
            end = i
            break
    return "\n".join(lines[:end] + ["    return None", ""])


def load(source: str, name: str):
    mod = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), mod.__dict__)
    return mod


def inputs_for(prog, export: str, free: dict) -> dict:
    g = prog.graph
    gen = torch.Generator().manual_seed(0)
    out = {}
    for arg, shape, dtype, role in g.meta["signatures"][export]:
        sizes = []
        for d in shape:
            e = g.dims.subs(d)
            sizes.append(int(e.subs({s: free[s.name] for s in e.free_symbols})))
        out[arg] = torch.randn(*sizes, generator=gen) / (sizes[-1] ** 0.5)
    return out


def per_call_us(fn, calls: int = 2000) -> float:
    for _ in range(50):
        fn()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    return best


def rows(quick: bool = False) -> list[dict]:
    setup_threads()
    out = []
    for name, path, dims, free in WORKLOADS:
        prog = opdsl.compile_file(path, backend="torch", dims=dims)
        export = "apply"
        args = inputs_for(prog, export, free)
        checked = getattr(prog.module, export)
        plain = getattr(load(strip_checks(prog.source), "unchecked"), export)
        only = getattr(load(checks_only(prog.source, export), "checks_only"), export)
        assert torch.allclose(checked(**args), plain(**args))
        reps = 5 if quick else 15
        t_checked = median_ms(lambda: checked(**args), reps)
        t_plain = median_ms(lambda: plain(**args), reps)
        check_us = per_call_us(lambda: only(**args), 500 if quick else 2000)
        overhead = check_us / 1e3 / t_plain
        head = prog.source.split(f"def {export}(")[1].split("\n    # ")[0]
        n_checks = head.count("_error(") + head.count("_check_arg(")
        out.append({
            "workload": f"{name}: argument checks", "baseline": "the same generated code without its checks",
            "flop_ratio": None, "opdsl_ms": t_checked, "baseline_ms": t_plain,
            "speedup": t_plain / t_checked if t_checked else None,
            "target": "" if "tiny" in name else f"<= {TARGET:.0%} overhead",
            "met": None if "tiny" in name else overhead <= TARGET,
            "note": f"{n_checks} checks cost {check_us:.1f} us per call = {overhead * 100:.4f}% of the call "
                    f"(medians differ by {(t_checked - t_plain) / t_plain:+.1%}, within noise)",
        })
    return out


if __name__ == "__main__":
    import sys
    for r in rows(quick="--quick" in sys.argv):
        print(f"{r['workload']:<70} checked {r['opdsl_ms']:8.3f} ms  unchecked {r['baseline_ms']:8.3f} ms  "
              f"met={r['met']}  {r['note']}")
