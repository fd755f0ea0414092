"""`make gpu-check`: the catalogue and benchmark rows on a CUDA GPU, in one command (issue 19).

    python -m benchmarks.gpu_check            # on a GPU machine: writes benchmarks/results-gpu.md
    python -m benchmarks.gpu_check --dry-run  # anywhere: the same steps on the CPU, small sizes

1. Imports opdsl from this source tree without installing anything (the GPU machines this project
   is lent have no network): the package is put together as symlinks in a temporary folder (the
   layout pyproject.toml maps: grammar/, passes/, backends/ inside opdsl/).  Its one dependency
   those machines lack is lark (pure Python): put its wheel in wheels/ (`pip download lark
   --no-deps -d wheels/` on a machine with network) and it is imported from there.  Anything else
   missing is named, with the same remedy.
2. The catalogue — every registered kind's examples — against the dense float64 numpy reference:
   on the torch backend with CUDA tensors in float32, float64 and bfloat16, and on the JAX backend
   on the GPU in float32 and float64.  bfloat16 is checked to 5e-2 (a kind or primitive that refuses
   it says so by name and is listed, not failed).
3. Benchmark rows on the GPU, torch backend (and the JAX backend's time in its own column; TVM with
   target="cuda" when TVM and a CUDA runtime are there): Kronecker, Monarch, block-diagonal,
   diagonal plus low rank against the dense matmul; causal linear, RetNet-decayed and gated
   DeltaNet attention against PyTorch's SDPA (FlashAttention-backed on sm80+); each result checked
   against its baseline before timing, CUDA-synchronized medians of interleaved rounds.
4. Writes the results with the device's name (benchmarks/results-gpu.md, or --output).

Without a CUDA GPU (and without --dry-run) it says so and exits 0.  It must fit in 8 minutes on
one H100-class GPU: the catalogue is about 1,000 small compiles and runs, the rows about a minute.
Exit status 1 when a catalogue case fails.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NEEDED = ("lark", "networkx", "sympy", "numpy", "filelock")      # pyproject's dependencies (platformdirs: see below)
BF16_TOL = 5e-2


# -- 1. opdsl from the source tree -------------------------------------------------------------

def bring_up() -> list[str]:
    """Make `import opdsl` work without installing; returns what is still missing (with remedies)."""
    wheels = sorted((ROOT / "wheels").glob("*.whl"))
    for w in wheels:                       # pure-Python wheels import from the zip
        sys.path.insert(0, str(w))
    missing = []
    for mod in NEEDED:
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        return [f"{m}: not installed; on a machine with network run `pip download {m} --no-deps -d wheels/` "
                f"in the repository and copy wheels/ here (pure-Python wheels are imported from there)"
                for m in missing]
    os.environ.setdefault("OPDSL_CACHE_DIR", tempfile.mkdtemp(prefix="opdsl-cache-"))   # no platformdirs needed
    try:        # installed (pip install -e .): nothing to do
        __import__("opdsl")
        return []
    except ImportError:
        pass
    farm = Path(tempfile.mkdtemp(prefix="opdsl-src-")) / "opdsl"
    farm.mkdir()
    for item in (ROOT / "opdsl").iterdir():
        (farm / item.name).symlink_to(item)
    for sub in ("grammar", "passes", "backends"):
        (farm / sub).symlink_to(ROOT / sub)
    sys.path.insert(0, str(farm.parent))
    return []


# -- 2. the catalogue --------------------------------------------------------------------------

def device_tensor(v, device, dtype):
    """A numpy / scipy.sparse input as a torch tensor on `device`; floating ones in `dtype`."""
    from opdsl.cli import to_backend
    if getattr(v, "dtype", None) is not None and v.dtype.name == "bfloat16":     # ml_dtypes: torch cannot read it
        v = v.astype("float32")
    t = to_backend("torch", {"v": v})["v"]
    return t.to(device=device, dtype=dtype) if t.is_floating_point() and dtype is not None else t.to(device)


# torch's own refusals of bfloat16 (no bfloat16 LU, Cholesky, eigh, triangular solve, slogdet or
# FFT kernels; opdsl's sparse inputs are float32/float64): "unsupported", not failures
BF16_UNSUPPORTED = ("not implemented for 'BFloat16'", "Unsupported dtype BFloat16",
                    "Low precision dtypes not supported", "a sparse input is float32 or float64, not bfloat16")


def catalogue(devices: dict, log, sample: bool = False) -> dict:
    """{(backend, dtype): {"pass": n, "fail": [...], "refused": [...]}} over every catalogue case
    (sample: each kind's first example only, and JAX in float32 only)."""
    import numpy as np
    import torch

    import opdsl
    from opdsl.errors import BackendError
    from opdsl.reference import dense_eval, random_inputs
    sys.path.insert(0, str(ROOT))
    from tests.harness import CATALOGUE, TOL, relative_error
    tol = {**TOL, "bfloat16": BF16_TOL}
    combos = [("torch", d) for d in ("float32", "float64", "bfloat16")]
    if devices.get("jax"):
        combos += [("jax", d) for d in (("float32",) if sample else ("float32", "float64"))]
    out = {}
    for backend, dtype in combos:
        res = out[(backend, dtype)] = {"pass": 0, "fail": [], "refused": [], "unsupported": []}
        t0 = time.time()
        for kind, i, src in CATALOGUE:
            if sample and i:
                continue
            case = f"{kind}-{i}"
            try:
                prog = opdsl.compile(src, backend=backend, dtype=dtype)
            except BackendError as e:
                res["refused"].append(f"{case}: {str(e).splitlines()[0]}")
                continue
            except Exception as e:  # noqa: BLE001 - a failure to report
                _failed(res, f"{case}: compile", e)
                continue
            for name in prog.functions:
                try:
                    # numpy has bfloat16 only through ml_dtypes (JAX's): draw in float64, convert on the device
                    inputs = random_inputs(prog.graph, name, dtype="float64" if dtype == "bfloat16" else None, seed=0)
                    ref = dense_eval(prog.graph, prog.graph.exports[name], inputs)
                    if backend == "torch":
                        want = {a: getattr(torch, node["dtype"]) for a, node in
                                prog._backend.signature(prog.primitive, name)}
                        args = {a: device_tensor(v, devices["torch"], want.get(a)) for a, v in inputs.items()}
                        got = prog[name](**args).detach().float().cpu().double().numpy() \
                            if dtype == "bfloat16" else prog[name](**args).detach().cpu().double().numpy()
                    else:
                        from opdsl.cli import to_backend
                        got = np.asarray(prog[name](**to_backend("jax", inputs)), dtype=np.float64)
                    err = relative_error(got, ref) if got.shape == ref.shape else float("inf")
                    if err <= tol[dtype]:
                        res["pass"] += 1
                    else:
                        res["fail"].append(f"{case}/{name}: relative error {err:.2e} > {tol[dtype]}")
                except BackendError as e:
                    res["refused"].append(f"{case}/{name}: {str(e).splitlines()[0]}")
                except Exception as e:  # noqa: BLE001
                    _failed(res, f"{case}/{name}", e)
        log(f"catalogue {backend} {dtype}: {res['pass']} passed, {len(res['fail'])} failed, "
            f"{len(res['refused'])} refused by name, {len(res['unsupported'])} unsupported by the framework "
            f"({time.time() - t0:.0f} s)")
    return out


def _failed(res, what, e):
    msg = f"{what}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    res["unsupported" if any(m in str(e) for m in BF16_UNSUPPORTED) else "fail"].append(msg)


# -- 3. benchmark rows -------------------------------------------------------------------------

def timed(fns: dict, sync, reps: int) -> dict:
    """Median ms of each function, interleaved rounds, synchronized around each call."""
    for f in fns.values():
        f()
        f()
    sync()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            sync()
            t = time.perf_counter()
            f()
            sync()
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def workloads(small: bool):
    """(name, .op source, baseline) — the sizes of the CPU benchmark rows (small: the dry run's)."""
    n_kron, n_mon, L = (16, 8, 256) if small else (64, 64, 4096)
    k = 16 if small else 256
    return [
        ("kron 64⊗64, 256 columns" if not small else "kron (small)",
         f"dim a = {n_kron}\ndim k ~ {k}\ninput A : [a, a]\ninput B : [a, a]\ninput x : [a * a, k]\nexport y = kron(A, B) @ x\n",
         "dense matmul"),
        ("Monarch n = 4096, 1024 columns" if not small else "Monarch (small)",
         f"dim b = {n_mon}\ndim n = b * b\ndim k ~ {4 * k}\ninput L : [b, b, b]\ninput R : [b, b, b]\ninput x : [n, k]\n"
         "export y = monarch(L, R) @ x\n", "dense matmul"),
        ("block-diagonal n = 4096 (64 blocks), 256 columns" if not small else "blockdiag (small)",
         f"dim nb = {n_mon}\ndim p = {n_mon}\ndim n = nb * p\ndim k ~ {k}\ninput B : [nb, p, p]\ninput x : [n, k]\n"
         "export y = blockdiag(B) @ x\n", "dense matmul"),
        ("diag + low rank n = 16384, r = 64" if not small else "diag + lowrank (small)",
         f"dim n = {16384 if not small else 512}\ndim k ~ {k}\ninput d : [n]\ninput U : [n, 64]\ninput V : [n, 64]\n"
         f"input x : [n, k]\nexport y = (diag(d) + lowrank(U, V)) @ x\n", "dense matmul"),
        (f"causal linear attention L = {L}, 8 heads, d = 64",
         f"dim L = {L}\ninput Q : [1, 8, L, 64]\ninput K : [1, 8, L, 64]\ninput V : [1, 8, L, 64]\n"
         "export y = attention(Q, K, causal=true) @ V\n", "SDPA causal"),
        (f"RetNet retention L = {L}, 8 heads, d = 64",
         f"dim L = {L}\ninput Q : [1, 8, L, 64]\ninput K : [1, 8, L, 64]\ninput V : [1, 8, L, 64]\n"
         "export y = attention(Q, K, feature=identity, normalize=false, decay=0.96) @ V\n", "SDPA causal"),
        (f"gated DeltaNet L = {L // 2}, 8 heads, d = 64",
         f"dim L = {L // 2}\ninput Q : [1, 8, L, 64]\ninput K : [1, 8, L, 64]\ninput V : [1, 8, L, 64]\n"
         "input beta : [1, 8, L]\ninput G : [1, 8, L]\n"
         "export y = delta_attention(Q, K, beta, gate=G, normalize_keys=true, normalize_queries=true) @ V\n",
         "SDPA causal"),
    ]


def bench_rows(device: str, small: bool, has_jax: bool, log) -> list[dict]:
    import numpy as np
    import torch

    import opdsl
    from opdsl.reference import dense_eval, random_inputs
    sys.path.insert(0, str(ROOT))
    from benchmarks.common import row
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    reps = 5 if small else 20
    rows = []
    for name, src, base in workloads(small):
        try:
            prog = opdsl.compile(src, backend="torch", dtype="float32")
            dims = prog.graph.dims              # free dims (the columns) at their size hints
            inputs = random_inputs(prog.graph, "y", {str(s): dims.hints[s] for s in dims.free() if s in dims.hints}, seed=0)
            args = {a: torch.as_tensor(v, dtype=torch.float32, device=device) for a, v in inputs.items()}
            if base == "dense matmul":       # the operator's matrix (it applied to I), formed outside the timing
                n = int(inputs["x"].shape[0])
                M = prog.y(**{**args, "x": torch.eye(n, device=device)})
                baseline = lambda M=M, x=args["x"]: M @ x  # noqa: E731
            else:
                import torch.nn.functional as F
                q, k_, v = args["Q"], args["K"], args["V"]
                baseline = lambda: F.scaled_dot_product_attention(q, k_, v, is_causal=True)  # noqa: E731
            mine = lambda prog=prog, args=args: prog.y(**args)  # noqa: E731
            if base == "dense matmul":
                err = float((mine() - baseline()).abs().max() / baseline().abs().max().clamp(min=1))
                check = f"max rel. difference to the dense product {err:.1e}"
            else:
                ref = dense_eval(prog.graph, prog.graph.exports["y"], inputs)
                err = float(np.abs(mine().double().cpu().numpy() - ref).max() / max(1.0, np.abs(ref).max()))
                check = f"max rel. error vs the dense reference {err:.1e}"
            t = timed({"opdsl": mine, "base": baseline}, sync, reps)
            others = {}
            if has_jax:
                import jax
                jp = opdsl.compile(src, backend="jax", dtype="float32")
                jargs = {a: jax.device_put(np.asarray(v, np.float32)) for a, v in inputs.items()}
                tj = timed({"jax": lambda: jp.y(**jargs).block_until_ready()}, lambda: None, reps)
                others = {"jax_ms": tj["jax"]}
            rows.append(row(name, f"{base} ({device})", t["opdsl"], t["base"], note=check, others=others))
            log(f"  {name}: opdsl {t['opdsl']:.3f} ms, {base} {t['base']:.3f} ms")
        except Exception as e:  # noqa: BLE001 - a row that could not run says why
            rows.append(row(name, base, None, None, note=f"not run: {type(e).__name__}: {str(e).splitlines()[0][:200]}"))
            log(f"  {name}: not run ({e})")
    rows.append(tvm_row(device, small, log))
    return rows


def tvm_row(device, small, log) -> dict:
    sys.path.insert(0, str(ROOT))
    from benchmarks.common import row
    try:
        import tvm
    except ImportError:
        return row("kron on TVM (target cuda)", "-", None, None, note="TVM is not installed on this machine")
    if device != "cuda" or not tvm.cuda().exist:
        return row("kron on TVM (target cuda)", "-", None, None, note="no CUDA device for TVM here")
    import numpy as np

    import opdsl
    a = 16 if small else 64
    src = f"dim a = {a}\ninput A : [a, a]\ninput B : [a, a]\ninput x : [a * a, 256]\nexport y = kron(A, B) @ x\n"
    try:
        prog = opdsl.compile(src, backend="tvm", target="cuda")
        rng = np.random.default_rng(0)
        args = {"A": rng.standard_normal((a, a), np.float32), "B": rng.standard_normal((a, a), np.float32),
                "x": rng.standard_normal((a * a, 256), np.float32)}
        t = timed({"tvm": lambda: prog.y(**args)}, lambda: None, 10)
        return row("kron on TVM (target cuda)", "-", t["tvm"], None, note="numpy arguments in and out (copies included)")
    except Exception as e:  # noqa: BLE001
        log(f"  TVM cuda: {e}")
        return row("kron on TVM (target cuda)", "-", None, None, note=f"not run: {str(e).splitlines()[0][:200]}")


# -- 4. the report -----------------------------------------------------------------------------

def report(device_name, dry, cat, rows, seconds) -> str:
    sys.path.insert(0, str(ROOT))
    from benchmarks.run import table
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    import torch
    lines = ["# GPU check" + (" (CPU dry run: not GPU figures)" if dry else ""), "",
             f"Measured {when} by `make gpu-check`{' DRY=1' if dry else ''} in {seconds:.0f} s. "
             f"Device: **{device_name}**. Python {platform.python_version()}, torch {torch.__version__}"
             + _versions() + ".", "", "## Catalogue against the dense float64 reference", "",
             "| backend | dtype | passed | failed | refused by name | unsupported by the framework |",
             "|---|---|---|---|---|---|"]
    for (backend, dtype), r in cat.items():
        lines.append(f"| {backend} | {dtype} | {r['pass']} | {len(r['fail'])} | {len(r['refused'])} | "
                     f"{len(r['unsupported'])} |")
    fails = [f"- {b} {d}: {f}" for (b, d), r in cat.items() for f in r["fail"]]
    if fails:
        lines += ["", "Failures:", ""] + fails
    refused = sorted({f.split(':')[1].strip() if ':' in f else f for r in cat.values() for f in r["refused"]})
    unsupported = sorted({f.split(": ", 2)[-1] for r in cat.values() for f in r["unsupported"]})
    if unsupported:
        lines += ["", "Unsupported by the framework in that dtype (its own errors, one line each):", ""] + \
                 [f"- {u}" for u in unsupported]
    if refused:
        lines += ["", "Refusals (a backend or dtype that declares it cannot run a primitive):", ""] + \
                 [f"- {r}" for r in refused[:40]]
    lines += ["", "## Benchmark rows", "", "torch backend (*opdsl ms*) and the JAX backend (*jax ms*) on the "
              "device, float32; baseline as named; medians of interleaved, synchronized rounds.", ""]
    lines += table(rows)
    return "\n".join(lines) + "\n"


def _versions() -> str:
    out = ""
    for mod in ("jax", "tvm"):
        try:
            out += f", {mod} {__import__(mod).__version__}"
        except Exception:  # noqa: BLE001
            pass
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="no GPU needed: the same steps on the CPU, small sizes")
    ap.add_argument("--sample", action="store_true", help="each kind's first catalogue example only (JAX: float32)")
    ap.add_argument("--output", help="where to write the report (default: benchmarks/results-gpu.md on a GPU; "
                    "a dry run writes /tmp/opdsl-gpu-check-dry-run.md)")
    args = ap.parse_args(argv)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:5.0f} s] {msg}", flush=True)

    missing = bring_up()
    if missing:
        print("gpu-check: opdsl needs packages this machine lacks:\n  " + "\n  ".join(missing))
        return 2
    try:
        import torch
    except ImportError:
        torch = None
    cuda = torch is not None and torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("gpu-check: no CUDA GPU here (torch " + ("not installed" if torch is None else "sees none") +
              "): nothing to check. `make gpu-check DRY=1` runs the same steps on the CPU.")
        return 0
    has_jax = False
    try:
        import jax
        has_jax = any(d.platform == "gpu" for d in jax.devices()) if cuda else True
    except Exception:  # noqa: BLE001 - no JAX, or no JAX GPU backend: its rows are skipped
        pass
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    log(f"device: {name}; JAX on it: {has_jax}")
    try:
        cat = catalogue({"torch": device, "jax": has_jax}, log, args.sample)
        rows = bench_rows(device, not cuda, has_jax, log)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return 1
    out = Path(args.output) if args.output else (Path("/tmp/opdsl-gpu-check-dry-run.md") if not cuda
                                                 else ROOT / "benchmarks" / "results-gpu.md")
    out.write_text(report(name, not cuda, cat, rows, time.time() - t0))
    failed = sum(len(r["fail"]) for r in cat.values())
    log(f"wrote {out}; {failed} catalogue failure(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
