"""Hand-written torch baselines for the gated / decayed / delta-rule attention rows (issue 14).

What the benchmark times opdsl against: code a careful engineer would write by hand, following
flash-linear-attention's reference implementations (fla/ops/simple_gla/naive.py,
fla/ops/delta_rule/naive.py, fla/ops/gated_delta_rule/naive.py), device-agnostic, differentiable.

Layout [B, H, L, D] (fla's head-first naive layout): q, k [B, H, L, dk], v [B, H, L, dv], per-token
log-gates G and delta strengths β [B, H, L].  No 1/√d scale and no feature map: the caller applies
them.  State convention S ∈ R^{dk x dv}, o_t = S_tᵀ q_t.  All of them are causal.

- sdpa_causal:           softmax attention, the quadratic baseline
- gated_parallel_torch:  (tril(QKᵀ) ∘ Γ) V, Γ_ij = exp(Σ_{t=j+1..i} G_t), the quadratic masked form
- gated_chunked_torch:   S_t = exp(G_t) S_{t-1} + k_t v_tᵀ, chunked (simple GLA / RetNet / Lightning-2)
- delta_recurrent_torch: S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ, one token at a time
- delta_chunked_torch:   the same, chunked in the WY / UT form

Every exponent is a non-positive difference of within-chunk cumsums (masked before exp), never
exp(b_i)·exp(−b_j), which overflows to 0·inf = nan for strong gates.  The chunked and recurrent
forms compute half-precision inputs in float32 (gates, state, triangular solve; as fla's naive
references do and as issue 14 asks of opdsl) and return the inputs' dtype.  `check()` compares
each with the numpy recurrences of tests/recurrences.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sdpa_causal(q, k, v):
    """Causal softmax attention (scale 1/√d): torch's fused scaled_dot_product_attention."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _upcast(*xs):
    """The tensors (None kept) in float32 when the first is half precision, else unchanged."""
    if xs[0].dtype not in (torch.float16, torch.bfloat16):
        return xs
    return tuple(None if x is None else x.float() for x in xs)


def _pad_to_chunks(chunk, *xs):
    """Zero-pad the token axis (-2 for [B, H, L, D], -1 for [B, H, L]) to a multiple of chunk.
    The padded tokens come after every real one, so (causality) they change no real output; their
    log-gate 0 and β 0 keep every exponent finite."""
    L = xs[0].shape[2]
    pad = -L % chunk
    if pad == 0:
        return xs
    return tuple(F.pad(x, (0, 0, 0, pad) if x.dim() == 4 else (0, pad)) for x in xs)


def _chunk_decays(log_gate, chunk):
    """From log-gates [B, H, L] (L a multiple of chunk): b [B, H, N, C], the log-gate cumsum restarted
    in each chunk (b ≤ 0 for gates ≤ 0), and Γ [B, H, N, C, C] = exp(b_i − b_j) on and below the
    diagonal, 0 above."""
    B, H, L = log_gate.shape
    b = log_gate.reshape(B, H, L // chunk, chunk).cumsum(-1)
    lower = torch.ones(chunk, chunk, dtype=torch.bool, device=log_gate.device).tril()
    # Mask before exp: above the diagonal b_i − b_j ≥ 0 may be large enough to overflow.
    gam = (b[..., :, None] - b[..., None, :]).masked_fill(~lower, float("-inf")).exp()
    return b, gam


def gated_parallel_torch(q, k, v, log_gate):
    """(tril(QKᵀ) ∘ Γ) V with the L x L decay mask Γ (fla's naive_parallel_simple_gla): quadratic."""
    c = log_gate.cumsum(-1)
    L = q.shape[2]
    lower = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    gam = (c[..., :, None] - c[..., None, :]).masked_fill(~lower, float("-inf")).exp()
    return ((q @ k.transpose(-1, -2)) * gam) @ v


def gated_chunked_torch(q, k, v, log_gate, chunk=64):
    """Chunked gated linear attention, no normalization (fla's naive_chunk_simple_gla).

    q, k [B, H, L, dk], v [B, H, L, dv], log_gate [B, H, L] (≤ 0; a decay γ is log γ at every
    token).  Per chunk, with b the chunk-local cumsum of the log-gates and S the state entering it:
    O = (Q ∘ e^b) S + (QKᵀ ∘ Γ) V, then S ← e^{b_last} S + (K ∘ e^{b_last − b})ᵀ V.  Everything
    that does not depend on S is computed for all chunks at once; only the state scan
    (N additions of dk x dv matrices) is a Python loop."""
    B, H, L, _ = q.shape
    dtype = q.dtype
    q, k, v, log_gate = _pad_to_chunks(chunk, *_upcast(q, k, v, log_gate))
    n = q.shape[2] // chunk
    qc, kc, vc = (x.reshape(B, H, n, chunk, x.shape[-1]) for x in (q, k, v))
    b, gam = _chunk_decays(log_gate, chunk)
    b_last = b[..., -1:]                                             # [B, H, N, 1]
    intra = ((qc @ kc.transpose(-1, -2)) * gam) @ vc
    # Each chunk's contribution to the state it hands on, decayed to the chunk's end.
    kv = (kc * (b_last - b).exp()[..., None]).transpose(-1, -2) @ vc  # [B, H, N, dk, dv]
    block_decay = b_last.exp()[..., None]                             # [B, H, N, 1, 1]
    states = []                                                       # the state entering each chunk
    S = torch.zeros_like(kv[:, :, 0])
    for i in range(n):
        states.append(S)
        S = block_decay[:, :, i] * S + kv[:, :, i]
    inter = (qc * b.exp()[..., None]) @ torch.stack(states, dim=2)
    return (intra + inter).reshape(B, H, n * chunk, -1)[:, :, :L].to(dtype)


def delta_recurrent_torch(q, k, v, beta, log_gate=None):
    """DeltaNet / Gated DeltaNet one token at a time (fla's delta_rule_recurrence; the gate decays
    the state first, as in gated_delta_rule/naive.py): S ← α_t S, u_t = β_t (v_t − Sᵀ k_t),
    S ← S + k_t u_tᵀ, o_t = Sᵀ q_t.  Shapes as in delta_chunked_torch."""
    B, H, L, dk = q.shape
    dtype = q.dtype
    q, k, v, beta, log_gate = _upcast(q, k, v, beta, log_gate)
    S = q.new_zeros(B, H, dk, v.shape[-1])
    out = []
    for t in range(L):
        if log_gate is not None:
            S = log_gate[:, :, t, None, None].exp() * S
        k_t = k[:, :, t]
        u = beta[:, :, t, None] * (v[:, :, t] - (k_t[..., None] * S).sum(-2))
        S = S + k_t[..., :, None] * u[..., None, :]
        out.append((q[:, :, t, :, None] * S).sum(-2))
    return torch.stack(out, dim=2).to(dtype)


def delta_chunked_torch(q, k, v, beta, log_gate=None, chunk=64):
    """DeltaNet / Gated DeltaNet in the chunked WY / UT form (fla's naive chunk delta rule).

    q, k [B, H, L, dk], v [B, H, L, dv], beta [B, H, L], log_gate [B, H, L] or None; L need not be a
    multiple of chunk.  Per chunk, with b the chunk-local log-gate cumsum and Γ_ij = exp(b_i − b_j):
    A = stril(diag(β)(KKᵀ ∘ Γ)), T = (I + A)⁻¹ diag(β), W = T (K ∘ e^b), U = T V; then with the
    state S entering the chunk: V' = U − W S, O = (Q ∘ e^b) S + (tril(QKᵀ) ∘ Γ) V',
    S ← e^{b_last} S + (K ∘ e^{b_last − b})ᵀ V'.  T is never formed: one unit-lower-triangular solve
    of (I + A) against [β ∘ (K ∘ e^b) | β ∘ V] gives W and U for all chunks at once."""
    B, H, L, dk = q.shape
    dtype = q.dtype
    if log_gate is None:
        log_gate = beta.new_zeros(beta.shape)
    q, k, v, beta, log_gate = _pad_to_chunks(chunk, *_upcast(q, k, v, beta, log_gate))
    n = q.shape[2] // chunk
    qc, kc, vc = (x.reshape(B, H, n, chunk, x.shape[-1]) for x in (q, k, v))
    bc = beta.reshape(B, H, n, chunk, 1)
    b, gam = _chunk_decays(log_gate, chunk)
    b_last = b[..., -1:]

    a = ((bc * (kc @ kc.transpose(-1, -2))) * gam).tril(-1)
    eye = torch.eye(chunk, dtype=q.dtype, device=q.device)
    rhs = torch.cat([bc * kc * b.exp()[..., None], bc * vc], dim=-1)
    wu = torch.linalg.solve_triangular(eye + a, rhs, upper=False, unitriangular=True)
    w, u = wu[..., :dk], wu[..., dk:]
    intra = (qc @ kc.transpose(-1, -2)) * gam                          # tril(QKᵀ) ∘ Γ: Γ is 0 above
    q_decayed = qc * b.exp()[..., None]
    k_decayed = kc * (b_last - b).exp()[..., None]
    block_decay = b_last.exp()[..., None]

    S = q.new_zeros(B, H, dk, v.shape[-1])
    out = []
    for i in range(n):
        v_new = u[:, :, i] - w[:, :, i] @ S
        out.append(q_decayed[:, :, i] @ S + intra[:, :, i] @ v_new)
        S = block_decay[:, :, i] * S + k_decayed[:, :, i].transpose(-1, -2) @ v_new
    return torch.stack(out, dim=2).reshape(B, H, n * chunk, -1)[:, :, :L].to(dtype)


# ---- self-check against the numpy recurrences -----------------------------------------------------

def _recurrences():
    """tests/recurrences.py: as the package `tests` from the repository root, else by its path."""
    try:
        from tests import recurrences
    except ImportError:
        import importlib.util
        from pathlib import Path
        path = Path(__file__).resolve().parents[1] / "tests" / "recurrences.py"
        spec = importlib.util.spec_from_file_location("opdsl_test_recurrences", path)
        recurrences = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(recurrences)
    return recurrences


def _softmax_causal_np(q, k, v):
    import numpy as np
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def check(B=2, H=3, L=70, dk=5, dv=4, chunks=(16, 64), tol=1e-10, seed=0):
    """Max |difference| of each baseline against tests/recurrences.py in float64 (L not a multiple of
    any chunk), and of the chunked delta rule's gradients against the token loop's; raises
    AssertionError if any exceeds tol.  Returns {name: max difference}."""
    rec = _recurrences()
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, d, generator=g, dtype=torch.float64) for d in (dk, dk, dv))
    k = F.normalize(k, dim=-1)                        # DeltaNet's keys: ‖k‖ = 1 keeps the state bounded
    beta = torch.rand(B, H, L, generator=g, dtype=torch.float64)
    gate = torch.rand(B, H, L, generator=g, dtype=torch.float64).mul(0.5).add(0.5).log()   # α ∈ [0.5, 1)
    decay = torch.as_tensor(rec.retnet_decays(H))
    retention_gate = decay.log()[None, :, None].expand(B, H, L)
    qn, kn, vn, bn, gn, rn = (x.numpy() for x in (q, k, v, beta, gate, retention_gate))

    def err(a, b):
        return float(abs(a.detach().numpy() - b).max())

    errors = {"sdpa_causal": err(sdpa_causal(q, k, v), _softmax_causal_np(qn, kn, vn)),
              "gated_parallel_torch": err(gated_parallel_torch(q, k, v, gate), rec.gated_recurrence(qn, kn, vn, gn))}
    gated_ref = rec.gated_recurrence(qn, kn, vn, gn)
    retention_ref = rec.gated_recurrence(qn, kn, vn, rec.decay_to_log_gate(rec.retnet_decays(H), (B, H), L))
    delta_ref = rec.delta_recurrence(qn, kn, vn, bn)
    gated_delta_ref = rec.delta_recurrence(qn, kn, vn, bn, gn)
    errors["delta_recurrent_torch"] = err(delta_recurrent_torch(q, k, v, beta), delta_ref)
    errors["delta_recurrent_torch gated"] = err(delta_recurrent_torch(q, k, v, beta, gate), gated_delta_ref)
    for c in chunks:
        errors[f"gated_chunked_torch C={c}"] = err(gated_chunked_torch(q, k, v, gate, chunk=c), gated_ref)
        errors[f"gated_chunked_torch retention C={c}"] = err(
            gated_chunked_torch(q, k, v, retention_gate, chunk=c), retention_ref)
        errors[f"delta_chunked_torch C={c}"] = err(delta_chunked_torch(q, k, v, beta, chunk=c), delta_ref)
        errors[f"delta_chunked_torch gated C={c}"] = err(
            delta_chunked_torch(q, k, v, beta, gate, chunk=c), gated_delta_ref)

    # The benchmark may time backward passes too: autograd through the chunked form (solve, masked
    # exp, padding) must give the token loop's gradients.
    leaves = [x.clone().requires_grad_() for x in (q, k, v, beta, gate)]
    cot = torch.randn(B, H, L, dv, generator=g, dtype=torch.float64)
    loop = torch.autograd.grad((delta_recurrent_torch(*leaves) * cot).sum(), leaves)
    chunked = torch.autograd.grad((delta_chunked_torch(*leaves, chunk=chunks[0]) * cot).sum(), leaves)
    errors["delta_chunked_torch gradients"] = max(float((a - b).abs().max()) for a, b in zip(loop, chunked))

    bad = {name: e for name, e in errors.items() if not e <= tol}
    assert not bad, f"baselines disagree with the recurrences beyond {tol}: {bad}"
    return errors


if __name__ == "__main__":
    for name, e in check().items():
        print(f"{name:40s} {e:.2e}")
