"""Decayed, gated and delta-rule attention (kinds/attention_gated.py, kinds/delta_attention.py)
against the token-by-token recurrences of tests/recurrences.py (not only the dense matrix), on every
backend and dtype; causality; long sequences and half precision; errors people meet.

Gradients with respect to every argument (Q, K, V, beta, G, γ) are checked for every catalogue
example of both kinds by tests/test_gradients.py (torch gradcheck, float64) and tests/test_jax.py
(jax.grad against the dense meaning)."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import opdsl
from opdsl.errors import OpdslError

from . import recurrences as R
from .harness import BACKENDS, assert_error_at, assert_matches, call, run_against_dense

B, H, L, D, DV = 2, 3, 37, 4, 5            # L = 37: a multiple of no chunk size
DECLS = (f"dim L = {L}\ninput Q : [{B}, {H}, L, {D}]\ninput K : [{B}, {H}, L, {D}]\n"
         f"input V : [{B}, {H}, L, {DV}]\ninput G : [{B}, {H}, L]\ninput b : [{B}, {H}, L]\ninput g : [{H}]\n")
# export -> (its expression, the recurrence it must equal); chunk=8 everywhere but the default-chunk cases
FORMS = {
    "retention": ("attention(Q, K, feature=identity, normalize=false, decay=g, chunk=8)",
                  lambda a: R.gated_recurrence(a["Q"], a["K"], a["V"], _per_head(np.log(a["g"])))),
    "decay": ("attention(Q, K, feature=identity, normalize=false, decay=0.9, chunk=8)",
              lambda a: R.gated_recurrence(a["Q"], a["K"], a["V"], R.decay_to_log_gate(0.9, (B, H), L))),
    "gla": ("attention(Q, K, feature=identity, normalize=false, gate=G, chunk=8)",
            lambda a: R.gated_recurrence(a["Q"], a["K"], a["V"], a["G"])),
    "gated_normalized": ("attention(Q, K, gate=G, chunk=8)",
                         lambda a: R.gated_recurrence(_elu1(a["Q"]), _elu1(a["K"]), a["V"], a["G"], normalize=True)),
    "one_chunk": ("attention(Q, K, feature=relu, normalize=false, gate=G)",
                  lambda a: R.gated_recurrence(np.maximum(a["Q"], 0), np.maximum(a["K"], 0), a["V"], a["G"])),
    "deltanet": ("delta_attention(Q, K, b, chunk=8)",
                 lambda a: R.delta_recurrence(a["Q"], a["K"], a["V"], a["b"])),
    "gated_deltanet": ("delta_attention(Q, K, b, gate=G, chunk=8)",
                       lambda a: R.delta_recurrence(a["Q"], a["K"], a["V"], a["b"], a["G"])),
    "deltanet_l2": ("delta_attention(Q, K, b, gate=G, normalize_keys=true, normalize_queries=true, chunk=16)",
                    lambda a: R.delta_recurrence(R.l2_normalize(a["Q"]), R.l2_normalize(a["K"]), a["V"],
                                                 a["b"], a["G"])),
}
SOURCE = DECLS + "".join(f"export {name} = {expr} @ V\n" for name, (expr, _) in FORMS.items())


def _per_head(x):
    return np.broadcast_to(x[:, None], (H, L))


def _elu1(x):
    return np.where(x >= 0, x + 1, np.exp(np.minimum(x, 0)))


def draw(seed=0, l=L, batch=(B, H), d=D, dv=DV):
    rng = np.random.default_rng(seed)
    return {"Q": rng.standard_normal(batch + (l, d)), "K": rng.standard_normal(batch + (l, d)) / np.sqrt(d),
            "V": rng.standard_normal(batch + (l, dv)),
            "G": -np.abs(rng.normal(0.0, 0.4, batch + (l,))),            # log-gates ≤ 0
            "b": rng.uniform(0.05, 0.95, batch + (l,)),                   # β = sigmoid(...)
            "g": 1 - 2.0 ** (-5 - np.arange(batch[-1])) if batch else np.array(0.9)}   # RetNet's γ_h


@functools.lru_cache(maxsize=None)
def program(backend, dtype):
    return opdsl.compile(SOURCE, backend=backend, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_form_equals_its_recurrence(backend, dtype):
    prog = program(backend, dtype)
    args = draw()
    for name, (_, recurrence) in FORMS.items():
        inputs = {k: v.astype(dtype) for k, v in args.items() if k in prog[name].params}
        assert_matches(call(prog, name, inputs), recurrence(args), dtype, what=name)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_the_compilers_chunk_over_several_chunks(backend):
    """L = 300 > 128: the compiler picks the chunk (64 or 128), several chunks and a ragged last one."""
    l = 300
    src = (f"dim L = {l}\ninput Q : [2, L, 8]\ninput K : [2, L, 8]\ninput V : [2, L, 3]\ninput G : [2, L]\n"
           "input b : [2, L]\n"
           "export y = attention(Q, K, feature=identity, normalize=false, gate=G) @ V\n"
           "export z = delta_attention(Q, K, b, gate=G) @ V\n")
    prog = opdsl.compile(src, backend=backend, dtype="float64")
    a = draw(1, l=l, batch=(2,), d=8, dv=3)
    assert_matches(call(prog, "y", {k: a[k] for k in "QKVG"}), R.gated_recurrence(a["Q"], a["K"], a["V"], a["G"]),
                   "float64")
    assert_matches(call(prog, "z", {k: a[k] for k in ("Q", "K", "V", "G", "b")}),
                   R.delta_recurrence(a["Q"], a["K"], a["V"], a["b"], a["G"]), "float64")
    assert "linrec" in {prog.primitive.kind(v) for v in prog.primitive.live()}     # the chunk recurrence ran


@pytest.mark.parametrize("name", ["gla", "gated_normalized", "deltanet", "gated_deltanet"])
def test_causal(name):
    """Changing anything after token t never changes an output at or before t."""
    prog = program("numpy", "float64")
    a = draw(2)
    base = call(prog, name, {k: v for k, v in a.items() if k in prog[name].params})
    t = 20
    b = {k: v.copy() for k, v in a.items()}
    rng = np.random.default_rng(3)
    for k in ("Q", "K", "V"):
        b[k][..., t + 1:, :] = rng.standard_normal(b[k][..., t + 1:, :].shape)
    b["G"][..., t + 1:] = -rng.uniform(0, 2, b["G"][..., t + 1:].shape)
    b["b"][..., t + 1:] = rng.uniform(0, 1, b["b"][..., t + 1:].shape)
    out = call(prog, name, {k: v for k, v in b.items() if k in prog[name].params})
    # equal up to rounding: a chunk's products and triangular solve mix rows in their summation order
    np.testing.assert_allclose(out[..., :t + 1, :], base[..., :t + 1, :], rtol=0, atol=1e-12)
    assert np.abs(out[..., t + 1:, :] - base[..., t + 1:, :]).max() > 1e-3      # and later ones do change


def test_long_sequences_stay_finite_in_float32():
    """Log-gates of −60 per token and γ = 0.999 over L = 16384 (float32): no inf, no nan, and the
    strongly gated output is (nearly) each token's own contribution."""
    l = 16384
    src = (f"dim L = {l}\ninput Q : [1, L, 8]\ninput K : [1, L, 8]\ninput V : [1, L, 4]\ninput G : [1, L]\n"
           "input b : [1, L]\n"
           "export strong = attention(Q, K, feature=identity, normalize=false, gate=G) @ V\n"
           "export slow = attention(Q, K, feature=identity, normalize=false, decay=0.999) @ V\n"
           "export delta = delta_attention(Q, K, b, gate=G, normalize_keys=true) @ V\n")
    prog = opdsl.compile(src, backend="torch", dtype="float32")
    a = {k: torch.tensor(v, dtype=torch.float32) for k, v in draw(4, l=l, batch=(1,), d=8, dv=4).items()}
    a["G"] = torch.full((1, l), -60.0)
    strong = prog.strong(Q=a["Q"], K=a["K"], V=a["V"], G=a["G"])
    own = (a["Q"] * a["K"]).sum(-1, keepdim=True) * a["V"]             # exp(−60) ≈ 1e-26: the rest vanishes
    assert torch.isfinite(strong).all() and torch.allclose(strong, own, rtol=1e-4, atol=1e-5)
    slow = prog.slow(Q=a["Q"], K=a["K"], V=a["V"])
    assert torch.isfinite(slow).all()
    tail = R.gated_recurrence(*(a[k][:, -512:].double().numpy() for k in "QKV"),
                              R.decay_to_log_gate(0.999, (1,), 512))
    # the last 512 tokens: their own recurrence plus the decayed state of everything before (not zero)
    assert np.abs(slow[:, -512:].double().numpy() - tail).max() > 1e-3
    delta = prog.delta(Q=a["Q"], K=a["K"], V=a["V"], b=a["b"], G=a["G"])
    assert torch.isfinite(delta).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_computes_in_float32(dtype):
    """Half inputs: gates, state and the triangular solve in float32, the result in the input's dtype."""
    prog = opdsl.compile(SOURCE, backend="torch", dtype=dtype)
    a = draw(5)
    tdt = getattr(torch, dtype)
    for name in ("retention", "gla", "gated_deltanet"):
        _, recurrence = FORMS[name]
        args = {k: torch.tensor(v, dtype=tdt) for k, v in a.items() if k in prog[name].params}
        out = prog[name](**args)
        assert out.dtype == tdt and torch.isfinite(out).all()
        # the reference on the rounded inputs; the output rounds once more
        ref = recurrence({k: v.double().numpy() if isinstance(v, torch.Tensor) else v for k, v in
                          {**a, **{k: t for k, t in args.items()}}.items()})
        tol = 2e-2 if dtype == "float16" else 6e-2
        assert np.abs(out.double().numpy() - ref).max() <= tol * max(1.0, np.abs(ref).max()), name


def test_decay_equals_gate_of_its_log():
    src = ("dim L = 20\ninput Q : [L, 3]\ninput K : [L, 3]\ninput V : [L, 2]\ninput G : [L]\n"
           "export a = attention(Q, K, decay=0.8, chunk=6) @ V\nexport b = attention(Q, K, gate=G, chunk=6) @ V\n")
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    a = draw(6, l=20, batch=(), d=3, dv=2)
    np.testing.assert_allclose(prog.a(Q=a["Q"], K=a["K"], V=a["V"]),
                               prog.b(Q=a["Q"], K=a["K"], V=a["V"], G=np.full(20, np.log(0.8))), rtol=1e-12)


# ---- random compositions: the new forms inside sums, products and scalings (no transpose) ----------

LEAVES = ("attention(Q, K, feature=identity, normalize=false, decay=0.9, chunk=3)",
          "attention(Q, K, gate=G, chunk=4)", "delta_attention(Q, K, b, chunk=3)",
          "delta_attention(Q, K, b, gate=G, normalize_keys=true)", "diag(d)", "lowrank(U, W)", "M")


@st.composite
def composition(draw_, depth=2):
    if depth == 0 or draw_(st.booleans()):
        return draw_(st.sampled_from(LEAVES))
    a, b = draw_(composition(depth - 1)), draw_(composition(depth - 1))
    op = draw_(st.sampled_from(["@", "+", "-", "scale"]))
    return f"(0.5 * {a})" if op == "scale" else f"({a} {op} {b})"


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@settings(max_examples=12, deadline=None)
@given(expr=composition())
def test_random_compositions(backend, expr):
    src = ("dim L = 10\ninput Q : [L, 3]\ninput K : [L, 3]\ninput G : [L]\ninput b : [L]\ninput d : [L]\n"
           f"input U : [L, 2]\ninput W : [L, 2]\ninput M : [L, L]\ninput x : [L, 2]\nexport y = {expr} @ x\n")
    run_against_dense(src, backend, "float64", seed=(0, 1))


# ---- what bad input gets ---------------------------------------------------------------------------

ERRORS = [
    ("attention(Q, K, decay=1.5) @ V", "decay= needs a number in (0, 1]", "1.5"),
    ("attention(Q, K, decay=0) @ V", "decay= needs a number in (0, 1]", "0"),
    ("attention(Q, K, decay=0.9, gate=G) @ V", "decay= or gate=, not both", "G"),
    ("attention(Q, K, causal=false, gate=G) @ V", "cannot be combined with causal=false", "false"),
    ("attention(Q, K, gate=V) @ V", "needs log-gates [..., L]", "attention("),
    ("attention(Q, K2, gate=G) @ V", "as many queries as keys", "attention("),
    ("delta_attention(Q, K, V) @ V", "beta needs one entry per token", "delta_attention("),
    ("delta_attention(Q, K) @ V", "takes 3 arguments", "delta_attention("),
    ("delta_attention(Q, K, b, decay=0.9) @ V", "no option 'decay'", "decay"),
    ("delta_attention(Q, K, b, chunk=n) @ V", "chunk= needs a number", "n"),
]


@pytest.mark.parametrize("expr,message,at", ERRORS, ids=[e[1][:30] for e in ERRORS])
def test_errors_are_located(expr, message, at):
    src = ("dim L = 8\ndim n\ninput Q : [L, 3]\ninput K : [L, 3]\ninput K2 : [5, 3]\ninput V : [L, 2]\n"
           f"input G : [L]\ninput b : [L]\nexport y = {expr}\n")
    assert_error_at(src, message, at)


def test_no_transpose_is_a_clear_error():
    src = ("dim L = 8\ninput Q : [L, 3]\ninput K : [L, 3]\ninput b : [L]\ninput x : [L, 2]\n"
           "export y = delta_attention(Q, K, b).T @ x\n")
    with pytest.raises(OpdslError) as e:
        opdsl.compile(src, backend="numpy")
    assert "transpose" in str(e.value) and "<string>:6:" in str(e.value)


def test_the_documented_examples():
    """The two small dense examples of docs/families_linear_attention.md."""
    src = ("input Q : [3, 2]\ninput K : [3, 2]\ninput G : [3]\ninput b : [3]\ninput x : [3, 3]\n"
           "export decay = attention(Q, K, feature=identity, normalize=false, decay=0.5) @ x\n"
           "export gate = attention(Q, K, feature=identity, normalize=false, gate=G) @ x\n"
           "export delta = delta_attention(Q, K, b) @ x\nexport gated = delta_attention(Q, K, b, gate=G) @ x\n")
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    q, k, eye = np.array([[1., 0], [0, 1], [1, 1]]), np.array([[1., 1], [2, 0], [0, 3]]), np.eye(3)
    np.testing.assert_allclose(prog.decay(Q=q, K=k, x=eye), [[1, 0, 0], [0.5, 0, 0], [0.5, 1, 3]], atol=1e-15)
    g = np.log([1, 0.5, 0.25])
    np.testing.assert_allclose(prog.gate(Q=q, K=k, G=g, x=eye), [[1, 0, 0], [0.5, 0, 0], [0.25, 0.5, 3]],
                               atol=1e-15)
    q, k, b = np.array([[1., 0], [1, 1], [0, 1]]), np.array([[1., 0], [0, 1], [1, 0]]), np.array([1, 0.5, 0.5])
    np.testing.assert_allclose(prog.delta(Q=q, K=k, b=b, x=eye), [[1, 0, 0], [1, 0.5, 0], [0, 0.5, 0]],
                               atol=1e-15)
    np.testing.assert_allclose(prog.gated(Q=q, K=k, b=b, G=np.log([1, 0.5, 0.5]), x=eye),
                               [[1, 0, 0], [0.5, 0.5, 0], [0, 0.25, 0]], atol=1e-15)
