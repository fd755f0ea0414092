"""Token-by-token references for decayed, gated and delta-rule causal linear attention (issue 14).

numpy, float64.  These are the oracles the new kinds (`attention(..., decay=, gate=)`,
`delta_attention`) are tested against; they follow the issue's Semantics section literally, one
token at a time, so that they share no code and no algebra with the chunked lowering.

Convention (flash-linear-attention's): the state is S ∈ R^{dk x dv}, a token reads it as
o_t = S_tᵀ q_t.  Shapes: q, k [..., L, dk], v [..., L, dv], per-token log-gates G and delta
strengths β [..., L].  Leading dims are batch dims and broadcast against each other (numpy rules:
a per-head array [h] broadcasts against the batch [b, h]).  The feature map is the caller's: q and
k are the featured φ(q), φ(k).

- gated:  S_t = exp(G_t) S_{t-1} + k_t v_tᵀ,  o_t = S_tᵀ q_t
          (normalize: z_t = exp(G_t) z_{t-1} + k_t,  o_t / (q_t·z_t + tiny))
          matrix: A_ij = q_i·k_j Γ_ij for i ≥ j, Γ_ij = exp(G_{j+1} + ... + G_i).
          A decay γ is the gate log γ at every token.
- delta:  S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,  o_t = S_tᵀ q_t,  α_t = exp(G_t)
          closed form: (tril(QKᵀ) ∘ Γ) (I + stril(diag(β)(KKᵀ ∘ Γ)))⁻¹ diag(β).
"""
from __future__ import annotations

import numpy as np

TINY = float(np.finfo(np.float64).tiny)   # the project's normalizer guard: a vanished row is 0, never 0/0
L2NORM_EPS = 1e-6                         # fla's l2norm_fwd default (fla/modules/l2norm.py)


# ---- shapes ------------------------------------------------------------------------

def _broadcast(q, k, v, *per_token):
    """q, k, v ([..., L, d]; v may be None) and the per-token arrays ([..., L] or None), as float64
    with their batch dims broadcast to one common shape."""
    q, k = np.asarray(q, dtype=np.float64), np.asarray(k, dtype=np.float64)
    v = None if v is None else np.asarray(v, dtype=np.float64)
    per_token = [None if x is None else np.asarray(x, dtype=np.float64) for x in per_token]
    L = q.shape[-2]
    if k.shape[-2:] != (L, q.shape[-1]) or (v is not None and v.shape[-2] != L):
        raise ValueError(f"q {q.shape}, k {k.shape}, v {None if v is None else v.shape}: "
                         "need q, k [..., L, d] and v [..., L, dv]")
    for x in per_token:
        if x is not None and x.shape[-1:] != (L,):
            raise ValueError(f"per-token array of shape {x.shape}: need [..., {L}]")
    matrices = [x for x in (q, k, v) if x is not None]
    batch = np.broadcast_shapes(*(x.shape[:-2] for x in matrices),
                                *(x.shape[:-1] for x in per_token if x is not None))
    q, k, v = (None if x is None else np.broadcast_to(x, batch + x.shape[-2:]) for x in (q, k, v))
    per_token = [None if x is None else np.broadcast_to(x, batch + (L,)) for x in per_token]
    return (q, k, v, *per_token)


def _decay_matrix(log_gate, batch, L):
    """Γ [..., L, L]: exp(Σ_{t=j+1..i} G_t) on and below the diagonal, 0 above; all ones (lower)
    without a gate.  Only differences of cumsums with i ≥ j are exponentiated (they are ≤ 0 for
    G ≤ 0), never exp(c_i)·exp(−c_j), which gives 0·inf = nan for long or strongly gated rows."""
    lower = np.tril(np.ones((L, L), dtype=bool))
    if log_gate is None:
        return np.broadcast_to(lower.astype(np.float64), batch + (L, L))
    c = np.cumsum(log_gate, axis=-1)
    diff = np.where(lower, c[..., :, None] - c[..., None, :], -np.inf)
    return np.exp(diff)


# ---- gates and decays --------------------------------------------------------------

def decay_to_log_gate(decay, batch_shape, L):
    """Per-token log-gates [*batch_shape, L] equal to log γ at every token.

    decay: a number in (0, 1] or an array broadcasting against batch_shape (e.g. [h] for the
    batch [b, h]: one γ per head, RetNet)."""
    gamma = np.asarray(decay, dtype=np.float64)
    if np.any(gamma <= 0) or np.any(gamma > 1):
        raise ValueError(f"decay must lie in (0, 1], got {decay}")
    return np.broadcast_to(np.log(gamma)[..., None], tuple(batch_shape) + (L,)).copy()


def retnet_decays(H):
    """RetNet's per-head decays γ_h = 1 − 2^(−5−h), h = 0..H−1 (torchscale RetNetRelPos, fla chunk_retention)."""
    return 1.0 - 2.0 ** (-5.0 - np.arange(H))


def l2_normalize(x, eps=L2NORM_EPS):
    """x / sqrt(Σ x² + eps) along the last axis: what fla's use_qk_l2norm_in_kernel applies to q and k
    (l2norm_fwd, eps = 1e-6; a zero row stays 0)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + eps)


# ---- gated / decayed linear attention ----------------------------------------------

def gated_recurrence(q, k, v, log_gate=None, normalize=False, initial_state=None, return_state=False):
    """Causal gated linear attention, one token at a time.

    q, k [..., L, dk], v [..., L, dv], log_gate [..., L] (None: no gate, i.e. G = 0); returns
    o [..., L, dv] with S_t = exp(G_t) S_{t-1} + k_t v_tᵀ, o_t = S_tᵀ q_t, S_0 = initial_state
    [..., dk, dv] (default 0).  normalize=True also carries z_t = exp(G_t) z_{t-1} + k_t (z_0 = 0)
    and returns o_t / (q_t·z_t + tiny); it does not take an initial_state.  return_state: also
    return S_L [..., dk, dv]."""
    if normalize and initial_state is not None:
        raise ValueError("initial_state is only defined for normalize=False")
    q, k, v, log_gate = _broadcast(q, k, v, log_gate)
    batch, L, dk, dv = q.shape[:-2], q.shape[-2], q.shape[-1], v.shape[-1]
    if log_gate is None:
        log_gate = np.zeros(batch + (L,))          # exp(0) = 1 exactly: the ungated recurrence
    S = np.zeros(batch + (dk, dv))
    if initial_state is not None:
        S = S + initial_state
    z = np.zeros(batch + (dk,))
    out = np.empty(batch + (L, dv))
    for t in range(L):
        a = np.exp(log_gate[..., t])[..., None]
        z = a * z + k[..., t, :]
        S = a[..., None] * S + k[..., t, :, None] * v[..., t, None, :]
        o = np.einsum("...k,...kv->...v", q[..., t, :], S)
        if normalize:
            o = o / (np.sum(q[..., t, :] * z, axis=-1, keepdims=True) + TINY)
        out[..., t, :] = o
    return (out, S) if return_state else out


def gated_matrix(q, k, log_gate=None, normalize=False):
    """The L x L matrix [..., L, L] of the gated form: A_ij = q_i·k_j Γ_ij (i ≥ j, else 0), divided by
    its row sums (+ tiny) when normalize.  gated_recurrence(q, k, v, ...) = A @ v."""
    q, k, _, log_gate = _broadcast(q, k, None, log_gate)
    a = (q @ np.swapaxes(k, -1, -2)) * _decay_matrix(log_gate, q.shape[:-2], q.shape[-2])
    if normalize:
        a = a / (a.sum(axis=-1, keepdims=True) + TINY)
    return a


# ---- delta rule ----------------------------------------------------------------------

def delta_recurrence(q, k, v, beta, log_gate=None, initial_state=None, return_state=False):
    """DeltaNet (log_gate None) and Gated DeltaNet, one token at a time.

    q, k [..., L, dk], v [..., L, dv], beta, log_gate [..., L]; returns o [..., L, dv] with
    S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ, o_t = S_tᵀ q_t, α_t = exp(G_t) (1 without a
    gate), S_0 = initial_state [..., dk, dv] (default 0).  Keys are used as given (no normalization).
    return_state: also return S_L."""
    q, k, v, beta, log_gate = _broadcast(q, k, v, beta, log_gate)
    batch, L, dk, dv = q.shape[:-2], q.shape[-2], q.shape[-1], v.shape[-1]
    if log_gate is None:
        log_gate = np.zeros(batch + (L,))          # α = exp(0) = 1 exactly: plain DeltaNet
    S = np.zeros(batch + (dk, dv))
    if initial_state is not None:
        S = S + initial_state
    out = np.empty(batch + (L, dv))
    for t in range(L):
        kt, bt = k[..., t, :], beta[..., t, None, None]
        alpha = np.exp(log_gate[..., t])[..., None, None]
        # (I − β k kᵀ) S = S − β k (kᵀ S), without forming the dk x dk matrix
        ktS = np.einsum("...k,...kv->...v", kt, S)
        S = alpha * (S - bt * kt[..., :, None] * ktS[..., None, :]) + bt * kt[..., :, None] * v[..., t, None, :]
        out[..., t, :] = np.einsum("...k,...kv->...v", q[..., t, :], S)
    return (out, S) if return_state else out


def delta_closed_form(q, k, beta, log_gate=None):
    """The L x L matrix [..., L, L] of the delta rule (zero initial state), O = A @ V:
    A = (tril(QKᵀ) ∘ Γ) (I + stril(diag(β)(KKᵀ ∘ Γ)))⁻¹ diag(β), Γ as in gated_matrix."""
    q, k, _, beta, log_gate = _broadcast(q, k, None, beta, log_gate)
    L = q.shape[-2]
    gam = _decay_matrix(log_gate, q.shape[:-2], L)
    kk = k @ np.swapaxes(k, -1, -2)
    strict = np.tril(beta[..., :, None] * kk * gam, -1)
    eye = np.eye(L)
    t = np.linalg.solve(eye + strict, eye * beta[..., None, :])      # (I + A)⁻¹ diag(β)
    return ((q @ np.swapaxes(k, -1, -2)) * gam) @ t
