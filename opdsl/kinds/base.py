"""The operator-kind registry.

One ``Kind`` subclass per operator kind holds everything about it: how the
language builds it (``construct``), its shape rule and properties (``infer``),
its cost (``flops``), its dense numpy meaning (``dense``), its lowering to
primitives (``lower``) and its transpose (``transpose``).  Passes, the
reference evaluator, the cost model and both front ends reach a kind only
through ``REGISTRY``; nothing else switches on kind names.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import sympy as sp

from ..dims import fmt_shape
from ..errors import ShapeError, TypeError_
from ..ir import OpType, TensorType

REGISTRY: dict[str, "Kind"] = {}
CONSTRUCTORS: dict[str, "Kind"] = {}   # language / Python constructor name -> kind

DTYPES = ("float32", "float64", "float16", "bfloat16")
_RANK = {"float16": 0, "bfloat16": 0, "float32": 1, "float64": 2}


def register(cls):
    """Class decorator: instantiate the kind and enter it in the registry."""
    inst = cls()
    REGISTRY[inst.name] = inst
    for c in inst.constructors:
        CONSTRUCTORS[c] = inst
    return cls


def join_dtype(*dtypes):
    """The widest of the given dtypes (None = no data of its own, e.g. eye)."""
    real = [d for d in dtypes if d is not None]
    if not real:
        return None
    return max(real, key=lambda d: _RANK[d])


@dataclass
class Val:
    """A value seen by a constructor: a graph node, a number, a dim or a bare word."""

    tag: str            # "node" | "num" | "dim" | "word" | "bool"
    v: Any
    span: Any = None


def node_memo(g, key, compute):
    """compute(), once per graph and key (a node id and the question asked about it).

    Analyses that recurse into their operands (FLOPs, triangularity, singularity) must not
    visit a shared operand once per path through the DAG: `let a_i = inv(a_{i-1}) + a_{i-1}`
    has 2**i paths to a_0.  A node never changes once added (hash-consing; a rename changes
    only its name), so an answer stays valid for the graph's life; a copy of the graph with
    other dim values (reference._with_free_dims) starts a memo of its own."""
    d = getattr(g, "__dict__", None)
    if d is None:
        return compute()
    memo = d.get("_node_memo")
    if memo is None or memo[0] is not g.dims:
        memo = d["_node_memo"] = (g.dims, {})
    try:
        return memo[1][key]
    except KeyError:
        pass
    except TypeError:             # an unhashable argument: nothing to share
        return compute()
    out = memo[1][key] = compute()
    return out


def _memoized_flops(fn):
    @functools.wraps(fn)
    def flops(self, g, v, *args, **kwargs):
        if kwargs:
            return fn(self, g, v, *args, **kwargs)
        return node_memo(g, (fn, v) + args, lambda: fn(self, g, v, *args))
    flops.memoized = True
    return flops


class Kind:
    name: str = ""
    constructors: tuple = ()      # names in the language and in opdsl.<name>
    arity: tuple = (0, 0)         # (min, max); max None = variadic
    # The names of the positional parameters, so that a keyword may give one (`conv(h, n=K)`, as in
    # Python), and the keyword-only options; Builder.bind checks keywords against both.  None: the
    # kind checks its keywords itself.
    params: tuple | None = None
    options: tuple = ()
    produces: str = "op"          # "op" or "tensor"
    doc: str = ""
    # Catalogue entries: small complete .op programs that use this kind.  The
    # catalogue test compiles each on every backend and compares with the dense
    # reference; a kind with no example fails the catalogue.
    examples: tuple = ()

    def __init_subclass__(cls, **kwargs):
        # every kind's FLOPs are memoized per node (node_memo): kinds add up their operands' costs
        super().__init_subclass__(**kwargs)
        fn = cls.__dict__.get("flops")
        if fn is not None and not getattr(fn, "memoized", False):
            cls.flops = _memoized_flops(fn)

    def sample(self, n: int, tag: str):
        """A square n x n instance for random compositions: (declarations, expression) or None.

        `tag` makes declared names unique; declarations use only concrete sizes.
        """
        return None

    # ---- construction -------------------------------------------------
    def construct(self, b, args: list[Val], kwargs: dict[str, Val], span):
        """Default: every positional argument is an operator operand."""
        b.no_kwargs(self, kwargs)
        b.arity(self, args, span)
        return b.add(self.name, [b.op(a) for a in args], span=span)

    # ---- typing -------------------------------------------------------
    def infer(self, g, ops, attrs, span):
        raise NotImplementedError(self.name)

    # ---- meaning ------------------------------------------------------
    def dense(self, g, v, vals):
        """The numpy meaning, given the numpy values of the operands."""
        raise NotImplementedError(self.name)

    def flops(self, g, v, k):
        """FLOPs to apply this operator to an [n, k] tensor (sympy, operands included)."""
        raise NotImplementedError(self.name)

    def lower(self, lw, v, x):
        """Primitive id of (this operator) @ x, x of shape [*b, n, k]."""
        raise NotImplementedError(self.name)

    def transpose(self, g, v):
        """An operator equal to the transpose of node v, or None to keep transpose(v)."""
        return None

    # ---- structure the passes read -------------------------------------
    def operator_form(self, g, v, span):
        """A tensor kind: the operator equal to dense(v) for a matrix v, built from v's operands so
        that the rules see their structure (dense(X @ Y) = X dense(Y)), or None."""
        return None

    def chain_factor(self, g, v):
        """An operator kind: how reassociation (passes/reassociate.py) may merge it with a
        neighbouring factor of a chain: "lowrank" (with its rank), "dense" or "diag", else
        ("other", 0).  The rank is a sympy size."""
        return "other", 0


# ---- shared helpers for shape rules ------------------------------------

def op_type(g, v, span, what="operand"):
    t = g.type(v)
    if not t.is_op:
        raise TypeError_(f"{what} is a tensor {t}, not an operator", span)
    return t


def require_equal(g, a, b, span, message, hint=None):
    if not g.dims.equal(a, b):
        raise ShapeError(message, span, hint)


def check_square(g, t, span, what):
    require_equal(g, t.rows, t.cols, span, f"{what} must be square, got {t}")


def tensor_of_rank(g, v, ranks, span, what):
    t = g.type(v)
    if t.is_op:
        raise TypeError_(f"{what} must be a tensor, got an operator {t}", span)
    if len(t.shape) not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ShapeError(f"{what} must have rank {want}, got {fmt_shape(t.shape)}", span)
    return t


def sym_prod(xs):
    out = sp.Integer(1)
    for x in xs:
        out = out * x
    return out


__all__ = ["Kind", "REGISTRY", "node_memo", "CONSTRUCTORS", "register", "Val", "OpType", "TensorType",
           "join_dtype", "op_type", "require_equal", "check_square", "tensor_of_rank", "sym_prod",
           "DTYPES"]
