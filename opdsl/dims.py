"""Symbolic dimensions.

Every dim is a sympy symbol (positive integer).  A dim may be concrete
(``dim n = 64``), derived (``dim m = n / 4``) or free (``dim B``, bound from the
arguments at call time).  Shapes are tuples of sympy expressions over these
symbols; two shapes match only when their difference simplifies to zero once
the concrete values are substituted.
"""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

import sympy as sp


# The dims of the graph whose shape rules are running (set by Graph.add): helpers such as
# primitives.broadcast compare sizes with it, so `L` and `d` match when both are 8.
CURRENT: ContextVar = ContextVar("opdsl_current_dims", default=None)


def same_size(a, b) -> bool:
    """Whether two sizes are equal: structurally, or by the values of the current dims."""
    if a == b:
        return True
    t = CURRENT.get()
    return t is not None and t.equal(a, b)


def sym(name: str) -> sp.Symbol:
    return sp.Symbol(name, integer=True, positive=True)


@dataclass
class DimTable:
    """The dims of one program: symbol, concrete value (or None) and size hint."""

    symbols: dict[str, sp.Symbol] = field(default_factory=dict)
    values: dict[sp.Symbol, int] = field(default_factory=dict)   # concrete and derived
    derived: dict[sp.Symbol, sp.Expr] = field(default_factory=dict)
    hints: dict[sp.Symbol, int] = field(default_factory=dict)
    # subs() results; keyed by the sizes of values and derived too, which only grow (the frontend
    # adds dims one statement at a time); a copy with other values must start a new memo
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    def free(self) -> list[sp.Symbol]:
        return [s for s in self.symbols.values() if s not in self.values and s not in self.derived]

    def subs(self, expr):
        """Substitute every known value (derived dims first, then concrete)."""
        expr = sp.sympify(expr)
        key = (expr, len(self.values), len(self.derived))
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        out = expr
        for _ in range(len(self.derived) + 1):
            new = out.subs(self.derived)
            if new == out:
                break
            out = new
        out = sp.simplify(out.subs(self.values))
        if len(self._memo) > 100_000:
            self._memo.clear()
        self._memo[key] = out
        return out

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
        x, y = self.subs(a), self.subs(b)
        if x == y:
            return True
        key = ("equal", x, y)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = sp.simplify(x - y) == 0
        return hit


def fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def prod(xs):
    out = sp.Integer(1)
    for x in xs:
        out = out * x
    return out
