"""The workloads of the `handwritten` section (issue 20, item 6): each an .op program and the same
algorithm written by hand in plain torch, the way an engineer writes it without opdsl.

WORKLOADS maps a name to a Workload: the program (`.op` text with `{size}` fields), its export,
the sizes (full and quick), the arguments (seeded torch tensors) and the hand-written function,
called with the same keyword arguments.  bench_handwritten.py times each in its own process.
The hand-written code follows the reference code people use where there is one
(linear_attention_baselines.py: flash-linear-attention's naive chunked forms; the FNO reference
layer; Shampoo's per-factor roots) and otherwise the textbook form of the same algorithm.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .bench_conv import _fno_reference
from .bench_matfun import _spd, shampoo_by_hand
from .bench_linear_attention import l2_normalize
from .linear_attention_baselines import delta_chunked_torch, gated_chunked_torch


@dataclass
class Workload:
    title: str                      # with {size} fields
    source: str                     # .op text with {size} fields
    full: dict
    quick: dict
    args: Callable                  # (sizes, generator) -> {name: tensor}
    hand: Callable                  # (**args) -> tensor: the same algorithm in plain torch
    hand_name: str
    export: str = "y"
    rtol: float = 1e-4
    family: str = "core"
    peers: dict = field(default_factory=dict)    # name -> (sizes, args) -> callable: runtime libraries


def _randn(g, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=g, dtype=dtype)


# ---- core -----------------------------------------------------------------------------------------
def kron_by_hand(A, B, x):
    """(A ⊗ B) x as two GEMMs: A on the first index of x viewed [a, b, k], then B batched over it."""
    a, b, k = A.shape[0], B.shape[0], x.shape[1]
    t = (A @ x.reshape(a, b * k)).reshape(a, b, k)
    return (B @ t).reshape(a * b, k)


def _kron_peers():
    def linear_operator(s, a):
        from linear_operator.operators import DenseLinearOperator, KroneckerProductLinearOperator
        op = KroneckerProductLinearOperator(DenseLinearOperator(a["A"]), DenseLinearOperator(a["B"]))
        return lambda: op @ a["x"]

    def cola(s, a):
        import cola as c
        op = c.ops.Kronecker(c.ops.Dense(a["A"]), c.ops.Dense(a["B"]))
        return lambda: op @ a["x"]
    return {"linear_operator KroneckerProductLinearOperator": linear_operator, "CoLA Kronecker": cola}


def monarch_by_hand(L, R, x):
    """Monarch: R's blocks on x's row blocks, a transpose of the block grid, L's blocks, transpose back."""
    b, k = L.shape[0], x.shape[1]
    t = torch.bmm(R, x.reshape(b, b, k)).transpose(0, 1)
    return torch.bmm(L, t).transpose(0, 1).reshape(b * b, k)


def lowrank_by_hand(d, U, V, x):
    return d[:, None] * x + U @ (V.T @ x)


def causal_elu1_by_hand(Q, K, V, chunk=64):
    """Causal linear attention with the elu + 1 feature map (Katharopoulos et al.), chunked: the
    masked product inside each chunk, the exclusive prefix sum of the chunks' KᵀV states between
    them, and the normalizer the same way."""
    q, k = F.elu(Q) + 1, F.elu(K) + 1
    B, H, L, D = q.shape
    n = L // chunk
    q, k, v = (t.reshape(B, H, n, chunk, -1) for t in (q, k, V))
    scores = torch.tril(q @ k.transpose(-1, -2))
    kv = k.transpose(-1, -2) @ v
    state = kv.cumsum(2) - kv
    ksum = k.sum(-2)
    zsum = ksum.cumsum(2) - ksum
    num = scores @ v + q @ state
    den = scores.sum(-1) + (q @ zsum.unsqueeze(-1)).squeeze(-1)
    return (num / den.unsqueeze(-1)).reshape(B, H, L, -1)


def chain_by_hand(A, B, D, U, V, x):
    """(kron(A, B) diag(D) U Vᵀ + I) x right to left, as written."""
    return kron_by_hand(A, B, D[:, None] * (U @ (V.T @ x))) + x


def woodbury_by_hand(d, U, V, B):
    """(diag(d) + U Vᵀ)⁻¹ B by the Woodbury identity: D⁻¹B − D⁻¹U (I + Vᵀ D⁻¹ U)⁻¹ Vᵀ D⁻¹ B."""
    db, du = B / d[:, None], U / d[:, None]
    cap = torch.eye(U.shape[1], dtype=U.dtype) + V.T @ du
    return db - du @ torch.linalg.solve(cap, V.T @ db)


def householder_by_hand(V, x, block=64):
    """H = H₁ ⋯ H_k, Hᵢ = I − 2 vᵢvᵢᵀ/‖vᵢ‖², applied in compact WY blocks, last block first:
    x ← x − Y T (Yᵀ x) with T⁻¹ = triu(YᵀY, 1) + diag(YᵀY)/2 (Schreiber–Van Loan)."""
    for j in reversed(range(0, V.shape[1], block)):
        Y = V[:, j:j + block]
        G = Y.T @ Y
        tinv = torch.triu(G, 1) + torch.diag(torch.diagonal(G) / 2)
        x = x - Y @ torch.linalg.solve_triangular(tinv, Y.T @ x, upper=True)
    return x


def blockdiag_by_hand(W, x):
    nb, b, _ = W.shape
    return torch.bmm(W, x.reshape(nb, b, -1)).reshape(nb * b, -1)


# ---- families -------------------------------------------------------------------------------------
def _attention_args(s, g):
    H, L, D = 8, s["L"], 64
    q, k, v = (_randn(g, 1, H, L, D) for _ in range(3))
    return {"Q": q, "K": k, "V": v}


def _retention_args(s, g):
    a = _attention_args(s, g)
    a["gamma"] = 1.0 - 2.0 ** (-5.0 - torch.arange(8, dtype=torch.float32))       # RetNet's γ_h
    return a


def retention_by_hand(Q, K, V, gamma):
    lg = gamma.log()[None, :, None].expand(1, Q.shape[1], Q.shape[2]).contiguous()
    return gated_chunked_torch(Q, K, V, lg, chunk=64)


def _delta_args(s, g):
    a = _attention_args(s, g)
    L = s["L"]
    a["beta"] = torch.sigmoid(_randn(g, 1, 8, L))
    a["G"] = F.logsigmoid(_randn(g, 1, 8, L))
    return a


def gated_delta_by_hand(Q, K, V, beta, G):
    return delta_chunked_torch(Q, l2_normalize(K), V, beta, G, chunk=64)


def _shampoo_args(s, g):
    m = s["m"]
    return {"L": _spd(m, g), "R": _spd(m, g), "G": _randn(g, m * m, s["k"])}


def rbf_by_hand(X, v, tile=1024):
    """exp(−‖xᵢ − xⱼ‖²/2) v in row tiles (never the n × n matrix), as KeOps-less GP code does."""
    return torch.cat([torch.exp(-0.5 * torch.cdist(X[i:i + tile], X).square()) @ v
                      for i in range(0, X.shape[0], tile)])


def _fno_args(s, g):
    n, width, m, batch = s["n"], 32, 12, 8
    w = _randn(g, width, width, 2 * m, m, 2) / width
    return {"W": w, "v": _randn(g, batch, width * n * n, 1)}


def fno_by_hand(W, v):
    """The FNO reference layer (SpectralConv2d: rfft2, two corner einsums, irfft2) on [b, c, n, n]."""
    width, m = W.shape[0], W.shape[3]
    n = int(round((v.shape[1] // width) ** 0.5))
    wc = torch.complex(W[..., 0], W[..., 1]).transpose(0, 1)
    x = v.reshape(v.shape[0], width, n, n)
    return _fno_reference(wc[:, :, :m].contiguous(), wc[:, :, m:].contiguous(), x, (m, m)).reshape(v.shape)


def _spmm_args(s, g):
    n, k, nnz = s["n"], 64, 16 * s["n"]
    idx = torch.randint(0, n, (2, nnz), generator=g)
    S = torch.sparse_coo_tensor(idx, _randn(g, nnz), (n, n)).coalesce().to_sparse_csr()
    return {"S": S, "X": _randn(g, n, k)}


def spmm_by_hand(S, X):
    return torch.sparse.mm(S, X)


def conv_by_hand(h, x):
    n = int(round(x.shape[0] ** 0.5))
    return F.conv2d(x.reshape(1, 1, n, n), h.flip(0, 1)[None, None], padding=h.shape[0] // 2).reshape(-1, 1)


def _args_from(spec: dict):
    """Arguments by name -> shape (a function of the sizes) and dtype, drawn N(0, 1)."""
    def make(s, g):
        return {k: _randn(g, *shape(s), dtype=dt) for k, (shape, dt) in spec.items()}
    return make


F64 = torch.float64
F32 = torch.float32

WORKLOADS = {
    "kron": Workload(
        "kron {a}x{a} (N={N}), {k} cols", "dim a = {a}\ninput A : [a, a]\ninput B : [a, a]\ninput x : [a * a, {k}]\n"
        "export y = kron(A, B) @ x\n", {"a": 64, "N": 4096, "k": 256}, {"a": 32, "N": 1024, "k": 64},
        _args_from({"A": (lambda s: (s["a"], s["a"]), F32), "B": (lambda s: (s["a"], s["a"]), F32),
                    "x": (lambda s: (s["a"] ** 2, s["k"]), F32)}),
        kron_by_hand, "A x viewed [a, b k], then B batched (two GEMMs)", peers=_kron_peers()),
    "monarch": Workload(
        "monarch n={n} (b={b}), {k} cols", "dim b = {b}\ninput L : [b, b, b]\ninput R : [b, b, b]\n"
        "input x : [b * b, {k}]\nexport y = monarch(L, R) @ x\n", {"b": 64, "n": 4096, "k": 1024},
        {"b": 32, "n": 1024, "k": 256},
        _args_from({"L": (lambda s: (s["b"],) * 3, F32), "R": (lambda s: (s["b"],) * 3, F32),
                    "x": (lambda s: (s["b"] ** 2, s["k"]), F32)}),
        monarch_by_hand, "bmm, transpose, bmm, transpose"),
    "lowrank": Workload(
        "diag + lowrank n={n}, r=64, 256 cols", "dim n = {n}\ninput d : [n]\ninput U : [n, 64]\n"
        "input V : [n, 64]\ninput x : [n, 256]\nexport y = (diag(d) + lowrank(U, V)) @ x\n",
        {"n": 16384}, {"n": 4096},
        _args_from({"d": (lambda s: (s["n"],), F32), "U": (lambda s: (s["n"], 64), F32),
                    "V": (lambda s: (s["n"], 64), F32), "x": (lambda s: (s["n"], 256), F32)}),
        lowrank_by_hand, "d[:, None] * x + U @ (V.T @ x)"),
    "causal_attention": Workload(
        "causal elu+1 linear attention L={L}, 8 heads, d=64", "dim L = {L}\ninput Q : [1, 8, L, 64]\n"
        "input K : [1, 8, L, 64]\ninput V : [1, 8, L, 64]\nexport y = attention(Q, K, causal=true) @ V\n",
        {"L": 4096}, {"L": 1024}, _attention_args, causal_elu1_by_hand,
        "chunked (C=64): masked QKᵀ V inside chunks, cumsum of KᵀV states between", rtol=1e-3),
    "chain": Workload(
        "(kron(A, B) diag(D) lowrank(U, V) + I) x, N={N}, r=16, 256 cols",
        "dim a = {a}\ndim n = a * a\ninput A : [a, a]\ninput B : [a, a]\ninput D : [n]\ninput U : [n, 16]\n"
        "input V : [n, 16]\ninput x : [n, 256]\nexport y = (kron(A, B) @ diag(D) @ lowrank(U, V) + eye(n)) @ x\n",
        {"a": 64, "N": 4096}, {"a": 32, "N": 1024},
        _args_from({"A": (lambda s: (s["a"], s["a"]), F32), "B": (lambda s: (s["a"], s["a"]), F32),
                    "D": (lambda s: (s["N"],), F32), "U": (lambda s: (s["N"], 16), F32),
                    "V": (lambda s: (s["N"], 16), F32), "x": (lambda s: (s["N"], 256), F32)}),
        chain_by_hand, "right to left as written: Vᵀx, U·, D·, kron, + x", rtol=1e-3),
    "woodbury": Workload(
        "Woodbury solve diag+UVᵀ n={n}, r=64, k=16, float64", "dim n = {n}\ninput d : [n] float64\n"
        "input U : [n, 64] float64\ninput V : [n, 64] float64\ninput B : [n, 16] float64\n"
        "export y = inv(diag(d) + lowrank(U, V)) @ B\n", {"n": 4096}, {"n": 1024},
        lambda s, g: {"d": 1 + torch.rand(s["n"], generator=g, dtype=F64),
                      "U": _randn(g, s["n"], 64, dtype=F64) / s["n"] ** 0.5,
                      "V": _randn(g, s["n"], 64, dtype=F64) / s["n"] ** 0.5,
                      "B": _randn(g, s["n"], 16, dtype=F64)},
        woodbury_by_hand, "the Woodbury identity with torch.linalg.solve on the r x r capacitance", rtol=1e-9),
    "householder": Workload(
        "householder n=k={n}, 256 cols, float64", "input V : [{n}, {n}] float64\ninput x : [{n}, 256] float64\n"
        "export y = householder(V) @ x\n", {"n": 1024}, {"n": 256},
        _args_from({"V": (lambda s: (s["n"], s["n"]), F64), "x": (lambda s: (s["n"], 256), F64)}),
        householder_by_hand, "compact WY in blocks of 64 (solve_triangular with T⁻¹)", rtol=1e-9),
    "blockdiag": Workload(
        "blockdiag {nb} blocks of 64, 256 cols", "input W : [{nb}, 64, 64]\ninput x : [{nb} * 64, 256]\n"
        "export y = blockdiag(W) @ x\n", {"nb": 64}, {"nb": 16},
        _args_from({"W": (lambda s: (s["nb"], 64, 64), F32), "x": (lambda s: (s["nb"] * 64, 256), F32)}),
        blockdiag_by_hand, "torch.bmm over the blocks"),
    "retention": Workload(
        "retention (RetNet decays) L={L}, 8 heads, d=64", "dim L = {L}\ninput Q : [1, 8, L, 64]\n"
        "input K : [1, 8, L, 64]\ninput V : [1, 8, L, 64]\ninput gamma : [8]\n"
        "export y = attention(Q, K, feature=identity, normalize=false, decay=gamma) @ V\n",
        {"L": 4096}, {"L": 1024}, _retention_args, retention_by_hand,
        "fla's naive chunked simple-GLA form, C=64 (gated_chunked_torch)", rtol=1e-3, family="attention"),
    "gated_deltanet": Workload(
        "Gated DeltaNet L={L}, 8 heads, d=64", "dim L = {L}\ninput Q : [1, 8, L, 64]\ninput K : [1, 8, L, 64]\n"
        "input V : [1, 8, L, 64]\ninput beta : [1, 8, L]\ninput G : [1, 8, L]\n"
        "export y = delta_attention(Q, K, beta, gate=G, normalize_keys=true) @ V\n",
        {"L": 4096}, {"L": 1024}, _delta_args, gated_delta_by_hand,
        "fla's naive chunked WY / UT form, C=64 (delta_chunked_torch)", rtol=1e-3, family="attention"),
    "shampoo": Workload(
        "Shampoo pow(kron(L, R), -1/4) @ G, {m}x{m} factors, {k} cols", "dim m = {m}\ninput L : [m, m] psd\n"
        "input R : [m, m] psd\ninput G : [m * m, {k}]\nexport y = pow(kron(L, R), -0.25) @ G\n",
        {"m": 64, "k": 256}, {"m": 32, "k": 64}, _shampoo_args, shampoo_by_hand,
        "eigh of each factor, its root formed, two products", rtol=1e-3, family="matfun"),
    "gp_kernel": Workload(
        "RBF kernel matvec n={n}, d=3", "dim n = {n}\ninput X : [n, 3]\ninput v : [n, 1]\n"
        "export y = kernel(X, X, rbf) @ v\n", {"n": 10000}, {"n": 2000},
        _args_from({"X": (lambda s: (s["n"], 3), F32), "v": (lambda s: (s["n"], 1), F32)}),
        rbf_by_hand, "row tiles of 1024: exp(-cdist²/2) @ v", rtol=1e-3, family="kernels"),
    "fno": Workload(
        "FNO spectral conv {n}x{n}, width 32, 12x12 modes, 8 samples",
        "input W : [32, 32, 24, 12, 2]\ninput v : [8, 32 * {n} * {n}, 1]\nexport y = spectral_conv(W, {n}, {n}) @ v\n",
        {"n": 64}, {"n": 32}, _fno_args, fno_by_hand, "the FNO reference SpectralConv2d (rfft2, einsum, irfft2)",
        rtol=1e-3, family="conv"),
    "conv2d": Workload(
        "2-D conv {n}x{n}, 5x5 kernel, mode=same", "input h : [5, 5]\ninput x : [{n} * {n}, 1]\n"
        "export y = conv(h, {n}, {n}, mode=same) @ x\n", {"n": 512}, {"n": 128},
        _args_from({"h": (lambda s: (5, 5), F32), "x": (lambda s: (s["n"] ** 2, 1), F32)}),
        conv_by_hand, "torch.nn.functional.conv2d (flipped kernel: convolution, not correlation)",
        rtol=1e-3, family="conv"),
    "spmm": Workload(
        "sparse S @ X, n={n}, 16 nonzeros a row, 64 cols", "dim n = {n}\ninput S : [n, n] sparse\n"
        "input X : [n, 64]\nexport y = S @ X\n", {"n": 65536}, {"n": 8192}, _spmm_args, spmm_by_hand,
        "torch.sparse.mm on the CSR tensor", rtol=1e-4, family="block_sparse"),
}
