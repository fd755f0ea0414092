"""Kernelized attention: the L x L operator D⁻¹ φ(Q) φ(K)ᵀ, applied without forming it.

`attention(Q, K, feature=elu1, causal=false, normalize=true)` with Q [..., Lq, d]
and K [..., Lk, d] is a batched operator: its type is [..., Lq, Lk] with the
leading (batch / head) dims of Q and K broadcast.  Applied to V [..., Lk, dv] it
gives, per batch entry,

    out = D⁻¹ (M ∘ φ(Q) φ(K)ᵀ) V,   D = diag((M ∘ φ(Q) φ(K)ᵀ) 1)

where M is the lower-triangular mask (ones on and below the diagonal) when
causal and all ones otherwise, and D = I when normalize=false.  It is lowered as
φ(Q) (φ(K)ᵀ V) (linear in L) or, when causal, by a chunked scan: inside a chunk
the masked product of the chunk's features, across chunks a running state
Σ φ(k) vᵀ (and Σ φ(k) for the denominators), prefix-summed over chunks.

Feature maps (`feature=`):

- `elu1`      φ(x) = where(x ≥ 0, x + 1, exp(min(x, 0)))   (elu(x) + 1, without overflow)
- `relu`      φ(x) = max(x, 0)          (a row whose features all vanish gives 0: see "Normalizer" below)
- `identity`  φ(x) = x                  (use with normalize=false: D may vanish)
- `favor(m, seed)`  Performer FAVOR+: φ(x) = exp(ω x̃ − ‖x̃‖²/2) / √m with x̃ = x d^(-1/4)
  and ω [m, d] orthogonal random features drawn from `seed`, so that
  E[φ(q)ᵀ φ(k)] = exp(qᵀk / √d): the normalized form approximates softmax_attention.
- `hedgehog(W)`  learnable (Hedgehog): φ(x) = softmax([x W, −x W]) over the 2m features,
  W [..., d, m] (leading dims broadcast with the heads of Q and K).

`softmax_attention(Q, K, causal=false, scale=1/√d)` is the exact quadratic kind;
`replace_softmax(graph, m, seed)` turns every one of them into
`attention(Q, K, feature=favor(m, seed))`.

Normalizer: D is never 0 in a division.  The lowering divides by D + tiny (tiny = the
smallest normal number of the compute dtype, 1.2e-38 in float32), and so does the dense
reference: a row whose weights all vanish or underflow (relu features of a negative query,
FAVOR / Hedgehog features far apart at large input magnitudes) is 0, never 0/0 = nan; for any
D above tiny the sum is D itself (docs/reliability.md, tests/test_numerics.py).

The feature maps (their language values, numpy meaning and lowering) are in
kinds/attention_features.py.  Conventions and a small dense example:
docs/families_attention_conv.md.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError, TypeError_, written
from ..primitives import broadcast
from .attention_features import FAVOR_MAX_D, FEATURES, feature_np, lower_features, n_features
from .base import CONSTRUCTORS, REGISTRY, Kind, OpType, join_dtype, register, sym_prod, tensor_of_rank
from .rule import Rule

OPTIONS = ("feature", "causal", "normalize", "chunk", "decay", "gate")
CHUNKS = (64, 128)            # the compiler's chunk sizes for causal attention
HALF = ("float16", "bfloat16")


# ---- shared shape rule ----------------------------------------------------------

def _qk_types(g, ops, span, who):
    q = tensor_of_rank(g, ops[0], range(2, 9), span, f"{who}'s Q")
    k = tensor_of_rank(g, ops[1], range(2, 9), span, f"{who}'s K")
    if not g.dims.equal(q.shape[-1], k.shape[-1]):
        qn, kn = written(g[ops[0]].span, "Q"), written(g[ops[1]].span, "K")     # the user's names
        raise ShapeError(f"{written(span, who + '(Q, K)')} needs {qn} and {kn} with the same feature size d "
                         f"(last dim), got {qn} {q} and {kn} {k}",
                         span, hint="Q is [..., L, d] and K is [..., L, d]")
    return q, k


def _batch(span, *shapes):
    out = ()
    for s in shapes:
        try:
            out = broadcast(out, s)
        except ShapeError:
            raise ShapeError(f"the batch dims [{', '.join(map(str, out))}] and [{', '.join(map(str, s))}] "
                             "do not broadcast", span,
                             hint="leading (batch, head) dims of Q, K (and W) must be equal or 1") from None
    return tuple(out)


def _causal_rows(g, q, k, span, who):
    if not g.dims.equal(q.shape[-2], k.shape[-2]):
        raise ShapeError(f"causal {who} needs as many queries as keys, got Q {q} and K {k}", span,
                         hint="drop causal=true for cross-attention")


def operand_types(g, ops, attrs, span, who):
    """(Q's type, K's type, the batch shapes and the dtypes to join) of attention(Q, K, feature=...)
    with its feature map's operands (hedgehog's W), checked."""
    q, k = _qk_types(g, ops, span, who)
    shapes = [q.shape[:-2], k.shape[:-2]]
    dtypes = [q.dtype, k.dtype]
    f = attrs["feature"]
    if f == "hedgehog":
        w = tensor_of_rank(g, ops[2], range(2, 9), span, "hedgehog's W")
        if not g.dims.equal(w.shape[-2], q.shape[-1]):
            raise ShapeError(f"hedgehog(W) needs W [..., d, m] with d = {q.shape[-1]} (the last dim of Q), "
                             f"got W {w}", span)
        shapes.append(w.shape[:-2])
        dtypes.append(w.dtype)
    if f == "favor" and g.dims.value(q.shape[-1]) is None:
        raise ShapeError(f"feature=favor(...) needs a concrete feature size d, got {q.shape[-1]}", span,
                         hint="declare it: `dim d = 64`")
    if f == "favor" and g.dims.value(q.shape[-1]) > FAVOR_MAX_D:
        raise ShapeError(f"feature=favor(...) supports a feature size d up to {FAVOR_MAX_D}, "
                         f"got {q.shape[-1]} = {g.dims.value(q.shape[-1])}", span,
                         hint="the orthogonal random features (QR of d x d blocks) are drawn at compile time")
    return q, k, shapes, dtypes


def feature_count(g, n):
    """The number of features of attention node n (d for the elementwise maps)."""
    return n_features(g, n.attrs, n.operands, g.type(n.operands[0]).shape[-1])


def choose_chunk(L: int, f: int, k: int) -> int:
    """The chunk of the causal scan: L itself when L <= 128 (one chunk, no state);
    else the size in CHUNKS with the fewest padded FLOPs per head,
    (intra-chunk 2·C·(f + k) + inter-chunk 4·f·k) per token, the smaller on ties."""
    if L <= max(CHUNKS):
        return L

    def cost(c):
        lp = -(-L // c) * c
        return lp * (2 * c * (f + k) + 4 * f * k)
    return min(CHUNKS, key=lambda c: (cost(c), c))


@register
class Attention(Kind):
    """`attention(Q, K, feature=elu1, causal=false, normalize=true)`: D⁻¹ φ(Q) φ(K)ᵀ (see the module doc)."""

    name = "attention"
    constructors = ("attention",)
    params = ("Q", "K")
    options = OPTIONS
    examples = (
        "dim L = 6\ndim d = 3\ninput Q : [2, L, d]\ninput K : [2, L, d]\ninput V : [2, L, 4]\n"
        "export y = attention(Q, K) @ V",
        "dim L = 10\ninput Q : [2, 3, L, 4]\ninput K : [2, 3, L, 4]\ninput V : [2, 3, L, 5]\n"
        "export y = attention(Q, K, causal=true, chunk=4) @ V",
        "dim L = 9\ninput Q : [2, L, 4]\ninput K : [2, L, 4]\ninput V : [2, L, 3]\n"
        "export y = attention(Q, K, feature=favor(8, 1), causal=true, chunk=4) @ V\n"
        "export z = attention(Q, K, feature=favor(6, 2)) @ V",
        "dim L = 8\ninput Q : [3, L, 4]\ninput K : [3, L, 4]\ninput W : [3, 4, 5]\ninput V : [3, L, 2]\n"
        "export y = attention(Q, K, feature=hedgehog(W), causal=true, chunk=3) @ V\n"
        "export z = attention(Q, K, feature=hedgehog(W)) @ V",
        "dim L = 7\ninput Q : [L, 3]\ninput K : [5, 3]\ninput V : [5, 2]\n"
        "export y = attention(Q, K, feature=relu, normalize=false) @ V\n"
        "input x : [L, 2]\nexport z = attention(Q, K, feature=identity, normalize=false).T @ x",
        "dim L = 6\ninput Q : [L, 2]\ninput K : [L, 2]\ninput d : [L]\ninput U : [L, 2]\ninput x : [L, 3]\n"
        "export y = (attention(Q, K, causal=true) + diag(d)) @ x\n"
        "export z = (attention(Q, Q, normalize=false) @ lowrank(U, U)) @ x",
        "dim L\ninput Q : [2, L, 3]\ninput K : [2, L, 3]\ninput V : [2, L, 2]\n"
        "export y = attention(Q, K, causal=true) @ V\n"
        "export z = attention(Q, K, feature=favor(5), normalize=false, causal=true) @ V",
    )

    def sample(self, n, tag):
        return (f"input Q{tag} : [{n}, 2]\ninput K{tag} : [{n}, 2]",
                f"attention(Q{tag}, K{tag}, normalize=false)")

    # ---- construction ------------------------------------------------------
    def construct(self, b, args, kwargs, span):
        b.arity(self, args, span, 2, 2)
        for key, val in kwargs.items():
            if key not in OPTIONS:
                raise TypeError_(f"attention(...) has no option {key!r}", val.span,
                                 hint=f"options: {', '.join(OPTIONS)}")
        q = b.tensor(args[0], range(2, 9), "attention's Q")
        k = b.tensor(args[1], range(2, 9), "attention's K")
        attrs = {"feature": "elu1", "causal": False, "normalize": True}
        ops = [q, k]
        if "feature" in kwargs:
            fv = kwargs["feature"]
            if fv.tag == "feature":
                attrs["feature"], extra, more = fv.v
                attrs.update(extra)
                ops.extend(more)
            elif fv.tag == "word" and fv.v in ("favor", "hedgehog"):
                usage = CONSTRUCTORS[fv.v].usage
                raise TypeError_(f"the feature map {fv.v} needs arguments", fv.span, hint=f"write feature={usage}")
            else:
                attrs["feature"] = b.word(fv, FEATURES, "feature map")
        if "causal" in kwargs:
            attrs["causal"] = b.flag(kwargs["causal"])
        if "normalize" in kwargs:
            attrs["normalize"] = b.flag(kwargs["normalize"])
        if "chunk" in kwargs:
            c = b.g.dims.value(b.dim(kwargs["chunk"]))
            if c is None:
                raise TypeError_("chunk= needs a number, not a free dimension", kwargs["chunk"].span)
            attrs["chunk"] = int(c)
        if "decay" in kwargs or "gate" in kwargs:       # its own kind: kinds/attention_gated.py
            return REGISTRY["gated_attention"].construct_gated(b, ops, attrs, kwargs, span)
        return b.add(self.name, ops, attrs, span=span)

    # ---- typing ------------------------------------------------------------
    def infer(self, g, ops, attrs, span):
        q, k, shapes, dtypes = operand_types(g, ops, attrs, span, "attention")
        if attrs["causal"]:
            _causal_rows(g, q, k, span, "attention")
        props = set()
        if attrs["causal"]:
            props.add("lower")
        elif not attrs["normalize"] and ops[0] == ops[1]:
            props |= {"symmetric", "psd"}        # φ(Q) φ(Q)ᵀ
        return OpType(q.shape[-2], k.shape[-2], _batch(span, *shapes), join_dtype(*dtypes), frozenset(props))

    # ---- meaning -------------------------------------------------------------
    def dense(self, g, v, vals):
        attrs = g[v].attrs
        fq = feature_np(attrs, vals[0], vals[2:])
        fk = feature_np(attrs, vals[1], vals[2:])
        a = fq @ np.swapaxes(fk, -1, -2)
        if attrs["causal"]:
            a = np.tril(a)
        if attrs["normalize"]:
            a = a / (a.sum(axis=-1, keepdims=True) + np.finfo(np.float64).tiny)   # never 0/0
        return a

    def flops(self, g, v, k):
        n = g[v]
        t = g.type(v)
        d = g.type(n.operands[0]).shape[-1]
        f = n_features(g, n.attrs, n.operands, d)
        lq, lk = t.rows, t.cols
        feat = {"elu1": 3 * d, "relu": d, "identity": 0}.get(n.attrs["feature"])
        if feat is None:   # favor / hedgehog: a [d, m] projection and a few elementwise passes
            feat = 2 * d * f + 4 * f
        batch = sym_prod(t.batch)
        per_col = 2 * lk * f + 2 * lq * f + (lq if n.attrs["normalize"] else 0)
        fixed = batch * (feat * (lq + lk) + (2 * lq * f if n.attrs["normalize"] else 0))
        if n.attrs["causal"]:
            c = self._chunk(g, n, f, k)
            per_col += 2 * lq * c
            fixed += batch * 2 * lq * c * f
        return fixed + per_col * k

    def _chunk(self, g, n, f, k):
        if n.attrs.get("chunk"):
            return n.attrs["chunk"]
        L = g.dims.value(g.type(n.id).rows)
        if L is None:
            return 1
        return choose_chunk(L, g.dims.hinted(f), g.dims.hinted(k))

    def transpose(self, g, v):
        """(φ(Q) φ(K)ᵀ)ᵀ = φ(K) φ(Q)ᵀ when neither normalized nor causal; else None (no lowering)."""
        n = g[v]
        if n.attrs["normalize"] or n.attrs["causal"]:
            return None
        ops = (n.operands[1], n.operands[0]) + tuple(n.operands[2:])
        return g.add(self.name, ops, n.attrs, span=n.span)

    # ---- lowering --------------------------------------------------------------
    def lower(self, lw, v, x):
        n = lw.src[v]
        a = n.attrs
        q, k = lw.tensor(n.operands[0]), lw.tensor(n.operands[1])
        extra = [lw.tensor(o) for o in n.operands[2:]]
        out_dtype = lw.src.type(v).dtype or lw.dtype(x)
        if lw.dtype(x) in HALF or out_dtype in HALF:    # accumulate in float32
            q, k, x = (lw.prim("cast", t, dtype="float32") for t in (q, k, x))
            extra = [lw.prim("cast", t, dtype="float32") for t in extra]
        fq = lower_features(lw, a, q, extra, "query")
        fk = lower_features(lw, a, k, extra, "key")
        if not a["causal"]:
            y = _linear(lw, fq, fk, x, a["normalize"])
        else:
            L = lw.dims.value(lw.shape(fq)[-2])
            if L is None:
                y = _prefix(lw, fq, fk, x, a["normalize"])
            else:
                f = lw.dims.hinted(lw.shape(fq)[-1])
                c = a.get("chunk") or choose_chunk(L, f, lw.dims.hinted(lw.shape(x)[-1]))
                y = _chunked(lw, fq, fk, x, a["normalize"], L, min(int(c), L))
        if lw.dtype(y) != out_dtype and out_dtype in HALF:
            y = lw.prim("cast", y, dtype=out_dtype)
        return y


def _linear(lw, fq, fk, x, normalize):
    """φ(Q) (φ(K)ᵀ x) / φ(Q) (φ(K)ᵀ 1)."""
    num = lw.matmul(fq, lw.matmul(lw.swap(fk), x))
    if not normalize:
        return num
    z = lw.prim("sum", fk, axis=-2, keepdims=True)                # [..., 1, f]
    return lw.prim("div", num, _nonzero(lw, lw.matmul(fq, lw.swap(z))))


def _pad_rows(lw, t, rows, fill=0.0):
    """t [..., L, c] with rows of `fill` appended up to `rows`."""
    s = lw.shape(t)
    extra = lw.dims.value(rows - s[-2])
    if extra == 0:
        return t
    z = lw.prim("zeros", shape=s[:-2] + (extra, s[-1]), dtype=lw.dtype(t))
    return lw.prim("concat", t, lw.prim("shift", z, c=fill) if fill else z, axis=-2)


SCAN_GROUPS = (8, 16, 4, 12, 6, 10, 14, 5, 7, 9, 11, 13, 15)


def _exclusive_scan(lw, t):
    """Exclusive prefix sums over the chunk axis of t [..., nc, p, q]: [0, t0, t0 + t1, ...].

    Written as products with strictly lower-triangular ones (0/1 weights, float32 or
    wider sums): torch.cumsum over a non-last axis is a strided scalar loop, 10-20x
    slower than a matmul here.  Up to 16 chunks, one [nc, nc] product; beyond, two
    levels: groups of b chunks (b = 8 when it divides nc), a prefix inside each group
    and a prefix over the group totals, so the cost stays O(nc·b) per state entry.
    """
    s = lw.shape(t)
    nc = lw.dims.value(s[-3])
    lead, F = s[:-3], s[-2] * s[-1]
    flat = lw.reshape(t, lead + (nc, F))
    dt = lw.dtype(t)
    if nc <= 16:
        out = lw.matmul(lw.prim("tri", n=nc, m=nc, k=-1, dtype=dt), flat)
        return lw.reshape(out, s)
    b = next((g for g in SCAN_GROUPS if nc % g == 0), 8)
    a = -(-nc // b)
    if a * b != nc:                              # ragged: zero states up to a multiple of b
        flat = lw.prim("concat", flat, lw.prim("zeros", shape=lead + (a * b - nc, F), dtype=dt), axis=-2)
    groups = lw.reshape(flat, lead + (a, b, F))
    within = lw.matmul(lw.prim("tri", n=b, m=b, k=-1, dtype=dt), groups)            # [..., a, b, F]
    before = lw.matmul(lw.prim("tri", n=a, m=a, k=-1, dtype=dt), lw.prim("sum", groups, axis=-2))
    out = lw.reshape(lw.add(within, lw.reshape(before, lead + (a, 1, F))), lead + (a * b, F))
    if a * b != nc:
        out = lw.prim("slice", out, axis=-2, start=0, stop=nc)
    return lw.reshape(out, s)


def _chunked(lw, fq, fk, x, normalize, L, C):
    """Causal attention in chunks of C tokens: intra-chunk masked products plus an
    inter-chunk state Σ φ(k) vᵀ (and Σ φ(k)) prefix-summed over the chunks.
    One chunk (C = L) is the masked quadratic form, with no reshapes."""
    nc = -(-L // C)
    lp = nc * C
    rows = lw.shape(fq)[-2]          # L as written (a dim name), for the result's shape
    # padded keys (zero features, zero values) add nothing; padded queries are ones so
    # that their rows, dropped at the end, do not divide 0 by 0
    fq, fk, x = _pad_rows(lw, fq, lp, 1.0), _pad_rows(lw, fk, lp), _pad_rows(lw, x, lp)

    def chunks(t):
        if nc == 1:
            return t
        s = lw.shape(t)
        return lw.reshape(t, s[:-2] + (nc, C, s[-1]))

    qc, kc, xc = chunks(fq), chunks(fk), chunks(x)
    a = lw.prim("tril", lw.matmul(qc, lw.swap(kc)), k=0, fill=0.0)        # [..., nc, C, C]
    num = lw.matmul(a, xc)                                                # [..., nc, C, k]
    if nc > 1:
        state = _exclusive_scan(lw, lw.matmul(lw.swap(kc), xc))    # [..., nc, f, k]
        num = lw.add(num, lw.matmul(qc, state))
    if normalize:
        den = lw.prim("sum", a, axis=-1, keepdims=True)                   # [..., nc, C, 1]
        if nc > 1:
            z = _exclusive_scan(lw, lw.prim("sum", kc, axis=-2, keepdims=True))   # [..., nc, 1, f]
            den = lw.add(den, lw.matmul(qc, lw.swap(z)))
        num = lw.prim("div", num, _nonzero(lw, den))
    if nc == 1:
        return num
    s = lw.shape(num)
    y = lw.reshape(num, s[:-3] + (rows if lp == L else lp, s[-1]))
    if lp != L:
        y = lw.prim("slice", y, axis=-2, start=0, stop=rows)
    return y


def _prefix(lw, fq, fk, x, normalize):
    """Causal attention for a length unknown at compile time: per-token prefix sums of
    φ(k) vᵀ (memory L·f·k per batch entry; the chunked scan needs a concrete L)."""
    sq, sk, sx = lw.shape(fq), lw.shape(fk), lw.shape(x)
    kv = lw.mul(lw.reshape(fk, sk + (1,)), lw.reshape(x, sx[:-1] + (1, sx[-1])))   # [..., L, f, k]
    state = lw.prim("cumsum", kv, axis=-3)
    num = lw.matmul(lw.reshape(fq, sq[:-1] + (1, sq[-1])), state)                   # [..., L, 1, k]
    s = lw.shape(num)
    num = lw.reshape(num, s[:-3] + (s[-3], s[-1]))
    if not normalize:
        return num
    z = lw.prim("cumsum", fk, axis=-2)                                               # [..., L, f]
    den = lw.prim("sum", lw.mul(fq, z), axis=-1, keepdims=True)
    return lw.prim("div", num, _nonzero(lw, den))


def _nonzero(lw, den):
    """D + tiny (the smallest normal number of D's dtype): a vanished row divides 0 by tiny, not by 0."""
    return lw.prim("shift", den, c=float(np.finfo(np.dtype(lw.dtype(den))).tiny))


# ---- the exact quadratic kind -------------------------------------------------------

@register
class SoftmaxAttention(Kind):
    """`softmax_attention(Q, K, causal=false, scale=1/√d)`: softmax(scale · Q Kᵀ) row by row, exactly
    (quadratic in L); causal masks keys after the query.  See replace_softmax for FAVOR+."""

    name = "softmax_attention"
    constructors = ("softmax_attention",)
    params = ("Q", "K")
    options = ("causal", "scale")
    examples = (
        "dim L = 7\ninput Q : [2, L, 4]\ninput K : [2, L, 4]\ninput V : [2, L, 3]\n"
        "export y = softmax_attention(Q, K) @ V\nexport z = softmax_attention(Q, K, causal=true) @ V",
        "input Q : [5, 3]\ninput K : [6, 3]\ninput d : [5]\ninput x : [6, 2]\n"
        "export y = (diag(d) @ softmax_attention(Q, K, scale=2)) @ x",
    )

    def sample(self, n, tag):
        return None   # no transpose: keep it out of random compositions

    def construct(self, b, args, kwargs, span):
        b.arity(self, args, span, 2, 2)
        for key, val in kwargs.items():
            if key not in ("causal", "scale"):
                raise TypeError_(f"softmax_attention(...) has no option {key!r}", val.span,
                                 hint="options: causal, scale")
        q = b.tensor(args[0], range(2, 9), "softmax_attention's Q")
        k = b.tensor(args[1], range(2, 9), "softmax_attention's K")
        attrs = {"causal": b.flag(kwargs["causal"]) if "causal" in kwargs else False}
        if "scale" in kwargs:
            attrs["scale"] = float(b.num(kwargs["scale"]))
        return b.add(self.name, [q, k], attrs, span=span)

    def infer(self, g, ops, attrs, span):
        q, k = _qk_types(g, ops, span, "softmax_attention")
        if attrs["causal"]:
            _causal_rows(g, q, k, span, "softmax_attention")
        if attrs.get("scale") is None and g.dims.value(q.shape[-1]) is None:
            raise ShapeError(f"softmax_attention needs a concrete d for its default scale 1/√d, got {q.shape[-1]}",
                             span, hint="declare `dim d = 64` or pass scale=...")
        return OpType(q.shape[-2], k.shape[-2], _batch(span, q.shape[:-2], k.shape[:-2]),
                      join_dtype(q.dtype, k.dtype), frozenset({"lower"} if attrs["causal"] else ()))

    @staticmethod
    def scale(g, v):
        s = g[v].attrs.get("scale")
        return s if s is not None else 1.0 / math.sqrt(g.dims.value(g.type(g[v].operands[0]).shape[-1]))

    def dense(self, g, v, vals):
        s = self.scale(g, v) * (vals[0] @ np.swapaxes(vals[1], -1, -2))
        if g[v].attrs["causal"]:
            s = np.where(np.tri(s.shape[-2], s.shape[-1], dtype=bool), s, -np.inf)
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def flops(self, g, v, k):
        t = g.type(v)
        d = g.type(g[v].operands[0]).shape[-1]
        return sym_prod(t.batch) * t.rows * t.cols * (2 * d + 5) + 2 * t.rows * t.cols * k

    def lower(self, lw, v, x):
        n = lw.src[v]
        q, k = lw.tensor(n.operands[0]), lw.tensor(n.operands[1])
        s = lw.scale(lw.matmul(q, lw.swap(k)), self.scale(lw.src, v))
        if n.attrs["causal"]:
            s = lw.prim("tril", s, k=0, fill=float("-inf"))
        e = lw.prim("unary", lw.sub(s, lw.prim("max", s, axis=-1, keepdims=True)), fn="exp")
        return lw.prim("div", lw.matmul(e, x), lw.prim("sum", e, axis=-1, keepdims=True))


# ---- the compile option: softmax_attention -> attention(feature=favor(m, seed)) ----------

def softmax_to_favor_rules(m: int, seed: int = 0):
    """The rewrite (one rule) behind replace_softmax."""

    def build(g, mt):
        n = g[mt["_"]]
        attrs = {"feature": "favor", "causal": n.attrs["causal"], "normalize": True, "m": int(m),
                 "seed": int(seed)}
        if n.attrs.get("scale") is not None:
            attrs["xscale"] = math.sqrt(n.attrs["scale"])     # favor's x̃ = x √scale
        return g.add("attention", list(n.operands), attrs, span=n.span)

    return [Rule("softmax-to-favor", "softmax(s QKᵀ) V ≈ D⁻¹ φ(Q) φ(K)ᵀ V, φ = FAVOR+ with m features",
                 ("softmax_attention", "Q", "K"), build)]


def replace_softmax(graph, m: int, seed: int = 0, log=None):
    """A new graph where every softmax_attention(Q, K, ...) is attention(Q, K, feature=favor(m, seed)).

    A pure Graph -> Graph function for the compile option `softmax_to_favor=m`.
    """
    from opdsl.passes.rewrite import rewrite
    if int(m) <= 0:
        raise TypeError_(f"softmax_to_favor needs a positive number of features, got {m}")
    return rewrite(graph, softmax_to_favor_rules(m, seed), log)
