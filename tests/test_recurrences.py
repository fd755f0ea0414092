"""The issue-14 references (tests/recurrences.py) checked against each other, so that they are not
vacuous: each token-by-token recurrence against its closed-form L x L matrix, causality by probing,
decay = gate log γ, the Householder case of the delta rule, and the torch baselines of the benchmark
(benchmarks/linear_attention_baselines.py) against the recurrences."""
import numpy as np
import pytest

from . import recurrences as R

B, H, L, DK, DV = 2, 3, 37, 5, 4          # L prime: a multiple of no chunk size


def draw(seed=0, positive=False, batch=(B, H), L=L):
    """q, k [*batch, L, DK], v [*batch, L, DV], β ∈ (0, 1) and log-gates in [log 0.5, 0) [*batch, L];
    keys of norm about 1 (DeltaNet's).  positive: q, k > 0 (features), so that the row sums of the
    normalized form stay away from 0."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(batch + (L, DK))
    k = R.l2_normalize(rng.standard_normal(batch + (L, DK)))
    if positive:
        q, k = np.exp(q), np.abs(k)
    v = rng.standard_normal(batch + (L, DV))
    beta = rng.uniform(0.05, 1.0, batch + (L,))
    log_gate = np.log(rng.uniform(0.5, 1.0, batch + (L,)))
    return q, k, v, beta, log_gate


def probe(f, L=L):
    """The L x L matrix of the operator V ↦ f(V) (f: [..., L, dv] -> [..., L, dv], linear), read off
    by applying it to the identity columns."""
    return f(np.eye(L))


# ---- gated / decayed ------------------------------------------------------------------

@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("gated", [False, True])
def test_gated_recurrence_is_its_matrix(normalize, gated):
    q, k, v, _, g = draw(positive=normalize)
    g = g if gated else None
    o = R.gated_recurrence(q, k, v, g, normalize=normalize)
    a = R.gated_matrix(q, k, g, normalize=normalize)
    np.testing.assert_allclose(o, a @ v, rtol=0, atol=1e-12)
    if normalize:
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-12)


def test_gated_matrix_written_out():
    """A_ij = q_i·k_j exp(G_{j+1} + ... + G_i) for i ≥ j, element by element."""
    q, k, _, _, g = draw(batch=(), L=9)
    a = R.gated_matrix(q, k, g)
    expected = np.zeros((9, 9))
    for i in range(9):
        for j in range(i + 1):
            expected[i, j] = q[i] @ k[j] * np.exp(g[j + 1:i + 1].sum())
    np.testing.assert_allclose(a, expected, rtol=1e-13, atol=0)


def test_decay_is_gate_log_gamma_per_head():
    """decay=γ_h (RetNet's per-head γ) equals gate=log γ_h, equals γ^(i−j) written out, and the
    per-head decay vector equals running each head with its own scalar γ."""
    q, k, v, _, _ = draw()
    gammas = R.retnet_decays(H)
    np.testing.assert_allclose(gammas, [1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128], rtol=0, atol=0)
    g = R.decay_to_log_gate(gammas, (B, H), L)
    assert g.shape == (B, H, L)
    o = R.gated_recurrence(q, k, v, g)
    i = np.arange(L)
    powers = np.where(i[:, None] >= i[None, :], gammas[:, None, None] ** (i[:, None] - i[None, :]).clip(0), 0.0)
    np.testing.assert_allclose(o, ((q @ np.swapaxes(k, -1, -2)) * powers) @ v, rtol=0, atol=1e-12)
    for h, gamma in enumerate(gammas):
        g_h = R.decay_to_log_gate(gamma, (B,), L)
        np.testing.assert_allclose(o[:, h], R.gated_recurrence(q[:, h], k[:, h], v[:, h], g_h), rtol=0, atol=1e-13)
    # the scalar γ is the same at every head
    np.testing.assert_array_equal(R.decay_to_log_gate(0.9, (B, H), L), np.full((B, H, L), np.log(0.9)))
    with pytest.raises(ValueError):
        R.decay_to_log_gate(1.5, (B,), L)


def test_batch_dims_broadcast():
    """Leading dims broadcast (k shared by the batch, a gate per head): same as the explicit loop."""
    rng = np.random.default_rng(1)
    q = rng.standard_normal((B, H, L, DK))
    k = rng.standard_normal((H, L, DK))
    v = rng.standard_normal((1, H, L, DV))
    g = np.log(rng.uniform(0.5, 1, (H, L)))
    beta = rng.uniform(0, 1, (B, 1, L))
    og = R.gated_recurrence(q, k, v, g)
    od = R.delta_recurrence(q, k, v, beta, g)
    assert og.shape == od.shape == (B, H, L, DV)
    for b in range(B):
        for h in range(H):
            np.testing.assert_allclose(og[b, h], R.gated_recurrence(q[b, h], k[h], v[0, h], g[h]), rtol=0, atol=1e-13)
            np.testing.assert_allclose(od[b, h], R.delta_recurrence(q[b, h], k[h], v[0, h], beta[b, 0], g[h]),
                                       rtol=0, atol=1e-13)


def test_state_passing_splits_the_sequence():
    """Running the second half from the first half's final state gives the full run (chunked prefill)."""
    q, k, v, beta, g = draw()
    s = 20
    for run in (lambda sl, **kw: R.gated_recurrence(q[..., sl, :], k[..., sl, :], v[..., sl, :], g[..., sl], **kw),
                lambda sl, **kw: R.delta_recurrence(q[..., sl, :], k[..., sl, :], v[..., sl, :], beta[..., sl],
                                                    g[..., sl], **kw)):
        full = run(slice(None))
        first, state = run(slice(None, s), return_state=True)
        second = run(slice(s, None), initial_state=state)
        np.testing.assert_allclose(np.concatenate([first, second], axis=-2), full, rtol=0, atol=1e-13)


def test_normalized_vanished_row_is_zero():
    """q·z = 0 (a query orthogonal to every key so far) gives o = 0, not nan."""
    q = np.array([[0.0, 1.0], [1.0, 0.0]])
    k = np.array([[1.0, 0.0], [1.0, 0.0]])
    v = np.array([[2.0], [3.0]])
    o = R.gated_recurrence(q, k, v, normalize=True)
    np.testing.assert_array_equal(o, [[0.0], [2.5]])


# ---- delta rule ---------------------------------------------------------------------

@pytest.mark.parametrize("gated", [False, True])
def test_delta_recurrence_is_its_closed_form(gated):
    q, k, v, beta, g = draw()
    g = g if gated else None
    a = R.delta_closed_form(q, k, beta, g)
    np.testing.assert_allclose(R.delta_recurrence(q, k, v, beta, g), a @ v, rtol=0, atol=1e-12)
    # the probed operator is the same matrix, and it is causal (lower triangular, exactly)
    probed = probe(lambda e: R.delta_recurrence(q, k, e, beta, g))
    np.testing.assert_allclose(probed, a, rtol=0, atol=1e-12)
    assert not np.triu(probed, 1).any()


def test_delta_first_steps_written_out():
    """Two tokens by hand (0-based): the state starts at 0, so the first token's gate drops out:
    S_0 = β_0 k_0 v_0ᵀ, S_1 = α_1 (I − β_1 k_1 k_1ᵀ) S_0 + β_1 k_1 v_1ᵀ."""
    q, k, v, beta, g = draw(batch=(), L=2)
    a1 = np.exp(g[1])
    s0 = beta[0] * np.outer(k[0], v[0])
    s1 = a1 * (np.eye(DK) - beta[1] * np.outer(k[1], k[1])) @ s0 + beta[1] * np.outer(k[1], v[1])
    np.testing.assert_allclose(R.delta_recurrence(q, k, v, beta, g), [s0.T @ q[0], s1.T @ q[1]],
                               rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kind", ["gated", "delta"])
def test_causality(kind):
    """The probed matrix is lower triangular, and changing anything (q, k, v, β, G) after token t
    leaves every output at or before t bit for bit unchanged."""
    q, k, v, beta, g = draw(positive=True)

    def run(q, k, v, beta, g):
        if kind == "gated":
            return R.gated_recurrence(q, k, v, g, normalize=True)
        return R.delta_recurrence(q, k, v, beta, g)

    probed = probe(lambda e: run(q, k, e, beta, g))
    assert not np.triu(probed, 1).any() and np.tril(probed).any()
    base = run(q, k, v, beta, g)
    t = 17
    # every input after token t replaced by fresh draws (gates still ≤ 0, features still > 0)
    changed = [x.copy() for x in (q, k, v, beta, g)]
    for x, other in zip(changed, draw(seed=1, positive=True)):
        after_t = (Ellipsis, slice(t + 1, None)) + ((slice(None),) if x.ndim > g.ndim else ())
        x[after_t] = other[after_t]
    out = run(*changed)
    np.testing.assert_array_equal(out[..., :t + 1, :], base[..., :t + 1, :])
    assert np.abs(out[..., t + 1:, :] - base[..., t + 1:, :]).min() > 0


def test_householder_transition_is_orthogonal():
    """With β_t = 2/‖k_t‖² each I − β_t k_t k_tᵀ is a reflector: the transition P the recurrence
    applies to its state (read off with S_0 = I and v = 0) is orthogonal, times Π α_t with a gate.
    A generic β (the control) does not give an orthogonal P."""
    rng = np.random.default_rng(2)
    n = 11
    k = rng.standard_normal((n, DK))
    q, v = np.zeros((n, DK)), np.zeros((n, DK))
    g = np.log(rng.uniform(0.5, 1.0, n))

    def transition(beta, g=None):
        _, p = R.delta_recurrence(q, k, v, beta, g, initial_state=np.eye(DK), return_state=True)
        return p

    reflect = 2 / np.sum(k * k, axis=-1)
    p = transition(reflect)
    np.testing.assert_allclose(p @ p.T, np.eye(DK), rtol=0, atol=1e-13)
    pg = transition(reflect, g)
    np.testing.assert_allclose(pg @ pg.T, np.exp(2 * g.sum()) * np.eye(DK), rtol=0, atol=1e-13)
    control = transition(0.5 * reflect)
    assert np.abs(control @ control.T - np.eye(DK)).max() > 1e-2


def test_l2_normalize_is_fla_l2norm():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(R.l2_normalize(x), [[3 / np.sqrt(25 + 1e-6), 4 / np.sqrt(25 + 1e-6)], [0, 0]],
                               rtol=1e-15)


# ---- the benchmark's torch baselines -----------------------------------------------------

def test_torch_baselines_match_the_recurrences():
    pytest.importorskip("torch")
    from benchmarks.linear_attention_baselines import check
    errors = check(B=2, H=2, L=70, dk=5, dv=4, chunks=(16, 64), tol=1e-10)
    assert len(errors) == 13
