"""The Python embedding: per-call overhead of @opdsl.jit, of Program calls and of opdsl.torch.Module,
against calling the generated function directly; and a Monarch layer's training step against
torch.nn.Linear.  Same run; each pair timed interleaved, fastest of several rounds after a warm-up.

Overhead rows time loops of small calls (so that the overhead, not the arithmetic, is measured),
interleaved with the baseline, and keep the fastest round: opdsl_ms and baseline_ms are per call, and
the note gives the difference in microseconds, which is what the target (<= 20 us over the generated
function) is about.
"""
from __future__ import annotations

import torch

import opdsl
import opdsl.torch

from .common import setup_threads

LOWRANK = "input x : [{n}, 4]\ninput U : [{n}, 2]\ninput V : [{n}, 2]\ninput d : [{n}]\n" \
          "export f = (diag(d) + lowrank(U, V)) @ x"


def _pair_ms(fa, fb, calls: int, reps: int) -> tuple[float, float]:
    """Per-call ms of fa and fb: loops of `calls` calls, interleaved (a, b, a, b, ...) so that a busy
    machine slows both alike; the fastest of `reps` rounds after a warm-up round (on a shared machine
    preemption only ever adds time, and the difference of two medians is mostly noise there)."""
    import time
    ta, tb = [], []
    for i in range(reps + 1):
        for f, acc in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            for _ in range(calls):
                f()
            if i:
                acc.append((time.perf_counter() - t0) * 1e3 / calls)
    return min(ta), min(tb)


def _overhead_row(workload, baseline, opdsl_ms, baseline_ms, target_us=None, note=""):
    over_us = (opdsl_ms - baseline_ms) * 1e3
    return {
        "workload": workload, "baseline": baseline, "flop_ratio": None,
        "opdsl_ms": opdsl_ms, "baseline_ms": baseline_ms, "speedup": baseline_ms / opdsl_ms,
        "target": f"<= {target_us} us" if target_us is not None else "",
        "met": (over_us <= target_us) if target_us is not None else None,
        "note": f"overhead {over_us:.1f} us per call" + (f"; {note}" if note else ""),
    }


def rows(quick: bool = False):
    # Overhead rows run with 1 intra-op thread: the overhead is Python, and waking a second BLAS
    # thread on a shared machine adds ~100 us at random, which would drown it.  The training
    # step rows below use 2 threads like every other benchmark.
    setup_threads(1)
    calls, reps = (200, 7) if quick else (1000, 15)
    out = []
    n = 64
    gen = torch.Generator().manual_seed(0)
    x, U, V, d = (torch.randn(*s, generator=gen) for s in ((n, 4), (n, 2), (n, 2), (n,)))

    @opdsl.jit(backend="torch")
    def f(x, U, V, d):
        return (opdsl.diag(d) + opdsl.lowrank(U, V)) @ x

    f(x, U, V, d)                                   # compiles this signature
    direct = f.program(x, U, V, d).module.f         # the generated function itself
    jit, base = _pair_ms(lambda: f(x, U, V, d), lambda: direct(x=x, U=U, V=V, d=d), calls, reps)
    out.append(_overhead_row(f"@opdsl.jit call, cached signature (diag + lowrank n={n})",
                             "generated function called directly", jit, base, target_us=20,
                             note="1 thread"))

    prog = opdsl.compile(LOWRANK.format(n=n), backend="torch")
    call = prog["f"]
    direct_p = prog.module.f
    wrapped, base_p = _pair_ms(lambda: call(x=x, U=U, V=V, d=d), lambda: direct_p(x=x, U=U, V=V, d=d), calls, reps)
    out.append(_overhead_row(f"prog['f'](...) (diag + lowrank n={n})", "generated function called directly",
                             wrapped, base_p, note="the Program wrapper: argument errors as CallError"))

    layer = opdsl.torch.Module.from_file("examples/layer.op", dims={"b": 4}, generator=0)
    xl = torch.randn(8, 16, generator=gen)
    fn = layer.program.module.apply
    L, R = layer.L, layer.R
    with torch.no_grad():
        mod, base_m = _pair_ms(lambda: layer(xl), lambda: fn(x=xl, L=L, R=R), calls, reps)
    out.append(_overhead_row("opdsl.torch.Module forward (examples/layer.op, b=4)", "generated function called "
                             "directly", mod, base_m, note="nn.Module __call__ and hooks included"))

    # a training step: the Monarch layer of examples/layer.op against torch.nn.Linear, n = b²
    setup_threads()
    for b in ((16,) if quick else (16, 32)):
        nn_ = b * b
        batch = 256
        mon = opdsl.torch.Module.from_file("examples/layer.op", dims={"b": b}, generator=0)
        lin = torch.nn.Linear(nn_, nn_, bias=False)
        xs = torch.randn(batch, nn_, generator=gen)

        def step(m):
            def run():
                m.zero_grad(set_to_none=True)
                m(xs).square().mean().backward()
            return run

        t_mon, t_lin = _pair_ms(step(mon), step(lin), 3, reps)
        g = mon.program.graph
        applied = g[g.exports["apply"]].operands[0]      # the export is (monarch(L, R) @ x.T).T
        flops = float(g.dims.subs(g.spec(applied).flops(g, applied, None)).subs(
            {s: batch for s in g.dims.symbols.values() if s.name == "k"}))
        out.append({
            "workload": f"Monarch layer n={nn_} (b={b}) fwd+bwd, batch {batch}",
            "baseline": "torch.nn.Linear(n, n) fwd+bwd",
            "flop_ratio": 2 * nn_ * nn_ * batch / flops,
            "opdsl_ms": t_mon, "baseline_ms": t_lin, "speedup": t_lin / t_mon,
            "target": "", "met": None,
            "note": f"{2 * b ** 3} vs {nn_ * nn_} weights",
        })
    return out


if __name__ == "__main__":
    for r in rows(quick=True):
        print(r)
