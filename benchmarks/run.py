"""`make bench`: run every benchmarks/bench_*.py and write benchmarks/results.md.

Each module defines rows(quick) -> list of dicts (see common.row).  Speed-ups
are ratios against a baseline timed in the same run; the machine is recorded.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import pkgutil
import sys
import time
import traceback
from pathlib import Path

# OpenMP reads its wait policy when torch loads it (machine() imports torch before any bench module):
# spinning barriers make small kernels stall for ~100 ms when another process holds the other core
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    parts = [cpu, f"{os.cpu_count()} cores visible, torch threads = {torch.get_num_threads()}",
             f"load average when the run started {load} (other jobs on the machine slow every kernel)",
             f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    for mod in ("jax", "tvm"):
        try:
            parts.append(f"{mod} {importlib.import_module(mod).__version__}")
        except Exception:
            pass
    return "; ".join(parts)


def fmt(x, spec):
    return "" if x is None else format(x, spec)


def table(rows) -> list[str]:
    out = ["| workload | baseline | FLOP ratio | opdsl ms | jax ms | tvm ms | baseline ms | speed-up | efficiency | "
           "target | met | note |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        r = {k: (v.replace("|", "\\|") if isinstance(v, str) else v) for k, v in r.items()}   # a | ends a cell
        eff = (r["speedup"] / r["flop_ratio"]) if r.get("flop_ratio") and r.get("speedup") else None
        met = {True: "yes", False: "**no**", None: ""}[r.get("met")]
        out.append(f"| {r['workload']} | {r['baseline']} | {fmt(r.get('flop_ratio'), '.1f')} | "
                   f"{fmt(r.get('opdsl_ms'), '.3f')} | {fmt(r.get('jax_ms'), '.3f')} | {fmt(r.get('tvm_ms'), '.3f')} | "
                   f"{fmt(r.get('baseline_ms'), '.3f')} | "
                   f"{fmt(r.get('speedup'), '.2f')} | {fmt(eff, '.2f')} | {r.get('target', '')} | {met} | "
                   f"{r.get('note', '')} |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--only", help="run only bench_<ONLY>.py")
    ap.add_argument("-o", "--output", default=str(HERE / "results.md"))
    args = ap.parse_args(argv)
    mods = sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))
    if args.only:
        mods = [m for m in mods if m == f"bench_{args.only}"]
    lines = ["# Benchmark results", "",
             f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `make bench` "
             f"({'quick' if args.quick else 'full'} mode).", "",
             f"Machine: {machine()}.", "",
             "Speed-up = baseline time / opdsl time, both timed in this run (median of several runs after "
             "warm-up). FLOP ratio = baseline FLOPs / opdsl FLOPs where both are known; efficiency = "
             "speed-up / FLOP ratio.", "",
             "*opdsl ms* is the program compiled for the torch backend; *jax ms* and *tvm ms* are the same "
             "program compiled for the jax and tvm backends, timed on the same arguments in the same run "
             "(benchmarks/common.py, other_backends; compile times and any disagreement with torch are in "
             "the note). Speed-ups and targets are the torch backend's, except in the `backends` section, "
             "which times jax and tvm against torch. A blank jax / tvm cell is a row that does not time a "
             "compiled program (compile time, call overhead, argument checks), or a backend that cannot run "
             "it (the note says why).", ""]
    failures = 0
    for m in mods:
        t0 = time.time()
        print(f"running {m} ...", flush=True)
        try:
            rows = importlib.import_module(f"benchmarks.{m}").rows(args.quick)
            lines += [f"## {m[len('bench_'):]}", ""] + table(rows) + ["", f"({time.time() - t0:.0f} s)", ""]
        except Exception:
            failures += 1
            traceback.print_exc()
            lines += [f"## {m[len('bench_'):]}", "", "FAILED to run:", "", "```",
                      traceback.format_exc(limit=3), "```", ""]
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
