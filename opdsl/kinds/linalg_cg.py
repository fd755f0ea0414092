"""inv(A, method=cg) @ x: preconditioned conjugate gradients (docs/linalg.md).

The operand is never materialized: the `cg` primitive carries a loop body, a primitive graph
that applies A through A's own lowering.
"""
from __future__ import annotations

from .linalg_solve import as_dtype


class Body:
    """A primitive graph computing A @ p for the `cg` primitive: the loop body.

    `loop` is the arg node of p; `captures` are arg nodes standing for values computed
    outside the loop (the cg node's operands after b and the preconditioner), in order.
    Compared by identity: two cg nodes never share a body."""

    def __init__(self, graph, loop, root, captures):
        self.graph, self.loop, self.root, self.captures = graph, loop, root, tuple(captures)

    def __repr__(self):
        return f"<body: {len(self.graph.live([self.root]))} primitives>"


def operator_body(lw, a, like, dt):
    """(Body applying operator a to a loop variable shaped like primitive `like` in dtype dt, the
    values it captures from outside): the loop body of cg and slq.  Tensors A needs (other than
    arguments) are computed once, outside the loop, and captured."""
    src = lw.src
    body = type(lw)(src)          # a lowerer of the same class as the caller's, for the loop body
    body._span = lw._span
    captures, outer = [], []
    for t in src.live([a]):
        if src.spec(t).produces == "tensor" and not src[t].is_input:
            p = lw.tensor(t)
            arg = body.prim("arg", name=f"_c{len(captures)}", shape=lw.shape(p), dtype=lw.dtype(p), role="capture")
            body._tensors[t] = arg
            captures.append(arg)
            outer.append(p)
    loop = body.prim("arg", name="_p", shape=lw.shape(like), dtype=dt, role="loop")
    root = body.apply(a, loop)
    body.out.exports["out"] = root
    live = set(body.out.live([root]))
    used = [(c, o) for c, o in zip(captures, outer) if c in live]
    return Body(body.out, loop, root, [c for c, _ in used]), [o for _, o in used]


def lower_cg(lw, v, x):
    """inv(A, method=cg) @ x: a `cg` primitive whose body applies A through its own lowering."""
    n = lw.src[v]
    a = n.operands[0]
    dt = lw.src.type(a).dtype or lw.dtype(x)
    x = as_dtype(lw, x, dt)
    body, outer = operator_body(lw, a, x, dt)
    ops = [x]
    if n.attrs.get("precond") == "jacobi":
        d = lw.prim("unary", lw.tensor(n.operands[1]), fn="recip")
        ops.append(lw.reshape(d, lw.shape(d) + (1,)))
    return lw.prim("cg", *ops, *outer, body=body, tol=float(n.attrs["tol"]), maxiter=int(n.attrs["maxiter"]),
                   precond=n.attrs.get("precond", "none"))
