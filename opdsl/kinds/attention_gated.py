"""Decayed and gated causal linear attention (RetNet, Lightning Attention-2, simple GLA / Mamba-2 gates).

`attention(Q, K, feature=..., decay=γ)` and `attention(Q, K, feature=..., gate=G)` build this kind
(kinds/attention.py hands them over); both are causal.  With log-gates G [..., L] (G_t ≤ 0, one per
token, broadcasting against the batch dims of Q) and c = cumsum(G) over the tokens,

    A_ij = φ(q_i)ᵀ φ(k_j) · exp(c_i − c_j) = φ(q_i)ᵀ φ(k_j) · exp(G_{j+1} + ... + G_i)   for i ≥ j, else 0,

the recurrence S_t = exp(G_t) S_{t−1} + φ(k_t) v_tᵀ, o_t = S_tᵀ φ(q_t) of fla's chunk_simple_gla.
`decay=γ` (a number in (0, 1], or a tensor broadcasting against the batch dims: `[h]` for
Q [b, h, L, d], RetNet's γ_h = 1 − 2^(−5−h)) is `gate=log γ` at every token.  normalize=true (the
default, as for attention) divides each row by its sum; RetNet and GLA users write normalize=false.

Lowering (concrete L), chunks of C tokens, b = the cumulative log-gate restarted in each chunk:
intra-chunk (φ(Q) φ(K)ᵀ ∘ M) V with M_ij = exp(b_i − b_j) on and below the diagonal; each chunk's
contribution to the state, H = (φ(K) ∘ exp(b_last − b))ᵀ V; the state entering chunk c is
Σ_{c' < c} exp(E_c − B_c') H_c' (B the inclusive, E the exclusive cumulative sum of the chunks'
totals b_last), one [nc, nc] product (no per-chunk loop); inter-chunk (φ(Q) ∘ exp(b)) S.  Only
differences that are ≤ 0 are ever exponentiated (masked to −inf before exp, never exp(G_i)·exp(−G_j),
the 0·∞ = nan of fla#215 and executorch#21417).  Row sums for normalize=true come from the same
pass over a column of ones appended to V.  A free L is the masked quadratic form.
Conventions and a dense example: docs/families_attention_conv.md.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError, TypeError_
from .attention import (HALF, _batch, _causal_rows, _nonzero, _pad_rows, feature_count,
                        operand_types)
from .attention_features import feature_np, lower_features
from .base import Kind, OpType, join_dtype, register, sym_prod, tensor_of_rank

GATES = ("const", "decay", "gate")     # log γ a number; γ a tensor (batch-shaped); G a tensor [..., L]
GATED_CHUNKS = (64, 128, 256)


def choose_gated_chunk(L: int, f: int, k: int) -> int:
    """The chunk with the fewest FLOPs per head: attention's per-token terms plus the decayed state
    across chunks, an [nc, nc] product over f·k entries (which grows as 1/C²); L itself up to 128."""
    if L <= 128:
        return L

    def cost(c):
        nc = -(-L // c)
        return nc * c * (2 * c * (f + k) + 4 * f * k) + 2 * nc * nc * f * k
    return min(GATED_CHUNKS, key=lambda c: (cost(c), c))


def gate_operand(n):
    """The operand holding γ or G (the last one), or None for a number γ."""
    return n.operands[-1] if n.attrs["gate"] != "const" else None


def feature_operands(n):
    """The operands of the feature map (hedgehog's W), between K and the gate."""
    return n.operands[2:-1] if n.attrs["gate"] != "const" else n.operands[2:]


@register
class GatedAttention(Kind):
    """`attention(Q, K, ..., decay=γ)` / `attention(Q, K, ..., gate=G)`: causal, decayed (see the module doc)."""

    name = "gated_attention"
    constructors = ()            # written as attention(...); Attention.construct hands over
    examples = (
        "dim L = 7\ninput Q : [2, L, 3]\ninput K : [2, L, 3]\ninput V : [2, L, 2]\n"
        "export y = attention(Q, K, feature=identity, normalize=false, decay=0.8) @ V\n"
        "export z = attention(Q, K, decay=0.9, chunk=3) @ V",
        "dim L = 11\ninput Q : [2, 3, L, 4]\ninput K : [2, 3, L, 4]\ninput g : [3]\ninput V : [2, 3, L, 2]\n"
        "export y = attention(Q, K, feature=identity, normalize=false, decay=g, chunk=4) @ V",
        "dim L = 10\ninput Q : [2, L, 3]\ninput K : [2, L, 3]\ninput G : [2, L]\ninput V : [2, L, 4]\n"
        "export y = attention(Q, K, feature=relu, normalize=false, gate=G, chunk=4) @ V\n"
        "export z = attention(Q, K, gate=G, chunk=3) @ V",
        "dim L = 9\ninput Q : [L, 4]\ninput K : [L, 4]\ninput W : [4, 3]\ninput G : [L]\ninput V : [L, 2]\n"
        "export y = attention(Q, K, feature=hedgehog(W), gate=G, chunk=4) @ V\n"
        "export z = attention(Q, K, feature=favor(6, 1), decay=0.95, normalize=false) @ V",
        "dim L\ninput Q : [L, 3]\ninput K : [L, 3]\ninput G : [L]\ninput V : [L, 2]\n"
        "export y = attention(Q, K, feature=identity, normalize=false, gate=G) @ V",
    )
    def sample(self, n, tag):
        return None     # no transpose: kept out of the random compositions that transpose freely

    # ---- construction: from attention(...) ---------------------------------------------
    def construct_gated(self, b, ops, attrs, kwargs, span):
        if "decay" in kwargs and "gate" in kwargs:
            raise TypeError_("attention(...) takes decay= or gate=, not both", kwargs["gate"].span,
                             hint="decay=γ is gate=log γ at every token")
        key = "decay" if "decay" in kwargs else "gate"
        if "causal" in kwargs and not attrs["causal"]:
            raise TypeError_(f"{key}= makes attention causal; it cannot be combined with causal=false",
                             kwargs["causal"].span, hint="drop causal=false (the decayed state runs forward)")
        attrs = {**attrs, "causal": True}
        val = kwargs[key]
        if key == "decay" and val.tag in ("num", "dim"):
            gamma = float(b.num(val))
            if not 0.0 < gamma <= 1.0:
                raise TypeError_(f"decay= needs a number in (0, 1], got {gamma:g}", val.span,
                                 hint="the state is multiplied by γ at every token; RetNet uses 1 − 2^(−5−h)")
            attrs.update(gate="const", log_decay=math.log(gamma))
        else:
            ops = [*ops, b.tensor(val, range(1, 9), f"attention's {key}")]
            attrs["gate"] = key
        return b.add(self.name, ops, attrs, span=span)

    # ---- typing ------------------------------------------------------------------------
    def infer(self, g, ops, attrs, span):
        q, k, shapes, dtypes = operand_types(g, ops, attrs, span, "attention")
        _causal_rows(g, q, k, span, "attention")
        if attrs["gate"] == "gate":
            t = tensor_of_rank(g, ops[-1], range(1, 9), span, "attention's gate")
            if not g.dims.equal(t.shape[-1], q.shape[-2]):
                raise ShapeError(f"gate= needs log-gates [..., L] with L = {q.shape[-2]} (one per token), "
                                 f"got {t}", span, hint="G has the batch dims of Q and one entry per token")
            shapes.append(t.shape[:-1])
            dtypes.append(t.dtype)
        elif attrs["gate"] == "decay":
            t = g.type(ops[-1])
            shapes.append(t.shape)
            dtypes.append(t.dtype)
        return OpType(q.shape[-2], k.shape[-2], _batch(span, *shapes), join_dtype(*dtypes),
                      frozenset({"lower"}))

    def operand_domains(self, g, v):
        """Log-gates are ≤ 0 and decays in (0, 1] (reference.DOMAINS)."""
        gate = g[v].attrs["gate"]
        return {} if gate == "const" else {len(g[v].operands) - 1: "log_gate" if gate == "gate" else "unit"}

    # ---- meaning -----------------------------------------------------------------------
    def dense(self, g, v, vals):
        n = g[v]
        extra = vals[2:-1] if n.attrs["gate"] != "const" else vals[2:]
        fq = feature_np(n.attrs, vals[0], extra)
        fk = feature_np(n.attrs, vals[1], extra)
        L = fq.shape[-2]
        c = np.cumsum(log_gates_np(n.attrs, vals[-1], L), axis=-1)
        low = np.tri(L, L, dtype=bool)
        a = (fq @ np.swapaxes(fk, -1, -2)) * np.where(low, np.exp(np.where(low, c[..., :, None] - c[..., None, :],
                                                                               -np.inf)), 0.0)
        if n.attrs["normalize"]:
            a = a / (a.sum(axis=-1, keepdims=True) + np.finfo(np.float64).tiny)
        return a

    def flops(self, g, v, k):
        n = g[v]
        t = g.type(v)
        d = g.type(n.operands[0]).shape[-1]
        f = feature_count(g, n)
        L = t.rows
        feat = {"elu1": 3 * d, "relu": d, "identity": 0}.get(n.attrs["feature"], 2 * d * f + 4 * f)
        cols = k + (1 if n.attrs["normalize"] else 0)
        C = self._chunk(g, n, f, k)
        nc = L / C
        fixed = sym_prod(t.batch) * (2 * feat * L + 2 * L * C * f + 4 * L * C + 2 * L)
        per_col = 2 * L * C + 4 * L * f + 2 * nc * nc * f
        return fixed + per_col * cols

    def _chunk(self, g, n, f, k):
        if n.attrs.get("chunk"):
            return n.attrs["chunk"]
        L = g.dims.value(g.type(n.id).rows)
        if L is None:
            return g.type(n.id).rows        # the quadratic form
        return min(choose_gated_chunk(L, g.dims.hinted(f), g.dims.hinted(k)), L)

    # ---- lowering ----------------------------------------------------------------------
    def lower(self, lw, v, x):
        n = lw.src[v]
        a = n.attrs
        q, k = lw.tensor(n.operands[0]), lw.tensor(n.operands[1])
        extra = [lw.tensor(o) for o in feature_operands(n)]
        gop = gate_operand(n)
        gt = lw.tensor(gop) if gop is not None else None
        out_dtype = lw.src.type(v).dtype or lw.dtype(x)
        if lw.dtype(x) in HALF or out_dtype in HALF:       # gates, state and sums in float32
            q, k, x = (lw.prim("cast", t, dtype="float32") for t in (q, k, x))
            extra = [lw.prim("cast", t, dtype="float32") for t in extra]
            gt = lw.prim("cast", gt, dtype="float32") if gt is not None else None
        fq = lower_features(lw, a, q, extra, "query")
        fk = lower_features(lw, a, k, extra, "key")
        rows = lw.shape(fq)[-2]
        gates = lower_log_gates(lw, a, gt, rows, lw.dtype(fq))           # [..., L]
        cols = lw.shape(x)[-1]
        if a["normalize"]:      # the row sums: the same operator applied to a column of ones
            ones = lw.prim("fill", shape=lw.shape(x)[:-1] + (1,), value=1.0, dtype=lw.dtype(x))
            x = lw.prim("concat", x, ones, axis=-1)
        L = lw.dims.value(rows)
        if L is None:
            y = _quadratic(lw, fq, fk, x, gates)
        else:
            f = lw.dims.hinted(lw.shape(fq)[-1])
            C = a.get("chunk") or choose_gated_chunk(L, f, lw.dims.hinted(cols))
            y = _chunked(lw, fq, fk, x, gates, L, min(int(C), L))
        if a["normalize"]:
            num = lw.prim("slice", y, axis=-1, start=0, stop=cols)
            den = lw.prim("slice", y, axis=-1, start=cols, stop=cols + 1)
            y = lw.prim("div", num, _nonzero(lw, den))
        if lw.dtype(y) != out_dtype and out_dtype in HALF:
            y = lw.prim("cast", y, dtype=out_dtype)
        return y


def log_gates_np(attrs, last, L):
    """The log-gates [..., L] of a gated_attention node in numpy (float64); `last` its last operand."""
    if attrs["gate"] == "const":
        return np.full(L, attrs["log_decay"])
    if attrs["gate"] == "decay":
        return np.log(last)[..., None] * np.ones(L)
    return last


def lower_log_gates(lw, attrs, gt, rows, dtype):
    """The log-gates [..., L] as primitives: G itself, log γ broadcast over the tokens, or a constant."""
    if attrs["gate"] == "const":
        return lw.prim("fill", shape=(rows,), value=float(attrs["log_decay"]), dtype=dtype)
    if attrs["gate"] == "gate":
        return gt
    s = lw.shape(gt)
    logs = lw.reshape(lw.prim("unary", gt, fn="log"), s + (1,))
    return lw.mul(logs, lw.prim("fill", shape=(rows,), value=1.0, dtype=dtype))


def decay_mask(lw, c, strict=False):
    """exp(c_i − c_j) for i ≥ j (i > j when strict), else 0, from cumulative log-gates c [..., n]:
    the differences above the diagonal (≥ 0, possibly huge) are masked to −inf before exp."""
    s = lw.shape(c)
    diff = lw.sub(lw.reshape(c, s + (1,)), lw.reshape(c, s[:-1] + (1, s[-1])))
    return lw.prim("unary", lw.prim("tril", diff, k=-1 if strict else 0, fill=float("-inf")), fn="exp")


def _quadratic(lw, fq, fk, x, gates):
    """A free L: (φ(Q) φ(K)ᵀ ∘ exp(c_i − c_j)) x with the mask over the whole sequence."""
    m = decay_mask(lw, lw.prim("cumsum", gates, axis=-1))
    return lw.matmul(lw.mul(lw.matmul(fq, lw.swap(fk)), m), x)


def _chunked(lw, fq, fk, x, gates, L, C):
    """The chunked form of the module doc; one chunk (C = L) is the masked quadratic form."""
    nc = -(-L // C)
    lp = nc * C
    rows = lw.shape(fq)[-2]
    if lp != L:            # padded tokens come last: zero keys and values, gate 0; their rows are dropped
        fq, fk, x = _pad_rows(lw, fq, lp), _pad_rows(lw, fk, lp), _pad_rows(lw, x, lp)
        gs = lw.shape(gates)
        gates = lw.prim("concat", gates, lw.prim("zeros", shape=gs[:-1] + (lp - L,), dtype=lw.dtype(gates)),
                        axis=-1)
    if nc == 1:
        return _quadratic(lw, fq, fk, x, gates)

    def chunks(t):
        s = lw.shape(t)
        return lw.reshape(t, s[:-2] + (nc, C, s[-1]))

    qc, kc, xc = chunks(fq), chunks(fk), chunks(x)
    gs = lw.shape(gates)
    b = lw.prim("cumsum", lw.reshape(gates, gs[:-1] + (nc, C)), axis=-1)              # [..., nc, C]
    num = lw.matmul(lw.mul(lw.matmul(qc, lw.swap(kc)), decay_mask(lw, b)), xc)     # intra-chunk
    bs = lw.shape(b)
    last = lw.prim("slice", b, axis=-1, start=C - 1, stop=C)                          # [..., nc, 1]
    to_end = lw.prim("unary", lw.sub(last, b), fn="exp")                              # exp(b_last − b) ≤ 1
    h = lw.matmul(lw.swap(lw.mul(kc, lw.reshape(to_end, bs + (1,)))), xc)           # [..., nc, f, k]
    totals = lw.reshape(last, bs[:-1])                                                # [..., nc]
    inclusive = lw.prim("cumsum", totals, axis=-1)
    zero = lw.prim("zeros", shape=bs[:-2] + (1,), dtype=lw.dtype(b))
    exclusive = lw.prim("concat", zero, lw.prim("slice", inclusive, axis=-1, start=0, stop=nc - 1), axis=-1)
    ts = lw.shape(inclusive)
    diff = lw.sub(lw.reshape(exclusive, ts + (1,)), lw.reshape(inclusive, ts[:-1] + (1, ts[-1])))
    carry = lw.prim("unary", lw.prim("tril", diff, k=-1, fill=float("-inf")), fn="exp")   # [..., nc, nc]
    hs = lw.shape(h)
    state = lw.reshape(lw.matmul(carry, lw.reshape(h, hs[:-2] + (hs[-2] * hs[-1],))), hs)
    from_start = lw.prim("unary", b, fn="exp")                                        # exp(b) ≤ 1
    num = lw.add(num, lw.matmul(lw.mul(qc, lw.reshape(from_start, bs + (1,))), state))
    s = lw.shape(num)
    y = lw.reshape(num, s[:-3] + (rows if lp == L else lp, s[-1]))
    if lp != L:
        y = lw.prim("slice", y, axis=-2, start=0, stop=rows)
    return y
