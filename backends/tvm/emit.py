"""The TVM backend's emit table: primitive -> fn(builder, node, operand tensors) -> TE tensor(s).

The whole table is here, in one place; the functions live by what they build (views.py,
elementwise.py, contract.py, fft.py, linalg.py).  builder.Builder looks each node up here.
"""
from __future__ import annotations

from . import contract, elementwise, fft, linalg, views

EMIT = {
    # constants
    "eye": elementwise.e_eye,
    "zeros": elementwise.e_zeros,
    "tri": elementwise.e_tri,
    "fill": elementwise.e_fill,
    "const": elementwise.e_const,
    # views
    "reshape": views.e_reshape,
    "permute": views.e_permute,
    "swap": views.e_swap,
    "slice": views.e_slice,
    "concat": views.e_concat,
    "flip": views.e_flip,
    "diagonal": views.e_diagonal,
    # elementwise
    "add": elementwise.binary("add"),
    "sub": elementwise.binary("sub"),
    "mul": elementwise.binary("mul"),
    "div": elementwise.binary("div"),
    "scale": elementwise.e_scale,
    "shift": elementwise.e_shift,
    "unary": elementwise.e_unary,
    "cast": elementwise.e_cast,
    "tril": elementwise.e_tril,
    # contractions and reductions
    "matmul": contract.e_matmul,
    "einsum": contract.e_einsum,
    "sum": contract.e_sum,
    "max": contract.e_max,
    "cumsum": contract.e_cumsum,
    "kernel_apply": contract.e_kernel_apply,
    "kernel_matrix": contract.e_kernel_matrix,
    # FFT
    "rfft": fft.e_rfft,
    "irfft": fft.e_irfft,
    # linear algebra
    "solve_triangular": linalg.e_solve_triangular,
    "solve": linalg.e_solve,
    "slogdet": linalg.e_slogdet,
    "cholesky": linalg.e_cholesky,
    "cho_solve": linalg.e_cho_solve,
    "checked": linalg.e_checked,
    "cg": linalg.e_cg,
    "linrec": linalg.e_linrec,
    "eigh": linalg.e_eigh,
    "expm": linalg.e_expm,
    "invroot_newton": linalg.e_invroot_newton,
    "slq": linalg.e_slq,
    "pivchol": linalg.e_pivchol,
    "tridiag_solve": linalg.e_tridiag_solve,
    "tridiag_logdet": linalg.e_tridiag_logdet,
    "take": linalg.e_take,
    "put": linalg.e_put,
    "spmm": linalg.e_spmm,
    "sparse_dense": linalg.e_sparse_dense,
    "sparse_diagonal": linalg.e_sparse_diagonal,
    "sparse_solve": linalg.e_sparse_solve,
    "sparse_logdet": linalg.e_sparse_logdet,
    "rfftn": fft.e_rfftn,
    "irfftn": fft.e_irfftn,
    "complex": linalg.e_complex,
}

# Primitives the TVM backend refuses with a BackendError naming them (no TE form here); programs
# that need them run on numpy, torch or JAX.  The catalogue expects exactly these refusals.
REFUSED = ("cg", "eigh", "expm", "invroot_newton", "pivchol", "put", "slq",
           "sparse_dense", "sparse_diagonal", "sparse_logdet", "sparse_solve", "spmm", "take", "tridiag_logdet",
           "tridiag_solve")
