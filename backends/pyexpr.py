"""Python spellings of what emit tables write: dim expressions, shapes, slices, fill values."""
from __future__ import annotations

import math

import sympy as sp


def pyexpr(e) -> str:
    """A sympy integer expression as Python source using integer arithmetic."""
    e = sp.sympify(e)
    if e.is_Integer:
        return str(int(e))
    if e.is_Symbol:
        return e.name
    num, den = sp.fraction(sp.together(e))
    s = _plain(num)
    if den != 1:
        s = f"({s}) // {_plain(den)}" if not (num.is_Symbol or num.is_Integer) else f"{s} // {_plain(den)}"
    return s


class _Printer(sp.printing.str.StrPrinter):
    """sympy's str, with floor(a / b) as integer division (a strided size: conv's stride)."""

    def _print_floor(self, expr):
        num, den = sp.fraction(sp.together(expr.args[0]))
        return f"(({self._print(num)}) // ({self._print(den)}))"

    def _print_Max(self, expr):
        return f"max({', '.join(self._print(a) for a in expr.args)})"


def _plain(e) -> str:
    s = _Printer().doprint(e).replace("**", "^").replace("*", " * ").replace("^", " ** ")
    return s


def shape_code(shape) -> str:
    """A shape as a Python tuple: `(n, 4)`, `(n,)`."""
    parts = [pyexpr(d) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def shape_str(shape) -> str:
    """A shape as the source writes it, for messages and docstrings: `[n, 4]`."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def index_expr(ndim_hint: int | None, axis: int, start: str, stop: str) -> str:
    """`[..., a:b, :]`-style index for a slice along one (negative or positive) axis."""
    if axis < 0:
        return "[..., " + f"{start}:{stop}" + ", :" * (-axis - 1) + "]"
    return "[" + ":, " * axis + f"{start}:{stop}" + "]"


def number(v) -> str:
    """A float as Python source: float('inf') / float('nan') where repr would not read back."""
    v = float(v)
    return repr(v) if math.isfinite(v) else f"float('{v}')"


def fill_value(value) -> str:
    """A fill value as Python: a number, or a dim expression over the function's dims."""
    v = sp.sympify(value)
    if v.free_symbols:
        return f"float({pyexpr(v)})"
    return repr(float(v))
