"""The numpy backend: the reference implementation of every primitive."""
from __future__ import annotations

from .pycodegen import PythonBackend, index_expr, pyexpr, shape_code

UNARY = {
    "neg": "-{x}", "exp": "np.exp({x})", "log": "np.log({x})", "sqrt": "np.sqrt({x})",
    "recip": "1.0 / {x}", "relu": "np.maximum({x}, 0)", "abs": "np.abs({x})", "square": "np.square({x})",
    "elu1": "np.where({x} >= 0, {x} + 1, np.exp(np.minimum({x}, 0)))",
}


class NumpyBackend(PythonBackend):
    name = "numpy"
    imports = ("import numpy as np",)
    dtypes = {"float32": "np.float32", "float64": "np.float64", "float16": "np.float16"}
    reserved = ("np",)
    emit = {
        "eye": lambda c, n, a: f"np.eye({pyexpr(n.attrs['n'])}, dtype={c.backend.dtype(n.attrs['dtype'])})",
        "zeros": lambda c, n, a: f"np.zeros({shape_code(n.attrs['shape'])}, dtype={c.backend.dtype(n.attrs['dtype'])})",
        "reshape": lambda c, n, a: f"{a[0]}.reshape{shape_code(n.attrs['shape'])}",
        "permute": lambda c, n, a: f"np.transpose({a[0]}, {n.attrs['perm']})",
        "swap": lambda c, n, a: f"np.swapaxes({a[0]}, -1, -2)",
        "matmul": lambda c, n, a: f"{a[0]} @ {a[1]}",
        "einsum": lambda c, n, a: f"np.einsum({n.attrs['spec']!r}, {', '.join(a)}, optimize=True)",
        "add": lambda c, n, a: f"{a[0]} + {a[1]}",
        "sub": lambda c, n, a: f"{a[0]} - {a[1]}",
        "mul": lambda c, n, a: f"{a[0]} * {a[1]}",
        "div": lambda c, n, a: f"{a[0]} / {a[1]}",
        "scale": lambda c, n, a: f"{a[0]} * {n.attrs['c']!r}",
        "unary": lambda c, n, a: UNARY[n.attrs["fn"]].format(x=a[0]),
        "sum": lambda c, n, a: f"{a[0]}.sum(axis={n.attrs['axis']}, keepdims={bool(n.attrs.get('keepdims'))})",
        "cumsum": lambda c, n, a: f"np.cumsum({a[0]}, axis={n.attrs['axis']})",
        "concat": lambda c, n, a: f"np.concatenate([{', '.join(a)}], axis={n.attrs['axis']})",
        "slice": lambda c, n, a: a[0] + index_expr(None, n.attrs["axis"], pyexpr(n.attrs["start"]),
                                                   pyexpr(n.attrs["stop"])),
        "rfft": lambda c, n, a: f"np.fft.rfft({a[0]}, n={pyexpr(n.attrs['n'])}, axis=-1)",
        "irfft": lambda c, n, a: f"np.fft.irfft({a[0]}, n={pyexpr(n.attrs['n'])}, axis=-1)",
        "cast": lambda c, n, a: f"{a[0]}.astype({c.backend.dtype(n.attrs['dtype'])})",
        "solve_triangular": lambda c, n, a: f"np.linalg.solve(np.{'triu' if n.attrs.get('upper', True) else 'tril'}({a[0]}), {a[1]})",
    }


# ---- structured families: attention and FFT convolution (opdsl/kinds/attention.py, fftconv.py) ----
def _np_num(v) -> str:
    v = float(v)
    return ("np.inf" if v > 0 else "-np.inf") if v in (float("inf"), float("-inf")) else repr(v)


def _np_tril(c, n, a):
    k, fill = int(n.attrs.get("k", 0)), n.attrs.get("fill", 0.0)
    if fill == 0.0:
        return f"np.tril({a[0]}, {k})"
    r, cl = (pyexpr(s) for s in n.type.shape[-2:])
    return f"np.where(np.tri({r}, {cl}, {k}, dtype=bool), {a[0]}, {_np_num(fill)})"


def _np_orf(c, n, a):
    from opdsl.primitives import orf_expr
    return f"{orf_expr(n.attrs['m'], n.attrs['d'], n.attrs['seed'])}.astype({c.backend.dtype(n.attrs['dtype'])})"


NumpyBackend.emit.update({
    "max": lambda c, n, a: f"{a[0]}.max(axis={n.attrs['axis']}, keepdims={bool(n.attrs.get('keepdims'))})",
    "tril": _np_tril,
    "flip": lambda c, n, a: f"np.flip({a[0]}, axis={n.attrs['axis']})",
    "shift": lambda c, n, a: f"{a[0]} + {_np_num(n.attrs['c'])}",
    "tri": lambda c, n, a: f"np.tri({pyexpr(n.attrs['n'])}, {pyexpr(n.attrs['m'])}, {int(n.attrs['k'])}, dtype={c.backend.dtype(n.attrs['dtype'])})",
    "orf": _np_orf,
})


# ---- linear algebra (opdsl/kinds/linalg.py, docs/linalg.md): singular matrices raise SingularError ----
from .pycodegen import emit_cg, fill_value, site  # noqa: E402

NumpyBackend.emit.update({
    "solve": lambda c, n, a: f"_linalg({site(n.span)!r}, np.linalg.solve, {a[0]}, {a[1]})",
    "cholesky": lambda c, n, a: f"_linalg({site(n.span)!r}, np.linalg.cholesky, {a[0]})",
    "cho_solve": lambda c, n, a: (f"_linalg({site(n.span)!r}, np.linalg.solve, np.swapaxes({a[0]}, -1, -2), "
                                  f"np.linalg.solve({a[0]}, {a[1]}))"),
    "checked": lambda c, n, a: f"_finite({site(n.span)!r}, {a[0]})",
    "slogdet": lambda c, n, a: f"np.linalg.slogdet({a[0]})[1]",
    "diagonal": lambda c, n, a: f"np.diagonal({a[0]}, axis1=-2, axis2=-1)",
    "fill": lambda c, n, a: (f"np.full({shape_code(n.attrs['shape'])}, {fill_value(n.attrs['value'])}, "
                             f"dtype={c.backend.dtype(n.attrs['dtype'])})"),
    "cg": emit_cg,
})
_np_solve_triangular = NumpyBackend.emit["solve_triangular"]


def _np_checked_triangular(c, n, a):
    """A triangular leaf of inv (attribute `checked`): numpy raises on a singular factor; report it
    as SingularError like the other solves."""
    code = _np_solve_triangular(c, n, a)
    return f"_linalg({site(n.span)!r}, lambda: {code})" if n.attrs.get("checked") else code


NumpyBackend.emit["solve_triangular"] = _np_checked_triangular
