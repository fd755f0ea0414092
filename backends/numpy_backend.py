"""The numpy backend: the reference implementation of every primitive.

Linear algebra (opdsl/kinds/linalg.py, docs/linalg.md): a singular matrix raises the generated
module's SingularError (`_linalg` converts numpy's LinAlgError, `_finite` checks a solve's result).
"""
from __future__ import annotations

from .array_api import array_api_emit, emit_cg, emit_pivchol, emit_slq, index_code, newton_call
from .pycodegen import PythonBackend
from .pyexpr import pyexpr
from .pyruntime import const_name, site
from .sparse_runtime import NUMPY_CHECK, NUMPY_EMIT, NUMPY_SPARSE


def _solve_triangular(c, n, a):
    """np.linalg.solve of the triangle (numpy has no batched triangular solve).  A triangular leaf
    of inv (attribute `checked`) reports a singular factor as SingularError like the other solves."""
    tri = "triu" if n.attrs.get("upper", True) else "tril"
    if n.attrs.get("unit"):          # the strict triangle plus the identity
        strict = f"np.{tri}({a[0]}, {1 if tri == 'triu' else -1})"
        code = f"np.linalg.solve({strict} + np.eye({a[0]}.shape[-1], dtype={a[0]}.dtype), {a[1]})"
    else:
        code = f"np.linalg.solve(np.{tri}({a[0]}), {a[1]})"
    return f"_linalg({site(n.span)!r}, lambda: {code})" if n.attrs.get("checked") else code


class NumpyBackend(PythonBackend):
    name = "numpy"
    imports = ("import numpy as np",)
    dtypes = {"float32": "np.float32", "float64": "np.float64", "float16": "np.float16", "int32": "np.int32",
              "int64": "np.int64", "complex64": "np.complex64", "complex128": "np.complex128"}
    reserved = ("np",)
    own_runtime = {"sparse": NUMPY_SPARSE}
    sparse_check = NUMPY_CHECK
    array_module, arrays, convert = "numpy", "numpy arrays", "np.asarray(...)"
    sparse_modules = ("scipy",)
    emit = {
        **array_api_emit("np"),
        **NUMPY_EMIT,
        "complex": lambda c, n, a: f"{a[0]}[..., 0] {'-' if n.attrs.get('conj') else '+'} 1j * {a[0]}[..., 1]",
        "einsum": lambda c, n, a: f"np.einsum({n.attrs['spec']!r}, {', '.join(a)}, optimize=True)",
        # a constant: computed once, at the module's top (pyruntime.module_constants)
        "const": lambda c, n, a: f"{const_name(n)}.astype({c.backend.dtype(n.attrs['dtype'])})",
        "solve": lambda c, n, a: f"_linalg({site(n.span)!r}, np.linalg.solve, {a[0]}, {a[1]})",
        "cholesky": lambda c, n, a: f"_linalg({site(n.span)!r}, np.linalg.cholesky, {a[0]})",
        "cho_solve": lambda c, n, a: (f"_linalg({site(n.span)!r}, np.linalg.solve, np.swapaxes({a[0]}, -1, -2), "
                                      f"np.linalg.solve({a[0]}, {a[1]}))"),
        "solve_triangular": _solve_triangular,
        "checked": lambda c, n, a: f"_finite({site(n.span)!r}, {a[0]})",
        "cg": emit_cg,
        "pivchol": emit_pivchol("np.arange", "np.stack", "np.where"),
        "tridiag_solve": lambda c, n, a: f"_tridiag_solve({', '.join(a)}, np.concatenate, np.stack, np.log)",
        "put": lambda c, n, a: f"_put_rows({a[0]}, {index_code(n, a, pyexpr(n.attrs['n']))}, {pyexpr(n.attrs['n'])})",
        "tridiag_logdet": lambda c, n, a: f"_tridiag_logdet({', '.join(a)}, np.concatenate, np.stack, np.log)",
        "slq": emit_slq("np.linalg.eigh", "lambda m: np.eye(m, dtype={z}.dtype)", "np.log"),
        "linrec": lambda c, n, a: f"_linrec({a[0]}, {a[1]}, np.stack)",
        "eigh": lambda c, n, a: f"_eigh({a[0]}, np.linalg.eigh, np.concatenate)",
        "expm": lambda c, n, a: f"_expm({a[0]})",
        "kernel_apply": lambda c, n, a: (f"_kernel_apply({', '.join(a)}, {n.attrs['family']!r}, "
                                         f"{int(n.attrs['tile'])}, np.exp)"),
        "kernel_matrix": lambda c, n, a: (f"_kernel_matrix({', '.join(a)}, {n.attrs['family']!r}, "
                                          f"{int(n.attrs['tile'])}, np.exp)"),
        "invroot_newton": lambda c, n, a: newton_call(n, a, f"np.eye({a[0]}.shape[-1], dtype={a[0]}.dtype)"),
    }
