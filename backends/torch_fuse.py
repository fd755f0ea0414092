"""The torch backend's fusion (issue 20, item 1): a sum whose term is a product is written as one
fused library call, and an elementwise result is written into an operand that dies there, instead
of a fresh allocation.

`plan(g, root)` is a pure function of one export's primitive graph: for each node it rewrites,
the template of its expression and the nodes the template reads (the rewritten node's operands,
or a fused product's operands), and the set of products folded into a rewrite (not emitted).
The rules are the table RULES, tried in order; the first that applies wins.

Why in place, and when it is safe.  A fresh [8, 16384, 256] float32 result costs a 128 MB
allocation that the C library maps anew and the kernel then page-faults in (65 ms, against 7 ms
for the same elementwise op into memory already touched, measured in the previous round); a
dead temporary's memory is already touched.  The accumulator `acc` of a rewrite must be:
- *dead* after the node: used once, by it, and not the export's result;
- *fresh*: computed by a kind in FRESH — a new tensor, never a view of an argument, so the
  caller's tensors are never written, and one whose autograd does not save it (matmul, mul, add,
  sub and div save their inputs; exp or relu would save their result, and writing into it would
  fail their backward) — or a view (VIEWS) of a fresh value that dies there; a rewrite's result is
  its accumulator, so it is fresh too (except exp_'s: UNARY_INPLACE);
- of the node's shape and dtype (an in-place op neither broadcasts nor promotes its target).
Then `acc.op_(...)` computes what `acc op ...` did, and autograd is unchanged: the ops used
(add_, sub_, mul_ by a number, addmm_, addcmul_) save only their other operands, and div_'s
backward reads its result, not the overwritten dividend (checked by gradcheck in the tests).

Measured (2 threads, torch 2.13 CPU, medians): d·x + U (Vᵀ x), n = 16384, 256 columns:
`t2.addmm_(U, t4)` 10.8 ms, the unfused code 13.9 ms, torch.addmm (a fresh result) 12.1 ms,
`t5.addcmul_(d, x)` 12.1 ms — so a product term prefers addmm_ into the elementwise term; the
Householder product n = k = 1024 (float64, 256 columns) 44.7 → 36.2 ms with its blocks' x − U W
as torch.addmm; FAVOR+'s feature-map exps at L = 16384 108 → 38 ms in place (a fresh 134 MB
result per call was page-faulted in each time).

Not done: a matmul of rank > 2 stays `@` (baddbmm_ needs exactly three dims and a view of the
accumulator as such); its sum is an add_ into the accumulator instead.  A value read by an earlier
consumer that autograd saves it for (amax, a matmul) is never overwritten, even after its last
read: FAVOR+'s `scores - max` keeps a fresh result for that reason.
Under torch.func.vmap over some arguments only, an accumulator that is not batched cannot take a
batched operand in place: compile with backend options fuse=False there (docs/backends.md).
"""
from __future__ import annotations

from collections import Counter

from .pyexpr import number

# kinds whose torch expression returns a new tensor and whose autograd saves only their inputs
FRESH = frozenset({"matmul", "mul", "add", "sub", "div", "scale", "shift"})
# kinds that return a view of their operand (or a copy): fresh when the operand is fresh and dies there
VIEWS = frozenset({"reshape", "permute", "swap"})


# (kind, which operand is the accumulator, what the other operand must be, template, in place):
# the template's {0} is the accumulator, {1}, {2} the other operand, or the operands of the product
# folded into the call when `inner` names one.  In-place rules need a dead fresh accumulator; the
# others (a fresh result) take any accumulator of the result's dtype (torch.addmm: of rank <= 2).
RULES = (
    ("add", 0, "mm", "{0}.addmm_({1}, {2})", True),
    ("add", 1, "mm", "{0}.addmm_({1}, {2})", True),
    ("sub", 0, "mm", "{0}.addmm_({1}, {2}, alpha=-1)", True),
    ("add", 0, "mul", "{0}.addcmul_({1}, {2})", True),
    ("add", 1, "mul", "{0}.addcmul_({1}, {2})", True),
    ("sub", 0, "mul", "{0}.addcmul_({1}, {2}, value=-1)", True),
    ("add", 0, None, "{0}.add_({1})", True),
    ("add", 1, None, "{0}.add_({1})", True),
    ("sub", 0, None, "{0}.sub_({1})", True),
    ("div", 0, None, "{0}.div_({1})", True),
    ("scale", 0, None, "{0}.mul_({c})", True),           # the factor as scale's own entry writes it
    ("shift", 0, None, "{0}.add_({cnum})", True),        # and as shift's (inf spelled float('inf'))
    # a - B @ C whose a lives on (the Householder product's x, read again by the next block): one
    # call instead of a product and a subtraction.  (A sum needs no such rule: its product is a
    # dead fresh accumulator, taken by add_ above.)
    ("sub", 0, "mm", "torch.addmm({0}, {1}, {2}, alpha=-1)", False),
)

# elementwise functions applied in place to a dead fresh operand; autograd saves their result (exp)
# or nothing (neg), never the operand that is overwritten.  The result of exp_ is not fresh: a later
# in-place op on it would overwrite what exp's backward reads.
UNARY_INPLACE = {("unary", "exp"): ("{0}.exp_()", False), ("unary", "neg"): ("{0}.neg_()", True)}

# a rule's `inner`: the product's kind, and the rank its operands must have (addmm_: matrices)
INNER = {"mm": ("matmul", 2), "mul": ("mul", None)}


def _is(g, v, inner) -> bool:
    kind, rank = INNER[inner]
    n = g[v]
    return n.kind == kind and (rank is None or all(len(g.type(o).shape) == rank for o in n.operands))


def _constant(c) -> dict:
    """A node's constant c spelled for the templates: {c} as repr, {cnum} as a float."""
    if c is None:
        return {}
    try:
        return {"c": repr(c), "cnum": number(c)}
    except (TypeError, ValueError):        # not a real number: scale's repr only
        return {"c": repr(c)}


def plan(g, root) -> tuple[dict[int, tuple[str, tuple[int, ...]]], set[int]]:
    """({node: (template, the nodes it reads)}, {products folded into a template}) for the export
    whose result is `root`."""
    live = g.live([root])
    uses = Counter(o for v in live for o in g[v].operands)
    uses[root] += 1                               # the result is returned: never written into
    fresh: set[int] = set()
    rewrites: dict[int, tuple[str, tuple[int, ...]]] = {}
    folded: set[int] = set()

    def accumulates(v, n, inplace) -> bool:
        t = g.type(v)
        if v in folded or t.dtype != n.type.dtype:
            return False
        if not inplace:
            return len(t.shape) <= 2
        return v in fresh and uses[v] == 1 and tuple(t.shape) == tuple(n.type.shape)

    for v in live:
        n = g[v]
        if n.kind in VIEWS and n.operands[0] in fresh and uses[n.operands[0]] == 1:
            fresh.add(v)
            continue
        unary = UNARY_INPLACE.get((n.kind, n.attrs.get("fn")))
        if unary and accumulates(n.operands[0], n, True):
            template, stays_fresh = unary
            rewrites[v] = (template, (n.operands[0],))
            if stays_fresh:
                fresh.add(v)
            continue
        if n.kind not in FRESH:
            continue
        fresh.add(v)
        for kind, acc_at, inner, template, inplace in RULES:
            if kind != n.kind or acc_at >= len(n.operands) or not accumulates(n.operands[acc_at], n, inplace):
                continue
            acc = n.operands[acc_at]
            others = [o for i, o in enumerate(n.operands) if i != acc_at]
            if inner is None:
                rewrites[v] = (template.format("{0}", "{1}", **_constant(n.attrs.get("c"))), (acc, *others))
                break
            (other,) = others
            if uses[other] == 1 and other != acc and _is(g, other, inner) and other not in folded:
                folded.add(other)
                rewrites[v] = (template, (acc, *g[other].operands))
                break
    return rewrites, folded
