"""Reassociation, sum distribution, CSE/DCE and the pass manager.

Every case checks soundness against the dense reference (the graph as written
vs the optimized graph vs the compiled program) and what the cost model says.
"""
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st

import opdsl
from opdsl import cost
from opdsl.frontend import to_graph
from opdsl.passes import PassRecord, run, verify
from opdsl.passes.reassociate import MAX_DP
from opdsl.reference import dense_eval, random_inputs


def compile_sound(src, dims=None, seeds=(0, 1)):
    prog = opdsl.compile(src, backend="numpy", dtype="float64", dims=dims, verify=True)
    for name in prog.functions:
        for seed in seeds:
            inputs = random_inputs(prog.graph, name, seed=seed)
            before = dense_eval(prog.graph, prog.graph.exports[name], inputs)
            after = dense_eval(prog.optimized, prog.optimized.exports[name], inputs)
            np.testing.assert_allclose(after, before, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(prog[name](**inputs), before, rtol=1e-9, atol=1e-9)
    return prog


def fired(prog, name="reassociate"):
    return next(r.fired for r in prog.records if r.name == name)


def flops(prog, export="y"):
    """(source-order, optimized) FLOPs as numbers (dims, then hints)."""
    ev = cost.Evaluator(prog.graph.dims)
    return (ev.num(cost.graph_flops(prog.graph, [prog.graph.exports[export]])),
            ev.num(cost.graph_flops(prog.optimized, [prog.optimized.exports[export]])))


def tensor_shapes(g, export="y"):
    """Shapes of the tensors an export computes, with known dims as integers."""
    return [tuple(g.dims.value(d) if g.dims.value(d) is not None else d for d in g.type(v).shape)
            for v in g.live([g.exports[export]]) if not g.type(v).is_op]


ATTN = "dim L = {L}\ndim d = {d}\ninput Q : [L, d]\ninput K : [L, d]\ninput V : [L, d]\nexport y = (Q @ K.T) @ V\n"


def test_attention_product_is_q_times_kt_v():
    prog = compile_sound(ATTN.format(L=12, d=3))
    g = prog.optimized
    assert fired(prog).get("reassociate") == 1
    # no L x L tensor anywhere: Kᵀ V (d x d) is formed, then Q (Kᵀ V)
    assert (12, 12) not in tensor_shapes(g)
    src, opt = flops(prog)
    assert (src, opt) == (4 * 12 * 12 * 3, 4 * 12 * 3 * 3)


def test_attention_order_depends_on_sizes():
    """With d > L the product as written is already the cheaper order: nothing changes."""
    prog = compile_sound(ATTN.format(L=3, d=12))
    assert "reassociate" not in fired(prog)
    src, opt = flops(prog)
    assert opt == src


LOWRANK_PRODUCT = ("dim n ~ 4096\ndim r ~ 16\ndim k ~ 64\ninput U : [n, r]\ninput V : [n, r]\ninput W : [n, r]\n"
                   "input Z : [n, r]\ninput x : [n, k]\nexport y = (U @ V.T) @ (W @ Z.T) @ x\n")


def test_lowrank_product_costs_n_r_not_n_squared():
    prog = compile_sound(LOWRANK_PRODUCT)
    g = prog.graph
    n = g.dims.symbols["n"]
    src = cost.graph_flops(prog.graph, [prog.graph.exports["y"]])
    opt = cost.graph_flops(prog.optimized, [prog.optimized.exports["y"]])
    assert sp.Poly(src, n).degree() == 3          # (U Vᵀ)(W Zᵀ) forms n x n matrices
    assert sp.Poly(opt, n).degree() == 1          # U (Vᵀ W) (Zᵀ x)
    r, k = g.dims.symbols["r"], g.dims.symbols["k"]
    assert sp.expand(opt - (4 * n * r * k + 2 * n * r ** 2 + 2 * r ** 2 * k)) == 0   # Zᵀx, VᵀW, (VᵀW)·, U·
    assert max(cost.Evaluator(g.dims).num(sp.Mul(*s)) for s in tensor_shapes(prog.optimized)) == 4096 * 64


CHAIN = ("dim a = {a}\ndim b = {b}\ndim r = {r}\ndim k ~ {k}\ninput A : [a, a]\ninput B : [b, b]\ninput d : [a * b]\n"
         "input U : [a * b, r]\ninput V : [a * b, r]\ninput x : [a * b, k]\n"
         "export y = perm(a, b) @ kron(A, B) @ diag(d) @ lowrank(U, V) @ x\n")


def test_chain_applies_without_materializing():
    prog = compile_sound(CHAIN.format(a=4, b=3, r=2, k=5), seeds=(0,))
    for src in (CHAIN.format(a=64, b=64, r=64, k=256),):
        big = opdsl.compile(src, backend="numpy", verify=True)
        ev = cost.Evaluator(big.graph.dims)
        peak, n_peak = cost.largest_intermediate(big.primitive, None, ev)
        assert n_peak <= 4096 * 256                # never n x n (16.7M)
        s, o = flops(big)
        assert o < s
        assert fired(big).get("lowrank-absorb", 0) >= 1   # (P (A⊗B) D U) (Vᵀ x)
    assert prog.optimized.count() > 0


def test_project_first_multiplies_out_the_thin_product():
    src = "dim n = 6\ndim k ~ 4096\ninput P : [2, n]\ninput W : [n, n]\ninput X : [n, k]\nexport y = P @ (W @ X)\n"
    prog = compile_sound(src, seeds=(0,))
    assert fired(prog).get("multiply-out") == 1
    s, o = flops(prog)
    assert o < s


def test_lowrank_absorbs_its_right_neighbour():
    # lowrank(U, V) W x with x wide: lowrank(U, Wᵀ V) x pays for W on r columns only (non-square W)
    src = ("dim k ~ 512\ninput U : [7, 2]\ninput V : [9, 2]\ninput W : [9, 8]\ninput x : [8, k]\n"
           "export y = lowrank(U, V) @ W @ x\n")
    prog = compile_sound(src)
    assert fired(prog).get("lowrank-absorb") == 1
    s, o = flops(prog)
    assert o < s


def test_lowrank_absorbs_its_left_neighbour_in_a_long_chain():
    src = ("dim k ~ 512\ninput W1 : [6, 7]\ninput W2 : [7, 9]\ninput U : [9, 2]\ninput V : [5, 2]\ninput x : [5, k]\n"
           "export y = W1 @ W2 @ lowrank(U, V) @ x\n")
    prog = compile_sound(src)
    assert fired(prog).get("lowrank-absorb", 0) >= 1
    s, o = flops(prog)
    assert o < s


def test_diagonals_in_nested_applications_are_multiplied_first():
    src = "dim k ~ 64\ninput d : [5]\ninput e : [5]\ninput x : [5, k]\nexport y = diag(d) @ (diag(e) @ x)\n"
    prog = compile_sound(src)
    assert fired(prog).get("diag-product") == 1


def test_thin_dense_times_structured_operator():
    # W (A⊗B) x with W 2 x 12 and x wide: W (A⊗B) is formed as ((A⊗B)ᵀ Wᵀ)ᵀ on 2 columns
    src = ("dim k ~ 1024\ninput W : [2, 12]\ninput A : [3, 3]\ninput B : [4, 4]\ninput x : [12, k]\n"
           "export y = W @ (kron(A, B) @ x)\n")
    prog = compile_sound(src)
    assert fired(prog).get("multiply-out") == 1
    s, o = flops(prog)
    assert o < s


def test_sum_is_distributed_when_cheaper():
    src = ("dim L = 16\ndim d = 2\ninput Q : [L, d]\ninput K : [L, d]\ninput P : [L, d]\ninput R : [L, d]\n"
           "input V : [L, d]\nexport y = (0.5 * Q @ K.T + P @ R.T) @ V\n")
    prog = compile_sound(src)
    assert fired(prog).get("sum-distribute") == 1
    s, o = flops(prog)
    assert o < s


def test_sum_is_not_distributed_when_not_cheaper():
    # (W1 + W2) x with dense W1, W2: adding the matrices once beats two applications
    src = "dim k ~ 256\ninput W1 : [4, 5]\ninput W2 : [4, 5]\ninput x : [5, k]\nexport y = (W1 + W2) @ x\n"
    prog = compile_sound(src)
    assert "sum-distribute" not in fired(prog)
    s, o = flops(prog)
    assert o == s


def test_sum_operator_terms_are_ordered_on_their_own():
    # (diag(d) + U Vᵀ as tensors) x: the U Vᵀ term is applied as U (Vᵀ x)
    src = ("dim n = 12\ndim r = 2\ndim k ~ 8\ninput d : [n]\ninput U : [n, r]\ninput V : [n, r]\ninput x : [n, k]\n"
           "export y = (diag(d) + U @ V.T) @ x\n")
    prog = compile_sound(src)
    assert fired(prog).get("sum-distribute") == 1
    assert (12, 12) not in tensor_shapes(prog.optimized)


def test_ties_keep_the_source_order():
    src = "input A : [4, 4]\ninput B : [4, 4]\ninput x : [4, 4]\nexport y = A @ (B @ x)\nexport z = (A @ B) @ x\n"
    prog = compile_sound(src)
    assert "reassociate" not in fired(prog)
    from opdsl.explain import compact
    for e in ("y", "z"):
        assert compact(prog.optimized, [prog.optimized.exports[e]]) == compact(prog.graph, [prog.graph.exports[e]])
    assert flops(prog, "y") == flops(prog, "z")


def scalings(g, export="y"):
    """(constant, operand) of every constant multiple an export computes (of a tensor or an operator)."""
    return [(g[v].attrs["c"], g[v].operands[0]) for v in g.live([g.exports[export]])
            if g.kind(v) in ("tscale", "scale")]


def test_scalars_are_pulled_out_of_chains():
    src = ("dim k ~ 64\ninput U : [6, 2]\ninput V : [6, 2]\ninput W : [6, 6]\ninput x : [6, k]\n"
           "export y = (2 * lowrank(U, V)) @ (-0.5 * W) @ (3 * x)\n")
    prog = compile_sound(src)
    # reassociation takes 2 and -0.5 out of the chain and multiplies them once, onto x (no larger
    # than the result); nothing inside the chain is scaled any more
    after = next(r.graph_after for r in prog.records if r.name == "reassociate")
    assert sorted(c for c, _ in scalings(after)) == [-1.0, 3.0]
    assert all(after.kind(o) in ("input", "tscale") for _, o in scalings(after))
    # and cleanup folds them with x's own 3: one multiply by 2 · (-0.5) · 3 in the whole export
    g = prog.optimized
    [(c, on)] = scalings(g)
    assert c == -3.0 and g.kind(on) == "input" and g[on].attrs["name"] == "x"
    # a result smaller than x: the constant multiplies the result, after the chain
    small = compile_sound("dim k ~ 64\ninput P : [2, 6]\ninput W : [6, 6]\ninput x : [6, k]\n"
                          "export y = (2 * P) @ (-0.5 * W) @ x\n").optimized
    [(c, on)] = scalings(small)
    assert c == -1.0 and small.exports["y"] == next(v for v in small.live() if small.kind(v) == "tscale")
    assert small.kind(on) == "apply"


def test_batched_operators_and_vectors():
    src = ("input W : [3, 4, 5]\ninput V : [5, 6]\ninput x : [6, 2]\ninput v : [6]\ninput d : [6]\n"
           "export y = W @ (V @ x)\nexport z = W @ (V @ (diag(d) @ v))\n")
    compile_sound(src)


def test_transposed_products_are_taken_apart():
    src = ("dim k ~ 128\ninput Q : [10, 2]\ninput K : [10, 2]\ninput x : [10, k]\n"
           "export y = (Q @ K.T).T @ x\n")
    prog = compile_sound(src)
    s, o = flops(prog)
    assert o < s


def test_long_chains_fall_back_to_the_source_order():
    m = MAX_DP + 6
    src = ("input x : [3, 2]\n" + "".join(f"input W{i} : [3, 3]\n" for i in range(m)) +
           "export y = " + " @ ".join(f"W{i}" for i in range(m)) + " @ x\n")
    prog = compile_sound(src, seeds=(0,))
    s, o = flops(prog)
    assert o <= s


def test_a_forty_operator_chain_is_reordered():
    parts, decl = [], ["dim n = 12", "input x : [n, 3]"]
    for i in range(40):
        kind = i % 4
        if kind == 0:
            decl += [f"input A{i} : [3, 3]", f"input B{i} : [4, 4]"]
            parts.append(f"kron(A{i}, B{i})")
        elif kind == 1:
            decl.append(f"input d{i} : [n]")
            parts.append(f"diag(d{i})")
        elif kind == 2:
            decl += [f"input U{i} : [n, 2]", f"input V{i} : [n, 2]"]
            parts.append(f"lowrank(U{i}, V{i})")
        else:
            parts.append("perm(3, 4)")
    src = "\n".join(decl) + "\nexport y = " + " @ ".join(parts) + " @ x\n"
    prog = compile_sound(src, seeds=(0,))
    s, o = flops(prog)
    assert o <= s


# ---- random chains -------------------------------------------------------------------------

@st.composite
def chains(draw):
    """A random chain of dense, low-rank, diagonal and tensor-product factors with non-square shapes."""
    m = draw(st.integers(1, 6))
    sizes = [draw(st.integers(1, 6)) for _ in range(m + 1)]
    k = draw(st.integers(1, 5))
    decl = [f"input x : [{sizes[-1]}, {k}]"]
    factors = []
    for i in range(m):
        p, q = sizes[i], sizes[i + 1]
        choice = draw(st.sampled_from(["dense", "lowrank", "diag", "product", "sum"]))
        if choice == "diag" and p != q:
            choice = "dense"
        if choice == "dense":
            decl.append(f"input W{i} : [{p}, {q}]")
            factors.append(f"W{i}")
        elif choice == "lowrank":
            r = draw(st.integers(1, 3))
            decl += [f"input U{i} : [{p}, {r}]", f"input V{i} : [{q}, {r}]"]
            factors.append(f"lowrank(U{i}, V{i})")
        elif choice == "diag":
            decl.append(f"input d{i} : [{p}]")
            factors.append(f"diag(d{i})")
        elif choice == "product":
            r = draw(st.integers(1, 4))
            decl += [f"input P{i} : [{p}, {r}]", f"input R{i} : [{q}, {r}]"]
            factors.append(f"(P{i} @ R{i}.T)")
        else:
            r = draw(st.integers(1, 3))
            decl += [f"input P{i} : [{p}, {r}]", f"input R{i} : [{q}, {r}]", f"input S{i} : [{p}, {q}]"]
            factors.append(f"(P{i} @ R{i}.T + 0.5 * S{i})")
    # a random parenthesization: right-nested applications or a left-associated product
    if draw(st.booleans()):
        expr = "x"
        for f in reversed(factors):
            expr = f"{f} @ ({expr})"
    else:
        expr = " @ ".join(factors) + " @ x"
    if draw(st.booleans()):
        expr = f"2.5 * ({expr})"
    return "\n".join(decl) + f"\nexport y = {expr}\n"


@settings(max_examples=60, deadline=None)
@given(chains())
def test_random_chains_are_sound_and_never_costlier(src):
    prog = compile_sound(src, seeds=(0,))
    s, o = flops(prog)
    assert o <= s * (1 + 1e-9), (s, o, src)


# ---- DCE (CSE: tests/test_lower.py) ---------------------------------------------------------


def test_unused_bindings_cost_nothing():
    src = ("input W : [50, 50]\ninput x : [50, 2]\ninput d : [50]\n"
           "let unused = W @ (W @ x)\nlet also_unused = diag(d)\nexport y = diag(d) @ x\n")
    prog = compile_sound(src)
    assert "let unused" not in prog.source and "W @" not in prog.source
    s, o = flops(prog)
    assert s == o == 100
    assert not [v for v in prog.primitive.live() if prog.primitive.kind(v) == "matmul"]


# ---- the pass manager ------------------------------------------------------------------------

def test_run_records_every_pass_and_stops_after():
    g = to_graph(ATTN.format(L=8, d=2), "<t>", None, "float32")
    prim, opt, recs = run(g, verify_each=True)
    assert [r.name for r in recs] == ["simplify", "reassociate", "cleanup", "lower", "prim-simplify"]
    assert all(isinstance(r, PassRecord) and r.seconds >= 0 for r in recs)
    assert recs[1].fired == {"reassociate": 1} and recs[1].before != recs[1].after
    assert prim is recs[-1].graph_after and opt is recs[-3].graph_after
    prim2, opt2, recs2 = run(g, stop_after="simplify")
    assert prim2 is None and [r.name for r in recs2] == ["simplify"]
    assert g.to_text() == recs[0].before          # passes are pure: the input graph is unchanged


def test_verify_catches_a_wrong_type():
    g = to_graph(ATTN.format(L=8, d=2), "<t>", None, "float32")
    verify(g)
    from opdsl.ir import TensorType
    v = g.exports["y"]                      # the root: no user re-checks its type
    n = g[v]
    g.g.nodes[v]["node"] = type(n)(n.id, n.kind, n.operands, n.attrs, TensorType((3, 3)), n.span, n.name)
    with pytest.raises(AssertionError, match="verify"):
        verify(g)


def test_opdsl_verify_env_turns_verification_on(monkeypatch):
    import opdsl.passes as P
    calls = []
    monkeypatch.setattr(P, "verify", lambda g: calls.append(g))
    monkeypatch.setenv("OPDSL_VERIFY", "1")
    run(to_graph(ATTN.format(L=8, d=2), "<t>", None, "float32"))
    assert len(calls) == 5            # once after each pass: simplify, reassociate, cleanup, lower, prim-simplify
    calls.clear()
    monkeypatch.setenv("OPDSL_VERIFY", "0")
    run(to_graph(ATTN.format(L=8, d=2), "<t>", None, "float32"))
    assert not calls


def test_a_long_chain_needs_no_deep_recursion(monkeypatch):
    """Reassociation walks a chain iteratively: a product of 1,500 factors (a flat graph once simplified;
    deeper than Python's default recursion limit of 1,000) is ordered on the calling thread with the
    recursion limit as it is, never changed."""
    import sys

    from opdsl.ir import run_deep
    from opdsl.passes.reassociate import reassociate
    from opdsl.passes.simplify import simplify
    n = 1500
    src = ("input x : [3, 2]\n" + "".join(f"input V{i} : [3, 1]\n" for i in range(8)) +
           "export y = " + " @ ".join(f"householder(V{i % 8})" for i in range(n)) + " @ x\n")
    g = to_graph(src, "<t>", None, "float64")
    flat = run_deep(lambda: simplify(g), g.depth())
    assert flat.depth() < 10 and len(flat[flat[flat.exports["y"]].operands[0]].operands) == n
    calls = []
    monkeypatch.setattr(sys, "setrecursionlimit", calls.append)
    out = reassociate(flat)
    assert not calls
    inputs = random_inputs(g, "y", seed=0)
    np.testing.assert_allclose(dense_eval(out, out.exports["y"], inputs), dense_eval(g, g.exports["y"], inputs),
                               rtol=1e-9, atol=1e-9)
