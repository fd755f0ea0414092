"""Code every generated Python module carries (argument errors) and helpers some primitives' code
calls, added to a module only when it uses them; `site` names where a primitive came from in their
run-time messages."""
from __future__ import annotations

import re

from opdsl.errors import BackendError
from opdsl.ir import Graph
from opdsl.primitives import PRIMS

# every module: ArgumentError and the messages of the argument checks (pychecks.py); `{array}`
# names what the functions take
RUNTIME = '''

class ArgumentError(TypeError):
    """An argument does not match the signature declared in the .op file."""


def _shape_error(fn, name, value, decl, known):
    got = list(getattr(value, "shape", ())) if hasattr(value, "shape") else type(value).__name__
    dims = ", ".join(f"{{k}} = {{v}}" for k, v in known.items())
    raise ArgumentError(f"{{fn}}(): argument {{name!r}} has shape {{got}}, expected {{decl}}"
                        + (f" with {{dims}}" if dims else ""))


def _dtype_error(fn, name, value, want):
    got = str(getattr(value, "dtype", type(value).__name__)).replace("torch.", "")
    if got == want:   # the right dtype in another library's array (a numpy array for torch)
        kind = {{"numpy": "a numpy array", "torch": "a torch.Tensor", "jax": "a jax array", "jaxlib": "a jax array"}}
        got = kind.get(type(value).__module__.split(".")[0], f"a {{type(value).__name__}}")
        raise ArgumentError(f"{{fn}}(): argument {{name!r}} is {{got}}, expected {array}")
    raise ArgumentError(f"{{fn}}(): argument {{name!r}} has dtype {{got}}, expected {{want}}")


def _dim_error(fn, what, known):
    dims = ", ".join(f"{{k}} = {{v}}" for k, v in known.items())
    raise ArgumentError(f"{{fn}}(): dim {{what}} is not an integer with {{dims}}")


def _device_error(fn, name, value, first, other):
    raise ArgumentError(f"{{fn}}(): argument {{name!r}} is on {{value.device}}, but {{first!r}} is on {{other.device}}; "
                        "all arguments must be on one device")
'''


# ---- helpers that some primitives' code calls: added to a module only when it uses them ----------
# (linear algebra, opdsl/kinds/linalg.py and docs/linalg.md: solves and factorizations report a
# singular matrix as the module's SingularError; `cg` runs its loop in _cg)

LINALG_RUNTIME = '''

class SingularError(ArithmeticError):
    """A matrix this program factors or solves with is singular (or not positive definite)."""


def _finite(what, value):
    """value itself, or SingularError when it has inf or nan entries (one reduction: their sum is not finite)."""
    total = value.sum()
    try:
        total = float(total.detach() if hasattr(total, "detach") else total)
    except TypeError:      # a traced value (jax.grad / jax.jit): no number to check here
        return value
    if total - total != 0:
        raise SingularError(f"{what}: the result has inf or nan entries: the matrix is singular to "
                            "working precision (or an argument is not finite)")
    return value


def _linalg(what, fn, *args):
    """fn(*args), a factorization or a solve; a singular matrix raises SingularError naming `what`."""
    try:
        out = fn(*args)
    except Exception as e:  # numpy.linalg.LinAlgError, torch.linalg.LinAlgError
        if "LinAlgError" not in type(e).__name__:
            raise
        raise SingularError(f"{what}: {e}") from None
    return _finite(what, out)'''

CG_RUNTIME = '''

CG_RESIDUALS = {}  # solve site -> (steps, relative residual) of its last conjugate-gradient solve


def _cg(what, matvec, b, tol, maxiter, minv=None, lowrank=None):
    """Preconditioned conjugate gradients for A x = b, every column of b [..., n, k] on its own.
    The preconditioner applies minv * r (jacobi), or minv * r - U (U^T r) with U = lowrank
    (pivchol: the inverse of L L^T + D by Woodbury).

    Stops when each column's relative residual |b - A x| / |b| is at most tol, or after maxiter
    steps; records (steps, residual) in CG_RESIDUALS[what] and warns when it did not converge."""
    def dot(u, v):
        return (u * v).sum(-2)[..., None, :]

    def precondition(r):
        if minv is None:
            return r
        return minv * r if lowrank is None else minv * r - lowrank @ (lowrank.mT @ r)

    def worst(r):
        q = (dot(r, r) ** 0.5 / bb).max()
        return float(q.detach() if hasattr(q, "detach") else q)

    x = b * 0
    r = b
    z = precondition(r)
    p = z
    rz = dot(r, z)
    bb = dot(b, b) ** 0.5
    bb = bb + (bb == 0)
    res = worst(r)
    steps = 0
    while res > tol and steps < maxiter:
        ap = matvec(p)
        pap = dot(p, ap)
        alpha = rz / (pap + (pap == 0))
        x = x + alpha * p
        r = r - alpha * ap
        steps += 1
        res = worst(r)
        z = precondition(r)
        rz_next = dot(r, z)
        p = z + rz_next / (rz + (rz == 0)) * p
        rz = rz_next
    CG_RESIDUALS[what] = (steps, res)
    if not res <= tol:
        import warnings
        warnings.warn(f"{what}: conjugate gradients stopped after {steps} steps at relative residual "
                      f"{res:.3g} > tol = {tol:g}", RuntimeWarning, stacklevel=3)
    return x'''

LINREC_RUNTIME = '''


def _linrec(p, h, stack):
    """[S_0, ..., S_{n-1}] stacked on axis -3, for S_0 = 0 and S_{c+1} = P_c S_c + H_c, with
    p [..., n, f, f] and h [..., n, f, k]: the state entering each chunk (n steps, not L tokens)."""
    s = (p[..., :1, :1, :1] * h[..., :1, :, :])[..., 0, :, :] * 0     # zeros of the broadcast batch
    out = [s]
    for c in range(h.shape[-3] - 1):
        s = p[..., c, :, :] @ s + h[..., c, :, :]
        out.append(s)
    return stack(out, -3)'''

EIGH_RUNTIME = '''


def _eigh(a, eigh, cat):
    """The eigenvalues (ascending) and eigenvectors of symmetric a [..., n, n] in one array
    [..., n + 1, n]: row 0 the eigenvalues, rows 1.. the matrix whose columns are the eigenvectors."""
    w, v = eigh(a)
    return cat([w[..., None, :], v], -2)'''

EXPM_RUNTIME = '''

_PADE13 = (64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0,
           129060195264000.0, 10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0,
           40840800.0, 960960.0, 16380.0, 182.0, 1.0)


def _expm(a):
    """The matrix exponential of a [..., n, n] (numpy): scaling and squaring with the degree-13
    Padé approximant (Higham 2005, scipy's algorithm without its lower-degree shortcuts)."""
    b = _PADE13
    norm = float(np.abs(a).sum(-2).max()) if a.size else 0.0
    s = max(0, int(np.ceil(np.log2(norm / 5.371920351148152)))) if norm > 0 else 0
    a = a / 2.0 ** s
    eye = np.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype), a.shape)
    a2 = a @ a
    a4 = a2 @ a2
    a6 = a4 @ a2
    u = a @ (a6 @ (b[13] * a6 + b[11] * a4 + b[9] * a2) + b[7] * a6 + b[5] * a4 + b[3] * a2 + b[1] * eye)
    v = a6 @ (b[12] * a6 + b[10] * a4 + b[8] * a2) + b[6] * a6 + b[4] * a4 + b[2] * a2 + b[0] * eye
    r = np.linalg.solve(v - u, v + u)
    for _ in range(s):
        r = r @ r
    return r'''

NEWTON_RUNTIME = '''

NEWTON_RESIDUALS = {}  # site -> (steps, max |M - I|) of its last Newton inverse root


def _newton_root(what, a, ident, root, eps, tol, maxiter):
    """X ~ a^(-1/root) for symmetric positive definite a [..., n, n] by the coupled Newton iteration
    (Distributed Shampoo's): X_0 = z^(1/root) I, M_0 = z (a + eps I), z = (root + 1) / (2 |a|_F);
    M_p = (1 + 1/root) I - M / root, X <- X M_p, M <- M_p^root M, until max |M - I| <= tol or maxiter
    steps.  ident: the identity in a's dtype (and device).  Records (steps, error) in
    NEWTON_RESIDUALS[what] and warns when it did not converge."""
    def error(m):
        e = abs(m - ident).max()
        return float(e.detach() if hasattr(e, "detach") else e)

    alpha = -1.0 / root
    a = a + eps * ident
    z = (root + 1) / (2 * ((a * a).sum(-1).sum(-1) ** 0.5)[..., None, None])
    x, m = z ** (1.0 / root) * ident, z * a
    res, steps = error(m), 0
    while res > tol and steps < maxiter:
        mp = alpha * m + (1 - alpha) * ident
        x = x @ mp
        mr = mp
        for _ in range(root - 1):
            mr = mr @ mp
        m = mr @ m
        steps += 1
        res = error(m)
    NEWTON_RESIDUALS[what] = (steps, res)
    if not res <= tol:
        import warnings
        warnings.warn(f"{what}: the Newton inverse root stopped after {steps} steps at max |M - I| = "
                      f"{res:.3g} > tol = {tol:g}", RuntimeWarning, stacklevel=3)
    return x'''

# the squared distances of the kernel tiles: _sqdist_exact, then each backend's _sqdist (the torch
# backend writes its own: torch_backend.TORCH_SQDIST)
SQDIST_EXACT = '''


def _sqdist_exact(x, y):
    """|x_i - y_j|^2 [t, m] for rows x [t, d] and y [m, d], summed coordinate by coordinate from
    differences: exact near r = 0, where the expanded |x|^2 + |y|^2 - 2 x.y loses sqrt(eps) (the
    Matern kernels are steep there)."""
    r2 = 0
    for t in range(x.shape[1]):
        diff = x[:, t:t + 1] - y[:, t][None, :]
        r2 = r2 + diff * diff
    return r2'''

SQDIST_RUNTIME = SQDIST_EXACT + '''


def _sqdist(x, y, exact):
    """|x_i - y_j|^2, never negative: from differences when `exact` (Matern) and d <= 8, else
    expanded (one GEMM; the RBF kernel is flat at r = 0, so the expanded form's loss there does not
    show)."""
    if exact and x.shape[1] <= 8:
        return _sqdist_exact(x, y)
    r2 = (x * x).sum(-1)[:, None] + (y * y).sum(-1)[None, :] - 2 * (x @ y.T)
    return r2 * (r2 > 0)'''

KERNEL_RUNTIME = '''


def _kernel_of(family, r2, exp):
    """k(r) of squared scaled distances r2 >= 0 for a kernel family of opdsl's kinds/kernel.py (r at
    sqrt(1e-30), where the Matern kernels' derivative in r2 is singular)."""
    if family == "rbf":
        return exp(-0.5 * r2)
    r = (r2 - (r2 - 1e-30) * (r2 < 1e-30)) ** 0.5      # max(r2, 1e-30) in r2's own dtype
    if family == "matern12":
        return exp(-r)
    if family == "matern32":
        return (1 + 3 ** 0.5 * r) * exp(-(3 ** 0.5) * r)
    return (1 + 5 ** 0.5 * r + (5 / 3) * r2) * exp(-(5 ** 0.5) * r)


def _kernel_block(x, y, ls, family, exp):
    """K(x, y) without the outputscale for one tile of rows x [t, d] against all of y [m, d]."""
    return _kernel_of(family, _sqdist(x / ls, y / ls, family != "rbf"), exp)


def _kernel_tile(x, y, v, ls, s, family, exp):
    """s K(x, y) v for one tile of rows x [t, d]."""
    return s * (_kernel_block(x, y, ls, family, exp) @ v)


def _kernel_matrix_tile(x, y, ls, s, family, exp):
    """s K(x, y) for one tile of rows x [t, d]."""
    return s * _kernel_block(x, y, ls, family, exp)


def _kernel_rows(tile, y):
    """Rows of x per tile: at most `tile`, and at most 2**20 kernel values [rows, m] at a time (4 MB in
    float32; a tile's forward and its recomputed backward hold about ten such temporaries)."""
    return max(1, min(tile, (1 << 20) // max(1, y.shape[0])))


def _kernel_apply(x, y, v, ls, s, family, tile, exp):
    """s K(x, y) v in tiles of rows of x: never the whole n x m matrix.  Each tile is written into
    one preallocated result (collecting thousands of tiles for a concatenation let glibc's heap grow
    without bound at n = 100,000)."""
    t = _kernel_rows(tile, y)
    out = x[:, :1] * v[:1, :] * 0          # [n, k] zeros in the arguments' dtype and device
    for i in range(0, x.shape[0], t):
        out[i:i + t] = _kernel_tile(x[i:i + t], y, v, ls, s, family, exp)
    return out


def _kernel_matrix(x, y, ls, s, family, tile, exp):
    """s K(x, y) [n, m], written tile by tile into one preallocated result: the formula's
    temporaries are a tile's, not n x m."""
    t = _kernel_rows(tile, y)
    out = x[:, :1] * y[:, 0][None, :] * 0   # [n, m] zeros in the arguments' dtype and device
    for i in range(0, x.shape[0], t):
        out[i:i + t] = _kernel_matrix_tile(x[i:i + t], y, ls, s, family, exp)
    return out'''

SLQ_RUNTIME = '''


def _slq(matvec, z, steps, eigh, eye, log):
    """log det A ~ mean over the probe columns z_i of |z_i|^2 e1' log(T_i) e1 (stochastic Lanczos
    quadrature), T_i the steps x steps Lanczos tridiagonal of the symmetric positive definite A
    (applied by matvec) started at z_i / |z_i|; eye(m): the identity in z's dtype and device."""
    norm = (z * z).sum(0) ** 0.5
    q = z / norm
    q_prev, beta = q * 0, norm * 0
    alphas, betas = [], []
    for _ in range(steps):
        w = matvec(q)
        alpha = (q * w).sum(0)
        w = w - alpha * q - beta * q_prev
        beta = (w * w).sum(0) ** 0.5
        alphas.append(alpha)
        betas.append(beta)
        q_prev, q = q, w / (beta + (beta == 0))
    ident = eye(steps)
    a = sum(alphas[k][:, None, None] * ident[k] * ident[:, k:k + 1] for k in range(steps))
    off = sum(betas[k][:, None, None] * ident[k + 1] * ident[:, k:k + 1] for k in range(steps - 1)) if steps > 1 else 0
    w, u = eigh(a + off + (off.mT if steps > 1 else 0))
    w = w - (w - 1e-30) * (w < 1e-30)          # max(w, 1e-30): Ritz values of a positive definite A
    return (norm ** 2 * (u[:, 0, :] ** 2 * log(w)).sum(-1)).mean()'''

PIVCHOL_RUNTIME = '''


def _pivchol(matvec, diag, rank, arange, stack, where):
    """The rank-`rank` pivoted Cholesky factor L [n, r] of the positive semidefinite S that matvec
    applies to a column (S e_j: its column j), diag its diagonal: greedy pivots on the largest
    remaining diagonal entry (GPyTorch's preconditioner).  A pivot below 1e-6 of the largest
    diagonal entry gives a zero column (S's numerical rank is reached, or n)."""
    n = diag.shape[0]
    idx = arange(n)
    ones = diag[:, None] * 0 + 1
    floor = 1e-6 * diag.max()
    d = diag
    cols = []
    for _ in range(rank):          # past S's numerical rank (or n) the columns are zero
        j = d.argmax()
        e = (idx == j)[:, None] * ones
        col = matvec(e)[:, 0]
        if cols:
            lk = stack(cols, -1)
            col = col - lk @ lk[j]
        l = col / where(d[j] > floor, d[j], float("inf")) ** 0.5
        cols.append(l)
        d = (d - l * l) * (1 - e[:, 0])
    return stack(cols, -1)'''

TRIDIAG_RUNTIME = '''


def _cyclic_reduction(a, b, c, d, cat, stack, log):
    """(x, log |det|) for a_i x_{i-1} + b_i x_i + c_i x_{i+1} = d_i (a, b, c [n] with a_0 = c_{n-1} = 0;
    d [n, k], or None for the log-determinant alone), by cyclic reduction: the odd rows are
    eliminated (their block is diagonal), the even rows form a tridiagonal system of half the size
    (its Schur complement); log2 n levels of vectorized operations, no pivoting."""
    n = b.shape[0]
    if n == 1:
        return (None if d is None else d / b[:, None]), 0.5 * log(b * b).sum()
    ae, be, ce = a[0::2], b[0::2], c[0::2]
    ao, bo, co = a[1::2], b[1::2], c[1::2]
    ne, no = be.shape[0], bo.shape[0]
    zero, one = b[:1] * 0, b[:1] * 0 + 1
    # the odd neighbours of even row j, rows 2j - 1 and 2j + 1, padded with 0 = 1 * x past the ends
    la, lb, lc = cat([zero, ao])[:ne], cat([one, bo])[:ne], cat([zero, co])[:ne]
    ra, rb, rc = cat([ao, zero])[:ne], cat([bo, one])[:ne], cat([co, zero])[:ne]
    alpha, gamma = -ae / lb, -ce / rb
    d2 = None
    if d is not None:
        zk = d[:1] * 0
        de, do = d[0::2], d[1::2]
        d2 = de + alpha[:, None] * cat([zk, do])[:ne] + gamma[:, None] * cat([do, zk])[:ne]
    xe, logdet = _cyclic_reduction(alpha * la, be + alpha * lc + gamma * ra, gamma * rc, d2, cat, stack, log)
    logdet = logdet + 0.5 * log(bo * bo).sum()          # log |b|, without the abs builtin
    if d is None:
        return None, logdet
    # the odd unknowns from their even neighbours
    xo = (do - ao[:, None] * xe[:no] - co[:, None] * cat([xe[1:], zk])[:no]) / bo[:, None]
    x = stack([xe[:no], xo], 1).reshape(2 * no, d.shape[1])
    return (cat([x, xe[no:]]) if ne > no else x), logdet


def _tridiag_solve(lower, main, upper, rhs, cat, stack, log):
    z = main[:1] * 0
    return _cyclic_reduction(cat([z, lower]), main, cat([upper, z]), rhs, cat, stack, log)[0]


def _tridiag_logdet(lower, main, upper, cat, stack, log):
    z = main[:1] * 0
    return _cyclic_reduction(cat([z, lower]), main, cat([upper, z]), None, cat, stack, log)[1]'''

PUT_RUNTIME = '''


def _put_rows(x, idx, n):
    """Row i of x added into row idx[i] of zeros [..., n, k] (numpy: np.add.at accumulates a repeated
    index; select's transpose)."""
    out = np.zeros(x.shape[:-2] + (n, x.shape[-1]), x.dtype)
    np.add.at(out, (Ellipsis, idx, slice(None)), x)
    return out'''

INDEX_RUNTIME = '''


def _index(what, idx, n):
    """idx, after checking that its entries lie in [0, n): an index tensor's values are the caller's."""
    try:
        lo, hi = int(idx.min()), int(idx.max())
    except Exception:       # an empty index, or a traced value (a caller's jax.jit): nothing to check here
        return idx
    if lo < 0 or hi >= n:
        raise ArgumentError(f"{what}: index {lo if lo < 0 else hi} is out of range: select's indices lie in "
                            f"[0, {n})")
    return idx'''

# helper group (what a primitive's code may call: Prim.runtime) -> its code
RUNTIME_HELPERS = {"linalg": LINALG_RUNTIME, "cg": CG_RUNTIME, "linrec": LINREC_RUNTIME,
                   "eigh": EIGH_RUNTIME, "expm": EXPM_RUNTIME, "newton": NEWTON_RUNTIME,
                   "kernel": SQDIST_RUNTIME + KERNEL_RUNTIME, "slq": SLQ_RUNTIME, "pivchol": PIVCHOL_RUNTIME,
                   "tridiag": TRIDIAG_RUNTIME, "put": PUT_RUNTIME, "index": INDEX_RUNTIME}


def _nodes_used(g: Graph):
    """The live nodes of g and of the loop bodies they carry (cg's)."""
    for v in g.live():
        n = g[v]
        yield n
        body = n.attrs.get("body")
        if body is not None and hasattr(body, "graph"):
            yield from _nodes_used(body.graph)


def helpers_used(g: Graph) -> set:
    """The helper groups (Prim.runtime) the primitives of g may call."""
    return {h for n in _nodes_used(g) for h in PRIMS[n.kind].helpers(n.attrs)}


def prim_runtime(g: Graph, own=None) -> list[str]:
    """The helper code the primitives of g call, group by group in a fixed order: a backend's own
    text for a group where it has one (`own`: group -> code, or None for a group whose primitives
    it spells inline), else RUNTIME_HELPERS'."""
    own = own or {}
    keys = helpers_used(g)
    groups = list(RUNTIME_HELPERS) + [k for k in own if k not in RUNTIME_HELPERS]
    out = []
    for k in groups:
        code = own.get(k, RUNTIME_HELPERS.get(k))
        if k in keys and code:
            out.append(code.rstrip("\n"))
    return out


def const_name(n) -> str:
    """The module-level name of `const` node n's value (its `name`, private to the module)."""
    return "_" + re.sub(r"\W", "_", n.attrs["name"])


def module_constants(g: Graph) -> list[str]:
    """`_name = <numpy expression>` for each constant of g (the `const` primitive), computed once
    when the module is imported; emit entries convert it to the dtype (and array type) they need.
    Numpy is `np` in the module (every Python backend imports it so)."""
    exprs: dict[str, str] = {}
    for n in _nodes_used(g):
        if n.kind == "const":
            name = const_name(n)
            if exprs.setdefault(name, n.attrs["expr"]) != n.attrs["expr"]:
                raise BackendError(f"internal: two constants named {name!r} with different values", n.span)
    if not exprs:
        return []
    return ["", "", "# ---- constants, computed once when the module is imported"] + \
        [f"{name} = {expr}" for name, expr in exprs.items()]


def site(span) -> str:
    """Where a primitive came from, for run-time messages: `inv(W) at model.op:3:9`."""
    if span is None:
        return "<unknown>"
    line = span.source_line()
    if line is not None and span.end_column:
        return f"{line[span.column - 1:span.end_column - 1]} at {span}"
    return str(span)
