"""Run every catalogue program and example on TVM with bounds-checked kernels; report bad accesses.

    .venv/bin/python tests/tvm_bounds_check.py [--dtype float32] [--only KIND] [--json PATH]

Each program is compiled inside `opdsl.backends.tvm.bounds.bounds_checked()` (every load and
store of every kernel checks its index at run time; TVM's own `tirx.instrument_bound_checkers`
does nothing for these kernels) with the compile cache off, and each export is run on the
inputs of `random_inputs` three ways: the kernel specialized to the call's sizes (threshold set
to 0), the symbolic kernel (free dims as variables), and the symbolic kernel at other sizes of
the free dims (1 and 7, which leave vector tails).  A line per program says how many accesses
were out of bounds (with the kernel and buffer) and the largest error against the dense
reference; the summary and a JSON file (--json, default /tmp/opdsl-tvm-bounds.json) list
every finding.  Exit status 1 when an access was out of bounds or a case failed.

Not part of the test suite (it compiles ~140 programs: 140 s of wall time on 2 shared cores);
tests/test_tvm_backend.py checks the fixed cases with the same instrumentation.  Results after
a bad access are not meaningful (the access is redirected to the buffer's start).
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OPDSL_CACHE_DIR", tempfile.mkdtemp(prefix="opdsl-bounds-cache-"))


def programs(only=None):
    from opdsl.kinds import REGISTRY
    for name in sorted(REGISTRY):
        if only and name not in only:
            continue
        for i, src in enumerate(REGISTRY[name].examples):
            yield f"{name}-{i}", src, None
    if not only:
        for path in sorted(glob.glob(str(ROOT / "examples" / "*.op"))):
            yield Path(path).name, Path(path).read_text(), path


def run_case(label, src, path, dtype):
    import opdsl
    from opdsl.backends.tvm import backend as tvm_backend
    from opdsl.backends.tvm.bounds import CHECKED, OUT_OF_BOUNDS, bounds_checked
    from opdsl.errors import BackendError
    from opdsl.reference import dense_eval, random_inputs

    start, checked = len(OUT_OF_BOUNDS), CHECKED[0]
    res = {"case": label, "exports": {}, "skipped": None, "error": None}
    tvm_backend.SPECIALIZE_MIN_ELEMENTS = 0
    with bounds_checked():
        try:
            prog = (opdsl.compile_file(path, backend="tvm", dtype=dtype, cache=False) if path else
                    opdsl.compile(src, backend="tvm", dtype=dtype, cache=False))
        except BackendError as e:          # e.g. cg: refused by the tvm backend, by name
            res["skipped"] = str(e).splitlines()[0]
            return res
        for name in prog.functions:
            free = prog._backend._free_dims(prog.primitive, name)
            runs = [("specialized", None), ("symbolic", None)] if free else [("fixed", None)]
            if free:
                runs += [("symbolic " + ", ".join(f"{d}={v}" for d in free), dict.fromkeys(free, v)) for v in (1, 7)]
            worst = 0.0
            for how, sizes in runs:
                if how.startswith("symbolic"):             # the kernel in _lib, for any size
                    prog.module._SPECIALIZE = None
                    prog.module._KERNELS.clear()
                before = len(OUT_OF_BOUNDS)
                try:
                    inputs = random_inputs(prog.graph, name, sizes)
                    out = np.asarray(prog[name](**inputs), dtype=np.float64)
                    ref = dense_eval(prog.graph, prog.graph.exports[name], inputs)
                    if ref.size:
                        err = float(np.max(np.abs(out - ref))) / max(1.0, float(np.max(np.abs(ref))))
                        worst = max(worst, err)
                except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                    res["error"] = f"{name} ({how}): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    traceback.print_exc()
                bad = OUT_OF_BOUNDS[before:]
                if bad:
                    res["exports"].setdefault(name, {}).setdefault("out_of_bounds", []).append(
                        {"run": how, "count": len(bad),
                         "where": sorted({f"{f}:{b}" for f, b, *_ in bad}),
                         "first": [list(x) for x in bad[:3]]})
            res["exports"].setdefault(name, {})["rel_err"] = worst
    res["out_of_bounds"] = len(OUT_OF_BOUNDS) - start
    res["checked_accesses"] = CHECKED[0] - checked      # 0 would mean the instrumentation did not run
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--only", nargs="*", help="kinds to run (default: every kind and every example)")
    ap.add_argument("--json", default="/tmp/opdsl-tvm-bounds.json")
    args = ap.parse_args(argv)
    import tvm  # noqa: F401 - fail early without TVM

    t0 = time.time()
    results = []
    for label, src, path in programs(args.only):
        t = time.time()
        r = run_case(label, src, path, args.dtype)
        r["seconds"] = round(time.time() - t, 1)
        results.append(r)
        errs = [e.get("rel_err", 0.0) for e in r["exports"].values()]
        status = ("skipped: " + r["skipped"] if r["skipped"] else
                  f"{r['checked_accesses']} accesses checked, {r['out_of_bounds']} out of bounds, max rel err {max(errs, default=0.0):.1e}"
                  + (f", ERROR {r['error']}" if r["error"] else ""))
        print(f"{label:<32} {r['seconds']:>6.1f}s  {status}", flush=True)
        for name, e in r["exports"].items():
            for o in e.get("out_of_bounds", []):
                print(f"    {name} [{o['run']}]: {o['count']} bad accesses in {', '.join(o['where'])}; "
                      f"first {o['first']}", flush=True)
    bad = [r for r in results if r.get("out_of_bounds") or r["error"] or r.get("checked_accesses") == 0]
    summary = {"dtype": args.dtype, "cases": len(results), "skipped": sum(bool(r["skipped"]) for r in results),
               "with_out_of_bounds": [r["case"] for r in results if r.get("out_of_bounds")],
               "with_errors": [r["case"] for r in results if r["error"]],
               "unchecked": [r["case"] for r in results if r.get("checked_accesses") == 0],
               "gathers_not_checked": len(__import__("opdsl.backends.tvm.bounds", fromlist=["x"]).UNCHECKED),
               "seconds": round(time.time() - t0, 1),
               "sites_by_buffer": collections.Counter(
                   w for r in results for e in r["exports"].values() for o in e.get("out_of_bounds", [])
                   for w in o["where"]).most_common()}
    Path(args.json).write_text(json.dumps({"summary": summary, "results": results}, indent=1))
    print(f"\n{summary['cases']} programs ({summary['skipped']} skipped) in {summary['seconds']} s; "
          f"out of bounds: {summary['with_out_of_bounds'] or 'none'}; errors: {summary['with_errors'] or 'none'}; "
          f"details in {args.json}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
