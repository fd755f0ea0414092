"""The delta rule (DeltaNet) and the gated delta rule (Gated DeltaNet) as linear operators in V.

`delta_attention(Q, K, beta, gate=G, normalize_keys=false, normalize_queries=false, chunk=C)` with
Q, K [..., L, d], beta [..., L] (and log-gates G [..., L], ≤ 0) is the causal operator V ↦ O of

    S_0 = 0,   S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,   o_t = S_tᵀ q_t,   α_t = exp(G_t)

(fla's convention: S is [d, dv]; α = 1 without a gate).  Its matrix is

    O = (tril(QKᵀ) ∘ Γ) (I + stril(diag(β)(KKᵀ ∘ Γ)))⁻¹ diag(β) V,   Γ_ij = exp(G_{j+1} + ... + G_i).

Keys are used as given; normalize_keys=true divides each key by sqrt(‖k‖² + 1e-6) first (fla's
l2norm), and normalize_queries=true each query (both: fla's use_qk_l2norm_in_kernel).  The
output is linear in V only: Q, K, beta and G are parameters of the operator (gradients flow to
them through the generated code).  It has no transpose.

Lowering (fla's chunked WY / UT form), chunks of C tokens, b the log-gate cumsum restarted in each:
A = stril(diag(β)(KKᵀ ∘ Γ)), one unit-lower-triangular solve (I + A) [W | U] = diag(β) [K ∘ e^b | V]
(the compact-WY machinery of householder), then the state entering each chunk from the recurrence
S ← P S + H with P = e^{b_last} I − (K ∘ e^{b_last − b})ᵀ W and H = (K ∘ e^{b_last − b})ᵀ U: the
`linrec` primitive, a loop over the chunks (not the tokens) of small products.  Outside the loop,
for all chunks at once: V' = U − W S and O = (Q ∘ e^b) S + (tril(QKᵀ) ∘ Γ) V'.  Only differences
b_i − b_j ≤ 0 are exponentiated.  A free L is one chunk over the whole sequence.
Conventions and a dense example: docs/families_attention_conv.md.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError, TypeError_
from .attention import HALF, _batch, _causal_rows, _pad_rows, _qk_types
from .attention_gated import decay_mask
from .base import Kind, OpType, join_dtype, register, sym_prod, tensor_of_rank

OPTIONS = ("gate", "normalize_keys", "normalize_queries", "chunk")
CHUNK = 64                  # fla's chunk; the triangular solve's entries grow with C (fla#537)
L2_EPS = 1e-6               # fla's l2norm: x / sqrt(Σ x² + eps)


@register
class DeltaAttention(Kind):
    """`delta_attention(Q, K, beta, gate=G)`: DeltaNet / Gated DeltaNet (see the module doc)."""

    name = "delta_attention"
    constructors = ("delta_attention",)
    params = ("Q", "K", "beta")
    options = OPTIONS
    examples = (
        "dim L = 7\ninput Q : [2, L, 3]\ninput K : [2, L, 3]\ninput b : [2, L]\ninput V : [2, L, 2]\n"
        "export y = delta_attention(Q, K, b) @ V\n"
        "export z = delta_attention(Q, K, b, normalize_keys=true, chunk=3) @ V",
        "dim L = 10\ninput Q : [2, 3, L, 4]\ninput K : [2, 3, L, 4]\ninput b : [2, 3, L]\ninput G : [2, 3, L]\n"
        "input V : [2, 3, L, 3]\n"
        "export y = delta_attention(Q, K, b, gate=G, chunk=4) @ V\n"
        "export z = delta_attention(Q, K, b, gate=G, normalize_keys=true, normalize_queries=true) @ V",
        "dim L\ninput Q : [L, 3]\ninput K : [L, 3]\ninput b : [L]\ninput G : [L]\ninput V : [L, 2]\n"
        "export y = delta_attention(Q, K, b, gate=G) @ V",
    )

    def sample(self, n, tag):
        return None     # no transpose: kept out of the random compositions that transpose freely

    def construct(self, b, args, kwargs, span):
        b.arity(self, args, span, 3, 3)
        for key, val in kwargs.items():
            if key not in OPTIONS:
                raise TypeError_(f"delta_attention(...) has no option {key!r}", val.span,
                                 hint=f"options: {', '.join(OPTIONS)}")
        ops = [b.tensor(args[0], range(2, 9), "delta_attention's Q"),
               b.tensor(args[1], range(2, 9), "delta_attention's K"),
               b.tensor(args[2], range(1, 9), "delta_attention's beta")]
        attrs = {"gated": "gate" in kwargs, "normalize_keys": False, "normalize_queries": False}
        if "gate" in kwargs:
            ops.append(b.tensor(kwargs["gate"], range(1, 9), "delta_attention's gate"))
        for flag in ("normalize_keys", "normalize_queries"):
            if flag in kwargs:
                attrs[flag] = b.flag(kwargs[flag])
        if "chunk" in kwargs:
            c = b.g.dims.value(b.dim(kwargs["chunk"]))
            if c is None:
                raise TypeError_("chunk= needs a number, not a free dimension", kwargs["chunk"].span)
            attrs["chunk"] = int(c)
        return b.add(self.name, ops, attrs, span=span)

    def infer(self, g, ops, attrs, span):
        q, k = _qk_types(g, ops, span, "delta_attention")
        _causal_rows(g, q, k, span, "delta_attention")
        shapes, dtypes = [q.shape[:-2], k.shape[:-2]], [q.dtype, k.dtype]
        for i, what in ((2, "beta"), (3, "gate"))[:len(ops) - 2]:
            t = tensor_of_rank(g, ops[i], range(1, 9), span, f"delta_attention's {what}")
            if not g.dims.equal(t.shape[-1], q.shape[-2]):
                raise ShapeError(f"delta_attention's {what} needs one entry per token, [..., L] with "
                                 f"L = {q.shape[-2]}, got {t}", span,
                                 hint=f"{what} has the batch dims of Q and the sequence length last")
            shapes.append(t.shape[:-1])
            dtypes.append(t.dtype)
        return OpType(q.shape[-2], k.shape[-2], _batch(span, *shapes), join_dtype(*dtypes),
                      frozenset({"lower"}))

    def operand_domains(self, g, v):
        """β in (0, 1) (a sigmoid, as DeltaNet layers make it) and log-gates ≤ 0."""
        return {2: "unit", 3: "log_gate"} if g[v].attrs["gated"] else {2: "unit"}

    # ---- meaning -----------------------------------------------------------------------
    def dense(self, g, v, vals):
        a = g[v].attrs
        q, k, beta = vals[0], vals[1], vals[2]
        if a["normalize_keys"]:
            k = k / np.sqrt((k * k).sum(-1, keepdims=True) + L2_EPS)
        if a["normalize_queries"]:
            q = q / np.sqrt((q * q).sum(-1, keepdims=True) + L2_EPS)
        L = q.shape[-2]
        low = np.tri(L, L, dtype=bool)
        if a["gated"]:
            c = np.cumsum(vals[3], axis=-1)
            gam = np.where(low, np.exp(np.where(low, c[..., :, None] - c[..., None, :], -np.inf)), 0.0)
        else:
            gam = low.astype(np.float64)
        kk = np.tril(beta[..., :, None] * (k @ np.swapaxes(k, -1, -2)) * gam, -1)
        inv = np.linalg.solve(np.eye(L) + kk, np.broadcast_to(np.eye(L), kk.shape)) * beta[..., None, :]
        return ((q @ np.swapaxes(k, -1, -2)) * gam) @ inv

    def flops(self, g, v, k):
        n = g[v]
        t = g.type(v)
        d = g.type(n.operands[0]).shape[-1]
        L = t.rows
        C = self._chunk(g, n)
        nc = L / C
        fixed = sym_prod(t.batch) * (3 * L * C * d + 2 * L * C * d + 2 * nc * (d * d * C + d * d))
        per_col = 2 * L * C + 2 * L * C + 6 * L * d + 2 * nc * d * d
        return fixed + per_col * k

    def _chunk(self, g, n):
        L = g.dims.value(g.type(n.id).rows)
        if L is None:
            return g.type(n.id).rows           # one chunk over the whole sequence
        return min(int(n.attrs.get("chunk") or CHUNK), L)

    # ---- lowering ----------------------------------------------------------------------
    def lower(self, lw, v, x):
        n = lw.src[v]
        a = n.attrs
        ts = [lw.tensor(o) for o in n.operands]
        out_dtype = lw.src.type(v).dtype or lw.dtype(x)
        if lw.dtype(x) in HALF or out_dtype in HALF:     # gates, state and the solve in float32
            ts = [lw.prim("cast", t, dtype="float32") for t in ts]
            x = lw.prim("cast", x, dtype="float32")
        q, k, beta = ts[:3]
        gates = ts[3] if a["gated"] else None
        if a["normalize_keys"]:
            k = _l2_normalize(lw, k)
        if a["normalize_queries"]:
            q = _l2_normalize(lw, q)
        rows = lw.shape(q)[-2]
        L = lw.dims.value(rows)
        C = L if L is None else self._chunk(lw.src, n)
        y = _chunked(lw, q, k, beta, gates, x, rows, L, C)
        if lw.dtype(y) != out_dtype and out_dtype in HALF:
            y = lw.prim("cast", y, dtype=out_dtype)
        return y


def _l2_normalize(lw, t):
    norm = lw.prim("unary", lw.prim("shift", lw.prim("sum", lw.mul(t, t), axis=-1, keepdims=True), c=L2_EPS),
                   fn="sqrt")
    return lw.prim("div", t, norm)


def _pad_last(lw, t, extra):
    s = lw.shape(t)
    return lw.prim("concat", t, lw.prim("zeros", shape=s[:-1] + (extra,), dtype=lw.dtype(t)), axis=-1)


def _chunked(lw, q, k, beta, gates, x, rows, L, C):
    """The WY / UT form of the module doc over chunks of C tokens (L None: one chunk, L free)."""
    nc = 1 if L is None else -(-L // C)
    lp = rows if L is None else nc * C
    if L is not None and lp != L:     # padded tokens come last: β = 0 and zero keys leave the state alone
        q, k, x = _pad_rows(lw, q, lp), _pad_rows(lw, k, lp), _pad_rows(lw, x, lp)
        beta = _pad_last(lw, beta, lp - L)
        gates = _pad_last(lw, gates, lp - L) if gates is not None else None
    C = rows if L is None else C

    def chunks(t):            # [..., L, c] -> [..., nc, C, c]
        s = lw.shape(t)
        return lw.reshape(t, s[:-2] + (nc, C, s[-1])) if nc > 1 else t

    def per_token(t):         # [..., L] -> [..., nc, C]
        s = lw.shape(t)
        return lw.reshape(t, s[:-1] + (nc, C)) if nc > 1 else t

    def column(t):            # [..., n] -> [..., n, 1]: one scale per row
        return lw.reshape(t, lw.shape(t) + (1,))

    qc, kc, xc, bc = chunks(q), chunks(k), chunks(x), column(per_token(beta))
    d = lw.shape(qc)[-1]
    dv = lw.shape(xc)[-1]
    ktk = lw.matmul(kc, lw.swap(kc))                                        # [..., nc, C, C]
    qk = lw.prim("tril", lw.matmul(qc, lw.swap(kc)), k=0, fill=0.0)
    kb = kc
    if gates is not None:
        b = lw.prim("cumsum", per_token(gates), axis=-1)                      # [..., nc, C]
        gam = decay_mask(lw, b)
        ktk, qk = lw.mul(ktk, gam), lw.mul(qk, gam)
        eb = column(lw.prim("unary", b, fn="exp"))                            # exp(b) ≤ 1
        kb = lw.mul(kc, eb)
    a = lw.mul(ktk, bc)                 # diag(β) KKᵀ ∘ Γ; the solve reads its strict lower triangle
    sol = lw.prim("solve_triangular", a, lw.mul(lw.prim("concat", kb, xc, axis=-1), bc), upper=False, unit=True)
    w = lw.prim("slice", sol, axis=-1, start=0, stop=d)
    u = lw.prim("slice", sol, axis=-1, start=d, stop=d + dv)
    if nc == 1:
        return lw.matmul(qk, u)
    if gates is not None:
        last = lw.prim("slice", b, axis=-1, start=C - 1, stop=C)                    # [..., nc, 1]
        kt = lw.mul(kc, column(lw.prim("unary", lw.sub(last, b), fn="exp")))     # exp(b_last − b) ≤ 1
        decay = column(lw.prim("unary", last, fn="exp"))                          # [..., nc, 1, 1]
        eye = lw.mul(decay, lw.prim("eye", n=d, dtype=lw.dtype(decay)))
        qb = lw.mul(qc, eb)
    else:
        kt, eye, qb = kc, lw.prim("eye", n=d, dtype=lw.dtype(kc)), qc
    ktt = lw.swap(kt)
    state = lw.prim("linrec", lw.sub(eye, lw.matmul(ktt, w)), lw.matmul(ktt, u))   # [..., nc, d, dv]
    vnew = lw.sub(u, lw.matmul(w, state))
    num = lw.add(lw.matmul(qb, state), lw.matmul(qk, vnew))
    s = lw.shape(num)
    y = lw.reshape(num, s[:-3] + (rows if lp == L else lp, s[-1]))
    if lp != L:
        y = lw.prim("slice", y, axis=-2, start=0, stop=rows)
    return y

