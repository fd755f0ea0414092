"""Every rewrite rule: it fires, and it is sound (dense before == dense after).

Each case is a small program, with non-square factors where the rule allows
them, compiled on the numpy backend; the operator graph as written
(prog.graph) and after the passes (prog.optimized) are evaluated densely on
random inputs and compared, and so is the compiled program.  A rule added to
passes/simplify.py without a case here fails test_every_rule_has_a_case.
"""
import numpy as np
import pytest

import opdsl
from opdsl.frontend import to_graph
from opdsl.passes import verify
from opdsl.passes.rewrite import RewriteLog, RuleTable
from opdsl.kinds import REGISTRY
from opdsl.passes.linalg_rules import LINALG_RULES
from opdsl.passes.simplify import RULES, all_rules, rule_table, simplify
from opdsl.reference import dense_eval, random_inputs

OPS = "input A : [2, 3]\ninput B : [4, 2]\ninput C : [3, 2]\ninput D : [2, 3]\n"
LR = "input U : [5, 2]\ninput V : [4, 2]\n"

CASES = {
    "transpose-compose": [LR + "input W : [3, 5]\ninput d : [5]\ninput x : [3, 2]\nexport y = (W @ diag(d)).T @ x"],
    "transpose-kron": [OPS + "input x : [8, 3]\nexport y = kron(A, B).T @ x"],
    "transpose-blockdiag": ["input A : [2, 3]\ninput B : [4, 1]\ninput x : [6, 2]\nexport y = blockdiag(A, B).T @ x"],
    "transpose-blockdiag_batched": ["input W : [3, 2, 4]\ninput x : [6, 2]\nexport y = blockdiag(W).T @ x"],
    "transpose-diag": ["input d : [4]\ninput x : [4, 2]\nexport y = diag(d).T @ x"],
    "transpose-lowrank": [LR + "input x : [5, 3]\nexport y = lowrank(U, V).T @ x"],
    "transpose-perm": ["input x : [6, 2]\nexport y = perm(2, 3).T @ x",
                       "input x : [12]\nexport y = perm(3, 4).T @ x"],
    "transpose-sum": [LR + "input W : [5, 4]\ninput x : [5, 2]\nexport y = (W + lowrank(U, V)).T @ x"],
    "transpose-scale": [OPS + "input x : [8, 2]\nexport y = (2.5 * kron(A, B)).T @ x"],
    "transpose-dense": ["input W : [3, 5]\ninput B : [2, 4]\ninput x : [6, 2]\nexport y = kron(W, B).T @ x"],
    "transpose-eye": ["input A : [2, 3]\ninput x : [4, 2]\nexport y = kron(A, eye(2)).T @ x"],
    "transpose-zeros": ["input x : [3, 2]\ninput z : [4, 2]\nexport y = zeros(3, 4).T @ x + z"],
    "transpose-pushdown": [],          # the fallback: tested alone below
    "transpose-involution": [],        # fires only when the inner transpose cannot be pushed: tested alone below
    "tensor-transpose-involution": ["input W : [3, 5]\ninput x : [5, 2]\nexport y = W.T.T @ x"],
    "compose-flatten": [LR + "input W : [3, 5]\ninput d : [5]\ninput x : [4, 2]\n"
                        "export y = (W @ diag(d)) @ lowrank(U, V) @ x"],
    "sum-flatten": ["input U : [6, 2]\ninput V : [6, 2]\ninput d : [6]\ninput A : [2, 2]\ninput B : [3, 3]\n"
                    "input x : [6, 2]\nexport y = ((kron(A, B) + lowrank(U, V)) + diag(d)) @ x"],
    "kron-flatten": [OPS + "input E : [3, 4]\ninput x : [24, 2]\nexport y = kron(kron(A, B), E) @ x"],
    "compose-identity": ["input W : [3, 5]\ninput d : [5]\ninput x : [5, 2]\nexport y = W @ eye(5) @ diag(d) @ x"],
    "apply-identity": ["input x : [4, 3]\nexport y = eye(4) @ x"],
    "kron-identity": ["input A : [2, 3]\ninput x : [18, 2]\nexport y = kron(eye(2), eye(3), A) @ x"],
    "compose-zero": ["input W : [3, 5]\ninput e : [4]\ninput x : [4, 2]\nexport y = W @ zeros(5, 4) @ diag(e) @ x + W @ (zeros(5, 4) @ x)"],
    "kron-zero": ["input A : [2, 3]\ninput x : [9, 2]\nexport y = kron(A, zeros(2, 3)) @ x"],
    "sum-zero": [LR + "input x : [4, 2]\nexport y = (lowrank(U, V) + zeros(5, 4)) @ x"],
    "scale-fold": [OPS + "input x : [6, 2]\nexport y = (2 * (3 * kron(C, D))) @ x"],
    "scale-one": [OPS + "input x : [6, 2]\nexport y = (0.5 * (2 * kron(C, D))) @ x",
                  OPS + "input x : [6, 2]\nexport y = (1 * kron(C, D)) @ x"],
    "scale-zero": [OPS + "input x : [6, 2]\nexport y = (0 * kron(C, D)) @ x + kron(C, D) @ x"],
    "compose-scale": [OPS + "input d : [6]\ninput x : [6, 2]\nexport y = kron(C, D) @ (2 * diag(d)) @ x"],
    "kron-scale": ["input d : [3]\ninput B : [4, 2]\ninput x : [6, 2]\nexport y = kron(2 * diag(d), B) @ x"],
    "apply-scale": [OPS + "input x : [6, 2]\nexport y = (-1.5 * kron(C, D)) @ x"],
    "sum-collect": [LR + "input E : [5, 4]\ninput x : [4, 2]\n"
                    "export y = (lowrank(U, V) + kron(E, eye(1)) - lowrank(U, V)) @ x",
                    LR + "input x : [4, 2]\nexport y = (lowrank(U, V) + 2 * lowrank(U, V)) @ x"],
    "tadd-collect": ["input W : [3, 5]\ninput x : [5, 2]\nexport y = W @ x + 2 * (W @ x)",
                     "input W : [3, 5]\ninput Z : [3, 5]\ninput x : [5, 2]\nexport y = (W + Z - W) @ x"],
    "tscale-fold": ["input x : [5, 2]\nexport y = 2 * (3 * x)"],
    "tscale-one": ["input W : [3, 5]\ninput x : [5, 2]\nexport y = W @ (0.5 * (2 * x))"],
    "kron-mixed-product": [OPS + "input x : [6, 2]\nexport y = kron(A, B) @ kron(C, D) @ x"],
    "blockdiag-product": ["input A : [2, 3]\ninput B : [3, 2]\ninput C : [3, 4]\ninput D : [2, 1]\ninput x : [5, 2]\n"
                          "export y = blockdiag(A, B) @ blockdiag(C, D) @ x"],
    "diag-product": ["input d : [5]\ninput e : [5]\ninput x : [5, 2]\nexport y = diag(d) @ diag(e) @ x"],
    "perm-product": ["input x : [6, 2]\nexport y = perm(2, 3) @ perm(3, 2) @ x",
                     "input x : [12, 2]\nexport y = perm(2, 6) @ perm(2, 6) @ x",
                     "input x : [12, 2]\nexport y = perm(3, 4) @ perm(2, 6) @ perm(4, 3) @ x",
                     "dim a = 3\ndim b = 4\ninput x : [a * b, 2]\nexport y = perm(a, b) @ perm(b, a) @ x"],
}


def _sound(src, seeds=(0, 1, 2)):
    prog = opdsl.compile(src, backend="numpy", dtype="float64", verify=True)
    for name in prog.functions:
        for seed in seeds:
            inputs = random_inputs(prog.graph, name, seed=seed)
            before = dense_eval(prog.graph, prog.graph.exports[name], inputs)
            after = dense_eval(prog.optimized, prog.optimized.exports[name], inputs)
            np.testing.assert_allclose(after, before, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(prog[name](**inputs), before, rtol=1e-10, atol=1e-10)
    return prog


def _fired(prog):
    out = {}
    for r in prog.records:
        for k, v in r.fired.items():
            out[k] = out.get(k, 0) + v
    return out


def test_every_rule_has_a_case():
    assert {r.name for r in RULES} == set(CASES)
    assert len({r.name for r in RULES}) == len(RULES), "rule names must be unique"
    assert all(r.identity for r in RULES)


def test_the_simplify_table_defines_each_rule_once():
    """One table (simplify.all_rules): the generic rules, then every kind's own rules; each rule once."""
    table = all_rules()
    names = [r.name for r in table]
    assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)
    assert table == RULES + LINALG_RULES + [r for k in REGISTRY.values() for r in k.rules]
    assert rule_table().rules == table and set(rule_table().named) == set(names)
    # a kind's rules live in its own file and reach the table from there
    monarch = REGISTRY["monarch"]
    inv_monarch = next(r for r in monarch.rules if r.name == "inv-monarch")
    assert type(monarch).__module__ == "opdsl.kinds.monarch"
    assert inv_monarch in table and inv_monarch not in LINALG_RULES
    assert rule_table().named["inv-monarch"] is inv_monarch
    assert inv_monarch in rule_table().for_kind("inv")
    circulant = REGISTRY["circulant"]
    assert [r.name for r in circulant.rules] == ["inv-circulant"] and circulant.rules[0] in table
    from opdsl.explain import identity
    assert identity("inv-monarch") == inv_monarch.identity


def test_a_kind_registered_later_brings_its_rules():
    """The table follows the registry: a kind added after import (one file) has its rules in it."""
    from opdsl.kinds.base import Kind, register
    from opdsl.kinds.rule import Rule

    rule = Rule("test-marker-rule", "m = m", ("test_marker",), lambda g, m: None)

    class Marker(Kind):
        name = "test_marker"
        rules = (rule,)

    before = rule_table()
    try:
        register(Marker)
        assert rule_table() is not before and rule_table().for_kind("test_marker") == [rule]
    finally:
        del REGISTRY["test_marker"]
    assert rule not in rule_table().rules


@pytest.mark.parametrize("rule,src", [(r, s) for r, srcs in CASES.items() for s in srcs],
                         ids=[f"{r}-{i}" for r, srcs in CASES.items() for i in range(len(srcs))])
def test_rule_fires_and_is_sound(rule, src):
    prog = _sound(src)
    assert rule in _fired(prog), f"{rule} did not fire: {_fired(prog)}"


def _alone(rule_name, src):
    """Apply one rule alone (its own table) to a program; check it fired and is sound."""
    g = to_graph(src, "<test>", None, "float64")
    rule = next(r for r in RULES if r.name == rule_name)
    log = RewriteLog()
    out = simplify(g, log, rules=RuleTable([rule]))
    verify(out)
    assert log.fired.get(rule_name, 0) >= 1
    for seed in (0, 1):
        inputs = random_inputs(g, "y", seed=seed)
        np.testing.assert_allclose(dense_eval(out, out.exports["y"], inputs),
                                   dense_eval(g, g.exports["y"], inputs), rtol=1e-10, atol=1e-10)
    return out


def test_transpose_involution_alone():
    out = _alone("transpose-involution", OPS + "input x : [6, 2]\nexport y = kron(A, B).T.T @ x")
    assert "transpose" not in {out.kind(v) for v in out.live()}


def test_transpose_pushdown_alone():
    out = _alone("transpose-pushdown", OPS + "input x : [8, 2]\nexport y = kron(A, B).T @ x")
    assert out.kind(out[out.exports["y"]].operands[0]) == "kron"


@pytest.mark.parametrize("kind", ["kron", "blockdiag", "lowrank", "perm", "diag", "compose", "sum", "scale"])
def test_transposes_leave_no_transpose_node(kind):
    srcs = {"kron": CASES["transpose-kron"][0], "blockdiag": CASES["transpose-blockdiag"][0],
            "lowrank": CASES["transpose-lowrank"][0], "perm": CASES["transpose-perm"][0],
            "diag": CASES["transpose-diag"][0], "compose": CASES["transpose-compose"][0],
            "sum": CASES["transpose-sum"][0], "scale": CASES["transpose-scale"][0]}
    prog = _sound(srcs[kind])
    kinds = {prog.optimized.kind(v) for v in prog.optimized.live()}
    assert "transpose" not in kinds


def test_perm_product_strides():
    """L(12, 2) L(12, 2) = L(12, 4): the product of stride permutations is a stride permutation."""
    prog = _sound(CASES["perm-product"][1])
    g = prog.optimized
    perms = [g[v].attrs for v in g.live() if g.kind(v) == "perm"]
    assert len(perms) == 1 and (int(perms[0]["m"]), int(perms[0]["n"])) == (4, 3)


def test_perm_product_inverse_is_identity():
    prog = _sound(CASES["perm-product"][3])
    g = prog.optimized
    assert g.exports["y"] == next(v for v in g.live() if g.kind(v) == "input")


def test_mixed_product_declines_when_shapes_do_not_allow():
    # A [2,3] ⊗ B [4,2] times C [2,3] ⊗ D [3,4]: A C is 2x3 · 2x3, not defined factor-wise
    src = ("input A : [2, 3]\ninput B : [4, 2]\ninput C : [2, 3]\ninput D : [3, 4]\ninput x : [12, 2]\n"
           "export y = kron(A, B) @ kron(C, D) @ x")
    prog = _sound(src)
    assert "kron-mixed-product" not in _fired(prog)


def test_blockdiag_product_declines_when_partitions_differ():
    src = ("input A : [2, 3]\ninput B : [3, 2]\ninput C : [2, 4]\ninput D : [3, 1]\ninput x : [5, 2]\n"
           "export y = blockdiag(A, B) @ blockdiag(C, D) @ x")
    prog = _sound(src)
    assert "blockdiag-product" not in _fired(prog)


def test_rules_are_sound_on_float32_too():
    src = CASES["kron-mixed-product"][0]
    prog = opdsl.compile(src, backend="numpy", verify=True)
    inputs = random_inputs(prog.graph, "y")
    np.testing.assert_allclose(prog.y(**inputs), dense_eval(prog.graph, prog.graph.exports["y"], inputs),
                               rtol=1e-4, atol=1e-5)


def test_fixed_point_terminates_on_long_chains():
    """A chain of 150 diagonals folds to one diag in one simplify pass (no per-pair rescans)."""
    n = 150
    src = "input x : [3, 2]\n" + "".join(f"input d{i} : [3]\n" for i in range(n)) + \
        "export y = " + " @ ".join(f"diag(d{i})" for i in range(n)) + " @ x"
    prog = _sound(src, seeds=(0,))
    g = prog.optimized
    root = g[g.exports["y"]]
    assert root.kind == "apply" and g.kind(root.operands[0]) == "diag"
    assert "compose" not in {g.kind(v) for v in g.live()}


# ---- the pattern language (opdsl/kinds/rule.py) ---------------------------------------------

def test_patterns_match_sets_of_kinds_bindings_and_adjacent_pairs():
    from opdsl.kinds.rule import As, NoneOf, OneOf, Rule, Window, matches
    g = to_graph("input A : [3, 3]\ninput d : [3]\ninput e : [3]\nexport y = A\nexport u = d\nexport v = e",
                 "<test>", None, "float64")
    a = g.add("dense", [g.exports["y"]])
    prod = g.add("compose", [a, g.add("diag", [g.exports["u"]]), g.add("diag", [g.exports["v"]]),
                             g.add("scale", [a], {"c": 2.0})])
    assert matches(g, (OneOf("kron", "compose"), "*xs"), prod)["xs"] == g[prod].operands
    assert matches(g, (OneOf("kron", "sum"), "*"), prod) is None
    assert matches(g, (NoneOf("compose"), "*"), prod) is None
    assert matches(g, (NoneOf("kron", "sum"), "*"), prod) is not None
    # the first run of adjacent operands matching the window, with what is around it
    m = matches(g, ("compose", Window(As("a", ("diag", "p")), ("diag", "q"), before="L", after="R")), prod)
    ops = g[prod].operands
    assert (m["a"], m["L"], m["R"]) == (ops[1], ops[:1], ops[3:]) and g.kind(m["p"]) == "input"
    assert matches(g, ("compose", Window(("diag", "_"), ("dense", "_"))), prod) is None
    assert matches(g, ("compose", Window(As("s", ("scale", "_")))), prod)["s"] == ops[3]
    # a rule's roots index the table: a set of kinds is filed under each, NoneOf under every kind
    r1 = Rule("one-of", "", (OneOf("kron", "sum"), "*"), lambda g, m: None)
    r2 = Rule("none-of", "", (NoneOf("kron"), "*"), lambda g, m: None)
    table = RuleTable([r1, r2])
    assert table.for_kind("sum") == [r1, r2] and table.for_kind("kron") == [r1, r2]
    assert table.for_kind("compose") == [r2]


def test_product_rules_are_patterns_over_adjacent_factors():
    """The product rules state the pair of kinds they merge in their pattern; one rule, parameterized
    by kind, is the mixed product of Kronecker products and of block diagonals."""
    from opdsl.kinds.rule import Window
    products = {r.name: r for r in RULES if r.roots == frozenset({"compose"}) and isinstance(r.pattern[1], Window)}
    assert {"kron-mixed-product", "blockdiag-product", "diag-product", "perm-product"} <= set(products)
    kron, block = products["kron-mixed-product"], products["blockdiag-product"]
    assert kron.pattern[1].patterns == (("kron", "*xs"), ("kron", "*ys"))
    assert block.pattern[1].patterns == (("blockdiag", "*xs"), ("blockdiag", "*ys"))
    assert kron.build.__code__ is block.build.__code__       # one rule, two kinds
