"""The torch backend's fusion (backends/torch_fuse.py): each rule of its table fires on a program
written for it and gives the unfused code's numbers and gradients; the caller's tensors are never
written; fuse=False writes no in-place op.  (The catalogue runs every kind fused against the dense
reference: tests/test_catalogue.py.)"""
from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")

import opdsl  # noqa: E402
from opdsl.backends import torch_fuse  # noqa: E402
from opdsl.reference import random_inputs  # noqa: E402

HEAD = "dim n = 12\ndim k = 5\ninput d : [n]\ninput U : [n, 3]\ninput V : [n, 3]\ninput A : [n, n]\n" \
       "input W : [3, 4, 4]\ninput x : [n, k]\n"
# program -> the fused calls it must contain
PROGRAMS = {
    "export y = (diag(d) + lowrank(U, V)) @ x": [r"\.addmm_\("],
    "export y = (diag(d) - lowrank(U, V)) @ x": [r"\.addmm_\(.*alpha=-1\)"],
    "export y = (blockdiag(W) + diag(d)) @ x": [r"\.addcmul_\("],
    "export y = (blockdiag(W) - diag(d)) @ x": [r"\.addcmul_\(.*value=-1\)"],
    "export y = (blockdiag(W) + blockdiag(W).T) @ x": [r"\.add_\("],
    "export y = (blockdiag(W) @ x) * 2 + x": [r"\.mul_\(2\.0\)", r"\.add_\(x\)"],
    "export y = (A + A.T) @ x - blockdiag(W) @ x": [r"\.sub_\("],
    "input H : [n, 40]\nexport y = householder(H) @ x": [r"torch\.addmm\(x, .*alpha=-1\)"],
    "export y = -(A @ x) - x": [r"= t\d+\.neg_\(\)", r"\.sub_\(x\)"],
    "dim L = 256\ninput Q : [1, 2, L, 4]\ninput K : [1, 2, L, 4]\ninput Vv : [1, 2, L, 4]\n"
    "export y = attention(Q, K, causal=true) @ Vv": [r"\.div_\(", r"\.add_\(2\.22"],
}


# the FAVOR+ feature map exp(ω·q − max): exp in place into the dead difference
FAVOR = ("dim L = 256\ninput Q : [1, 2, L, 4]\ninput K : [1, 2, L, 4]\ninput Vv : [1, 2, L, 4]\n"
         "export y = softmax_attention(Q, K, causal=true) @ Vv")
PROGRAMS[FAVOR] = [r"= t\d+\.exp_\(\)"]


def _compile(src, **opts):
    if src == FAVOR:
        opts["softmax_to_favor"] = 16
    return opdsl.compile(HEAD + src, backend="torch", dtype="float64", **opts)


def _args(prog):
    return {k: torch.as_tensor(v, dtype=torch.float64) for k, v in random_inputs(prog.graph, "y", seed=1).items()}


@pytest.mark.parametrize("src", list(PROGRAMS))
def test_each_rule_fires_and_agrees_with_the_unfused_code(src):
    fused, plain = _compile(src), _compile(src, fuse=False)
    for pattern in PROGRAMS[src]:
        assert re.search(pattern, fused.source), (pattern, fused.source)
    # (elu1's own spelling adds in place into its clamp: not a fusion)
    assert not re.search(r"= t\d+\.(add|sub|mul|div|addmm|addcmul)_\(", plain.source.split("def y")[1])
    args = _args(fused)
    kept = {k: v.clone() for k, v in args.items()}
    assert torch.allclose(fused.y(**args), plain.y(**args), rtol=1e-12, atol=1e-12)
    for k, v in args.items():               # the caller's tensors are read, never written
        assert torch.equal(v, kept[k]), k


def test_every_rule_of_the_table_is_exercised():
    templates = {rule[3] for rule in torch_fuse.RULES} | {t for t, _ in torch_fuse.UNARY_INPLACE.values()}
    seen = set()
    for src in PROGRAMS:
        code = _compile(src).source
        for t in templates:
            call = t.split("(")[0].replace("{0}", "")
            if call == "torch.addmm" and "{0}.addmm_" in code:
                continue
            if call + "(" in code and ("alpha" in t) == ("alpha=" in code.split(call + "(")[1].split("\n")[0]):
                seen.add(t)
    assert seen == templates, templates - seen


@pytest.mark.parametrize("src", list(PROGRAMS))
def test_gradients_through_the_in_place_ops_equal_the_unfused_code(src):
    fused, plain = _compile(src), _compile(src, fuse=False)
    grads = []
    for prog in (fused, plain):
        args = {k: v.requires_grad_() for k, v in _args(prog).items()}
        out = prog.y(**args)
        weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
        names = sorted(args)
        grads.append(torch.autograd.grad((out * weight).sum(), [args[a] for a in names], allow_unused=True))
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_no_accumulator_is_an_argument_a_view_or_used_twice():
    # x is an argument: x + A x must not write into x; t = A x used twice must not be overwritten
    prog = _compile("let t = A @ x\nexport y = x + t + t * 2")
    body = prog.source.split("def y")[1]
    assert not re.search(r"\bx\.\w+_\(", body)
    args = _args(prog)
    x = args["x"].clone()
    want = x + 3 * args["A"] @ x
    assert torch.allclose(prog.y(**args), want)
    assert torch.equal(args["x"], x)
