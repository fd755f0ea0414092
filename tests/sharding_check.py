"""The sharded-JAX checks, run in a subprocess by tests/test_sharding.py: XLA_FLAGS must force 8
host devices before JAX starts, which a pytest process that imported JAX already cannot do.
Prints one JSON object of results; the test asserts on it."""
from __future__ import annotations

import json
import os
import re
import sys
import traceback

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType  # noqa: E402

import opdsl  # noqa: E402
from opdsl.frontend import to_graph  # noqa: E402

from .harness import CATALOGUE, run_against_dense  # noqa: E402

COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")


def collectives(hlo: str) -> list[str]:
    return sorted({c for c in COLLECTIVES if re.search(rf"\b{c}(-start)?\(", hlo) or f" {c}(" in hlo})


def mesh_of(size: int, explicit: bool = False):
    types = (AxisType.Explicit,) if explicit else (AxisType.Auto,)
    return jax.make_mesh((size,), ("d",), axis_types=types, devices=jax.devices()[:size])


def shardable(src: str):
    """(dim, mesh size) for the first concrete dim an 8-, 4- or 2-device axis divides; None if none."""
    g = to_graph(src, "<c>", None, "float64")
    for name, s in g.dims.symbols.items():
        v = g.dims.subs(s)
        if v.is_Integer and s not in g.dims.derived:
            for m in (8, 4, 2):
                if int(v) % m == 0 and int(v) >= m:
                    return name, m
    return None


def catalogue() -> dict:
    """Every catalogue example with a shardable dim, sharded, against the dense reference."""
    out = {"checked": [], "failed": [], "unshardable": []}
    seen = set()
    for kind, i, src in CATALOGUE:
        pick = shardable(src)
        if pick is None:
            continue
        seen.add(kind)
        dim, m = pick
        try:
            run_against_dense(src, "jax", "float64", mesh=mesh_of(m), shard={dim: "d"})
            out["checked"].append(f"{kind}-{i} ({dim} over {m})")
        except Exception as e:  # noqa: BLE001 - reported to the test
            out["failed"].append(f"{kind}-{i} ({dim} over {m}): {type(e).__name__}: {str(e)[:300]}")
    out["unshardable"] = sorted({k for k, _, _ in CATALOGUE} - seen)
    return out


BLOCKDIAG = """dim nb = 8
dim p = 16
dim n = nb * p
dim k = 32
input B : [nb, p, p]
input x : [n, k]
export y = blockdiag(B) @ x
export yt = blockdiag(B).T @ x
"""
KRON = """dim a = 8
dim b = 4
dim k = 64
input A : [a, a]
input B : [b, b]
input x : [a * b, k]
input w : [a * b, k]
export y = kron(A, B) @ x
export yt = kron(A, B).T @ w
"""
ATTENTION = """dim B = 2
dim H = 8
dim L = 64
dim d = 16
input Q : [B, H, L, d]
input K : [B, H, L, d]
input V : [B, H, L, d]
export y = attention(Q, K, causal=true) @ V
export s = softmax_attention(Q, K, causal=true) @ V
"""


def rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def hlo_cases() -> dict:
    """Communication-free cases: no collective in the compiled HLO, and explain says none; a split
    Kronecker factor: the all-reduce the plan names."""
    out = {}
    m = mesh_of(8)
    B, x = rand((8, 16, 16), 0), rand((128, 32), 1)
    for explicit in (False, True):
        p = opdsl.compile(BLOCKDIAG, backend="jax", mesh=mesh_of(8, explicit), shard={"nb": "d"})
        ref = opdsl.compile(BLOCKDIAG, backend="numpy")
        y = p.y(B=B, x=x)
        out[f"blockdiag{'-explicit' if explicit else ''}"] = {
            "collectives": collectives(p.hlo("y", B=B, x=x)) + collectives(p.hlo("yt", B=B, x=x)),
            "err": float(np.abs(np.asarray(y) - ref.y(B=B, x=x)).max()),
            "result_spec": str(y.sharding.spec), "devices": len(y.sharding.device_set),
            "plan": "communication: none" in p.explain()}
    A, Bk, xk = rand((8, 8), 2), rand((4, 4), 3), rand((32, 64), 4)
    ref = opdsl.compile(KRON, backend="numpy")
    for dim in ("k", "a"):
        p = opdsl.compile(KRON, backend="jax", mesh=m, shard={dim: "d"})
        got = np.asarray(p.y(A=A, B=Bk, x=xk))
        data = json.loads(p.explain(format="json"))
        out[f"kron-{dim}"] = {"collectives": collectives(p.hlo("y", A=A, B=Bk, x=xk)),
                              "err": float(np.abs(got - ref.y(A=A, B=Bk, x=xk)).max()),
                              "plan": [c["collective"] for c in data["exports"][0]["communication"]]}
    Q, K, V = (rand((2, 8, 64, 16), s) for s in (6, 7, 8))
    ref = opdsl.compile(ATTENTION, backend="numpy")
    p = opdsl.compile(ATTENTION, backend="jax", mesh=m, shard={"H": "d"})
    out["attention-heads"] = {
        "collectives": collectives(p.hlo("y", Q=Q, K=K, V=V)) + collectives(p.hlo("s", Q=Q, K=K, V=V)),
        "err": max(float(np.abs(np.asarray(p.y(Q=Q, K=K, V=V)) - ref.y(Q=Q, K=K, V=V)).max()),
                   float(np.abs(np.asarray(p.s(Q=Q, K=K, V=V)) - ref.s(Q=Q, K=K, V=V)).max())),
        "result_spec": str(p.y(Q=Q, K=K, V=V).sharding.spec)}
    return out


def gradients_and_dot_test() -> dict:
    """jax.grad through sharded programs against the unsharded ones; ⟨A x, w⟩ = ⟨x, Aᵀ w⟩ on
    sharded arrays (pylops-mpi's dottest)."""
    import jax.numpy as jnp
    out = {}
    m = mesh_of(8)
    A, Bk, xk, wk = rand((8, 8), 2), rand((4, 4), 3), rand((32, 64), 4), rand((32, 64), 5)
    plain = opdsl.compile(KRON, backend="jax")
    for dim in ("k", "a"):
        p = opdsl.compile(KRON, backend="jax", mesh=m, shard={dim: "d"})
        f = lambda prog: jax.grad(lambda A, x: jnp.sum(prog.y(A=A, B=Bk, x=x) ** 2), argnums=(0, 1))(A, xk)  # noqa: E731
        gs, gp = f(p), f(plain)
        out[f"grad-kron-{dim}"] = max(float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())
                                      for a, b in zip(gs, gp))
        y, yt = p.y(A=A, B=Bk, x=xk), p.yt(A=A, B=Bk, w=wk)
        lhs, rhs = float(jnp.vdot(y, wk)), float(jnp.vdot(xk, yt))
        out[f"dot-kron-{dim}"] = abs(lhs - rhs) / max(abs(lhs), 1e-30)
    B, x = rand((8, 16, 16), 0), rand((128, 32), 1)
    p = opdsl.compile(BLOCKDIAG, backend="jax", mesh=m, shard={"nb": "d"})
    lhs, rhs = float(jnp.vdot(p.y(B=B, x=x), x)), float(jnp.vdot(x, p.yt(B=B, x=x)))
    out["dot-blockdiag"] = abs(lhs - rhs) / abs(lhs)
    g = jax.grad(lambda B: jnp.sum(p.y(B=B, x=x) ** 2))(B)
    g0 = jax.grad(lambda B: jnp.sum(opdsl.compile(BLOCKDIAG, backend="jax").y(B=B, x=x) ** 2))(B)
    out["grad-blockdiag"] = float(np.abs(np.asarray(g) - np.asarray(g0)).max() / np.abs(np.asarray(g0)).max())
    return out


def main():
    results = {"devices": len(jax.devices())}
    for name, fn in (("catalogue", catalogue), ("hlo", hlo_cases), ("numerics", gradients_and_dot_test)):
        try:
            results[name] = fn()
        except Exception:  # noqa: BLE001 - the test shows it
            results[name] = {"error": traceback.format_exc()}
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
