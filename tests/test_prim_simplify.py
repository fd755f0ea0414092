"""The primitive-level rewrites (passes/prim_simplify.py): each rule fires on a graph made for it
and keeps its value (the primitive interpreter, on random inputs, before and after); on every
example the pass leaves no rule applicable, loop bodies included, and keeps every export's value."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import opdsl
from opdsl.dims import DimTable
from opdsl.interpret import interpret
from opdsl.ir import Graph
from opdsl.kinds.linalg_cg import Body
from opdsl.passes.lower import lower
from opdsl.passes.prim_simplify import RULES, TABLE, prim_simplify
from opdsl.passes.rewrite import RewriteLog, apply_rules
from opdsl.primitives import PRIM_REGISTRY

from .harness import structured_inputs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.op"))


def _reshape(p, x, shape):
    return p("reshape", x, shape=shape)


def _cg(p, b, a):
    """cg whose loop body is a matmul behind a reshape of a reshape (a Lowerer builds such bodies)."""
    body = Graph(PRIM_REGISTRY, dims=p.graph.dims)
    loop = body.add("arg", (), {"name": "_p", "shape": (4, 2), "dtype": "float64", "role": "loop"})
    cap = body.add("arg", (), {"name": "_c0", "shape": (4, 4), "dtype": "float64", "role": "capture"})
    flat = body.add("reshape", (body.add("reshape", (loop,), {"shape": (8,)}),), {"shape": (2, 4)})
    root = body.add("matmul", (cap, body.add("reshape", (flat,), {"shape": (4, 2)})))
    body.exports["out"] = root
    return p("cg", b, a, body=Body(body, loop, root, [cap]), tol=1e-12, maxiter=50, precond="none")


# rule -> (argument shapes, build(p, *args) -> root with the rule's pattern at or below it)
CASES = {
    "scale-minus-one": ([(3, 4)], lambda p, x: p("scale", x, c=-1.0)),
    "add-neg": ([(3, 4), (4,)], lambda p, a, b: p("add", a, p("unary", b, fn="neg"))),
    "neg-add": ([(3, 4), (3, 1)], lambda p, a, b: p("add", p("unary", b, fn="neg"), a)),
    "reshape-identity": ([(3, 4)], lambda p, x: p("unary", _reshape(p, x, (3, 4)), fn="exp")),
    "reshape-reshape": ([(3, 4)], lambda p, x: _reshape(p, _reshape(p, x, (2, 6)), (4, 3))),
    "permute-identity": ([(2, 3, 4)], lambda p, x: p("unary", p("permute", x, perm=(0, 1, 2)), fn="exp")),
    "permute-permute": ([(2, 3, 4)], lambda p, x: p("permute", p("permute", x, perm=(1, 2, 0)), perm=(0, 2, 1))),
    "swap-swap": ([(2, 3, 4)], lambda p, x: p("unary", p("swap", p("swap", x)), fn="exp")),
    "loop-body": ([(4, 2), (4, 4)], _cg),
}


class _Prims:
    def __init__(self, graph):
        self.graph = graph

    def __call__(self, prim, *ops, **attrs):
        return self.graph.add(prim, ops, attrs)


def _case(rule: str):
    shapes, build = CASES[rule]
    g = Graph(PRIM_REGISTRY, dims=DimTable(), meta={"file": "<prim_simplify>"})
    args = [g.add("arg", (), {"name": f"x{i}", "shape": s, "dtype": "float64", "role": "input"})
            for i, s in enumerate(shapes)]
    g.exports["y"] = build(_Prims(g), *args)
    rng = np.random.default_rng(0)
    inputs = {f"x{i}": rng.standard_normal(s) for i, s in enumerate(shapes)}
    if rule == "loop-body":                       # an SPD matrix for the solve
        a = inputs["x1"]
        inputs["x1"] = a @ a.T / 4 + np.eye(4)
    return g, inputs


def test_every_rule_has_a_case():
    assert {r.name for r in RULES} == set(CASES)
    assert len(TABLE.named) == len(RULES) and all(r.identity for r in RULES)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires_and_keeps_the_value(rule):
    g, inputs = _case(rule)
    log = RewriteLog()
    out = prim_simplify(g, log)
    assert rule in log.fired, log.fired
    again = RewriteLog()
    prim_simplify(out, again)
    assert not again.fired                                    # a fixed point: nothing left to rewrite
    before, after = interpret(g, "y", inputs), interpret(out, "y", inputs)
    assert after.shape == before.shape and after.dtype == before.dtype
    np.testing.assert_allclose(after, before, rtol=1e-12, atol=1e-12)
    assert g.to_text() == _case(rule)[0].to_text()            # the pass is pure: its input is unchanged


def test_permutations_compose_into_one_or_none():
    g, _ = _case("permute-permute")
    out = prim_simplify(g)
    perms = [out[v].attrs["perm"] for v in out.live() if out.kind(v) == "permute"]
    assert perms == [(1, 0, 2)]         # (1, 2, 0) then (0, 2, 1): axis i of the result is axis p[q[i]]
    g = Graph(PRIM_REGISTRY, dims=DimTable())
    x = g.add("arg", (), {"name": "x", "shape": (2, 3, 4), "dtype": "float64", "role": "input"})
    g.exports["y"] = g.add("permute", (g.add("permute", (x,), {"perm": (1, 2, 0)}),), {"perm": (2, 0, 1)})
    assert prim_simplify(g).exports["y"] == 0       # inverse permutations: x itself


def test_a_subtraction_reads_as_one():
    """inv(K) @ y by the Woodbury identity: `a - b`, not `t = b * -1.0; a + t`."""
    src = opdsl.compile_file(ROOT / "examples" / "woodbury.op", backend="numpy").source
    assert "* -1.0" not in src
    assert "    alpha = t5 - t14\n" in src


def _nodes(g: Graph):
    for v in g.live():
        yield g, v
        body = g[v].attrs.get("body")
        if body is not None and hasattr(body, "graph"):
            yield from _nodes(body.graph)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_reach_a_fixed_point_and_keep_their_values(path):
    prog = opdsl.compile_file(path, backend="numpy", dtype="float64")
    leftover = [(g.kind(v), apply_rules(g, v, TABLE, RewriteLog())) for g, v in _nodes(prog.primitive)]
    assert not [k for k, hit in leftover if hit is not None], "a rule still applies"
    lowered = lower(prog.optimized)
    for name in prog.functions:
        inputs = structured_inputs(prog.graph, name)
        before, after = interpret(lowered, name, inputs), interpret(prog.primitive, name, inputs)
        np.testing.assert_allclose(after, before, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=name)
