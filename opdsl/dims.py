"""Symbolic dimensions.

Every dim is a sympy symbol (positive integer).  A dim may be concrete
(``dim n = 64``), derived (``dim m = n / 4``) or free (``dim B``, bound from the
arguments at call time).  Shapes are tuples of sympy expressions over these
symbols; two shapes match only when their difference simplifies to zero once
the concrete values are substituted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp


def sym(name: str) -> sp.Symbol:
    return sp.Symbol(name, integer=True, positive=True)


@dataclass
class DimTable:
    """The dims of one program: symbol, concrete value (or None) and size hint."""

    symbols: dict[str, sp.Symbol] = field(default_factory=dict)
    values: dict[sp.Symbol, int] = field(default_factory=dict)   # concrete and derived
    derived: dict[sp.Symbol, sp.Expr] = field(default_factory=dict)
    hints: dict[sp.Symbol, int] = field(default_factory=dict)

    def free(self) -> list[sp.Symbol]:
        return [s for s in self.symbols.values() if s not in self.values and s not in self.derived]

    def subs(self, expr):
        """Substitute every known value (derived dims first, then concrete)."""
        expr = sp.sympify(expr)
        for _ in range(len(self.derived) + 1):
            new = expr.subs(self.derived)
            if new == expr:
                break
            expr = new
        return sp.simplify(expr.subs(self.values))

    def value(self, expr) -> int | None:
        """The integer value of expr when every dim in it is known, else None."""
        v = self.subs(expr)
        if v.free_symbols:
            return None
        if not v.is_integer:
            return None
        return int(v)

    def hinted(self, expr, default: int = 256) -> int:
        """A number for cost estimates: known values, then hints, then `default`."""
        v = self.subs(expr)
        if v.free_symbols:
            v = v.subs({s: self.hints.get(s, default) for s in v.free_symbols})
        return int(sp.ceiling(v))

    def equal(self, a, b) -> bool:
        return sp.simplify(self.subs(a) - self.subs(b)) == 0


def fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def prod(xs):
    out = sp.Integer(1)
    for x in xs:
        out = out * x
    return out
