"""Builds operator IR from values: the semantics of `@ + - * / .T` and calls.

Both front ends use it — the `.op` frontend (frontend.py) and the Python
tracer (trace.py) — so the language has one meaning and one list of
constructors (kinds.CONSTRUCTORS).
"""
from __future__ import annotations

import difflib
import math

import sympy as sp

from .errors import NameError_, OpdslError, ShapeError, TypeError_
from .ir import Graph
from .kinds import CONSTRUCTORS, REGISTRY, Val
from .kinds.base import INDEX_DTYPES


class Builder:
    def __init__(self, graph: Graph, known=None):
        self.g = graph
        self.known = known if known is not None else {}  # names in scope, for "did you mean"

    def unknown(self, val: Val):
        close = difflib.get_close_matches(str(val.v), list(self.known), n=3)
        raise NameError_(f"unknown name {val.v!r}", val.span,
                         hint=f"did you mean {', '.join(close)}?" if close else
                         "declare it with `input`, `param`, `dim` or `let` before use")

    # ---- nodes --------------------------------------------------------
    def add(self, kind, operands=(), attrs=None, span=None, name=None) -> int:
        allowed = REGISTRY[kind].index_operands
        for i, o in enumerate(operands):
            dt = getattr(self.g.type(o), "dtype", None)
            if dt in INDEX_DTYPES and i not in allowed:
                raise TypeError_(f"an {dt} tensor holds indices and cannot be computed with", span,
                                 hint="integer tensors are the indices of select(idx, n); declare data float32 "
                                      "or float64")
        return self.g.add(kind, operands, attrs, span, name)

    def node(self, v: int, span=None) -> Val:
        return Val("node", v, span)

    def type_of(self, val: Val):
        return self.g.type(val.v) if val.tag == "node" else None

    def op(self, val: Val) -> int:
        """The operand as an operator: a matrix-shaped tensor becomes dense(T)."""
        if val.tag == "word":
            self.unknown(val)
        if val.tag != "node":
            raise TypeError_(f"expected an operator, got {describe(val)}", val.span,
                             hint="operators are tensors [m, n] or constructors like kron(...), diag(...)")
        t = self.g.type(val.v)
        if t.is_op:
            return val.v
        if len(t.shape) < 2:
            raise TypeError_(f"a tensor {t} cannot be used as an operator (it needs at least 2 dims)", val.span,
                             hint="use diag(d) for a vector of diagonal entries")
        return self.add("dense", [val.v], span=val.span)

    def tensor(self, val: Val, ranks=None, what="argument") -> int:
        if val.tag == "word":
            self.unknown(val)
        if val.tag != "node" or self.g.type(val.v).is_op:
            raise TypeError_(f"{what} must be a tensor, got {describe(val, self.g)}", val.span)
        t = self.g.type(val.v)
        if ranks is not None and len(t.shape) not in ranks:
            want = " or ".join(str(r) for r in ranks)
            raise ShapeError(f"{what} must have rank {want}, got a tensor {t}", val.span)
        return val.v

    def dim(self, val: Val):
        if val.tag == "dim":
            return val.v
        if val.tag == "num" and float(val.v).is_integer() and val.v > 0:
            if int(val.v) > MAX_DIM:
                raise TypeError_(f"the dimension {int(val.v)} is too large", val.span,
                                 hint="a tensor dimension must be below 2**63 (sizes are signed 64-bit integers)")
            return sp.Integer(int(val.v))
        raise TypeError_(f"expected a dimension, got {describe(val, self.g)}", val.span,
                         hint="dimensions are positive integers or names declared with `dim`")

    def num(self, val: Val) -> float:
        if val.tag == "num":
            return val.v
        if val.tag == "dim":
            v = self.g.dims.value(val.v)
            if v is not None:
                return v
        raise TypeError_(f"expected a number, got {describe(val, self.g)}", val.span)

    def word(self, val: Val, choices, what="option") -> str:
        if val.tag == "word" and val.v in choices:
            return val.v
        got = val.v if val.tag == "word" else describe(val, self.g)
        raise TypeError_(f"unknown {what} {got!r}", val.span, hint=f"choose one of: {', '.join(choices)}")

    def option_call(self, val: Val, fname: str, lo: int, hi: int) -> list:
        """The number arguments of an option value written `fname(...)` (Val "call")."""
        name, args = val.v
        if name != fname:
            raise TypeError_(f"unknown option value {name}(...)", val.span, hint=OPTION_CALLS.get(name, ""))
        if not lo <= len(args) <= hi:
            raise TypeError_(f"{fname}(...) takes {lo} to {hi} arguments, got {len(args)}", val.span,
                             hint=OPTION_CALLS[fname])
        return [self.num(a) for a in args]

    def flag(self, val: Val) -> bool:
        if val.tag == "bool":
            return val.v
        raise TypeError_(f"expected true or false, got {describe(val, self.g)}", val.span)

    def arity(self, kind, args, span, lo=None, hi=-1):
        lo = kind.arity[0] if lo is None else lo
        hi = kind.arity[1] if hi == -1 else hi
        n = len(args)
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
            raise TypeError_(f"{kind.constructors[0]}(...) takes {want} arguments, got {n}", span)

    def no_kwargs(self, kind, kwargs):
        for k, v in kwargs.items():
            raise TypeError_(f"{kind.constructors[0]}(...) has no option {k!r}", v.span)

    # ---- the operators of the language ---------------------------------
    def matmul(self, a: Val, b: Val, span) -> Val:
        self._nodes(a, b, "@", span)
        if self.g.type(b.v).is_op:
            return self.node(self.add("compose", [self.op(a), b.v], span=span), span)
        return self.node(self.add("apply", [self.op(a), b.v], span=span), span)

    def plus(self, a: Val, b: Val, span) -> Val:
        if a.tag in ("num", "dim") and b.tag in ("num", "dim"):
            return arith(a, b, lambda x, y: x + y, span)
        self._nodes(a, b, "+", span)
        ta, tb = self.g.type(a.v), self.g.type(b.v)
        if not ta.is_op and not tb.is_op:
            return self.node(self.add("tadd", [a.v, b.v], span=span), span)
        return self.node(self.add("sum", [self.op(a), self.op(b)], span=span), span)

    def minus(self, a: Val, b: Val, span) -> Val:
        if a.tag in ("num", "dim") and b.tag in ("num", "dim"):
            return arith(a, b, lambda x, y: x - y, span)
        return self.plus(a, self.negate(b, span), span)

    def negate(self, a: Val, span) -> Val:
        if a.tag in ("num", "dim"):
            return Val("num", -self.num(a), span)
        return self.times(Val("num", -1.0, span), a, span)

    def times(self, a: Val, b: Val, span) -> Val:
        if a.tag in ("num", "dim") and b.tag in ("num", "dim"):
            return nonzero(arith(a, b, lambda x, y: x * y, span), a, b, "*")
        if a.tag == "node" and b.tag in ("num", "dim"):
            a, b = b, a
        if a.tag in ("num", "dim") and b.tag == "node":
            c = finite(self.num(a), a.span or span)
            dtype = self.g.type(b.v).dtype
            if dtype in FLOAT_MAX and abs(c) > FLOAT_MAX[dtype]:
                raise TypeError_(f"the constant {c:g} overflows {dtype} (largest {FLOAT_MAX[dtype]:g})",
                                 a.span or span, hint="scale by a smaller constant, or declare the tensors float64")
            if c != 0 and abs(c) < FLOAT_MIN.get(dtype, 0.0):
                raise TypeError_(f"the constant {c:g} is 0 in {dtype} (smallest {FLOAT_MIN[dtype]:g})",
                                 a.span or span, hint="write 0 if 0 is meant, or declare the tensors float64")
            kind = "scale" if self.g.type(b.v).is_op else "tscale"
            return self.node(self.add(kind, [b.v], {"c": c}, span=span), span)
        raise TypeError_(f"cannot multiply {describe(a, self.g)} by {describe(b, self.g)} with `*`", span,
                         hint="`*` scales by a number; use `@` for products of operators")

    def divide(self, a: Val, b: Val, span) -> Val:
        if a.tag in ("num", "dim") and b.tag in ("num", "dim"):
            if b.tag == "num" and b.v == 0:
                raise TypeError_("division by zero", b.span)
            return nonzero(arith(a, b, lambda x, y: x / y, span), a, b, "/")
        if a.tag == "node" and b.tag in ("num", "dim"):
            c = finite(self.num(b), b.span)
            if c == 0:
                raise TypeError_("division by zero", b.span)
            return self.times(Val("num", finite(1.0 / c, b.span), b.span), a, span)
        raise TypeError_(f"cannot divide {describe(a, self.g)} by {describe(b, self.g)}", span,
                         hint="only division by a number is allowed; use inv(A) for an inverse")

    def attr(self, a: Val, name: str, span) -> Val:
        if name != "T":
            raise TypeError_(f"unknown attribute .{name}", span, hint="the only attribute is .T (transpose)")
        if a.tag != "node":
            raise TypeError_(f".T needs an operator or a matrix, got {describe(a)}", span)
        if self.g.type(a.v).is_op:
            return self.node(self.add("transpose", [a.v], span=span), span)
        return self.node(self.add("tT", [a.v], span=span), span)

    def call(self, fname: str, args: list[Val], kwargs: dict, span, names: dict | None = None) -> Val:
        """fname(*args, **kwargs); `names` gives the span of each keyword's name (for its errors).
        An option's value written as a call (precond=pivchol(15): OPTION_CALLS) is a Val "call"
        holding (name, numbers), read by the kind the option belongs to (Builder.option_call)."""
        if fname in OPTION_CALLS:
            for val in kwargs.values():
                raise TypeError_(f"{fname}(...) takes no options", val.span, hint=OPTION_CALLS[fname])
            return Val("call", (fname, tuple(args)), span)
        kind = CONSTRUCTORS.get(fname)
        if kind is None:
            close = difflib.get_close_matches(fname, sorted(CONSTRUCTORS), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else \
                f"known operators: {', '.join(sorted(CONSTRUCTORS))}"
            raise TypeError_(f"unknown operator {fname}(...)", span, hint=hint)
        args, kwargs = self.bind(fname, kind, list(args), dict(kwargs), span, names or {})
        out = kind.construct(self, args, kwargs, span)
        return out if isinstance(out, Val) else self.node(out, span)

    def bind(self, fname, kind, args, kwargs, span, names):
        """Keywords as a Python function takes them: one naming a parameter (kind.params, e.g.
        conv(h, n=K)) fills its position; the others must be options of the kind (kind.options).
        A kind that declares neither (params None) checks its keywords itself."""
        params, options = getattr(kind, "params", None), getattr(kind, "options", ())
        if params is None:
            return args, kwargs
        where = {k: names.get(k, v.span) for k, v in kwargs.items()}
        slots: dict[int, Val] = {}
        for key in list(kwargs):
            if key in params:
                i = params.index(key)
                if i < len(args):
                    raise TypeError_(f"{fname}(...) got two values for {key!r}: by position and by name",
                                     where[key], hint=f"usage: {_usage(fname, kind)}")
                slots[i] = kwargs.pop(key)
            elif key not in options:
                close = difflib.get_close_matches(key, list(params) + list(options), n=1)
                usage = f"usage: {_usage(fname, kind)}" if params or options else \
                    f"{fname}(...) takes its arguments by position, without names"
                raise TypeError_(f"{fname}(...) has no option {key!r}", where[key],
                                 hint=(f"did you mean {close[0]}? " if close else "") + usage)
        for i in sorted(slots):
            if i > len(args):
                raise TypeError_(f"{fname}(...) is missing its argument {params[len(args)]!r}", span,
                                 hint=f"usage: {_usage(fname, kind)}")
            args.append(slots[i])
        return args, kwargs

    def _nodes(self, a: Val, b: Val, sym: str, span):
        for x in (a, b):
            if x.tag == "word":
                self.unknown(x)
            if x.tag != "node":
                raise TypeError_(f"`{sym}` needs operators or tensors, got {describe(x, self.g)}", x.span or span)


MAX_DIM = 2**63 - 1        # the largest size of one dimension (frontend.MAX_DIM)
# the largest finite value of each narrow dtype: a scale beyond it makes every entry inf
FLOAT_MAX = {"float32": 3.4028234663852886e38, "bfloat16": 3.3895313892515355e38, "float16": 65504.0}
# the smallest positive (subnormal) value: a nonzero scale below it rounds to 0 in that dtype
FLOAT_MIN = {"float32": 1.401298464324817e-45, "bfloat16": 9.183549615799121e-41, "float16": 5.960464477539063e-08,
             "float64": 5e-324}


def _usage(fname, kind) -> str:
    """`conv(h, n, causal=...)`: a constructor's parameters and options, for hints."""
    parts = list(kind.params) + [f"{o}=..." for o in kind.options]
    if kind.arity[1] is None:
        parts.append("...")
    return f"{fname}({', '.join(parts)})"


def finite(x, span) -> float:
    """x as a finite float, or a TypeError_ at span (1e400, 1e200 * 1e200, 1 / 1e-320)."""
    try:
        f = float(x)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise TypeError_("this number is out of range", span,
                         hint="constants must be finite float64 numbers (|c| < 1.8e308)")
    return f


def nonzero(out: Val, a: Val, b: Val, op: str) -> Val:
    """out = a * b or a / b, unless it underflowed float64 to 0 (1e-200 * 1e-200): an error, as
    1e200 * 1e200 is (finite) and a literal that is 0 without being written 0 (frontend)."""
    if out.tag == "num" and out.v == 0 and a.v != 0 and b.v != 0:
        raise TypeError_(f"the constant {a.v:g} {op} {b.v:g} is 0 in float64 "
                         f"(smallest {FLOAT_MIN['float64']:g})", out.span,
                         hint="write 0 if 0 is meant, or use larger constants")
    return out


def arith(a: Val, b: Val, fn, span) -> Val:
    if a.tag == "num" and b.tag == "num":
        v = fn(a.v, b.v)
        finite(v, span)
        return Val("num", v, span)
    return Val("dim", sp.nsimplify(fn(sp.sympify(a.v), sp.sympify(b.v))), span)


# option values written as calls -> their usage (not operators: `pivchol(15) @ x` is an error)
OPTION_CALLS = {"pivchol": "a preconditioner of inv(A, method=cg): precond=pivchol(rank), e.g. pivchol(15)"}


def describe(val: Val, g=None) -> str:
    if val.tag == "call":
        return f"the option value {val.v[0]}(...)"
    if val.tag == "list":
        return f"a list of {len(val.v)}"
    if val.tag == "node":
        t = g.type(val.v) if g is not None else None
        if t is None:
            return "a value"
        return f"an operator {t}" if t.is_op else f"a tensor {t}"
    return {"num": f"the number {val.v}", "dim": f"the dimension {val.v}", "word": f"the name {val.v!r}",
            "bool": f"the value {str(val.v).lower()}"}.get(val.tag, val.tag)


__all__ = ["Builder", "Val", "OpdslError", "REGISTRY"]
