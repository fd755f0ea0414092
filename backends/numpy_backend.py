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
