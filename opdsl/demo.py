"""`make demo` / `python -m opdsl.demo`: compile one example to PyTorch, run it, and report
what matters.

Prints where the generated code is, dense vs compiled FLOPs, the max error
against the dense reference, and the time against the dense matrix measured
in the same run.  The example is examples/kron.op, shipped inside the package
as opdsl/demo.op (package data), so the demo runs from any directory with an
installed opdsl; the generated module goes to ./out (a temporary directory
when the current one is not writable).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import sympy as sp

import opdsl
from opdsl.reference import dense_eval

EXAMPLE = "demo.op"          # a copy of examples/kron.op (tests/test_demo.py keeps them equal)
K = 256


def median_ms(fn, reps=7):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def _output_dir() -> Path:
    out = Path("out")
    try:
        out.mkdir(exist_ok=True)
        probe = out / ".opdsl-demo-write-test"
        probe.touch()
        probe.unlink()
        return out
    except OSError:
        return Path(tempfile.mkdtemp(prefix="opdsl-demo-"))


def main():
    try:
        import torch
    except ImportError:
        print("the demo runs the generated code with PyTorch: pip install 'opdsl[torch]'", file=sys.stderr)
        return 1
    torch.set_num_threads(2)
    with resources.as_file(resources.files("opdsl") / EXAMPLE) as path:
        prog = opdsl.compile_file(path, backend="torch")
    gen_path = _output_dir() / "kron_torch.py"
    prog.save(gen_path)

    rng = np.random.default_rng(0)
    A = np.linalg.qr(rng.standard_normal((64, 64)))[0].astype(np.float32)
    B = np.linalg.qr(rng.standard_normal((64, 64)))[0].astype(np.float32)
    x = rng.standard_normal((4096, K)).astype(np.float32)
    args = {"x": torch.from_numpy(x), "A": torch.from_numpy(A), "B": torch.from_numpy(B)}

    y = prog.apply(**args)
    ref = dense_eval(prog.graph, prog.graph.exports["apply"], {"x": x, "A": A, "B": B})
    err = float(np.max(np.abs(y.numpy() - ref)))

    g = prog.graph
    root = g.exports["apply"]
    flops = float(g.dims.subs(g.spec(root).flops(g, root, None)).subs(sp.Symbol("k", integer=True, positive=True), K))
    n = 4096
    dense_flops = 2.0 * n * n * K
    M = torch.kron(args["A"], args["B"])
    t_c = median_ms(lambda: prog.apply(**args))
    t_d = median_ms(lambda: M @ args["x"], 5)

    print(f"opdsl {opdsl.__version__} demo: examples/kron.op, export `apply` = kron(A, B) @ x, "
          f"A, B 64x64, x [4096, {K}], torch on CPU ({torch.get_num_threads()} threads)")
    print(f"  generated code   {gen_path}  ({len(prog.source.splitlines())} lines, imports only torch and numpy)")
    print(f"  FLOPs            dense {dense_flops:.3e}   compiled {flops:.3e}   ({dense_flops / flops:.0f}x fewer)")
    print(f"  max abs error    {err:.2e} against the dense numpy reference (float64)")
    print(f"  time             dense {t_d:.2f} ms   compiled {t_c:.2f} ms   ({t_d / t_c:.1f}x faster, same run)")
    print()
    print("The generated function (argument checks omitted):")
    body = prog.source.split("def apply(")[1].split("\n\n")[0]
    for line in ("def apply(" + body).splitlines():
        if "_error(" in line or line.strip().startswith("if "):
            continue
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
