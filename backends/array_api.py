"""The emit entries that Python backends spell alike.

`python_emit()`: what numpy, jax.numpy and torch all write the same way (operators, reshape,
slicing); `emit_cg`: conjugate gradients through the module's _cg helper (numpy); `emit_pivchol`: the
pivoted Cholesky factor through _pivchol (numpy, torch, jax).  `array_api_emit("np")` / `array_api_emit("jnp")`: those plus what numpy and jax.numpy
spell alike; each backend adds what differs (einsum options, linear algebra, FAVOR features, how
a singular matrix is reported).  Torch names most functions differently (dim=, keepdim=, .mT,
masked_fill), so it adds the rest of its table itself.
"""
from __future__ import annotations

import math

from opdsl.primitives import CG_PRECOND_OPERANDS

from .pycodegen import nested_function
from .pyexpr import fill_value, index_expr, pyexpr, shape_code
from .pyruntime import site

# elementwise functions: `{xp}` is the array module, `{x}` the operand
UNARY = {
    "neg": "-{x}", "exp": "{xp}.exp({x})", "log": "{xp}.log({x})", "sqrt": "{xp}.sqrt({x})",
    "recip": "1.0 / {x}", "relu": "{xp}.maximum({x}, 0)", "abs": "{xp}.abs({x})", "square": "{xp}.square({x})",
    # the stable form: exp never sees a positive argument
    "elu1": "{xp}.where({x} >= 0, {x} + 1, {xp}.exp({xp}.minimum({x}, 0)))",
}


def index_code(n, a, bound: str) -> str:
    """The row indices of a take / put node: its compile-time indices as an integer numpy array (every
    array library indexes with one), or its index operand checked to lie in [0, bound) (_index)."""
    if len(a) == 1:
        return f"np.array({list(n.attrs['idx'])!r})"
    return f"_index({site(n.span)!r}, {a[1]}, {bound})"


def python_emit() -> dict:
    """Emit entries written with Python operators and methods every array type has."""
    return {
        "reshape": lambda c, n, a: f"{a[0]}.reshape{shape_code(n.attrs['shape'])}",
        "take": lambda c, n, a: f"{a[0]}[..., {index_code(n, a, f'{a[0]}.shape[-2]')}, :]",
        "slice": lambda c, n, a: a[0] + index_expr(None, n.attrs["axis"], pyexpr(n.attrs["start"]),
                                                   pyexpr(n.attrs["stop"])),
        "matmul": lambda c, n, a: f"{a[0]} @ {a[1]}",
        "add": lambda c, n, a: f"{a[0]} + {a[1]}",
        "sub": lambda c, n, a: f"{a[0]} - {a[1]}",
        "mul": lambda c, n, a: f"{a[0]} * {a[1]}",
        "div": lambda c, n, a: f"{a[0]} / {a[1]}",
        "scale": lambda c, n, a: f"{a[0]} * {n.attrs['c']!r}",
    }


def array_api_emit(xp: str) -> dict:
    """Emit entries (primitive -> fn(ctx, node, args) -> str) written with array module `xp`."""
    def dtype(c, n):
        return c.backend.dtype(n.attrs["dtype"])

    def num(v) -> str:
        v = float(v)
        return (f"{xp}.inf" if v > 0 else f"-{xp}.inf") if math.isinf(v) else repr(v)

    def tril(c, n, a):
        k, fill = int(n.attrs.get("k", 0)), n.attrs.get("fill", 0.0)
        if fill == 0.0:
            return f"{xp}.tril({a[0]}, {k})"
        r, cl = (pyexpr(s) for s in n.type.shape[-2:])
        return f"{xp}.where({xp}.tri({r}, {cl}, {k}, dtype=bool), {a[0]}, {num(fill)})"

    def reduce(fn):
        return lambda c, n, a: f"{xp}.{fn}({a[0]}, axis={n.attrs['axis']}, keepdims={bool(n.attrs.get('keepdims'))})"

    return {
        **python_emit(),
        "eye": lambda c, n, a: f"{xp}.eye({pyexpr(n.attrs['n'])}, dtype={dtype(c, n)})",
        "zeros": lambda c, n, a: f"{xp}.zeros({shape_code(n.attrs['shape'])}, dtype={dtype(c, n)})",
        "fill": lambda c, n, a: (f"{xp}.full({shape_code(n.attrs['shape'])}, {fill_value(n.attrs['value'])}, "
                                 f"dtype={dtype(c, n)})"),
        "tri": lambda c, n, a: (f"{xp}.tri({pyexpr(n.attrs['n'])}, {pyexpr(n.attrs['m'])}, {int(n.attrs['k'])}, "
                                f"dtype={dtype(c, n)})"),
        "permute": lambda c, n, a: f"{xp}.transpose({a[0]}, {tuple(n.attrs['perm'])})",
        "swap": lambda c, n, a: f"{xp}.swapaxes({a[0]}, -1, -2)",
        "flip": lambda c, n, a: f"{xp}.flip({a[0]}, axis={n.attrs['axis']})",
        "concat": lambda c, n, a: f"{xp}.concatenate([{', '.join(a)}], axis={n.attrs['axis']})",
        "tril": tril,
        "shift": lambda c, n, a: f"{a[0]} + {num(n.attrs['c'])}",
        "unary": lambda c, n, a: UNARY[n.attrs["fn"]].format(xp=xp, x=a[0]),
        "cast": lambda c, n, a: f"{a[0]}.astype({dtype(c, n)})",
        "sum": reduce("sum"),
        "max": reduce("max"),
        "cumsum": lambda c, n, a: f"{xp}.cumsum({a[0]}, axis={n.attrs['axis']})",
        "rfft": lambda c, n, a: f"{xp}.fft.rfft({a[0]}, n={pyexpr(n.attrs['n'])}, axis=-1)",
        "irfft": lambda c, n, a: f"{xp}.fft.irfft({a[0]}, n={pyexpr(n.attrs['n'])}, axis=-1)",
        "rfftn": lambda c, n, a: (f"{xp}.fft.rfftn({a[0]}, s={shape_code(n.attrs['s'])}, "
                                  f"axes={tuple(range(-len(n.attrs['s']), 0))})"),
        "irfftn": lambda c, n, a: (f"{xp}.fft.irfftn({a[0]}, s={shape_code(n.attrs['s'])}, "
                                   f"axes={tuple(range(-len(n.attrs['s']), 0))})"),
        "diagonal": lambda c, n, a: f"{xp}.diagonal({a[0]}, axis1=-2, axis2=-1)",
        "slogdet": lambda c, n, a: f"{xp}.linalg.slogdet({a[0]})[1]",
    }


def newton_call(n, a, ident):
    """numpy / torch: the module's _newton_root helper (pyruntime.NEWTON_RUNTIME)."""
    at = n.attrs
    return (f"_newton_root({site(n.span)!r}, {a[0]}, {ident}, {int(at['root'])}, {float(at['eps'])!r}, "
            f"{float(at['tol'])!r}, {int(at['maxiter'])})")


def emit_slq(eigh, eye, log):
    """numpy / torch / jax: the loop body as a nested function, then _slq (pyruntime.SLQ_RUNTIME)
    with the library's eigh, identity and log."""
    def emit(ctx, n, a):
        pre = CG_PRECOND_OPERANDS[n.attrs.get("precond", "none")]      # for the gradient's solves (torch)
        fname, lines = nested_function(ctx, n.attrs["body"], a[1 + pre:])
        return lines, f"_slq({fname}, {a[0]}, {int(n.attrs['steps'])}, {eigh}, {eye.format(z=a[0])}, {log})"
    return emit


def emit_cg(ctx, n, a):
    """numpy: the loop body as a nested function, then _cg (pyruntime.CG_RUNTIME) with the
    preconditioner's operands."""
    pre = CG_PRECOND_OPERANDS[n.attrs.get("precond", "none")]
    fname, lines = nested_function(ctx, n.attrs["body"], a[1 + pre:])
    return lines, (f"_cg({site(n.span)!r}, {fname}, {a[0]}, {n.attrs['tol']!r}, "
                   f"{int(n.attrs['maxiter'])}{''.join(', ' + x for x in a[1:1 + pre])})")


def emit_pivchol(arange, stack, where):
    """numpy / torch / jax: the column body as a nested function, then _pivchol
    (pyruntime.PIVCHOL_RUNTIME) with the library's arange, stack and where."""
    def emit(ctx, n, a):
        fname, lines = nested_function(ctx, n.attrs["body"], a[1:], base="_column")
        return lines, f"_pivchol({fname}, {a[0]}, {int(n.attrs['rank'])}, {arange.format(d=a[0])}, {stack}, {where})"
    return emit