"""Sharded JAX programs on 1, 2, 4 and 8 forced host devices (issue 19, docs/backends.md "Sharding").

Each device count runs in its own process (XLA_FLAGS=--xla_force_host_platform_device_count=N must
be set before JAX starts).  Per program: the sharded call's median time against the same program
unsharded in the same process, and the communication in the compiled HLO (the bytes of the
results of its all-reduce / all-gather / reduce-scatter / all-to-all / collective-permute ops)
against the bytes `opdsl explain` plans.  On this 2-core machine N forced devices share 2 cores,
so the time says what the partitioned program costs here, not what N real devices give; the
point of the rows is that the communication matches the plan.

- blockdiag n = 4096 (64 blocks of 64), 256 columns, split over the blocks: plan none;
- Monarch n = 4096 (b = 64), 256 columns, split over the columns (plan none) and over b (plan: x
  gathered);
- causal linear attention B = 2, H = 8, L = 1024, d = 64, split over the heads: plan none.

Quick mode: n = 1024, L = 256, devices 1 and 2.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from .common import row

PROGRAMS = {
    "blockdiag": ("dim nb = {b}\ndim p = {b}\ndim n = nb * p\ndim k = {k}\ninput B : [nb, p, p]\ninput x : [n, k]\n"
                  "export y = blockdiag(B) @ x\n", "nb"),
    "monarch-columns": ("dim b = {b}\ndim n = b * b\ndim k = {k}\ninput L : [b, b, b]\ninput R : [b, b, b]\n"
                        "input x : [n, k]\nexport y = monarch(L, R) @ x\n", "k"),
    "monarch-b": ("dim b = {b}\ndim n = b * b\ndim k = {k}\ninput L : [b, b, b]\ninput R : [b, b, b]\n"
                  "input x : [n, k]\nexport y = monarch(L, R) @ x\n", "b"),
    "attention-heads": ("dim B = 2\ndim H = 8\ndim L = {L}\ndim d = 64\ninput Q : [B, H, L, d]\n"
                        "input K : [B, H, L, d]\ninput V : [B, H, L, d]\n"
                        "export y = attention(Q, K, causal=true) @ V\n", "H"),
}
HLO_OP = re.compile(r"= (\w+)\[([\d,]*)\][^=]*? (all-reduce|all-gather|reduce-scatter|all-to-all|"
                    r"collective-permute)(?:-start)?\(")
BYTES = {"f32": 4, "f64": 8, "bf16": 2, "f16": 2, "s32": 4, "s64": 8}


def hlo_bytes(hlo: str) -> tuple[float, list[str]]:
    total, kinds = 0.0, []
    for dt, dims, op in HLO_OP.findall(hlo):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * BYTES.get(dt, 4)
        kinds.append(op)
    return total, sorted(set(kinds))


def child(devices: int, quick: bool) -> list[dict]:
    """In a process with `devices` forced host devices: time and HLO of every program."""
    import jax
    import numpy as np

    import opdsl

    from .bench_linalg import interleaved
    b, k, L = (32, 64, 256) if quick else (64, 256, 1024)
    mesh = jax.make_mesh((devices,), ("d",))
    out = []
    rng = np.random.default_rng(0)
    for name, (src, dim) in PROGRAMS.items():
        src = src.format(b=b, k=k, L=L)
        plain = opdsl.compile(src, backend="jax")
        sharded = opdsl.compile(src, backend="jax", mesh=mesh, shard={dim: "d"})
        dims = plain.graph.dims
        args = {a: rng.standard_normal(tuple(int(dims.subs(s)) for s in shape)).astype(np.float32)
                for a, shape, _, _ in plain.graph.meta["signatures"]["y"]}
        placed = {a: jax.device_put(v) for a, v in args.items()}
        err = float(np.abs(np.asarray(sharded.y(**args)) - np.asarray(plain.y(**args))).max())
        hlo, kinds = hlo_bytes(sharded.hlo("y", **args))
        plan = json.loads(sharded.explain(format="json"))["exports"][0]["communication"]
        t = interleaved({"sharded": lambda: sharded.y(**args).block_until_ready(),
                         "plain": lambda: plain.y(**placed).block_until_ready()}, reps=7)
        t_sh, t_plain = t["sharded"], t["plain"]
        out.append({"name": name, "devices": devices, "dim": dim, "sharded_ms": t_sh, "plain_ms": t_plain,
                    "hlo_bytes": hlo, "hlo_ops": kinds, "plan_bytes": sum(c["bytes"] for c in plan),
                    "plan_ops": sorted({c["collective"] for c in plan}), "err": err})
    return out


def rows(quick: bool = False) -> list[dict]:
    out = []
    for n in ((1, 2) if quick else (1, 2, 4, 8)):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        r = subprocess.run([sys.executable, "-m", "benchmarks.bench_shard", str(n)] + (["--quick"] if quick else []),
                           env=env, capture_output=True, text=True, timeout=1800)
        if r.returncode:
            raise RuntimeError(f"bench_shard with {n} devices failed:\n{r.stderr[-2000:]}")
        for c in json.loads(r.stdout.strip().splitlines()[-1]):
            same = (c["hlo_ops"] == [] and c["plan_ops"] == []) or \
                   (c["hlo_ops"] == c["plan_ops"] and abs(c["hlo_bytes"] - c["plan_bytes"]) <= 0.01 * c["plan_bytes"])
            hlo = ", ".join(c["hlo_ops"]) or "none"
            plan = ", ".join(c["plan_ops"]) or "none"
            out.append(row(f"sharded {c['name']} ({c['dim']} split) on {n} forced device{'s' * (n > 1)}",
                           "the same program unsharded", c["sharded_ms"], c["plain_ms"],
                           note=f"opdsl ms: the sharded JAX program; HLO communication: {hlo} ({c['hlo_bytes'] / 1e3:.1f} kB); plan: {plan} "
                                f"({c['plan_bytes'] / 1e3:.1f} kB){'' if same else ' — differs'}; "
                                f"max |sharded - unsharded| {c['err']:.1e}"))
    return out


if __name__ == "__main__":
    print(json.dumps(child(int(sys.argv[1]), "--quick" in sys.argv)))
