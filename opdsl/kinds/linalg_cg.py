"""inv(A, method=cg) @ x: preconditioned conjugate gradients (docs/linalg.md, docs/kernels.md),
and what the other loops (slq, pivchol) share with it.

The `cg` primitive carries a loop body, a primitive graph that applies A through A's own lowering
(operator_body); the parts of A cheaper formed once than applied at every step are formed before
the loop (loop_matrices).  precond=pivchol applies (L Lᵀ + D)⁻¹ by Woodbury (pivchol_inverse).
"""
from __future__ import annotations

from .base import Kind, sym_prod
from .linalg_analysis import triangular
from .linalg_solve import as_dtype, leaf_diagonal, leaf_flops, materialize

# The most values [*batch, rows, cols] an operator applied in a loop may be formed as a matrix
# (512 MB in float32): a kernel(X, X) at n = 10,000 (1e8 values) is formed once and applied by
# matmul (GPyTorch does the same below its memory limit), one at n = 20,000 is evaluated again
# in tiles at every step.  Measured in benchmarks/results.md ("kernels").
LOOP_MATRIX_VALUES = 1 << 27
PIVCHOL_RANK = 15          # GPyTorch's default preconditioner size
AUTO_CG_MAXITER = 1000     # the steps of a CG the compiler chooses (method=auto)


class Body:
    """A primitive graph computing A @ p for the `cg` primitive: the loop body.

    `loop` is the arg node of p; `captures` are arg nodes standing for values computed
    outside the loop (the cg node's operands after b and the preconditioner), in order.
    Compared by identity: two cg nodes never share a body."""

    def __init__(self, graph, loop, root, captures):
        self.graph, self.loop, self.root, self.captures = graph, loop, root, tuple(captures)

    def __repr__(self):
        return f"<body: {len(self.graph.live([self.root]))} primitives>"


def loop_matrices(g, a, k, iters):
    """The operator nodes under a (a itself included) that are cheaper formed as a matrix once
    than applied `iters` times to k columns by their structure: forming costs the kind's matrix
    FLOPs (Kind.matrix_flops, else n applications), each step 2·rows·cols·k instead of the kind's
    own apply FLOPs.  The smallest such parts: a node is formed only when no part of it is (in
    kernel(X, X) + σ² I the kernel, not the sum with its n x n identity).  Only where every size is
    known and the matrix has at most LOOP_MATRIX_VALUES values.  (node, reason) pairs, the reason
    for `opdsl explain`."""
    from ..cost import Evaluator
    ev = Evaluator(g.dims)
    out = []

    def visit(u):
        if g.spec(u).produces != "op" or g[u].is_input:
            return False
        below = [visit(o) for o in g[u].operands]
        if any(below):
            return True
        t = g.type(u)
        size = g.dims.value(t.rows * t.cols * sym_prod(t.batch))
        if size is None or int(size) > LOOP_MATRIX_VALUES:
            return False
        size = int(size)
        apply = ev.num(g.spec(u).flops(g, u, k))
        build = ev.num(leaf_flops(g, u))
        step = 2.0 * size * ev.num(k)
        if iters * apply <= build + iters * step:
            return False
        out.append((u, f"{g[u].kind} formed once as a matrix ({size:,} values, at most {LOOP_MATRIX_VALUES:,}) "
                       f"before it: {build:.3g} FLOPs, then {step:.3g} per step instead of {apply:.3g}"))
        return True

    visit(a)
    return out


def operator_body(lw, a, like, dt, iters, loop="CG"):
    """(Body applying operator a (or the sum of the operators of a tuple a) to a loop variable
    shaped like primitive `like` in dtype dt, the values it captures from outside): the loop body
    of cg, slq and pivchol (`loop` names which, for `opdsl explain`), run up to `iters` times.
    Tensors A needs (other than arguments) are computed once, outside the loop, and captured; so
    are the matrices of the parts of A that loop_matrices finds cheaper formed once."""
    src = lw.src
    body = type(lw)(src)          # a lowerer of the same class as the caller's, for the loop body
    body._span = lw._span
    body.out.meta["choices"] = lw.out.meta.setdefault("choices", [])
    captures, outer = [], []
    k = lw.shape(like)[-1]
    terms = a if isinstance(a, tuple) else (a,)
    for u, why in [c for t in terms for c in loop_matrices(src, t, k, iters)]:
        m = materialize(lw, u, dt)
        arg = body.prim("arg", name=f"_c{len(captures)}", shape=lw.shape(m), dtype=lw.dtype(m), role="capture")
        body._dense[u] = arg
        captures.append(arg)
        outer.append(m)
        lw.note(f"{loop} loop: {why}")
    for t in src.live(list(terms)):
        if src.spec(t).produces == "tensor" and not src[t].is_input:
            p = lw.tensor(t)
            arg = body.prim("arg", name=f"_c{len(captures)}", shape=lw.shape(p), dtype=lw.dtype(p), role="capture")
            body._tensors[t] = arg
            captures.append(arg)
            outer.append(p)
    loop = body.prim("arg", name="_p", shape=lw.shape(like), dtype=dt, role="loop")
    root = body.apply(terms[0], loop)
    for t in terms[1:]:
        root = body.add(root, body.apply(t, loop))
    body.out.exports["out"] = root
    live = set(body.out.live([root]))
    used = [(c, o) for c, o in zip(captures, outer) if c in live]
    return Body(body.out, loop, root, [c for c, _ in used]), [o for _, o in used]


def sum_terms(g, a) -> tuple:
    """The terms of a sum node, or (a,) for any other operator."""
    return tuple(g[a].operands) if g[a].kind == "sum" else (a,)


def split_diagonal(g, a):
    """(S terms, D terms) of a = S + D with D diagonal (what precond=pivchol needs: the pivoted
    Cholesky factor of S plus D), or None when a is not such a sum."""
    terms = sum_terms(g, a)
    if terms == (a,):
        return None
    diag = tuple(o for o in terms if triangular(g, o) == "diagonal")
    rest = tuple(o for o in terms if o not in diag)
    return (rest, diag) if diag and rest else None


def diagonal_of_terms(lw, terms, dt):
    """The diagonal [n] of the sum of `terms`: each diagonal term applied to ones (D @ 1), each
    other term's own diagonal (a kernel's is its outputscale; leaf_diagonal)."""
    out = None
    for t in terms:
        if triangular(lw.src, t) == "diagonal":
            n = lw.src.type(t).rows
            d = lw.reshape(lw.apply(t, lw.prim("fill", shape=(n, 1), value=1.0, dtype=dt)), (n,))
        else:
            d = leaf_diagonal(lw, t)
        d = as_dtype(lw, d, dt)
        out = d if out is None else lw.add(out, d)
    return out


def jacobi_of(lw, a, dt):
    """For A with a sparse part (Kind.solve_iteratively) whose terms all have their diagonal at hand
    (diagonal terms, kinds with a leaf_diagonal of their own): the function giving A's inverse
    diagonal [n, 1], CG's Jacobi preconditioner (for a graph Laplacian plus a shift it beats a
    low-rank pivoted Cholesky, whose 15 columns capture little of a spread spectrum).  Else None."""
    g = lw.src
    if not any(g.spec(u).solve_iteratively for u in g.live([a])):
        return None
    terms = sum_terms(g, a)
    if not all(triangular(g, t) == "diagonal" or type(g.spec(t)).leaf_diagonal is not Kind.leaf_diagonal
               for t in terms):
        return None

    def inverse_diagonal():
        d = diagonal_of_terms(lw, terms, dt)
        return lw.prim("unary", lw.reshape(d, (g.type(a).rows, 1)), fn="recip")
    return inverse_diagonal


def pivchol_inverse(lw, a, dt, rank):
    """(the inverse diagonal [n, 1] of D, U [n, r]) with (L Lᵀ + D)⁻¹ = D⁻¹ − U Uᵀ for L the rank-r
    pivoted Cholesky factor of S, a = S + D (Woodbury: U = D⁻¹ L C⁻ᵀ, C Cᵀ = I + Lᵀ D⁻¹ L).
    GPyTorch's default preconditioner for kernel(X, X) + σ² I (Gardner et al. 2018)."""
    done = lw.__dict__.setdefault("_pivchol", {})      # one factor per operand: cg and slq of one K share it
    key = (a, dt, int(rank))
    if key not in done:
        done[key] = _pivchol_inverse(lw, a, dt, rank)
    return done[key]


def _pivchol_inverse(lw, a, dt, rank):
    rest, diag = split_diagonal(lw.src, a)
    n = lw.src.type(a).rows
    col = lw.prim("fill", shape=(n, 1), value=0.0, dtype=dt)      # the shape of one column S e_j
    body, outer = operator_body(lw, rest, col, dt, rank, "pivoted Cholesky")
    L = lw.prim("pivchol", diagonal_of_terms(lw, rest, dt), *outer, body=body, rank=int(rank))
    lw.note(f"CG preconditioned by the rank-{int(rank)} pivoted Cholesky factor L of S plus D, "
            f"applied as D⁻¹ − U Uᵀ (Woodbury)")
    dinv = lw.prim("unary", lw.reshape(diagonal_of_terms(lw, diag, dt), (n, 1)), fn="recip")
    dl = lw.mul(dinv, L)                                            # D⁻¹ L [n, r]
    r = lw.shape(L)[-1]
    c = lw.prim("cholesky", lw.add(lw.prim("eye", n=r, dtype=dt), lw.matmul(lw.swap(L), dl)))
    ut = lw.prim("solve_triangular", c, lw.swap(dl), upper=False)  # C⁻¹ Lᵀ D⁻¹ [r, n]
    return dinv, lw.swap(ut)


def lower_cg(lw, v, x, opts=None):
    """inv(A, method=cg) @ x for the inv node v: a `cg` primitive whose body applies A through its
    own lowering.  `opts`: tol, maxiter, precond (and rank) when they are not the node's own
    (method=auto)."""
    n = lw.src[v]
    opts = opts or n.attrs

    def jacobi():                       # the inverse of the diagonal operand, as a column
        d = lw.prim("unary", lw.tensor(n.operands[1]), fn="recip")
        return lw.reshape(d, lw.shape(d) + (1,))
    return cg_solve(lw, n.operands[0], x, opts, jacobi)


def cg_solve(lw, a, x, opts, jacobi=None):
    """A⁻¹ x by conjugate gradients for the operator node a (opts: tol, maxiter, precond, rank);
    `jacobi`: where precond is jacobi, a function giving the inverse diagonal [n, 1] (called after
    the body is built, so that the generated code reads in that order)."""
    dt = lw.src.type(a).dtype or lw.dtype(x)
    x = as_dtype(lw, x, dt)
    precond = opts.get("precond", "none")
    ops = [x]
    if precond == "pivchol" and split_diagonal(lw.src, a) is None:   # the rules changed A's form
        lw.note(f"precond=pivchol: A is no longer S + D after the rewrites ({lw.src[a].kind}); CG runs unpreconditioned")
        precond = "none"
    if precond == "pivchol":
        ops.extend(pivchol_inverse(lw, a, dt, opts["rank"]))
    body, outer = operator_body(lw, a, x, dt, int(opts["maxiter"]))
    if precond == "jacobi":
        ops.append(as_dtype(lw, jacobi(), dt))
    return lw.prim("cg", *ops, *outer, body=body, tol=float(opts["tol"]), maxiter=int(opts["maxiter"]),
                   precond=precond)
