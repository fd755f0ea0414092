"""Optimizing passes (issue 3): opdsl against dense torch, linear_operator and CoLA, and compile time.

Every row is timed in the same run on the same operator and the same float32
data, with 2 torch threads and the median of several runs after warm-up:

* kron 64⊗64 and 16⊗16⊗16 (N = 4096), blockdiag (64 blocks of 64), diag +
  low rank (n = 4096, r = 64) and the composed chain P·kron(A, B)·D·lowrank(U, V)
  (n = 4096, r = 64), each applied to 256 columns;
* attention written as a plain tensor product, (Q Kᵀ) V, against torch
  evaluating it as written;
* compile time: a chain of 40 operators of mixed kinds, and every example.

Peers are optional (`pip install -e '.[bench]'`): without them their rows say
"not installed".
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

import opdsl
from opdsl.kinds.basic import stride_perm_index

from .common import other_backends, row, same_columns, setup_threads

ROOT = Path(__file__).resolve().parent.parent
K = 256            # columns


def _peer(name):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name == "cola":
                import cola  # noqa: F401
                return cola
            import linear_operator
            return linear_operator
    except Exception:
        return None


def _gen(seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=None):
        t = torch.randn(*s, generator=g)
        return t / (scale if scale is not None else (s[-1] ** 0.5))
    return r


# ---- the workloads: opdsl source, inputs, and how each peer builds the same operator --------------

def workloads():
    r = _gen(0)
    out = []

    A, B = r(64, 64), r(64, 64)
    X = r(4096, K, scale=1.0)
    out.append(dict(
        name="kron 64⊗64 (N=4096), 256 cols", target_peers=(3.0, 1.5), target_dense=None,
        src="dim k ~ 256\ninput A : [64, 64]\ninput B : [64, 64]\ninput x : [4096, k]\nexport y = kron(A, B) @ x",
        inputs=dict(A=A, B=B, x=X),
        dense=lambda: torch.kron(A, B),
        lo=lambda L: L.operators.KroneckerProductLinearOperator(L.operators.DenseLinearOperator(A),
                                                               L.operators.DenseLinearOperator(B)),
        cola=lambda C: C.ops.Kronecker(C.ops.Dense(A), C.ops.Dense(B))))

    Cs = [r(16, 16) for _ in range(3)]
    out.append(dict(
        name="kron 16⊗16⊗16 (N=4096), 256 cols", target_peers=(3.0, 1.5), target_dense=25.0,
        src="dim k ~ 256\ninput A : [16, 16]\ninput B : [16, 16]\ninput C : [16, 16]\ninput x : [4096, k]\n"
            "export y = kron(A, B, C) @ x",
        inputs=dict(A=Cs[0], B=Cs[1], C=Cs[2], x=X),
        dense=lambda: torch.kron(torch.kron(Cs[0], Cs[1]), Cs[2]),
        lo=lambda L: L.operators.KroneckerProductLinearOperator(*[L.operators.DenseLinearOperator(c) for c in Cs]),
        cola=lambda C: C.ops.Kronecker(*[C.ops.Dense(c) for c in Cs])))

    W = r(64, 64, 64)
    out.append(dict(
        name="blockdiag 64 blocks of 64 (N=4096), 256 cols", target_peers=None, target_dense=None,
        src="dim k ~ 256\ninput W : [64, 64, 64]\ninput x : [4096, k]\nexport y = blockdiag(W) @ x",
        inputs=dict(W=W, x=X),
        dense=lambda: torch.block_diag(*W.unbind(0)),
        lo=lambda L: L.operators.BlockDiagLinearOperator(L.operators.DenseLinearOperator(W)),
        cola=lambda C: C.ops.BlockDiag(*[C.ops.Dense(b) for b in W.unbind(0)])))

    d = torch.rand(4096, generator=torch.Generator().manual_seed(1)) + 1.0
    U, V = r(4096, 64, scale=8.0), r(4096, 64, scale=8.0)
    out.append(dict(
        name="diag + lowrank n=4096 r=64, 256 cols", target_peers=None, target_dense=None,
        src="dim k ~ 256\ninput d : [4096]\ninput U : [4096, 64]\ninput V : [4096, 64]\ninput x : [4096, k]\n"
            "export y = (diag(d) + lowrank(U, V)) @ x",
        inputs=dict(d=d, U=U, V=V, x=X),
        dense=lambda: torch.diag(d) + U @ V.T,
        lo=lambda L: L.operators.DiagLinearOperator(d) + L.operators.MatmulLinearOperator(U, V.T),
        cola=lambda C: C.ops.Sum(C.ops.Diagonal(d), C.ops.Product(C.ops.Dense(U), C.ops.Dense(V.T)))))

    idx = torch.as_tensor(stride_perm_index(64, 64))
    out.append(dict(
        name="chain P·kron(A,B)·D·lowrank(U,V) n=4096 r=64, 256 cols", target_peers=(2.0, 2.0), target_dense=None,
        src=(ROOT / "examples" / "chain.op").read_text(), dims={"a": 64, "b": 64, "r": 64},
        inputs=dict(A=A, B=B, d=d, U=U, V=V, x=X),
        dense=lambda: torch.eye(4096)[idx] @ torch.kron(A, B) @ torch.diag(d) @ (U @ V.T),
        lo=lambda L: (L.operators.PermutationLinearOperator(idx)
                      @ L.operators.KroneckerProductLinearOperator(L.operators.DenseLinearOperator(A),
                                                                   L.operators.DenseLinearOperator(B))
                      @ L.operators.DiagLinearOperator(d) @ L.operators.MatmulLinearOperator(U, V.T)),
        cola=lambda C: (C.ops.Permutation(idx, dtype=torch.float32) @ C.ops.Kronecker(C.ops.Dense(A), C.ops.Dense(B))
                        @ C.ops.Diagonal(d) @ C.ops.Dense(U) @ C.ops.Dense(V.T))))
    return out


def _compile(src, dims=None):
    return opdsl.compile(src, backend="torch", dims=dims)


def _pair(f_a, f_b, quick):
    """Median times of f_a and f_b, run alternately (the machine may be shared: drift hits both alike)."""
    reps = 3 if quick else 9
    for _ in range(1 if quick else 2):
        f_a()
        f_b()
    ta, tb = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        f_a()
        t1 = time.perf_counter()
        f_b()
        t2 = time.perf_counter()
        ta.append((t1 - t0) * 1e3)
        tb.append((t2 - t1) * 1e3)
    return float(np.median(ta)), float(np.median(tb))


def operator_rows(quick: bool) -> list[dict]:
    peers = {"linear_operator": _peer("linear_operator"), "CoLA": _peer("cola")}
    out = []
    for w in workloads():
        prog = _compile(w["src"], w.get("dims"))
        fn = prog[prog.functions[0]]
        x = w["inputs"]["x"]
        f_o = lambda: fn(**w["inputs"])  # noqa: E731
        with torch.no_grad():
            ref = f_o()
            M = w["dense"]()
            dense_err = float((M @ x - ref).abs().max() / ref.abs().max())
            t_o, t_d = _pair(f_o, lambda: M @ x, quick)
            del M
        summary = opdsl.cost.summarize(prog, prog.functions[0]).numbers()
        ratio = summary["dense"] / summary["optimized"] if summary["optimized"] else None
        others = other_backends(prog, prog.functions[0], w["inputs"], 3 if quick else 7)
        out.append(row(w["name"], "dense torch matmul", t_o, t_d, ratio, w["target_dense"],
                       f"rel err {dense_err:.1e}", others))
        for (peer, mod), target in zip(peers.items(), w["target_peers"] or (None, None)):
            if mod is None:
                out.append(row(w["name"], peer, t_o, None, None, target, "not installed", same_columns(others)))
                continue
            try:
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    op = w["lo" if peer == "linear_operator" else "cola"](mod)
                    f_p = lambda: op @ x  # noqa: E731
                    y = f_p()
                    y = y.to_dense() if hasattr(y, "to_dense") else y
                    err = float((y - ref).abs().max() / ref.abs().max())
                    t_o2, t_p = _pair(f_o, f_p, quick)
                note = f"rel err {err:.1e}; {type(op).__name__[:40]}"
            except Exception as e:      # a peer that cannot express the operator
                out.append(row(w["name"], peer, t_o, None, None, target, f"failed: {type(e).__name__}: {e}"[:120],
                               same_columns(others)))
                continue
            out.append(row(w["name"], peer, t_o2, t_p, ratio, target, note, same_columns(others)))
    return out


def attention_rows(quick: bool) -> list[dict]:
    """(Q Kᵀ) V written as a tensor product: opdsl reorders it to Q (Kᵀ V); torch runs it as written."""
    r = _gen(2)
    L, dh = 4096, 64
    Q, Km, V = r(L, dh), r(L, dh), r(L, dh)
    prog = _compile(f"input Q : [{L}, {dh}]\ninput K : [{L}, {dh}]\ninput V : [{L}, {dh}]\nexport y = (Q @ K.T) @ V")
    f_o = lambda: prog.y(Q=Q, K=Km, V=V)  # noqa: E731
    f_t = lambda: (Q @ Km.T) @ V  # noqa: E731
    err = float((f_o() - f_t()).abs().max() / f_t().abs().max())
    s = opdsl.cost.summarize(prog, "y").numbers()
    t_o, t_t = _pair(f_o, f_t, quick)
    return [row(f"(Q Kᵀ) V as a tensor product, L={L} d={dh}", "torch, as written", t_o, t_t,
                s["source"] / s["optimized"], None,
                f"rel err {err:.1e}; opdsl evaluates Q (Kᵀ V)",
                other_backends(prog, "y", dict(Q=Q, K=Km, V=V), 3 if quick else 7))]


def chain40_source(m: int = 40) -> str:
    """A chain of m operators of mixed kinds (kron, diag, lowrank, perm, blockdiag) applied to x."""
    decl = ["dim a = 64", "dim b = 32", "dim r = 16", "dim k ~ 256", "input x : [a * b, k]"]
    terms = []
    for i in range(m):
        kind = i % 5
        if kind == 0:
            decl += [f"input A{i} : [a, a]", f"input B{i} : [b, b]"]
            terms.append(f"kron(A{i}, B{i})")
        elif kind == 1:
            decl.append(f"input d{i} : [a * b]")
            terms.append(f"diag(d{i})")
        elif kind == 2:
            decl += [f"input U{i} : [a * b, r]", f"input V{i} : [a * b, r]"]
            terms.append(f"lowrank(U{i}, V{i})")
        elif kind == 3:
            terms.append("perm(a, b)")
        else:
            decl.append(f"input W{i} : [a, b, b]")
            terms.append(f"blockdiag(W{i})")
    return "\n".join(decl) + "\nexport y = " + " @ ".join(terms) + " @ x\n"


def compile_ms(src_or_path, reps: int, backend: str = "torch", **options) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        if isinstance(src_or_path, Path):
            opdsl.compile_file(src_or_path, backend=backend, **options)
        else:
            opdsl.compile(src_or_path, backend=backend, **options)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def compile_columns(src_or_path, reps: int) -> dict:
    """Compile times on jax (source and module; XLA compiles on the first call) and tvm (LLVM, no cache)."""
    out, notes = {}, []
    for backend, options in (("jax", {}), ("tvm", {"cache": False})):
        try:
            out[f"{backend}_ms"] = compile_ms(src_or_path, reps, backend, **options)
        except Exception as e:  # noqa: BLE001 - the reason goes into the table
            notes.append(f"{backend}: {type(e).__name__}: {str(e).strip().splitlines()[0]}"[:120])
    out["backends_note"] = "; ".join(notes)
    return out


def compile_rows(quick: bool) -> list[dict]:
    reps = 1 if quick else 3
    opdsl.compile("input x : [2]\nexport y = x", backend="torch")       # warm up the parser and sympy
    out = []
    src = chain40_source()
    ms = compile_ms(src, reps)
    prog = opdsl.compile(src, backend="torch")
    passes = ", ".join(f"{r.name} {r.seconds * 1e3:.0f} ms" for r in prog.records)
    out.append(row("compile: chain of 40 operators (mixed kinds)", "1 s budget", ms, 1000.0, None, 1.0,
                   f"{passes}; rules: {sum(sum(r.fired.values()) for r in prog.records)} fired",
                   compile_columns(src, reps)))
    for path in sorted((ROOT / "examples").glob("*.op")):
        try:
            ms = compile_ms(path, reps)
        except Exception as e:
            out.append(row(f"compile: examples/{path.name}", "", None, None, None, None, f"failed: {e}"[:100]))
            continue
        out.append(row(f"compile: examples/{path.name}", "", ms, None, None, None,
                       "compile times in ms: opdsl ms = torch backend, all passes", compile_columns(path, reps)))
    return out


def rows(quick: bool = False) -> list[dict]:
    setup_threads()
    return operator_rows(quick) + attention_rows(quick) + compile_rows(quick)


if __name__ == "__main__":
    import sys
    for r_ in rows("--quick" in sys.argv):
        print(r_)
