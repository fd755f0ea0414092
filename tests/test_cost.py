"""The cost model: per-kind FLOPs and largest intermediate, whole-graph costs, evaluation at dims and hints."""
import pytest
import sympy as sp

import opdsl
from opdsl import cost
from opdsl.frontend import to_graph
from opdsl.kinds import REGISTRY


def graph(src):
    return to_graph(src, "<t>", None, "float32")


def op_of(g, export="y"):
    return g[g.exports[export]].operands[0]


def syms(g, *names):
    return [g.dims.symbols[n] for n in names]


def test_kron_apply_cost_is_symbolic_in_the_dims():
    g = graph("dim a ~ 64\ndim b ~ 32\ndim k ~ 256\ninput A : [a, a]\ninput B : [b, b]\ninput x : [a * b, k]\n"
              "export y = kron(A, B) @ x")
    a, b, k = syms(g, "a", "b", "k")
    c = cost.apply_cost(g, op_of(g), k)
    assert sp.expand(c.flops - 2 * a * b * (a + b) * k) == 0
    assert sp.expand(c.peak - a * b * k) == 0


def test_lowrank_and_dense_apply_costs():
    g = graph("dim m ~ 100\ndim n ~ 80\ndim r ~ 4\ninput U : [m, r]\ninput V : [n, r]\ninput W : [m, n]\n"
              "input x : [n, 3]\nexport y = lowrank(U, V) @ x\nexport z = W @ x")
    m, n, r = syms(g, "m", "n", "r")
    k = sp.Symbol("k", integer=True, positive=True)
    lr = cost.apply_cost(g, op_of(g, "y"), k)
    assert sp.expand(lr.flops - 2 * r * (m + n) * k) == 0
    assert sp.expand(lr.peak - m * k) == 0              # U (Vᵀ x): the largest is the m x k result
    d = cost.apply_cost(g, op_of(g, "z"))                # k defaults to a symbol
    assert sp.expand(d.flops - 2 * m * n * sp.Symbol("k", integer=True, positive=True)) == 0


@pytest.mark.parametrize("kind", sorted(k for k, spec in REGISTRY.items() if spec.sample(6, "s") is not None))
def test_every_kind_has_a_cost_for_n_by_k(kind):
    decl, expr = REGISTRY[kind].sample(6, "s")
    g = graph(f"{decl}\ninput x : [6, 5]\nexport y = ({expr}) @ x")
    op = op_of(g)
    c = cost.apply_cost(g, op, 5)
    ev = cost.Evaluator(g.dims)
    assert ev.num(c.flops) == ev.num(g.spec(op).flops(g, op, 5))
    assert ev.num(c.flops) >= 0
    assert 0 <= ev.num(c.peak) <= 6 * 6 * 5 * 8       # never worse than a few dense n x n x k blocks (eye: 0)


def test_graph_cost_counts_shared_work_once_and_dead_work_not_at_all():
    g = graph("input W : [10, 10]\ninput x : [10, 3]\nlet t = W @ x\nlet dead = W @ (W @ x)\n"
              "export y = t + t\nexport z = 2 * t")
    assert cost.graph_flops(g, [g.exports["y"]]) == 2 * 10 * 10 * 3 + 30
    assert cost.graph_flops(g) == 2 * 10 * 10 * 3 + 30 + 30     # t shared between y and z; dead not counted


def test_dense_cost_materializes_every_operator():
    g = graph("input A : [4, 4]\ninput B : [5, 5]\ninput d : [20]\ninput x : [20, 3]\n"
              "export y = kron(A, B) @ (diag(d) @ x)")
    assert cost.dense_flops(g) == 2 * 2 * 20 * 20 * 3
    assert cost.graph_flops(g) == 2 * 20 * (4 + 5) * 3 + 20 * 3


def test_evaluator_uses_values_then_derived_then_hints_then_default():
    g = graph("dim n = 8\ndim m = n / 2\ndim B ~ 100\ndim C\ninput x : [n, B]\ninput z : [m, C]\nexport y = x\n"
              "export w = z")
    n, m, B, C = syms(g, "n", "m", "B", "C")
    ev = cost.Evaluator(g.dims)
    assert ev.num(n * m * B) == 8 * 4 * 100
    assert ev.num(C) == cost.DEFAULT_HINT
    assert ev.assumed() == {"B": (100, True), "C": (cost.DEFAULT_HINT, False)}


def test_leading_order_keeps_the_top_degree_in_the_free_dims():
    g = graph("dim n = 8\ndim L ~ 1024\ndim k\ninput x : [L, k]\nexport y = x")
    n, L, k = syms(g, "n", "L", "k")
    assert cost.leading_order(g, 2 * L ** 2 * k + 3 * L * k * n + 5) == 2 * L ** 2 * k
    assert cost.leading_order(g, 3 * n ** 2 + 1) == 193      # no free dim: the value


def test_summary_of_attention():
    prog = opdsl.compile("dim L = 32\ndim d = 4\ninput Q : [L, d]\ninput K : [L, d]\ninput V : [L, d]\n"
                         "export y = (Q @ K.T) @ V", backend="numpy")
    s = cost.summarize(prog, "y").numbers()
    assert s["dense"] == s["source"] == 4 * 32 * 32 * 4
    assert s["optimized"] == 4 * 32 * 4 * 4
    assert s["peak_source"] == 32 * 32 and s["peak_optimized"] == 32 * 4


def test_largest_intermediate_skips_arguments_and_views():
    # Wᵀ is a view of the 300-element argument W; the only new tensor is the 3 x 2 result
    prog = opdsl.compile("input W : [100, 3]\ninput v : [100, 2]\nexport y = W.T @ v", backend="numpy")
    expr, n = cost.largest_intermediate(prog.primitive)
    assert n == 6 and expr == 6
