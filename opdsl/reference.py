"""The oracle: dense numpy meaning of an operator graph, and random inputs for it.

Every kind's ``dense`` gives its matrix; evaluating a graph with them in
float64 gives what any compiled program must compute.
"""
from __future__ import annotations

import copy
import itertools
import os
import re

import numpy as np
import sympy as sp

from .errors import OpdslError
from .ir import Graph
from .kinds.base import INDEX_DTYPES

SMALL_FREE_DIM = 3


def dense_eval(g: Graph, root: int, inputs: dict) -> np.ndarray:
    """The value of node root with every operator materialized (float64)."""
    g = _with_free_dims(g, root, inputs)
    vals: dict[int, np.ndarray] = {}
    for v in g.live([root]):
        n = g[v]
        if n.is_input:
            x = inputs[n.attrs["name"]]
            vals[v] = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)  # scipy.sparse
        else:
            vals[v] = np.asarray(g.spec(v).dense(g, v, [vals[o] for o in n.operands]), dtype=np.float64)
    return vals[root]


def _with_free_dims(g: Graph, root: int, inputs: dict) -> Graph:
    """g, with its free dims given the values the inputs' shapes bind (kinds such as eye(n)
    need a concrete n for their dense matrix)."""
    t = g.dims
    free = set(t.free())
    if not free:
        return g
    values = dict(t.values)
    for v in g.live([root]):
        n = g[v]
        if n.is_input and n.attrs["name"] in inputs:
            for d, size in zip(n.attrs["shape"], np.shape(inputs[n.attrs["name"]])):
                d = sp.sympify(d)
                if d in free and d not in values:
                    values[d] = int(size)
    for s, e in t.derived.items():
        if s not in values:
            v = t.subs(e).subs(values)
            if not v.free_symbols and v.is_integer:
                values[s] = int(v)
    table = copy.copy(t)
    table.values = values
    table._memo = {}
    out = copy.copy(g)
    out.dims = table
    return out


def bind_free_dims(g: Graph, free: dict | None = None, default: int = SMALL_FREE_DIM) -> dict:
    """Values for every dim: declared ones, then `free`, then hints capped small, then `default`."""
    t = g.dims
    env = {}
    chosen = []
    for name, s in t.symbols.items():
        if s in t.values:
            env[s] = t.values[s]
        elif free and name in free:
            env[s] = free[name]
        elif s not in t.derived:
            env[s] = min(t.hints.get(s, default), default)
            chosen.append(s)
    # the small values must make every derived dim a positive integer (`dim m = n / 2` needs an even n)
    derived = [(s, e) for s, e in t.derived.items() if s not in env]

    def fits(trial):
        for s, e in derived:
            v = sp.sympify(e).subs(t.derived).subs(trial)
            if not (v.is_integer and v > 0):
                return False
        return True

    if derived and not fits(env):
        for values in itertools.islice(itertools.product((2, 4, 6, 8, 12, 16, 1, 3, 5), repeat=len(chosen)), 5000):
            trial = {**env, **dict(zip(chosen, values))}
            if fits(trial):
                env = trial
                break
    for s, e in derived:
        env[s] = int(sp.sympify(e).subs(t.derived).subs(env))
    return env


# Square matrices that are inverted or whose log-determinant is taken are drawn as
# G/sqrt(n) + SHIFT·I.  Why: an inverse is only as accurate as cond(A)·eps, the reference
# runs in float64 and the backend usually in float32, and a plain Gaussian matrix has
# cond ~ n with a heavy tail (n = 400: float32 solves already err by ~1e-4 relative, at
# `check`'s tolerance).  ‖G/sqrt(n)‖₂ ≈ 2, so the shift keeps every singular value in about
# [1, 5] (measured over 200 draws: cond ≤ 3.4 for n ≥ 5, ≈ 2.6 at n = 400; up to ~15 at n = 2,
# where it costs no accuracy).  Matrices that nothing inverts keep plain Gaussians (the
# draws of every other test stay as they were): their accuracy does not depend on conditioning.
SHIFT = 3.0
FACTORED = ("inv", "logdet")        # kinds that factor (invert) their operand


def random_inputs(g: Graph, export: str, free: dict | None = None, dtype=None, seed: int = 0) -> dict:
    """Random arguments for one export at its declared shapes (free dims small).

    Each input has the properties it declares (`input K : [n, n] psd`, see docs/linalg.md)
    and is well conditioned where it is inverted (see SHIFT); others are Gaussian."""
    rng = np.random.default_rng(seed)
    env = bind_free_dims(g, free)
    factored = _factored_inputs(g, export)
    domains = input_domains(g, export)
    out = {}
    for v in g.live([g.exports[export]]):
        n = g[v]
        if not n.is_input:
            continue
        shape = tuple(int(g.dims.subs(d).subs(env)) for d in n.attrs["shape"])
        x = rng.standard_normal(shape)
        if isinstance(domains.get(v), tuple):       # ("index", n): integers in [0, n)
            x = rng.integers(0, int(g.dims.subs(domains[v][1]).subs(env)), size=shape)
        elif v in domains:
            x = DOMAINS[domains[v]](x)
        elif "positive" in n.attrs.get("props", ()):
            x = DOMAINS["positive"](x)
        elif len(shape) >= 2:
            x = x / np.sqrt(shape[-1])  # keep products of several factors O(1)
            x = with_props(x, set(n.attrs.get("props", ())), v in factored)
        if n.attrs.get("layout") == "sparse":
            x = sparse_input(rng, shape, set(n.attrs.get("props", ())), v in factored)
        index = n.attrs["dtype"] in INDEX_DTYPES           # indices keep their integer dtype
        out[n.attrs["name"]] = x.astype(n.attrs["dtype"] if index else (dtype or n.attrs["dtype"]))
    return out


SPARSE_TEST_DENSITY = 0.3


def sparse_input(rng, shape, props: set, factored: bool = False):
    """A random scipy.sparse CSR matrix of `shape` (about SPARSE_TEST_DENSITY of its entries stored)
    with the declared properties (as with_props).  A square one that is not psd has SHIFT added to
    its diagonal whether or not it is inverted: a random sparse matrix is often structurally
    singular (an empty row), and one input may be inverted by one export and not by another."""
    import scipy.sparse
    m, n = shape
    x = scipy.sparse.random_array((m, n), density=SPARSE_TEST_DENSITY, rng=rng, data_sampler=rng.standard_normal)
    x = x / np.sqrt(max(1.0, SPARSE_TEST_DENSITY * n))
    if m == n:
        eye = scipy.sparse.eye_array(n)
        if "psd" in props:
            x = x @ x.T + eye
        elif "symmetric" in props:
            x = (x + x.T) / 2
        if "psd" not in props:
            x = x + SHIFT * eye
    return scipy.sparse.csr_array(x)


# Where an operand's meaningful values lie (Kind.operand_domains), as a map of standard normal
# draws x into it: log-gates G ≤ 0 of modest size, decays γ and delta-rule strengths β in (0, 1).
DOMAINS = {
    "log_gate": lambda x: -0.5 * np.abs(x),
    "unit": lambda x: 0.5 + 0.45 * np.tanh(x),
    "positive": lambda x: 0.5 + np.abs(x),
    # a main diagonal that dominates standard normal neighbours (tridiag: solved without pivoting)
    "dominant": lambda x: 8 + np.abs(x),
}


def input_domains(g: Graph, export: str) -> dict:
    """Input id -> domain name, for inputs a kind reads as an operand with a domain."""
    out = {}
    for v in g.live([g.exports[export]]):
        for i, dom in g.spec(v).operand_domains(g, v).items():
            o = g[v].operands[i]
            if g[o].is_input:
                out[o] = dom
    return out


def _factored_inputs(g: Graph, export: str) -> set:
    """Ids of the inputs that an inverse or a log-determinant of this export depends on."""
    live = g.live([g.exports[export]])
    roots = [g[v].operands[0] for v in live if g[v].kind in FACTORED]
    return {v for v in g.live(roots) if g[v].is_input} if roots else set()


def with_props(x: np.ndarray, props: set, factored: bool = False) -> np.ndarray:
    """x ([..., m, n], entries ~ N(0, 1/n)) made to have the declared properties, well conditioned.

    psd: x xᵀ + I (eigenvalues in about [1, 5]); symmetric: (x + xᵀ)/2; orthogonal: the Q of
    a QR with the signs of R's diagonal (Haar distributed); lower / upper: the triangle, with
    a diagonal of magnitude in [1, 1.5) (a Gaussian triangular matrix has a condition number
    exponential in n; this one stays below ~6); diagonal: that diagonal alone.  Combinations
    keep all of them: a triangular psd or symmetric matrix is diagonal, a psd orthogonal one
    is I, a symmetric orthogonal one Q diag(±1) Qᵀ.  `invertible` or `factored` (an inverse
    needs it) shifts a matrix that is not yet well conditioned by SHIFT·I.  A property that
    a non-square matrix cannot have (psd, symmetric, diagonal) is not drawn."""
    m, n = x.shape[-2:]
    if m != n:
        if "orthogonal" in props:       # orthonormal columns (or rows, for a wide matrix)
            q = _haar(x if m > n else np.swapaxes(x, -1, -2))
            x = q if m > n else np.swapaxes(q, -1, -2)
        if "lower" in props:
            x = np.tril(x)
        if "upper" in props:
            x = np.triu(x)
        return x
    psd = "psd" in props
    sym = psd or "symmetric" in props
    tri = "lower" in props or "upper" in props
    diagonal = ("diagonal" in props or ("lower" in props and "upper" in props)
                or (tri and (sym or "orthogonal" in props)))
    d = np.diagonal(x, axis1=-2, axis2=-1) * np.sqrt(n)         # N(0, 1): signs and sizes
    sign = np.ones_like(d) if psd else np.where(d < 0, -1.0, 1.0)
    eye = np.eye(n)
    if "orthogonal" in props:
        if diagonal or psd:
            return eye * sign[..., None, :]
        q = _haar(x)
        if sym:                         # a reflection-like Q diag(±1) Qᵀ
            return (q * sign[..., None, :]) @ np.swapaxes(q, -1, -2)
        return q
    if diagonal:
        return eye * (sign * (1.0 + 0.5 * np.abs(np.tanh(d))))[..., None, :]
    if psd:
        return x @ np.swapaxes(x, -1, -2) + eye
    if tri:
        strict = np.tril(x, -1) if "lower" in props else np.triu(x, 1)
        return strict + eye * (sign * (1.0 + 0.5 * np.abs(np.tanh(d))))[..., None, :]
    if sym:
        x = (x + np.swapaxes(x, -1, -2)) / 2
    if factored or "invertible" in props:
        x = x + SHIFT * eye
    return x


def _haar(x: np.ndarray) -> np.ndarray:
    """The Q of x's QR with the signs of R's diagonal folded in (a Haar-distributed Q when x is
    Gaussian; numpy's sign convention alone would bias it)."""
    q, r = np.linalg.qr(x)
    s = np.sign(np.diagonal(r, axis1=-2, axis2=-1))
    return q * np.where(s == 0, 1.0, s)[..., None, :]


# ---- how much memory `opdsl check` may take -----------------------------------------------------

CHECK_MEMORY_LIMIT = 2 * 2 ** 30     # bytes; OPDSL_CHECK_MEMORY overrides (e.g. 8G)
_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


class MemoryLimitError(OpdslError):
    """`opdsl check` would allocate more than its memory limit for inputs and the dense reference."""


def check_memory_limit() -> int:
    """The bytes `check` may allocate: OPDSL_CHECK_MEMORY if set, else CHECK_MEMORY_LIMIT, at most
    half of the memory available now (so that a check never pushes the machine into swap)."""
    text = os.environ.get("OPDSL_CHECK_MEMORY", "").strip()
    if text:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", text.upper())
        if not m:
            raise OpdslError(f"OPDSL_CHECK_MEMORY={text!r} is not a size",
                             hint="bytes, or a number with K, M, G or T (binary units), e.g. OPDSL_CHECK_MEMORY=8G")
        return int(float(m.group(1)) * _UNITS[m.group(2)])
    avail = _available_memory()
    return min(CHECK_MEMORY_LIMIT, avail // 2) if avail else CHECK_MEMORY_LIMIT


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_bytes(g: Graph, export: str, free: dict | None = None) -> tuple[int, int | None, int]:
    """(bytes, node, its elements): an estimate of what random_inputs and dense_eval allocate for
    one export, and the largest array among them, computed from the shapes alone.

    Counted in float64 (8 bytes an element): each input three times (the draw, the arrays that
    give it its properties, the cast to its dtype), every value dense_eval keeps (it keeps them
    all: the inputs again, the tensors, and each operator as its dense matrix, batch × rows ×
    cols, so eye(n) costs n² elements), the largest of them once more for the temporaries of the
    kind that makes it (a Kronecker product, an inverse's LU workspace) and the export twice (the
    program's result and its float64 copy)."""
    env = {s: sp.Integer(v) for s, v in bind_free_dims(g, free).items()}
    memo: dict = {}

    def size(dims) -> int:
        out = 1
        for d in dims:
            if d not in memo:
                e = sp.sympify(g.dims.subs(d)).xreplace(env)
                memo[d] = int(e) if e.is_number else 0
            out *= memo[d]
        return out

    total, big, big_n = 0, None, 0
    root = g.exports[export]
    for v in g.live([root]):
        t = g.type(v)
        n = size(tuple(t.batch) + (t.rows, t.cols)) if t.is_op else size(t.shape)
        total += n * (4 if g[v].is_input else 1)
        if n > big_n:
            big, big_n = v, n
    out_n = 0 if g.type(root).is_op else size(g.type(root).shape)
    return 8 * (total + big_n + 2 * out_n), big, big_n


def check_fits(g: Graph, export: str, free: dict | None = None, limit: int | None = None) -> None:
    """Raise MemoryLimitError, before anything is allocated, when checking this export against
    the dense reference would take more than `limit` bytes (check_memory_limit())."""
    limit = check_memory_limit() if limit is None else limit
    need, big, big_n = check_bytes(g, export, free)
    if need <= limit:
        return
    n = g[big]
    t = n.type
    shape = tuple(t.batch) + (t.rows, t.cols) if t.is_op else tuple(t.shape)
    what = f"input {n.attrs['name']}" if n.is_input else (
        f"{n.name} ({n.kind})" if n.name else f"{n.kind}(...)" + (" as a dense matrix" if t.is_op else ""))
    dims = sorted({str(s) for d in shape for s in _base_dims(g, d)})
    env = bind_free_dims(g, free)
    values = ", ".join(f"{s} = {env[g.dims.symbols[s]]}" for s in dims if g.dims.symbols.get(s) in env)
    example = " ".join(f"--dim {s}=64" for s in dims) or "--dim NAME=64"
    file = n.span.file if n.span is not None else "FILE.op"
    raise MemoryLimitError(
        f"checking export {export!r} would allocate about {_human_bytes(need)} for its random inputs and the "
        f"dense float64 reference (limit {_human_bytes(limit)}): {what} is [{', '.join(map(str, shape))}]"
        + (f" with {values}" if values else "") + f", {_human_bytes(8 * big_n)} alone",
        n.span,
        hint=f"check the same program at smaller sizes, e.g. `opdsl check {file} {example}`; "
             "OPDSL_CHECK_MEMORY=8G raises the limit")


def _base_dims(g: Graph, d) -> set:
    """The declared (not derived) dims a size is made of: those --dim can set."""
    e = sp.sympify(d)
    for _ in range(len(g.dims.derived) + 1):
        new = e.xreplace(g.dims.derived)
        if new == e:
            break
        e = new
    return e.free_symbols


def _human_bytes(b: float) -> str:
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        f = _UNITS[unit[0]]
        if b >= f:
            return f"{b / f:.3g} {unit}"
    return f"{int(b)} bytes"
