"""Gradients are right, for every kind of the catalogue (torch, float64).

For every catalogue example (opdsl.kinds.REGISTRY[*].examples) and every export:
* torch.autograd.gradcheck of the compiled function with respect to every
  argument (fast mode: random projections of the Jacobian against finite
  differences of the compiled function);
* the gradient against the dense reference: for a random cotangent w and a
  random direction v over all arguments, <grad of w·f, v> from autograd equals
  the central difference of w·dense(args + h v), the dense numpy meaning.
Both through a compiled Program and through @opdsl.jit (whose float64 values are
checked against dense here too).  A new kind is covered the moment it registers an example.
"""
import pytest
import torch

import opdsl
from opdsl.reference import dense_eval

from .harness import (CATALOGUE, CATALOGUE_IDS, all_inputs, as_numpy_grad, assert_matches, check_directional,
                      directions, gradient_estimate, python_version, torch_inputs)


@pytest.fixture(autouse=True)
def _flush_denormals():
    """Some catalogue programs (householder with more reflectors than rows) pass through subnormal
    floats, which are ~100x slower on CPUs; flushing them changes nothing at these tolerances."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


@pytest.mark.parametrize("kind,i,src", CATALOGUE, ids=CATALOGUE_IDS)
def test_program_gradients(kind, i, src):
    prog = opdsl.compile(src, backend="torch", dtype="float64")
    g = prog.graph
    inputs = all_inputs(g)
    for name in prog.functions:
        names = prog[name].params
        args = tuple(torch_inputs({a: inputs[a] for a in names}, "float64", grad=True).values())

        def f(*xs):
            return prog[name](**dict(zip(names, xs)))

        out = f(*args)
        diff = [i for i, x in enumerate(args) if x.requires_grad]      # not integer indices
        v, w = directions({a: inputs[a] for a in names}, tuple(out.shape), g=g)
        estimate = gradient_estimate(g, g.exports[name])
        if out.requires_grad:
            # an estimator's gradient is not its value's derivative; gradcheck perturbs every entry of
            # a sparse argument's dense matrix: both are checked below, against the dense reference
            if estimate is None and not any(x.layout != torch.strided for x in args):
                assert torch.autograd.gradcheck(f, args, fast_mode=True, atol=1e-6, rtol=1e-5)
            grads = torch.autograd.grad((out * torch.from_numpy(w)).sum(), [args[i] for i in diff],
                                        allow_unused=True)
        else:                                   # e.g. zeros(m, n) @ x: constant, the gradient is zero
            grads = [None] * len(diff)
        grads = {names[i]: as_numpy_grad(gr, inputs[names[i]]) for i, gr in zip(diff, grads)}
        check_directional(grads, g, g.exports[name], inputs, v, w, estimate)


@pytest.mark.parametrize("kind,i,src", CATALOGUE, ids=CATALOGUE_IDS)
def test_jit_gradients(kind, i, src):
    fn, g, inputs = python_version(src)
    f = opdsl.jit(fn)
    args = torch_inputs(inputs, "float64", grad=True)
    out = f(**args)
    for name, root in g.exports.items():
        assert_matches(out[name].detach(), dense_eval(g, root, inputs), "float64")
        v, w = directions(inputs, tuple(out[name].shape), seed=2, g=g)
        diff = [k for k, x in args.items() if x.requires_grad]           # not integer indices
        grads = torch.autograd.grad((out[name] * torch.from_numpy(w)).sum(), [args[k] for k in diff],
                                    allow_unused=True, retain_graph=True) \
            if out[name].requires_grad else [None] * len(diff)
        grads = {k: as_numpy_grad(gr, inputs[k]) for k, gr in zip(diff, grads)}
        check_directional(grads, g, root, inputs, v, w, gradient_estimate(g, root))


def test_a_wrong_gradient_is_caught():
    """The dense check is not vacuous: a perturbed gradient fails it."""
    prog = opdsl.compile("input A : [3, 3]\ninput B : [2, 2]\ninput x : [6, 2]\nexport y = kron(A, B) @ x",
                         dtype="float64")
    g = prog.graph
    inputs = all_inputs(g)
    args = {k: torch.tensor(x, requires_grad=True) for k, x in inputs.items()}
    out = prog.y(**args)
    v, w = directions(inputs, tuple(out.shape))
    grads = dict(zip(args, (t.numpy() for t in torch.autograd.grad((out * torch.from_numpy(w)).sum(),
                                                                   list(args.values())))))
    check_directional(grads, g, g.exports["y"], inputs, v, w)
    grads["A"] = grads["A"] * 1.001
    with pytest.raises(AssertionError):
        check_directional(grads, g, g.exports["y"], inputs, v, w)
