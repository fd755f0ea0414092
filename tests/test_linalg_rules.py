"""Every linear-algebra rule (passes/linalg_rules.py): it fires, and it is sound.

Each case is a small program compiled on the numpy backend in float64; the
operator graph as written (prog.graph) and after the passes (prog.optimized)
are evaluated densely — inverses, log-determinants, diagonals and traces by
numpy.linalg on the materialized matrices (each kind's `dense`) — on random
inputs, and compared, and so is the compiled program.  Inputs honour the
declared properties (psd, lower, upper, symmetric, orthogonal).  A rule added
to the tables without a case here fails test_every_linalg_rule_has_a_case.
"""
import numpy as np
import pytest

import opdsl
from opdsl.frontend import to_graph
from opdsl.passes import verify
from opdsl.kinds import REGISTRY
from opdsl.passes.linalg_rules import LINALG_RULES
from opdsl.passes.rewrite import RewriteLog, RuleTable
from opdsl.passes.simplify import all_rules, simplify
from opdsl.reference import dense_eval, random_inputs


def structured_inputs(g, name, seed=0):
    """random_inputs, each made to honour its declared properties (an input that is `psd`
    gets A Aᵀ/n + I, `lower` a triangular matrix with a dominant diagonal, ...)."""
    out = random_inputs(g, name, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for v in g.live([g.exports[name]]):
        n = g[v]
        if n.kind != "input":
            continue
        props = set(n.attrs.get("props", ()))
        x = out[n.attrs["name"]]
        if not props or x.ndim < 2:
            continue
        k = x.shape[-1]
        eye = np.eye(k)
        if "psd" in props:
            x = x @ np.swapaxes(x, -1, -2) + eye
        elif "symmetric" in props:
            x = x + np.swapaxes(x, -1, -2)
        elif "orthogonal" in props:
            x = np.linalg.qr(x)[0]
        if "lower" in props or "upper" in props:
            tri = np.tril if "lower" in props else np.triu
            x = tri(x) + np.sign(rng.standard_normal(x.shape[:-1]))[..., None] * 2 * eye
        out[n.attrs["name"]] = x.astype(n.attrs["dtype"])
    return out


def fired(prog):
    out = {}
    for r in prog.records:
        for k, v in r.fired.items():
            out[k] = out.get(k, 0) + v
    return out


def sound(src, seeds=(0, 1, 2), rtol=1e-8):
    prog = opdsl.compile(src, backend="numpy", dtype="float64", verify=True)
    for name in prog.functions:
        for seed in seeds:
            inputs = structured_inputs(prog.graph, name, seed)
            before = dense_eval(prog.graph, prog.graph.exports[name], inputs)
            after = dense_eval(prog.optimized, prog.optimized.exports[name], inputs)
            scale = max(1.0, float(np.max(np.abs(before))))
            np.testing.assert_allclose(after, before, rtol=rtol, atol=rtol * scale)
            np.testing.assert_allclose(prog[name](**inputs), before, rtol=rtol, atol=rtol * scale)
    return prog


SQ = "input A : [3, 3]\ninput B : [2, 2]\ninput C : [3, 3]\n"
LR = "input d : [6]\ninput U : [6, 2]\ninput V : [6, 2]\n"
MF = "input S : [3, 3] psd\ninput T : [2, 2] psd\ninput R : [2, 2] psd\ninput x : [3, 2]\ninput z : [5, 2]\n"

CASES = {
    # ---- matrices written with tensors (A @ B, 2 * A, A.T, A + B)
    "inv-of-matrix-expression": [SQ + "input x : [3, 2]\nexport y = inv(A @ C) @ x",
                                 SQ + "input S : [3, 3] psd\ninput x : [3, 2]\nexport y = inv(S @ (A @ C)) @ x",
                                 SQ + "input x : [3, 2]\nexport y = inv(-2 * (A + C.T)) @ x"],
    "logdet-of-matrix-expression": [SQ + "export y = logdet(A @ C)", SQ + "export y = logdet(-2 * A.T)",
                                    SQ + "input W : [3, 3]\nexport y = logdet(A @ C @ W)"],
    "diag_of-of-matrix-expression": ["input P : [4, 2]\ninput Q : [2, 4]\nexport y = diag_of(P @ Q)",
                                     SQ + "export y = diag_of(A + 2 * C.T)"],
    "trace-of-matrix-expression": ["input P : [4, 2]\ninput Q : [2, 4]\nexport y = trace(P @ Q)",
                                   SQ + "export y = trace(A.T - C)"],
    # ---- inverses
    "inv-involution": [SQ + "input x : [3, 2]\nexport y = inv(inv(3 * eye(3) + A)) @ x"],
    "inv-eye": ["input x : [4, 2]\nexport y = inv(eye(4)) @ x"],
    "inv-orthogonal": ["input V : [5, 2]\ninput x : [5, 2]\nexport y = inv(householder(V)) @ x",
                       "input x : [6, 2]\nexport y = inv(perm(2, 3)) @ x",
                       "input V : [6, 3]\ninput Q : [2, 2] orthogonal\ninput x : [12, 2]\n"
                       "export y = inv(kron(Q, householder(V) @ perm(3, 2))) @ x"],
    "inv-diag": ["input d : [5]\ninput x : [5, 2]\nexport y = inv(diag(d)) @ x"],
    "inv-scale": [SQ + "input x : [3, 2]\nexport y = inv(-2.5 * (3 * eye(3) + A)) @ x"],
    "inv-kron": [SQ + "input x : [6, 2]\nexport y = inv(kron(3 * eye(3) + A, 2 * eye(2) + B)) @ x",
                 SQ + "input x : [18, 2]\nexport y = inv(kron(3 * eye(3) + A, 2 * eye(2) + B, C + 3 * eye(3)).T) @ x",
                 "input S : [3, 3] psd\ninput L : [2, 2] lower\ninput x : [6, 2]\nexport y = inv(kron(S, L)) @ x"],
    "inv-blockdiag": [SQ + "input x : [5, 2]\nexport y = inv(blockdiag(3 * eye(3) + A, 2 * eye(2) + B)) @ x"],
    "inv-compose": [SQ + "input x : [3, 2]\nexport y = inv((3 * eye(3) + A) @ (3 * eye(3) + C)) @ x",
                    SQ + "input d : [3]\ninput x : [3, 2]\nexport y = inv(diag(d) @ (3 * eye(3) + A).T) @ x"],
    "inv-woodbury": [LR + "input x : [6, 3]\nexport y = inv(diag(d) + lowrank(U, V)) @ x",
                     LR + "input x : [6]\nexport y = inv(lowrank(U, U) + diag(d)) @ x",
                     LR + "input P : [6, 1]\ninput x : [6, 2]\n"
                     "export y = inv(diag(d) - 0.5 * lowrank(U, V) + lowrank(P, P)) @ x",
                     SQ + "input U : [6, 2]\ninput V : [6, 2]\ninput x : [6, 2]\n"
                     "export y = inv(kron(3 * eye(3) + A, 2 * eye(2) + B) + lowrank(U, V)) @ x"],
    "exp-kronsum": ["input A : [3, 3]\ninput B : [4, 4]\ninput x : [12, 2]\nexport y = exp(kronsum(A, B)) @ x",
                    "input A : [2, 2]\ninput B : [3, 3]\ninput C : [2, 2]\ninput x : [12, 1]\n"
                    "export y = exp(kronsum(A, B, C).T) @ x"],
    # block operators (kinds/block.py): substitution and the Schur complement
    "block-product": [
        "input A : [2, 2]\ninput B : [2, 3]\ninput C : [3, 2]\ninput D : [3, 3]\ninput E : [2, 4]\ninput F : [3, 4]\n"
        "input x : [4, 2]\nexport y = (block([[A, B], [C, D]]) @ vstack(E, F)) @ x",
        "input A : [2, 2]\ninput D : [3, 3]\ninput W : [5, 5]\ninput E : [2, 2]\ninput G : [3, 2]\ninput H : [3, 3]\n"
        "input x : [5, 1]\nexport y = (W @ block([[A, zeros(2, 3)], [zeros(3, 2), D]]) @ block([[E, zeros(2, 3)], [G, H]])) @ x"],
    "inv-block-triangular": [
        "input A : [3, 3]\ninput C : [2, 3]\ninput D : [2, 2]\ninput x : [5, 2]\n"
        "export y = inv(block([[3 * eye(3) + A, zeros(3, 2)], [C, 3 * eye(2) + D]])) @ x",
        "input A : [3, 3]\ninput B : [3, 2]\ninput D : [2, 2]\ninput x : [5, 2]\n"
        "export y = inv(block([[3 * eye(3) + A, B], [zeros(2, 3), 3 * eye(2) + D]])) @ x"],
    "inv-block-schur": [
        "input h : [4]\ninput A : [2, 4]\ninput x : [6, 2]\n"
        "export y = inv(block([[diag(h) + 3 * eye(4), A.T], [A, zeros(2, 2)]])) @ x",
        "input P : [2, 2]\ninput Q : [2, 2]\ninput B : [4, 3]\ninput C : [3, 4]\ninput D : [3, 3]\ninput x : [7, 1]\n"
        "export y = inv(block([[kron(3 * eye(2) + P, 3 * eye(2) + Q), B], [C, 4 * eye(3) + D]])) @ x"],
    "logdet-block-triangular": [
        "input A : [3, 3]\ninput C : [2, 3]\ninput D : [2, 2]\n"
        "export y = logdet(block([[3 * eye(3) + A, zeros(3, 2)], [C, 3 * eye(2) + D]]))"],
    "logdet-block-schur": [
        "input h : [4]\ninput A : [2, 4]\nexport y = logdet(block([[diag(h) + 3 * eye(4), A.T], [A, zeros(2, 2)]]))"],
    # tridiag products with diag (kinds/tridiag.py): one tridiag, then solved by cyclic reduction
    "diag-tridiag": ["dim n = 6\ninput s : [n]\ninput l : [n - 1]\ninput d : [n]\ninput u : [n - 1]\ninput x : [n, 2]\n"
                     "export y = (diag(s) @ tridiag(l, d, u)) @ x",
                     "dim n = 5\ninput s : [n]\ninput l : [n - 1]\ninput d : [n]\ninput u : [n - 1]\ninput W : [4, n]\n"
                     "input x : [n, 2]\nexport y = (W @ diag(s) @ tridiag(l, d, u)) @ x"],
    "tridiag-diag": ["dim n = 6\ninput s : [n]\ninput l : [n - 1]\ninput d : [n]\ninput u : [n - 1]\ninput x : [n, 2]\n"
                     "export y = (tridiag(l, d, u) @ diag(s)) @ x",
                     "dim n = 5\ninput s : [n]\ninput l : [n - 1]\ninput d : [n]\ninput u : [n - 1]\ninput x : [n, 2]\n"
                     "export y = (tridiag(l, d, l) @ diag(s)).T @ x"],
    # FFT-diagonal algebra (kinds/fftdiag.py): circular convolutions, circulants and Kronecker
    # products of them, with sums, products, transposes, scalings and shifts
    "inv-fft-diagonal": [
        "input h : [3, 3]\ninput x : [20, 2]\nlet H = conv(h, 4, 5, mode=circular)\n"
        "export y = inv(H.T @ H + 0.5 * eye(20)) @ x",
        "input a : [3]\ninput b : [4]\ninput x : [12, 1]\n"
        "export y = inv(2 * kron(circulant(a), circulant(b)).T + 9 * eye(12)) @ x",
        "input h : [2]\ninput c : [6]\ninput x : [6, 1]\n"
        "export y = inv(conv(h, 6, mode=circular) @ circulant(c) + 5 * eye(6)) @ x"],
    "logdet-fft-diagonal": [
        "input h : [3, 2]\nlet H = conv(h, 5, 4, mode=circular)\nexport y = logdet(H @ H.T + eye(20))",
        "input a : [4]\ninput b : [3]\nexport y = logdet(kron(circulant(a) + 6 * eye(4), circulant(b).T) + eye(12))"],
    "inv-circulant": ["input c : [7]\ninput x : [7, 2]\nexport y = inv(circulant(c)) @ x",
                      "input c : [2, 6]\ninput x : [2, 6, 2]\nexport y = inv(circulant(c).T) @ x"],
    "inv-monarch": ["input L : [3, 3, 3]\ninput R : [3, 3, 3]\ninput x : [9, 2]\nexport y = inv(monarch(L, R)) @ x",
                    "input L : [2, 3, 3]\ninput R : [3, 2, 2]\ninput x : [6, 2]\nexport y = inv(monarch(L, R).T) @ x"],
    # ---- log-determinants
    "logdet-orthogonal": ["input V : [5, 2]\nexport y = logdet(householder(V))",
                          "export y = logdet(perm(2, 3) @ eye(6))",
                          "input Q : [3, 3] orthogonal\ninput x : [2]\nexport y = logdet(Q)"],
    "logdet-kron": [SQ + "export y = logdet(kron(A, B))", SQ + "export y = logdet(kron(A, B, C.T))",
                    "dim a\ndim b = 3\ninput A : [a, a]\ninput B : [b, b]\nexport y = logdet(kron(A, B))"],
    "logdet-blockdiag": [SQ + "input d : [2]\nexport y = logdet(blockdiag(A, B, diag(d)))"],
    "logdet-compose": [SQ + "export y = logdet(inv(A) @ (3 * eye(3) + C))",
                       SQ + "export y = logdet(A @ inv(C) @ A)"],
    "logdet-diag": ["input d : [5]\nexport y = logdet(diag(d))"],
    "logdet-scale": [SQ + "export y = logdet(-2 * A)", SQ + "export y = logdet(-1 * A)",
                     SQ + "export y = logdet(0.5 * kron(A, B))"],
    "logdet-transpose": [],      # the operand's transpose is pushed down first: tested alone below
    "logdet-inv": [SQ + "export y = logdet(inv(3 * eye(3) + A))"],
    "logdet-lemma": [LR + "export y = logdet(diag(d) + lowrank(U, V))",
                     SQ + "input U : [6, 1]\ninput V : [6, 1]\n"
                     "export y = logdet(kron(A, B) - 2 * lowrank(U, V))"],
    "logdet-monarch": ["input L : [3, 3, 3]\ninput R : [3, 3, 3]\nexport y = logdet(monarch(L, R))",
                       "input L : [2, 3, 3]\ninput R : [3, 2, 2]\nexport y = logdet(monarch(L, R).T)"],
    "logdet-triangular": ["input L : [4, 4] lower\nexport y = logdet(L)",
                          "input h : [5]\nexport y = logdet(conv(h))",
                          "input L : [2, 3, 3] upper\nexport y = logdet(L)"],
    # ---- diagonals
    "diag_of-diag": ["input d : [5]\nexport y = diag_of(diag(d))"],
    "diag_of-eye": ["export y = diag_of(eye(4))"],
    "diag_of-zeros": ["input d : [3]\nexport y = diag_of(zeros(3, 3))"],
    "diag_of-kron": [SQ + "export y = diag_of(kron(A, B, C))"],
    "diag_of-blockdiag": [SQ + "export y = diag_of(blockdiag(A, B))"],
    "diag_of-lowrank": [LR + "export y = diag_of(lowrank(U, V))"],
    "diag_of-sum": [LR + "export y = diag_of(diag(d) + lowrank(U, V))"],
    "diag_of-scale": [SQ + "export y = diag_of(-3 * kron(A, B))"],
    "diag_of-transpose": [],     # tested alone below
    "diag_of-compose-lowrank": [SQ + LR + "input W : [6, 6]\nexport y = diag_of(W @ lowrank(U, V) @ kron(A, B))",
                                LR + "input W : [6, 6]\nexport y = diag_of(lowrank(U, V) @ W)"],
    "diag_of-compose-dense": ["input P : [4, 2]\ninput Q : [2, 4]\nexport y = diag_of(P @ Q)"],
    # ---- traces
    "trace-kron": [SQ + "export y = trace(kron(A, B, C))"],
    "trace-blockdiag": [SQ + "export y = trace(blockdiag(A, B))"],
    "trace-sum": [LR + "export y = trace(diag(d) + lowrank(U, V))"],
    "trace-scale": [SQ + "export y = trace(0.5 * kron(A, B))"],
    "trace-transpose": [],       # tested alone below
    "trace-eye": ["dim n = 5\nexport y = trace(eye(n))",
                  "dim n\ninput d : [n]\nexport y = trace(eye(n)) + trace(diag(d))"],
    "trace-zeros": ["export y = trace(zeros(3, 3))"],
    "trace-diag": ["input d : [5]\nexport y = trace(diag(d))"],
    "trace-lowrank": [LR + "export y = trace(lowrank(U, V))"],
    "trace-compose-lowrank": [LR + "input W : [6, 6]\nexport y = trace(W @ lowrank(U, V) @ W)",
                              LR + "input W : [6, 6]\nexport y = trace(lowrank(U, V) @ W)"],
    "trace-compose-dense": ["input P : [4, 2]\ninput Q : [2, 4]\nexport y = trace(P @ Q)"],
    # ---- sums of diagonals
    "sum-diagonals": ["input d : [5]\ninput e : [5]\ninput x : [5, 2]\nexport y = (diag(d) + 2 * eye(5) - diag(e)) @ x",
                      LR + "input x : [6, 2]\nexport y = inv(diag(d) + 4 * eye(6) + lowrank(U, U)) @ x\n"
                      "export z = logdet(diag(d) + 4 * eye(6) + lowrank(U, U))"],
    # ---- materialization
    "dense-of-matrix": ["input W : [3, 4]\nexport y = dense(W)"],
    # ---- matrix functions (kinds/matfun.py; against scipy too in tests/test_matfun.py)
    "matfun-of-matrix-expression": ["input W : [4, 2]\ninput x : [4, 2]\nexport y = pow(W @ W.T, 2.5, eps=0.1) @ x"],
    "matfun-blockdiag": [MF + "export y = pow(blockdiag(S, T), -0.5) @ z\nexport w = exp(blockdiag(S, T)) @ z"],
    "matfun-blockdiag-batched": [MF + "input W : [2, 3, 3] psd\ninput u : [6, 2]\nexport y = log(blockdiag(W)) @ u"],
    "matfun-diag": ["input d : [4]\ninput x : [4, 2]\nexport y = exp(diag(d)) @ x"],
    "matfun-assumed-diag": ["input d : [4]\ninput x : [4, 2]\nexport y = pow(assume(diag(d), psd), 0.5, eps=0.1) @ x"],
    "matfun-eye": ["input x : [4, 2]\nexport y = exp(eye(4)) @ x"],
    "matfun-scaled-eye": ["input x : [4, 2]\nexport y = pow(2.5 * eye(4), -0.25) @ x + log(3 * eye(4)) @ x"],
    "pow-kron": [MF + "input v : [6, 2]\nexport y = pow(kron(S, R), -0.25) @ v"],
    "log-kron": [MF + "input v : [6, 2]\nexport y = log(kron(S, R)) @ v"],
    "exp-kron-sum": ["input A : [3, 3]\ninput B : [2, 2]\ninput x : [6, 2]\n"
                     "export y = exp(kron(A, eye(2)) + kron(eye(3), B)) @ x"],
    "pow-pow": [MF + "export y = pow(pow(S, 0.5), -0.5) @ x"],
    "inv-pow": [MF + "export y = inv(pow(S, 0.5, eps=0.01)) @ x"],
    "logdet-pow": [MF + "export y = logdet(pow(S, 0.75))"],
    "matfun-eye-lowrank": [LR + "input x : [6, 2]\nexport y = pow(0.5 * eye(6) + lowrank(U, U), -0.5) @ x\n"
                           "export z = exp(-1 * eye(6) + lowrank(U, U)) @ x"],
    "matfun-orthogonal": ["input Q : [4, 4] orthogonal\ninput d : [4]\ninput x : [4, 2]\n"
                          "export y = exp(Q @ diag(d) @ Q.T) @ x"],
}


# The linear-algebra rules: the generic tables and the rules kinds carry (Monarch, circulant).
RULES = list(LINALG_RULES) + [r for k in REGISTRY.values() for r in k.rules]


def test_every_linalg_rule_has_a_case():
    assert {r.name for r in RULES} == set(CASES)
    assert len({r.name for r in RULES}) == len(RULES), "rule names must be unique"
    assert all(r.identity for r in RULES)


@pytest.mark.parametrize("rule,src", [(r, s) for r, srcs in CASES.items() for s in srcs],
                         ids=[f"{r}-{i}" for r, srcs in CASES.items() for i in range(len(srcs))])
def test_rule_fires_and_is_sound(rule, src):
    prog = sound(src)
    assert rule in fired(prog), f"{rule} did not fire: {fired(prog)}"


def alone(rule_name, src):
    """Apply one rule alone (its own table); check it fired and is sound."""
    g = to_graph(src, "<test>", None, "float64")
    rule = next(r for r in all_rules() if r.name == rule_name)
    log = RewriteLog()
    out = simplify(g, log, rules=RuleTable([rule]))
    verify(out)
    assert log.fired.get(rule_name, 0) >= 1
    for seed in (0, 1):
        inputs = structured_inputs(g, "y", seed)
        np.testing.assert_allclose(dense_eval(out, out.exports["y"], inputs),
                                   dense_eval(g, g.exports["y"], inputs), rtol=1e-10, atol=1e-10)
    return out


@pytest.mark.parametrize("rule,fn", [("logdet-transpose", "logdet"), ("diag_of-transpose", "diag_of"),
                                     ("trace-transpose", "trace")])
def test_transpose_rules_alone(rule, fn):
    out = alone(rule, f"input A : [2, 2]\ninput B : [3, 3]\nexport y = {fn}(kron(A, B).T)")
    assert "transpose" not in {out.kind(v) for v in out.live()}


# ---- what the rules build ------------------------------------------------------------------------

def kinds_after(src):
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    return prog, {prog.optimized.kind(v) for v in prog.optimized.live()}


def test_woodbury_solves_only_an_r_by_r_system():
    prog, kinds = kinds_after(LR + "input x : [6, 3]\nexport y = inv(diag(d) + lowrank(U, V)) @ x")
    invs = [v for v in prog.optimized.live() if prog.optimized.kind(v) == "inv"]
    assert len(invs) == 1 and prog.optimized.type(invs[0]).rows == 2      # the capacitance, r x r
    assert "lowrank" not in kinds


def test_kron_inverse_factors_never_form_the_product():
    src = "dim n = 16\ninput A : [n, n]\ninput B : [n, n]\ninput x : [n * n, 2]\n" \
          "export y = inv(kron(A, B)) @ x\nexport z = logdet(kron(A, B))"
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    g = prog.primitive
    sizes = [int(np.prod([g.dims.value(d) for d in g.type(v).shape])) for v in g.live()]
    assert max(sizes) <= 512                      # x itself; never a 256 x 256 matrix
    kinds = {g.kind(v) for v in g.live()}
    assert "solve" in kinds and "slogdet" in kinds and "eye" not in kinds


def test_orthogonal_inverse_is_a_transpose_no_solve():
    prog = sound("input V : [6, 3]\ninput x : [6, 2]\nexport y = inv(householder(V) @ perm(2, 3)) @ x")
    kinds = {prog.primitive.kind(v) for v in prog.primitive.live()}
    assert "solve" not in kinds and "cholesky" not in kinds


def test_explicit_method_is_left_alone():
    prog, kinds = kinds_after("input A : [2, 2]\ninput B : [3, 3]\ninput x : [6, 2]\n"
                              "export y = inv(kron(3 * eye(2) + A, 3 * eye(3) + B), method=lu) @ x")
    assert "inv-kron" not in fired(prog) and "kron" in kinds


def test_woodbury_declines_without_a_cheap_rest():
    prog, kinds = kinds_after("input W : [6, 6]\ninput U : [6, 2]\ninput V : [6, 2]\ninput x : [6, 2]\n"
                              "export y = inv(3 * eye(6) + W + lowrank(U, V)) @ x")
    assert "inv-woodbury" not in fired(prog)
    sound("input W : [6, 6]\ninput U : [6, 2]\ninput V : [6, 2]\ninput x : [6, 2]\n"
          "export y = inv(3 * eye(6) + W + lowrank(U, V)) @ x")


def test_non_square_factors_decline():
    # a Kronecker product of non-square factors is singular: a compile error, not a rewrite
    with pytest.raises(opdsl.OpdslError, match="singular"):
        opdsl.compile("input A : [2, 3]\ninput B : [3, 2]\ninput x : [6, 2]\nexport y = inv(kron(A, B)) @ x")
    prog, _ = kinds_after("input A : [2, 3]\ninput B : [3, 2]\nexport y = logdet(kron(A, B))")
    assert "logdet-kron" not in fired(prog)
