"""JAX: prog.init(key) gives the params pytree; prog.apply(params, **inputs) works under jax.jit,
jax.grad and jax.vmap, on every kind of the catalogue (float64, against the dense reference).

The first catalogue example of every kind becomes a layer (tests/harness.py, as_layer: operator data
-> params) and runs through init / apply / jax.jit(jax.value_and_grad) / jax.vmap (over params and
inputs).  (All examples
run through the torch paths; JAX compiles each function again per transformation, which is what takes
time here, so JAX takes one example per kind.)
"""
import numpy as np
import pytest

import opdsl
from opdsl.kinds import REGISTRY
from opdsl.reference import dense_eval

from opdsl.cli import to_backend

from .harness import CATALOGUE, all_inputs, as_layer, check_directional, directions, issparse

jax = pytest.importorskip("jax")
jnp = jax.numpy

FIRST = {kind: i for kind, i, _ in reversed(CATALOGUE)}      # the first example of every kind
FIRST_CASES = [c for c in CATALOGUE if FIRST[c[0]] == c[1]]


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def close(out, ref):
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-9, atol=1e-9 * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize("kind,i,src", FIRST_CASES, ids=[f"{k}-{i}" for k, i, _ in FIRST_CASES])
def test_catalogue_init_apply_jit_grad_vmap(kind, i, src):
    layer_src, data, dims = as_layer(src)
    prog = opdsl.compile(layer_src, backend="jax", dims=dims, dtype="float64")
    g = prog.graph
    params = prog.init(jax.random.PRNGKey(i)) if data else {}
    assert set(params) == data
    assert all(p.dtype == jnp.float64 for p in params.values())
    inputs = {k: v for k, v in all_inputs(g).items() if k not in data}
    values = {**inputs, **{k: np.asarray(p) for k, p in params.items()}}
    for name in prog.functions:
        own = [a for a in prog[name].params if a not in data]
        # sparse matrices and integer indices: passed as they are, not differentiated or mapped over
        fixed = to_backend("jax", {a: inputs[a] for a in own if issparse(inputs[a])
                                   or np.issubdtype(np.asarray(inputs[a]).dtype, np.integer)})
        xs = {a: jnp.asarray(inputs[a]) for a in own if a not in fixed}
        ref = dense_eval(g, g.exports[name], values)
        close(prog[name](params, **xs, **fixed), ref)
        if name == prog.functions[0] and "apply" not in prog.functions:
            close(prog.apply(params, **xs, **fixed), ref)

        # jax.jit of jax.value_and_grad, with respect to the params and the inputs, against dense
        v, w = directions(values, ref.shape, seed=4)

        def loss(p, x):
            return jnp.sum(prog[name](p, **x, **fixed) * w)

        val, (gp, gx) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, xs)
        assert abs(float(val) - float(np.sum(ref * w))) <= 1e-9 * max(1.0, float(np.sum(np.abs(ref * w))))
        check_directional({**{k: np.asarray(t) for k, t in gp.items()},
                           **{k: np.asarray(t) for k, t in gx.items()}}, g, g.exports[name], values, v, w)
        if name != prog.functions[0]:
            continue
        # jax.vmap over a leading axis of every argument, params and inputs (two examples)
        args = {**{a: params[a] for a in prog[name].params if a in data}, **xs}
        args2 = {a: t * 0.5 + 1.0 for a, t in args.items()}
        stacked = {a: jnp.stack([args[a], args2[a]]) for a in args}
        batched = jax.vmap(lambda x: prog[name](**x, **fixed))(stacked)
        close(batched[0], ref)
        close(batched[1], dense_eval(g, g.exports[name], {**values, **{a: np.asarray(t) for a, t in args2.items()}}))


def test_every_kind_runs_jit_and_vmap():
    assert set(FIRST) == set(REGISTRY)


def test_init_is_deterministic_and_keyed():
    prog = opdsl.compile_file("examples/layer.op", backend="jax", dims={"b": 4})
    a, b, c = prog.init(jax.random.PRNGKey(0)), prog.init(jax.random.PRNGKey(0)), prog.init(1)
    assert set(a) == {"L", "R"} and a["L"].shape == (4, 4, 4) and a["L"].dtype == jnp.float32
    assert np.array_equal(a["L"], b["L"]) and not np.array_equal(a["L"], c["L"])
    assert not np.array_equal(a["L"], a["R"])        # each param draws from its own key


def test_training_step_under_jit():
    prog = opdsl.compile_file("examples/layer.op", backend="jax", dims={"b": 4})
    params = prog.init(0)
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 16), jnp.float32)
    target = jnp.sin(x)

    @jax.jit
    def step(p):
        loss, grads = jax.value_and_grad(lambda q: jnp.mean((prog.apply(q, x=x) - target) ** 2))(p)
        return jax.tree_util.tree_map(lambda a, b: a - 0.5 * b, p, grads), loss

    losses = []
    for _ in range(40):
        params, loss = step(params)
        losses.append(float(loss))
    assert losses[-1] < 0.6 * losses[0]


def test_apply_with_keywords_still_works():
    prog = opdsl.compile_file("examples/layer.op", backend="jax", dims={"b": 4})
    params = prog.init(0)
    x = jnp.ones((2, 16), jnp.float32)
    np.testing.assert_allclose(prog.apply(params, x=x), prog.apply(x=x, **params))
    np.testing.assert_allclose(prog["apply"](params, x=x), prog.apply(x=x, L=params["L"], R=params["R"]))


def test_init_without_params_or_on_numpy_is_an_error():
    prog = opdsl.compile("input W : [2, 2]\ninput x : [2]\nexport y = W @ x", backend="jax")
    with pytest.raises(opdsl.OpdslError, match="no params"):
        prog.init(0)
    prog = opdsl.compile("param W : [2, 2]\ninput x : [2]\nexport y = W @ x", backend="numpy")
    with pytest.raises(opdsl.OpdslError, match="numpy backend does not emit initializers"):
        prog.init(0)
