"""Decayed, gated and delta-rule causal linear attention (issue 14) against SDPA and hand-written torch.

Workloads (torch CPU, float32, 2 threads; B = 1, H = 8, d = dv = 64; opdsl's side is SOURCE below
compiled for the torch backend with L overridden, outside the timing):
- retention: attention(Q, K, feature=identity, normalize=false, decay=γ) with RetNet's per-head
  γ_h = 1 − 2^(−5−h), at L = 4096 and 16384, against SDPA is_causal (the quadratic softmax
  baseline: targets >= 4x at 4096, >= 8x at 16384), against the hand-written chunked torch code
  (linear_attention_baselines.gated_chunked_torch) and against torch.compile of that code;
- gated: the same with per-token log-gates G = logsigmoid(randn) (GLA / Mamba-2 scalar gates);
- DeltaNet: delta_attention(Q, K, beta, normalize_keys=true), β = sigmoid(randn), at L = 4096,
  against the token-by-token torch recurrence (delta_recurrent_torch: target >= 10x) and the
  chunked WY torch code (delta_chunked_torch: target >= 1x); Gated DeltaNet (gate=G) likewise.
The baselines get the same inputs; the keys' L2 normalization of DeltaNet is inside every timed call.

Before any timing, each opdsl result is compared with its torch baseline (every entry within 1e-3 of
the baseline's largest; a mismatch raises), so a fast wrong answer cannot make a row.  The candidates
of one workload are timed round-robin (bench_linalg.interleaved: a busy machine slows all of them
alike); times are medians, the note adds the fastest runs.  SDPA at L = 16384 is quadratic
(~2 s a call): 3 rounds there.  torch.compile (inductor) of the chunked code unrolls its Python
loop over the chunks; its compile time is in the note (inductor keeps on-disk caches: a second
run on the same machine compiles much faster than the first).  Quick mode: L = 512 and 1024 (256
for the delta rule), 3 rounds, no torch.compile and no targets (they are set for the full sizes).

FLOP ratios are baseline FLOPs (leading terms, counted below) over opdsl's cost rule.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

import opdsl

from .bench_linalg import fastest, interleaved
from .common import export_flops, other_backends, row, same_columns, setup_threads
from .linear_attention_baselines import delta_chunked_torch, delta_recurrent_torch, gated_chunked_torch, sdpa_causal

H, D = 8, 64
CHUNK = 64                   # the hand-written baselines' chunk (fla's); opdsl chooses its own

SOURCE = """dim B = 1
dim H = 8
dim L = 4096
dim d = 64
input Q : [B, H, L, d]
input K : [B, H, L, d]
input V : [B, H, L, d]
input gamma : [H]
input G : [B, H, L]
input beta : [B, H, L]
export retention = attention(Q, K, feature=identity, normalize=false, decay=gamma) @ V
export gated = attention(Q, K, feature=identity, normalize=false, gate=G) @ V
export deltanet = delta_attention(Q, K, beta, normalize_keys=true) @ V
export gated_deltanet = delta_attention(Q, K, beta, gate=G, normalize_keys=true) @ V
"""


def _program(L):
    return opdsl.compile(SOURCE, backend="torch", dims={"L": L}, filename="bench_linear_attention")


def _inputs(L, seed=0):
    """q, k, v [1, H, L, D]; RetNet's decays γ [H] and their log-gates [1, H, L]; per-token
    log-gates G = logsigmoid(randn) [1, H, L] (≤ 0); β = sigmoid(randn) [1, H, L]."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, H, L, D, generator=g) for _ in range(3))
    gamma = 1.0 - 2.0 ** (-5.0 - torch.arange(H, dtype=torch.float32))         # RetNet's γ_h
    retention_gate = gamma.log()[None, :, None].expand(1, H, L).contiguous()
    gate = F.logsigmoid(torch.randn(1, H, L, generator=g))
    beta = torch.sigmoid(torch.randn(1, H, L, generator=g))
    return q, k, v, gamma, retention_gate, gate, beta


def l2_normalize(k):
    """k / sqrt(Σ k² + 1e-6) over the last axis: fla's l2norm, what normalize_keys=true applies."""
    return k / (k * k).sum(-1, keepdim=True).add(1e-6).sqrt()


# ---- baseline FLOPs (per head; multiply-add = 2) --------------------------------------------------

def sdpa_causal_flops(L):
    """QKᵀ and PV of causal softmax attention: half of 4·L²·d per head (as bench_families_attention_conv)."""
    return 4.0 * H * L * L * D / 2


def gated_chunked_flops(L, C=CHUNK):
    """gated_chunked_torch: intra-chunk QKᵀ ∘ Γ then @ V (2·L·C·(d + dv) + L·C), each chunk's state
    contribution and the inter-chunk read (2·L·d·dv each), the scan (2·d·dv per chunk)."""
    return H * (2.0 * L * C * (D + D) + L * C + 4.0 * L * D * D + 2.0 * (L / C) * D * D)


def delta_recurrent_flops(L, gated):
    """delta_recurrent_torch per token: Sᵀk, the rank-one update and Sᵀq (2·d·dv each), and the
    gate's scaling of S (d·dv)."""
    return H * L * (6.0 + (1.0 if gated else 0.0)) * D * D


def delta_chunked_flops(L, C=CHUNK):
    """delta_chunked_torch: KKᵀ and QKᵀ (2·L·C·d each), the unit-triangular solve against [W | U]
    (L·C·(d + dv)), W S, Q S and the state update (2·L·d·dv each), the intra-chunk product (2·L·C·dv)."""
    return H * (4.0 * L * C * D + L * C * (D + D) + 6.0 * L * D * D + 2.0 * L * C * D)


# ---- checks --------------------------------------------------------------------------------------

def _check(name, got, want, rtol=1e-3):
    """Raise unless got ≈ want (entries within rtol of want's largest entry); returns the max relative
    difference for the note."""
    scale = float(want.abs().max())
    err = float((got - want).abs().max()) / scale
    if not err <= rtol:
        raise AssertionError(f"{name}: opdsl and the baseline differ by {err:.1e} of the largest entry "
                             f"(tolerance {rtol:.0e}): the row would time a wrong answer")
    return err


def _compiled(fn, *args):
    """torch.compile(fn) (static shapes: one graph per size), compiled by a first call on args.
    Returns (callable or None, seconds the compile took, the error when it failed)."""
    t0 = time.perf_counter()
    try:
        f = torch.compile(fn, dynamic=False)
        f(*args)
        return f, time.perf_counter() - t0, None
    except Exception as e:  # noqa: BLE001 - the reason goes into the table
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return None, time.perf_counter() - t0, f"{type(e).__name__}: {msg}"[:120]


# ---- rows ------------------------------------------------------------------------------------------

def gated_rows(quick):
    """Retention and per-token gates vs SDPA, the chunked torch code and torch.compile of it."""
    sizes = ((512, None), (1024, None)) if quick else ((4096, 4), (16384, 8))
    return [r for L, target in sizes for r in _gated_rows_at(L, target, quick)]


def _gated_rows_at(L, target, quick):
    """The rows of one sequence length L; `target`: the speed-up asked for against SDPA."""
    out = []
    big = L > 4096
    q, k, v, gamma, retention_gate, gate, _ = _inputs(L)
    prog = _program(L)
    workloads = {       # name: (export, its arguments, the baseline's log-gates, how it is described)
        "retention": ("retention", {"gamma": gamma}, retention_gate,
                      "retention (decay γ_h = 1 − 2^(−5−h))"),
        "gated": ("gated", {"G": gate}, gate, "gated (per-token log-gates, logsigmoid)"),
    }
    cands, errs = {"sdpa": lambda: sdpa_causal(q, k, v)}, {}
    # One compiled function serves both workloads (same shapes, dtypes and strides: one graph).
    compiled, secs, failure = (None, 0.0, "not run in quick mode") if quick else \
        _compiled(gated_chunked_torch, q, k, v, gate, CHUNK)
    compile_note = (f"torch.compile failed after {secs:.0f} s: {failure}" if failure
                    else f"compile + first call {secs:.0f} s with inductor's on-disk caches as they are "
                    "(one graph for both workloads)")
    for name, (export, extra, lg, _) in workloads.items():
        fn, args = getattr(prog, export), {"Q": q, "K": k, "V": v, **extra}
        cands[f"{name} opdsl"] = lambda fn=fn, args=args: fn(**args)
        cands[f"{name} chunked"] = lambda lg=lg: gated_chunked_torch(q, k, v, lg, chunk=CHUNK)
        errs[name] = _check(f"{name} L={L}", cands[f"{name} opdsl"](), cands[f"{name} chunked"]())
        if compiled is not None:
            _check(f"torch.compile {name} L={L}", compiled(q, k, v, lg, CHUNK), cands[f"{name} chunked"]())
            cands[f"{name} compiled"] = lambda lg=lg: compiled(q, k, v, lg, CHUNK)
    t = interleaved(cands, reps=3 if quick or big else 7)

    for name, (export, extra, lg, title) in workloads.items():
        workload = f"{title} L={L} (B=1, H=8, d=64)"
        mine = t[f"{name} opdsl"]
        flops = export_flops(prog, export)
        others = other_backends(prog, export, {"Q": q, "K": k, "V": v, **extra}, reps=3)
        out.append(row(workload, "SDPA is_causal (quadratic softmax)", mine, t["sdpa"],
                       sdpa_causal_flops(L) / flops, target,
                       f"{fastest(t, f'{name} opdsl', 'sdpa')}; flop ratio: SDPA's causal QKᵀ and PV",
                       others))
        out.append(row(workload, f"chunked torch, C={CHUNK} (gated_chunked_torch)", mine, t[f"{name} chunked"],
                       gated_chunked_flops(L) / flops, None,
                       f"max rel diff {errs[name]:.0e}; {fastest(t, f'{name} opdsl', f'{name} chunked')}",
                       same_columns(others)))
        if quick:
            continue
        key = f"{name} compiled"
        out.append(row(workload, "torch.compile(gated_chunked_torch), inductor", mine, t.get(key),
                       gated_chunked_flops(L) / flops, None,
                       compile_note + (f"; {fastest(t, f'{name} opdsl', key)}" if key in t else ""),
                       same_columns(others)))
    return out


def delta_rows(quick):
    """DeltaNet and Gated DeltaNet vs the token loop and the chunked WY torch code."""
    L = 256 if quick else 4096
    q, k, v, _, _, gate, beta = _inputs(L)
    prog = _program(L)
    out = []
    for export, lg, title in (("deltanet", None, "DeltaNet (normalize_keys, β = sigmoid)"),
                              ("gated_deltanet", gate, "Gated DeltaNet (normalize_keys, β = sigmoid, "
                                                       "log-gates logsigmoid)")):
        fn = getattr(prog, export)
        args = {"Q": q, "K": k, "V": v, "beta": beta, **({"G": lg} if lg is not None else {})}
        cands = {"opdsl": lambda: fn(**args),
                 "chunked": lambda: delta_chunked_torch(q, l2_normalize(k), v, beta, lg, chunk=CHUNK),
                 "recurrent": lambda: delta_recurrent_torch(q, l2_normalize(k), v, beta, lg)}
        mine = cands["opdsl"]()
        err_chunked = _check(f"{export} L={L} vs chunked", mine, cands["chunked"]())
        err_loop = _check(f"{export} L={L} vs the token loop", mine, cands["recurrent"]())
        t = interleaved(cands, reps=3 if quick else 5)
        flops = export_flops(prog, export)
        others = other_backends(prog, export, args, reps=3)
        workload = f"{title} L={L} (B=1, H=8, d=64)"
        out.append(row(workload, "token-by-token torch recurrence (delta_recurrent_torch)", t["opdsl"],
                       t["recurrent"], delta_recurrent_flops(L, lg is not None) / flops, None if quick else 10,
                       f"max rel diff {err_loop:.0e}; {fastest(t, 'opdsl', 'recurrent')}", others))
        out.append(row(workload, f"chunked WY torch, C={CHUNK} (delta_chunked_torch)", t["opdsl"], t["chunked"],
                       delta_chunked_flops(L) / flops, None if quick else 1,
                       f"max rel diff {err_chunked:.0e}; {fastest(t, 'opdsl', 'chunked')}", same_columns(others)))
    return out


def rows(quick: bool = False):
    setup_threads()
    return gated_rows(quick) + delta_rows(quick)


if __name__ == "__main__":
    import sys
    for r in rows("--quick" in sys.argv):
        print(r)
