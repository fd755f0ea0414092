"""The operator-kind registry.

One ``Kind`` subclass per operator kind holds everything about it: how the
language builds it (``construct``), its shape rule and properties (``infer``),
its cost (``flops``), its dense numpy meaning (``dense``), its lowering to
primitives (``lower``), its transpose (``transpose``), its own rewrite rules
(``rules``), and the facts the passes ask of it (the hooks below ``rules``:
how reassociation takes it apart and merges it, its triangular structure, why
it is singular, whether its inverse is cheap, how a linear-algebra leaf of it
is factored).  Every hook has a default, so a new kind states only what holds
for it.  Passes, the reference evaluator, the cost model and both front ends
reach a kind only through ``REGISTRY``; nothing else switches on kind names.
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
# integer tensors hold indices (`input idx : [k] int64`), read by a kind that declares index_operands
# (select); nothing computes in them
INDEX_DTYPES = ("int32", "int64")
_RANK = {"float16": 0, "bfloat16": 0, "float32": 1, "float64": 2}


def register(cls):
    """Class decorator: instantiate the kind and enter it in the registry."""
    inst = cls()
    REGISTRY[inst.name] = inst
    for c in inst.constructors:
        CONSTRUCTORS[c] = inst
    return cls


def unregister(name: str) -> None:
    """Remove a kind and its constructors from the registry (a plugin's or a test's kind)."""
    inst = REGISTRY.pop(name)
    for c in inst.constructors:
        if CONSTRUCTORS.get(c) is inst:
            del CONSTRUCTORS[c]


def default_dtype(g) -> str:
    """The dtype of a value made of constants alone: the program's default (compile(dtype=...))."""
    return g.meta.get("dtype") or "float32"


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

    def dense_flops(self, g, v, dense):
        """FLOPs of node v when every operator's matrix is given (cost.dense_flops, with `dense` a
        cost.DenseCost): a tensor kind's own FLOPs, nothing for an operator."""
        return self.flops(g, v) if self.produces == "tensor" else 0

    def dense_apply_flops(self, g, v, k, dense):
        """FLOPs of operator v's matrix applied to k columns (a matrix product; a solve for inv)."""
        return dense.matmul(v, k)

    def lower(self, lw, v, x):
        """Primitive id of (this operator) @ x, x of shape [*b, n, k]."""
        raise NotImplementedError(self.name)

    def transpose(self, g, v):
        """An operator equal to the transpose of node v, or None to keep transpose(v)."""
        return None

    # ---- rewriting ------------------------------------------------------
    # This kind's own rewrite rules (opdsl.kinds.rule.Rule): passes/simplify.py applies them
    # after the generic rules, in one table with every other kind's.
    rules: tuple = ()

    def operator_form(self, g, v, span):
        """A tensor kind: the operator equal to dense(v) for a matrix v, built from v's operands so
        that the rules see their structure (dense(X @ Y) = X dense(Y)), or None."""
        return None

    # ---- reassociation (passes/reassociate.py) ---------------------------
    # The shape rule reads only the operands' types and the attributes (not the operand nodes),
    # so reassociation may reuse the type inferred for the same (kind, operand types, attributes).
    infer_from_types: bool = False

    def chain_parts(self, g, v):
        """How reassociation takes this node apart inside a chain, or None (an atom).  Operators:
        ("product", factors), ("scaled", A, c), ("identity",), ("matrix", W) (a tensor used as a
        matrix), ("sum", terms).  Tensors: ("applied", A, y), ("scaled", y, c), ("transposed", y),
        ("sum", terms)."""
        return None

    def chain_factor(self, g, v):
        """An operator kind: how reassociation may merge it with a neighbouring factor of a chain:
        "lowrank" (with its rank), "dense" or "diag", else ("other", 0).  The rank is a sympy size."""
        return "other", 0

    def operand_columns(self, g, v, k):
        """When this operator is applied to k columns: the columns each operand is applied to (so
        that products nested in them are ordered for those columns), or None."""
        return None

    def operand_domains(self, g, v) -> dict:
        """{operand index: domain} for operands whose meaningful values are not any real number
        (reference.DOMAINS: log-gates ≤ 0, decays in (0, 1], ...; ("index", n): integers in
        [0, n)), so that the random inputs of the dense checks and `opdsl check` are drawn there;
        {} (the default): any real."""
        return {}

    # operand positions that may be integer index tensors (INDEX_DTYPES); others refuse them
    index_operands: tuple = ()
    # an operator never to be written down as a matrix: a positive definite operator with such a part
    # is solved by conjugate gradients whatever its size (linalg.iterative_reason; a sparse argument)
    solve_iteratively: bool = False

    # ---- structure (kinds/linalg_analysis.py) ------------------------------
    def triangular_through(self, g, v):
        """'diagonal', 'lower', 'upper' or None: the triangular structure v has through its operands
        (beyond its declared properties, which linalg_analysis.triangular reads first)."""
        return None

    def as_written(self, g, v) -> bool:
        """Whether node v asks to be computed as written, so that no rewrite rule replaces it (an
        explicit estimator: logdet(A, method=slq), trace(A, method=hutchinson))."""
        return False

    def gradient_estimate(self, g, v) -> float | None:
        """None when v's gradient (torch) is the derivative of its value; for a stochastic gradient
        estimator (logdet(A, method=slq): GPyTorch's trace estimator), the relative accuracy it
        promises against the derivative of its dense meaning (the catalogue's gradient test checks
        it to that tolerance)."""
        return None

    def psd_through(self, g, v) -> bool:
        """Whether v is symmetric positive semidefinite through its operands (beyond its declared
        properties, which linalg_analysis.psd reads first)."""
        return False

    def singular(self, g, v):
        """Why square operator v is singular by its structure alone (a phrase), or None."""
        return None

    def cheap_inverse(self, g, v) -> bool:
        """Whether inv(v) rewrites to something cheaper than factoring v's materialized matrix
        (orthogonal and triangular operators are, whatever their kind)."""
        return False

    # ---- a linear-algebra leaf (kinds/linalg_solve.py) -----------------------
    # What no rule rewrote is factored: materialized, then Cholesky / triangular / LU.  A kind
    # with a better way says so here; None (the default) takes the generic way.
    def matrix(self, lw, v, dtype):
        """Primitive id of this operator's matrix when writing it down is cheaper than applying it
        to the identity (a dense operand is its tensor), or None."""
        return None

    def matrix_props(self, g, v):
        """The properties of the matrix a leaf of this kind writes down (default: its type's)."""
        return g.type(v).props

    def matrix_flops(self, g, v):
        """FLOPs to have this operator as a matrix, or None: n applications of it."""
        return None

    def factor_flops(self, g, v, props, tri):
        """FLOPs to factor a leaf of this kind, or None: the dense factorization of its matrix."""
        return None

    def leaf_solve(self, lw, v, x, method):
        """Primitive id of v⁻¹ x for a leaf of this kind, or None (factor the matrix)."""
        return None

    def leaf_logdet(self, lw, v):
        """Primitive id of logdet(v) for a leaf of this kind, or None (factor the matrix)."""
        return None

    def leaf_diagonal(self, lw, v):
        """Primitive id of the diagonal of a leaf of this kind, or None (of its matrix)."""
        return None

    def fft_tree(self, g, v, conj, leaves):
        """(expression, grid sizes or None) of v as an FFT-diagonal operator (kinds/fft_algebra.py:
        circular convolutions, circulants, and the algebra over them), or None (the default: not)."""
        return None

    def transpose_flops(self, g, v, k):
        """FLOPs of vᵀ applied to k columns (default: v's own; a kind whose transpose is lowered
        another way says so: conv's sliding window forward, FFTs backward)."""
        return self.flops(g, v, k)

    def shard_mode(self, g, v, s) -> str:
        """How v applies when dim symbol s is split over a device mesh (opdsl/sharding.py):
        "free" (no communication), "psum" (local partial products summed) or "gather" (the vector
        it is applied to is gathered first).  The default: a dim not in v's rows or columns (a
        batch dim) is free; an operator made of operators takes its operands' worst mode; a leaf
        that mixes s gathers."""
        from ..sharding import mode, symbols_of, worst
        t = g.type(v)
        if not t.is_op or s not in symbols_of(g, t):
            return "free"
        ops = [o for o in g[v].operands if g.type(o).is_op]
        return worst(mode(g, o, s) for o in ops) if ops else "gather"

    def shard(self, g, v, sharded: dict) -> list:
        """The collectives node v needs when the dims in `sharded` ({symbol: mesh axis}) are split
        (sharding.Comm).  Default: none — applying operators is where communication happens
        (tensors.Apply), and the operators say how they split through shard_mode."""
        return []

    def leaf_function(self, lw, v, f, x):
        """Primitive id of f(v) @ x for a symmetric leaf of this kind, f a function of its eigenvalues
        (`f(lw, w)`: primitives of f(λ) for eigenvalues w) — pow, log, sqrt, exp through its own
        eigendecomposition — or None (the eigendecomposition of its matrix)."""
        return None


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
           "DTYPES", "INDEX_DTYPES"]
