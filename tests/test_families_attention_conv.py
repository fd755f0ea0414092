"""Kernelized attention and FFT convolution families (issue 4, parts 4 and 5), against dense forms."""
import math

import numpy as np
import pytest
import scipy.linalg as sl
import torch

import opdsl
from opdsl.cli import to_backend, to_numpy
from opdsl.errors import OpdslError
from opdsl.kinds.attention import choose_chunk, replace_softmax
from opdsl.kinds.fftconv import fast_length
from opdsl.kinds.attention_features import orf_expr, orthogonal_features
from opdsl.reference import dense_eval, random_inputs

from .harness import call, run_against_dense

BACKENDS = ("numpy", "torch")


def run(src, backend="torch", dtype="float64", export="y", inputs=None, seed=0):
    """(program, inputs, output of `export`) on inputs (default: drawn), for oracles other than dense."""
    p = opdsl.compile(src, backend=backend, dtype=dtype)
    inp = inputs if inputs is not None else random_inputs(p.graph, export, seed=seed)
    return p, inp, call(p, export, inp)


# ---- attention: the quadratic form of the same features is the oracle ---------------

def quadratic(q, k, v, phi, causal, normalize):
    a = phi(q) @ np.swapaxes(phi(k), -1, -2)
    if causal:
        a = np.tril(a)
    if normalize:
        a = a / a.sum(-1, keepdims=True)
    return a @ v


def elu1(x):
    return np.where(x >= 0, x + 1, np.exp(np.minimum(x, 0)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("L,chunk", [(5, None), (37, 8), (130, None), (64, 4)])
def test_elu1_attention_matches_quadratic_form(backend, causal, L, chunk):
    opt = f", chunk={chunk}" if chunk else ""
    src = (f"dim L = {L}\ninput Q : [2, 3, L, 4]\ninput K : [2, 3, L, 4]\ninput V : [2, 3, L, 5]\n"
           f"export y = attention(Q, K, causal={'true' if causal else 'false'}{opt}) @ V")
    _, inp, out = run(src, backend)
    ref = quadratic(inp["Q"], inp["K"], inp["V"], elu1, causal, True)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("feature,phi", [("relu", lambda x: np.maximum(x, 0)), ("identity", lambda x: x),
                                         ("elu1", elu1)])
@pytest.mark.parametrize("causal", [False, True])
def test_unnormalized_features_match_quadratic_form(feature, phi, causal):
    src = (f"dim L = 21\ninput Q : [2, L, 3]\ninput K : [2, L, 3]\ninput V : [2, L, 2]\n"
           f"export y = attention(Q, K, feature={feature}, normalize=false, causal={str(causal).lower()}, chunk=4) @ V")
    _, inp, out = run(src)
    np.testing.assert_allclose(out, quadratic(inp["Q"], inp["K"], inp["V"], phi, causal, False), atol=1e-12)


def favor_phi(x, m, seed):
    d = x.shape[-1]
    w = orthogonal_features(m, d, seed)
    xs = x * d ** -0.25
    return np.exp(xs @ w.T - 0.5 * (xs * xs).sum(-1, keepdims=True)) / math.sqrt(m)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
def test_favor_matches_quadratic_form_of_its_features(backend, causal):
    src = ("dim L = 45\ninput Q : [2, L, 8]\ninput K : [2, L, 8]\ninput V : [2, L, 3]\n"
           f"export y = attention(Q, K, feature=favor(20, 7), causal={str(causal).lower()}, chunk=8) @ V")
    _, inp, out = run(src, backend)
    ref = quadratic(inp["Q"], inp["K"], inp["V"], lambda x: favor_phi(x, 20, 7), causal, True)
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12)


def test_hedgehog_matches_quadratic_form_per_head():
    src = ("dim L = 30\ninput Q : [2, 3, L, 4]\ninput K : [2, 3, L, 4]\ninput W : [3, 4, 5]\ninput V : [2, 3, L, 2]\n"
           "export y = attention(Q, K, feature=hedgehog(W), causal=true, chunk=8) @ V")
    _, inp, out = run(src)
    W = inp["W"]

    def phi(x):
        p = x @ W                                      # [2, 3, L, 5] with one W per head
        cat = np.concatenate([p, -p], -1)
        e = np.exp(cat - cat.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, quadratic(inp["Q"], inp["K"], inp["V"], phi, True, True), atol=1e-12)


def test_cross_attention_and_broadcast_batch():
    src = ("input Q : [2, 1, 6, 3]\ninput K : [1, 4, 9, 3]\ninput V : [9, 2]\n"
           "export y = attention(Q, K) @ V")
    p, inp, out = run(src)
    assert out.shape == (2, 4, 6, 2)
    np.testing.assert_allclose(out, quadratic(inp["Q"], inp["K"], inp["V"], elu1, False, True), atol=1e-12)


def test_free_length_uses_prefix_sums():
    src = ("dim L\ninput Q : [L, 3]\ninput K : [L, 3]\ninput V : [L, 2]\n"
           "export y = attention(Q, K, causal=true) @ V")
    p = opdsl.compile(src, backend="torch", dtype="float64")
    rng = np.random.default_rng(0)
    inp = {n: rng.standard_normal((11, s)) for n, s in (("Q", 3), ("K", 3), ("V", 2))}
    out = call(p, "y", inp)
    np.testing.assert_allclose(out, quadratic(inp["Q"], inp["K"], inp["V"], elu1, True, True), atol=1e-12)


# relu normalized divides 0 by 0 on rows whose features vanish (as the dense form): unnormalized here
@pytest.mark.parametrize("feature", ["elu1", "favor(16, 3)", "hedgehog(W)", "relu, normalize=false"])
def test_causal_outputs_do_not_depend_on_future_tokens(feature):
    L, t = 50, 23
    src = (f"dim L = {L}\ninput Q : [2, L, 4]\ninput K : [2, L, 4]\ninput V : [2, L, 3]\ninput W : [4, 6]\n"
           f"export y = attention(Q, K, feature={feature}, causal=true, chunk=8) @ V")
    p = opdsl.compile(src, backend="torch", dtype="float32")
    rng = np.random.default_rng(1)
    inp = {"Q": rng.standard_normal((2, L, 4)), "K": rng.standard_normal((2, L, 4)),
           "V": rng.standard_normal((2, L, 3)), "W": rng.standard_normal((4, 6))}
    inp = {k: v.astype("float32") for k, v in inp.items() if k in p.y.params}
    before = call(p, "y", inp)
    later = {k: v.copy() for k, v in inp.items()}
    for name in ("Q", "K", "V"):                    # the future, much larger than the past
        later[name][:, t + 1:] = 30.0 * rng.standard_normal(later[name][:, t + 1:].shape)
    after = call(p, "y", later)
    assert np.all(np.isfinite(after[:, :t + 1]))
    np.testing.assert_allclose(after[:, :t + 1], before[:, :t + 1], rtol=1e-6, atol=1e-7)
    assert not np.allclose(after[:, t + 1:], before[:, t + 1:])


def test_favor_key_stabilizer_prevents_overflow_in_float32():
    """Keys with large norms: the plain exp(ωᵀk − ‖k‖²/2) would overflow float32; the output stays finite."""
    src = ("dim L = 40\ninput Q : [L, 8]\ninput K : [L, 8]\ninput V : [L, 2]\n"
           "export y = attention(Q, K, feature=favor(32, 0), causal=true, chunk=8) @ V")
    p = opdsl.compile(src, backend="torch", dtype="float32")
    rng = np.random.default_rng(2)
    inp = {"Q": rng.standard_normal((40, 8)), "K": 6.0 * rng.standard_normal((40, 8)),
           "V": rng.standard_normal((40, 2))}
    out = call(p, "y", {k: v.astype("float32") for k, v in inp.items()})
    ref = quadratic(inp["Q"], inp["K"], inp["V"], lambda x: favor_phi(x, 32, 0), True, True)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)


def softmax_ref(q, k, v, causal):
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if causal:
        s = np.where(np.tri(s.shape[-2], s.shape[-1], dtype=bool), s, -np.inf)
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


@pytest.mark.parametrize("causal", [False, True])
def test_softmax_attention_matches_torch_sdpa(causal):
    src = ("input Q : [2, 3, 17, 8]\ninput K : [2, 3, 17, 8]\ninput V : [2, 3, 17, 5]\n"
           f"export y = softmax_attention(Q, K, causal={str(causal).lower()}) @ V")
    _, inp, out = run(src)
    t = {k: torch.from_numpy(v) for k, v in inp.items()}
    ref = torch.nn.functional.scaled_dot_product_attention(t["Q"], t["K"], t["V"], is_causal=causal).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-12)
    np.testing.assert_allclose(out, softmax_ref(inp["Q"], inp["K"], inp["V"], causal), atol=1e-12)


def favor_error(m, causal, seeds=(0, 1, 2, 3)):
    L, d = 64, 16
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((4, L, d)) * 0.7 for _ in range(3))
    exact = softmax_ref(q, k, v, causal)
    errs = []
    for seed in seeds:
        src = (f"dim L = {L}\ninput Q : [4, L, {d}]\ninput K : [4, L, {d}]\ninput V : [4, L, {d}]\n"
               f"export y = attention(Q, K, feature=favor({m}, {seed}), causal={str(causal).lower()}, chunk=16) @ V")
        _, _, out = run(src, "numpy", inputs={"Q": q, "K": k, "V": v})
        errs.append(np.sqrt(np.mean((out - exact) ** 2)))
    return float(np.mean(errs))


@pytest.mark.parametrize("causal", [False, True])
def test_favor_error_against_softmax_falls_with_m(causal):
    errs = [favor_error(m, causal) for m in (8, 64, 512)]
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.6 * errs[0], errs     # FAVOR+ converges slowly (heavy-tailed exp features)


def test_replace_softmax_rewrites_to_favor():
    src = ("dim L = 40\ninput Q : [2, L, 8]\ninput K : [2, L, 8]\ninput V : [2, L, 3]\n"
           "export y = softmax_attention(Q, K, causal=true) @ V\n"
           "export z = softmax_attention(Q, K, scale=0.5) @ V")
    p = opdsl.compile(src, backend="numpy", dtype="float64")
    g = replace_softmax(p.graph, 24, seed=4)
    kinds = [g.kind(v) for v in g.live()]
    assert "softmax_attention" not in kinds and kinds.count("attention") == 2
    assert "softmax_attention" in [p.graph.kind(v) for v in p.graph.live()]      # pure: input unchanged
    inp = random_inputs(g, "y", seed=1)
    q, k, v = inp["Q"], inp["K"], inp["V"]
    ref_y = quadratic(q, k, v, lambda x: favor_phi(x, 24, 4), True, True)
    np.testing.assert_allclose(dense_eval(g, g.exports["y"], inp), ref_y, atol=1e-12)

    def phi_half(x):      # scale=0.5: x̃ = x √0.5
        w = orthogonal_features(24, 8, 4)
        xs = x * math.sqrt(0.5)
        return np.exp(xs @ w.T - 0.5 * (xs * xs).sum(-1, keepdims=True))
    np.testing.assert_allclose(dense_eval(g, g.exports["z"], inp), quadratic(q, k, v, phi_half, False, True),
                               atol=1e-12)
    from opdsl import backends, passes
    prim, _, _ = passes.run(g)
    be = backends.get("torch")
    mod = be.load(be.generate(prim), prim)
    out = mod.y(**to_backend("torch", {n: inp[n] for n in ("Q", "K", "V")}))
    np.testing.assert_allclose(to_numpy(out), ref_y, atol=1e-12)


def test_orf_emitted_expression_rebuilds_the_same_features():
    for m, d, seed in ((8, 4, 0), (256, 64, 3), (5, 7, 11)):
        w = eval(orf_expr(m, d, seed), {"np": np})
        np.testing.assert_array_equal(w, orthogonal_features(m, d, seed))
        blocks = [w[i:i + d] / np.linalg.norm(w[i:i + d], axis=1, keepdims=True) for i in range(0, m, d)]
        for b in blocks:                                          # rows orthogonal within each block
            np.testing.assert_allclose(b @ b.T, np.eye(len(b)), atol=1e-12)


def test_transpose_of_unnormalized_attention_and_refusals():
    src = ("input Q : [7, 3]\ninput K : [5, 3]\ninput x : [7, 2]\n"
           "export y = attention(Q, K, feature=relu, normalize=false).T @ x")
    _, inp, out = run(src)
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    np.testing.assert_allclose(out, relu(inp["K"]) @ relu(inp["Q"]).T @ inp["x"], atol=1e-12)
    for opts in ("", "normalize=false, causal=true"):
        bad = ("input Q : [5, 3]\ninput K : [5, 3]\ninput x : [5, 2]\n"
               f"export y = attention(Q, K{', ' + opts if opts else ''}).T @ x")
        with pytest.raises(OpdslError, match="transpose of attention"):
            opdsl.compile(bad, backend="numpy")


def test_properties():
    p = opdsl.compile("input Q : [5, 3]\ninput K : [5, 3]\ninput x : [5, 2]\n"
                      "export y = attention(Q, K, causal=true) @ x\n"
                      "export z = attention(Q, Q, normalize=false) @ x", backend="numpy")
    ops = {p.graph.kind(v): p.graph.type(v) for v in p.graph.live() if p.graph.kind(v) == "attention"}
    types = [p.graph.type(v) for v in p.graph.live() if p.graph.kind(v) == "attention"]
    assert ops and "lower" in types[0].props
    assert {"symmetric", "psd"} <= types[1].props


def test_chunk_choice():
    assert choose_chunk(100, 64, 64) == 100
    assert choose_chunk(4096, 64, 64) in (64, 128)
    assert choose_chunk(4096 + 64, 64, 64) == 64        # 128 would pad 64 tokens more
    p = opdsl.compile("dim L = 4096\ninput Q : [L, 64]\ninput K : [L, 64]\ninput V : [L, 64]\n"
                      "export y = attention(Q, K, causal=true) @ V", backend="torch")
    assert "reshape(64, 64, 64)" in p.source            # 64 chunks of 64 tokens


def test_half_precision_accumulates_in_float32():
    src = ("dim L = 300\ninput Q : [2, L, 8] bfloat16\ninput K : [2, L, 8] bfloat16\ninput V : [2, L, 4] bfloat16\n"
           "export y = attention(Q, K, causal=true) @ V")
    p = opdsl.compile(src, backend="torch")
    assert "torch.float32" in p.source
    rng = np.random.default_rng(0)
    inp = {n: rng.standard_normal((2, 300, s)) for n, s in (("Q", 8), ("K", 8), ("V", 4))}
    out = p.y(**{n: torch.from_numpy(a).to(torch.bfloat16) for n, a in inp.items()})
    assert out.dtype == torch.bfloat16
    rounded = {n: torch.from_numpy(a).to(torch.bfloat16).double().numpy() for n, a in inp.items()}
    ref = quadratic(rounded["Q"], rounded["K"], rounded["V"], elu1, True, True)
    np.testing.assert_allclose(out.double().numpy(), ref, atol=2e-2)


@pytest.mark.parametrize("src,msg", [
    ("export y = attention(Q, K, feature=softplus) @ V", "unknown feature map 'softplus'"),
    ("export y = attention(Q, K, feature=favor) @ V", "needs arguments"),
    ("export y = attention(Q, K, feature=favor(0)) @ V", "positive integer"),
    ("export y = attention(Q, K, kernel=elu1) @ V", "no option 'kernel'"),
    ("export y = attention(Q, K2, causal=true) @ V", "as many queries as keys"),
    ("export y = attention(Q, K3) @ V", "same feature size"),
    ("export y = attention(Q, K, feature=hedgehog(W)) @ V", "hedgehog(W) needs W"),
    ("export y = attention(Q, K, causal=1) @ V", "expected true or false"),
    ("export y = favor(4, 0) @ V", "needs operators or tensors"),
    ("export y = softmax_attention(Q, K, feature=elu1) @ V", "no option 'feature'"),
])
def test_attention_errors_are_readable(src, msg):
    head = ("input Q : [6, 4]\ninput K : [6, 4]\ninput K2 : [5, 4]\ninput K3 : [6, 3]\ninput W : [3, 2]\n"
            "input V : [6, 2]\n")
    with pytest.raises(OpdslError) as e:
        opdsl.compile(head + src, backend="numpy")
    assert msg in str(e.value)
    assert "Traceback" not in str(e.value)


def test_unknown_feature_lists_the_choices():
    with pytest.raises(OpdslError) as e:
        opdsl.compile("input Q : [6, 4]\ninput V : [6, 2]\nexport y = attention(Q, Q, feature=gelu) @ V")
    assert "elu1, relu, identity, favor, hedgehog" in str(e.value)


# ---- Toeplitz, circulant, convolution ----------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m,n", [(4, 6), (7, 3), (1, 5), (5, 1), (9, 9)])
def test_toeplitz_matches_scipy(backend, m, n):
    src = (f"input c : [{m}]\ninput r : [{n}]\ninput x : [{n}, 3]\ninput w : [{m}, 2]\n"
           "export y = toeplitz(c, r) @ x\nexport z = toeplitz(c, r).T @ w")
    p = opdsl.compile(src, backend=backend, dtype="float64")
    rng = np.random.default_rng(m * 10 + n)
    c, r, x, w = rng.standard_normal(m), rng.standard_normal(n), rng.standard_normal((n, 3)), rng.standard_normal((m, 2))
    T = sl.toeplitz(c, r)
    np.testing.assert_allclose(call(p, "y", dict(c=c, r=r, x=x)), T @ x, atol=1e-12)
    np.testing.assert_allclose(call(p, "z", dict(c=c, r=r, w=w)), T.T @ w, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [1, 2, 5, 8, 33])
def test_circulant_matches_scipy(backend, n):
    src = (f"input c : [{n}]\ninput x : [{n}, 2]\nexport y = circulant(c) @ x\nexport z = circulant(c).T @ x")
    p = opdsl.compile(src, backend=backend, dtype="float64")
    rng = np.random.default_rng(n)
    c, x = rng.standard_normal(n), rng.standard_normal((n, 2))
    C = sl.circulant(c)
    np.testing.assert_allclose(call(p, "y", dict(c=c, x=x)), C @ x, atol=1e-12)
    np.testing.assert_allclose(call(p, "z", dict(c=c, x=x)), C.T @ x, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_free_lengths_use_symbolic_fft_sizes(backend):
    src = ("dim n\ndim K\ninput c : [n]\ninput h : [K]\ninput x : [n, 2]\n"
           "export y = circulant(c) @ x\nexport z = conv(h, n) @ x")
    p = opdsl.compile(src, backend=backend, dtype="float64")
    rng = np.random.default_rng(0)
    c, h, x = rng.standard_normal(9), rng.standard_normal(4), rng.standard_normal((9, 2))
    np.testing.assert_allclose(call(p, "y", dict(c=c, x=x)), sl.circulant(c) @ x, atol=1e-12)
    col = np.zeros(9)
    col[:4] = h
    np.testing.assert_allclose(call(p, "z", dict(h=h, x=x)),
                               sl.toeplitz(col, np.zeros(9)) @ x, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("K,n", [(300, 300), (5, 40), (1, 4)])
def test_causal_conv_matches_materialized_toeplitz(backend, K, n):
    src = f"input h : [{K}]\ninput x : [{n}, 2]\nexport y = conv(h, {n}) @ x\nexport z = conv(h, {n}).T @ x"
    p = opdsl.compile(src, backend=backend, dtype="float64")
    rng = np.random.default_rng(K)
    h, x = rng.standard_normal(K), rng.standard_normal((n, 2))
    col = np.zeros(n)
    col[:min(K, n)] = h[:n]
    T = sl.toeplitz(col, np.zeros(n))                           # lower triangular, first column h
    np.testing.assert_allclose(call(p, "y", dict(h=h, x=x)), T @ x, atol=1e-11)
    np.testing.assert_allclose(call(p, "z", dict(h=h, x=x)), T.T @ x, atol=1e-11)
    np.testing.assert_allclose(T @ x[:, 0], np.convolve(h, x[:, 0])[:n], atol=1e-11)


@pytest.mark.parametrize("K,n", [(5, 5), (4, 10), (7, 3), (6, 6)])
def test_noncausal_conv_is_numpy_convolve_same(K, n):
    src = f"input h : [{K}]\ninput x : [{n}]\nexport y = conv(h, {n}, causal=false) @ x"
    rng = np.random.default_rng(K + n)
    h, x = rng.standard_normal(K), rng.standard_normal(n)
    _, _, out = run(src, inputs={"h": h, "x": x})
    full = np.convolve(x, h)
    np.testing.assert_allclose(out, full[(K - 1) // 2:(K - 1) // 2 + n], atol=1e-12)
    if n >= K:
        np.testing.assert_allclose(out, np.convolve(x, h, mode="same"), atol=1e-12)


def test_conv_per_channel_matches_conv1d():
    C, L = 3, 64
    src = f"input h : [{C}, {L}]\ninput x : [2, {C}, {L}, 1]\nexport y = conv(h) @ x"
    rng = np.random.default_rng(0)
    h, x = rng.standard_normal((C, L)), rng.standard_normal((2, C, L, 1))
    _, _, out = run(src, inputs={"h": h, "x": x})
    th, tx = torch.from_numpy(h), torch.from_numpy(x[..., 0])
    ref = torch.nn.functional.conv1d(tx, torch.flip(th, (-1,)).unsqueeze(1), padding=L - 1, groups=C)[..., :L]
    np.testing.assert_allclose(out[..., 0], ref.numpy(), atol=1e-11)


def test_conv_properties_and_fft_length():
    p = opdsl.compile("input h : [6]\ninput x : [6, 1]\nexport y = conv(h) @ x\nexport z = conv(h).T @ x",
                      backend="torch")
    assert "n=12" in p.source               # 6 + 6 − 1 = 11 -> 12 (5-smooth)
    types = [p.graph.type(v) for v in p.graph.live() if p.graph.kind(v) == "conv"]
    assert "lower" in types[0].props
    for n in (1, 7, 11, 97, 1000, 8191, 10007):
        f = fast_length(n)
        assert f >= n and f < 2 * n + 1
        r = f
        for q in (2, 3, 5):
            while r % q == 0:
                r //= q
        assert r == 1
    assert fast_length(8191) == 8192 and fast_length(1000) == 1000


@pytest.mark.parametrize("src,msg", [
    ("export y = toeplitz(c, x) @ x", "same leading"),
    ("export y = conv(h, causal=false, size=3) @ x", "no option 'size'"),   # n= is conv's length (test_limits.py)
    ("export y = conv(x2) @ x", "must be a tensor"),
    ("export y = circulant(h) @ x", "cannot apply"),
])
def test_conv_errors_are_readable(src, msg):
    head = "input c : [4]\ninput h : [3]\ninput x : [4, 2]\nlet x2 = conv(h)\n"
    with pytest.raises(OpdslError) as e:
        opdsl.compile(head + src, backend="numpy")
    assert msg in str(e.value)


# ---- the example files compile and match the dense reference --------------------------

@pytest.mark.parametrize("path,dims", [
    ("examples/attention.op", {"L": 96, "H": 2, "d": 8}),
    ("examples/conv.op", {"L": 50, "C": 3}),
])
@pytest.mark.parametrize("backend", BACKENDS)
def test_example_files(path, dims, backend):
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    for dtype in ("float32", "float64"):
        run_against_dense(root / path, backend, dtype, seed=2, dims=dims)
