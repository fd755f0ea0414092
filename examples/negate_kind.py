"""A new operator kind in one file: `negate(A)`, the operator -A.

This is the worked example of docs/architecture.md ("Add a kind"): a `Kind` subclass registered
with `@register` holds everything the compiler needs — how the language builds it (here the
default: one operator operand), its shape rule and properties, its dense meaning (the oracle of
every test), its cost, its lowering to primitives and its transpose.  Nothing else in opdsl
changes: importing this file makes `negate(...)` available in `.op` files, in `@opdsl.jit`
functions (`opdsl.negate`), on every backend, in `opdsl explain` and in the catalogue.

    import runpy; runpy.run_path("examples/negate_kind.py")   # registers the kind
    opdsl.compile("input A : [4, 3]\\ninput x : [3, 2]\\nexport y = negate(A) @ x")

tests/test_kind_plugin.py copies this file to a temporary directory, imports it and runs the
catalogue on it (every backend, float32 and float64).
"""
from opdsl.kinds.base import Kind, OpType, op_type, register

# -A keeps these properties of A (a negated psd matrix is not psd; a negated orthogonal one is)
KEEPS = frozenset({"symmetric", "diagonal", "orthogonal", "invertible", "lower", "upper"})


@register
class Negate(Kind):
    """`negate(A)`: -A, applied as -(A @ x)."""

    name = "negate"
    constructors = ("negate",)
    arity = (1, 1)
    doc = "negate(A): the operator -A"
    examples = ("input A : [4, 3]\ninput x : [3, 2]\nexport y = negate(A) @ x",
                "dim n = 5\ninput A : [n, n]\ninput B : [n, n]\ninput x : [n]\nexport y = (negate(A) @ B).T @ x")

    def infer(self, g, ops, attrs, span):
        t = op_type(g, ops[0], span)
        return OpType(t.rows, t.cols, t.batch, t.dtype, frozenset(t.props & KEEPS))

    def dense(self, g, v, vals):
        return -vals[0]

    def flops(self, g, v, k):
        a = g[v].operands[0]
        return g.spec(a).flops(g, a, k) + g.type(v).rows * k

    def lower(self, lw, v, x):
        return lw.scale(lw.apply(lw.src[v].operands[0], x), -1.0)

    def transpose(self, g, v):
        n = g[v]
        return g.add("negate", [g.add("transpose", [n.operands[0]], span=n.span)], span=n.span)
