"""The Python embedding: the tracer objects ``@opdsl.jit`` calls a function with.

A function decorated with ``@opdsl.jit(backend=...)`` is called once per
signature (the shapes, dtypes and device of its tensor arguments, and the
values of its other arguments) with *tracer* objects in place of its tensors.
The operators on tracers (``@ + - * / .T``, unary ``-``) and the constructors
``opdsl.kron``, ``opdsl.diag``, ... go through the same ``Builder`` as the
``.op`` frontend (opdsl/builder.py), so both front ends build the same IR with
one meaning and one list of constructors: ``opdsl.<name>`` exists for every
name in ``opdsl.kinds.CONSTRUCTORS``.  The graph is compiled by the same
pipeline as an ``.op`` file (``Program.from_graph``), and later calls with the
same signature reuse the compiled function (opdsl/jit_function.py; what a
signature is and how it is keyed: opdsl/jit_cache.py).

Traced values have static shapes and no data: Python code may branch on
``x.shape`` or on non-tensor arguments, but ``if x ...``, comparisons,
indexing and conversions to numbers raise a ``TraceError`` that points at the
line of the function that did it.
"""
from __future__ import annotations

import linecache
import numbers
import sys
import threading
import types
from itertools import islice

import sympy as sp

from . import fmt
from .builder import OPTION_CALLS, Builder, describe
from .dims import DimTable
from .errors import Span, TypeError_
from .ir import Graph
from .kinds import CONSTRUCTORS, REGISTRY, Val

_INTERNAL = {__file__}     # frames of opdsl's tracing machinery: caller_span looks past them
_TEXTS: dict[str, str | None] = {}
_STATE = threading.local()


class TraceError(TypeError_):
    """Something a traced function did that cannot be traced (value-dependent control flow, ...)."""


class TracedAttributeError(TraceError, AttributeError):
    """An attribute a traced value does not have (still an AttributeError, so hasattr() works)."""


# ---- spans: the user's file:line:column ------------------------------------------

def _text(filename: str) -> str | None:
    if filename not in _TEXTS:
        lines = linecache.getlines(filename)
        _TEXTS[filename] = "".join(lines) if lines else None
    return _TEXTS[filename]


def internal(filename: str) -> None:
    """Declare a module of the tracing machinery (opdsl/jit_function.py): spans point past its frames."""
    _INTERNAL.add(filename)


def caller_span() -> Span | None:
    """The span of the innermost frame outside this module (the user's expression)."""
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename in _INTERNAL:
        f = f.f_back
    if f is None:
        return None
    code = f.f_code
    line, col, end = f.f_lineno, None, None
    try:
        pos = next(islice(code.co_positions(), f.f_lasti // 2, None))
        if pos[0] is not None:
            line = pos[0]
            if pos[2] is not None:
                col = pos[2] + 1
                end = pos[3] + 1 if pos[1] == pos[0] and pos[3] is not None else None
    except (StopIteration, AttributeError):
        pass
    return Span(code.co_filename, line or 1, col or 1, end, _text(code.co_filename))


def _def_span(fn) -> Span | None:
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    text = _text(code.co_filename)
    line = code.co_firstlineno
    if text is not None:   # skip decorator lines: point at `def`
        lines = text.splitlines()
        while line <= len(lines) and lines[line - 1].lstrip().startswith("@"):
            line += 1
    return Span(code.co_filename, line, 1, None, text)


# ---- the trace context ------------------------------------------------------------

class Context:
    """One trace in progress: the graph being built and its Builder."""

    def __init__(self, filename: str, source: str):
        self.graph = Graph(REGISTRY, DimTable(), meta={"file": filename, "source": source})
        self.b = Builder(self.graph)


def _current(what: str) -> Context:
    stack = getattr(_STATE, "stack", None)
    if not stack:
        raise TraceError(f"{what} builds an operator, which exists only while a function decorated with "
                         "@opdsl.jit is traced", caller_span(),
                         hint="call it inside an @opdsl.jit function, on that function's tensor arguments")
    return stack[-1]


def _push(ctx: Context):
    if not hasattr(_STATE, "stack"):
        _STATE.stack = []
    _STATE.stack.append(ctx)


def _pop():
    _STATE.stack.pop()


# ---- traced values ----------------------------------------------------------------

def _val(x, ctx: Context | None, span) -> Val:
    """A Python value as a Builder value."""
    if isinstance(x, Traced):
        if ctx is not None and x._ctx is not ctx:
            raise TraceError("a traced value from another @opdsl.jit trace", span,
                             hint="do not keep traced values between calls (e.g. in globals)")
        return Val(x._val.tag, x._val.v, span)
    if isinstance(x, bool):
        return Val("bool", x, span)
    if isinstance(x, numbers.Integral):
        return Val("num", int(x), span)
    if isinstance(x, numbers.Real):
        return Val("num", float(x), span)
    if isinstance(x, str):
        return Val("word", x, span)
    if isinstance(x, (list, tuple)):                 # block([[A, B], [C, D]])
        return Val("list", tuple(_val(e, ctx, span) for e in x), span)
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        raise TraceError(f"a {type(x).__module__}.{type(x).__name__} that is not an argument of the traced "
                         "function", span,
                         hint="tensors used inside an @opdsl.jit function must be its arguments "
                         "(a captured tensor would be baked into the compiled code)")
    raise TraceError(f"cannot use a {type(x).__name__} in an operator expression", span,
                     hint="operands are the function's tensor arguments, operators built from them, "
                     "numbers, strings (options such as feature='relu') and booleans")


def _wrap(ctx: Context, val: Val, src=None):
    return Tracer(ctx, val, src) if val.tag == "node" else Traced(ctx, val, src)


def _src(x):
    """The .op expression (a tree, opdsl/fmt.py) that spells a traced value or a Python operand:
    Program.to_op prints it.  None where the language has no spelling (e.g. an infinite number)."""
    if isinstance(x, Traced):
        return x._src
    if isinstance(x, (list, tuple)):
        return fmt.list_tree([_src(e) for e in x])
    return fmt.value_tree(x)


class Traced:
    """A traced non-tensor value a constructor returned (e.g. a feature map, opdsl.favor(8))."""

    __slots__ = ("_ctx", "_val", "_src")
    __array_ufunc__ = None   # numpy defers to our reflected operators (which then explain the error)
    _opdsl_traced = True     # jit_cache.is_tensor: a Tracer has .shape and .dtype but is no argument

    def __init__(self, ctx: Context, val: Val, src=None):
        self._ctx = ctx
        self._val = val
        self._src = src         # the .op expression that made it (for Program.to_op)

    def __repr__(self):
        return f"<opdsl traced {self._val.tag}>"


def _no(what: str, hint: str):
    def method(self, *args, **kwargs):
        raise TraceError(f"{what} a traced value ({self._describe()})", caller_span(), hint=hint)
    method.__name__ = what
    return method


_FLOW = ("inside @opdsl.jit, tensors have shapes but no values: branch on x.shape or on non-tensor "
         "arguments (both are static), or express both cases as operators")


class Tracer(Traced):
    """A traced tensor or operator: an IR node.  Supports @ + - * / .T, unary -, .shape, .dtype."""

    __slots__ = ()

    # -- what it is --
    def _type(self):
        return self._ctx.graph.type(self._val.v)

    def _describe(self) -> str:
        return describe(self._val, self._ctx.graph)

    @property
    def shape(self) -> tuple:
        """The static shape: a tensor's shape, or an operator's (*batch, rows, cols)."""
        t = self._type()
        dims = t.shape if not t.is_op else t.batch + (t.rows, t.cols)
        return tuple(int(d) if sp.sympify(d).is_Integer else d for d in dims)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> str | None:
        return self._type().dtype

    @property
    def is_operator(self) -> bool:
        return self._type().is_op

    @property
    def T(self):
        span = caller_span()
        return Tracer(self._ctx, self._ctx.b.attr(self._val, "T", span), fmt.op_tree("T", self._src))

    def __repr__(self):
        return f"<opdsl traced {self._describe()}>"

    # -- the operators of the language --
    def _bin(self, fn, a, b):
        span = caller_span()
        return _wrap(self._ctx, fn(_val(a, self._ctx, span), _val(b, self._ctx, span), span),
                     fmt.op_tree(fn.__name__, _src(a), _src(b)))

    def __matmul__(self, other):
        return self._bin(self._ctx.b.matmul, self, other)

    def __rmatmul__(self, other):
        return self._bin(self._ctx.b.matmul, other, self)

    def __add__(self, other):
        return self._bin(self._ctx.b.plus, self, other)

    def __radd__(self, other):
        return self._bin(self._ctx.b.plus, other, self)

    def __sub__(self, other):
        return self._bin(self._ctx.b.minus, self, other)

    def __rsub__(self, other):
        return self._bin(self._ctx.b.minus, other, self)

    def __mul__(self, other):
        return self._bin(self._ctx.b.times, self, other)

    def __rmul__(self, other):
        return self._bin(self._ctx.b.times, other, self)

    def __truediv__(self, other):
        return self._bin(self._ctx.b.divide, self, other)

    def __rtruediv__(self, other):
        return self._bin(self._ctx.b.divide, other, self)

    def __neg__(self):
        span = caller_span()
        return _wrap(self._ctx, self._ctx.b.negate(self._val, span), fmt.op_tree("negate", self._src))

    def __pos__(self):
        return self

    # -- what a value without data cannot do --
    __bool__ = _no("Python control flow (if, while, and, or, not) on", _FLOW)
    __lt__ = _no("comparing", _FLOW)
    __le__ = _no("comparing", _FLOW)
    __gt__ = _no("comparing", _FLOW)
    __ge__ = _no("comparing", _FLOW)
    __eq__ = _no("comparing", _FLOW + "; `is` compares identities")
    __ne__ = _no("comparing", _FLOW)
    __hash__ = object.__hash__
    __float__ = _no("converting to a number", _FLOW)
    __int__ = _no("converting to a number", _FLOW)
    __index__ = _no("using as an index", _FLOW)
    __complex__ = _no("converting to a number", _FLOW)
    __array__ = _no("converting to an array", "a traced value has no data; return it, and the compiled "
                    "function returns the tensor")
    __jax_array__ = _no("converting to a JAX array", "an @opdsl.jit function builds a linear operator from "
                        "opdsl constructors and @ + - * / .T; apply jnp functions outside it")
    __len__ = _no("len() of", "use x.shape[0] (shapes are static)")
    __iter__ = _no("iterating over", "use x.shape for sizes; operators are built whole, not element by element")
    __getitem__ = _no("indexing", "opdsl traces linear operators; slice the tensor outside the @opdsl.jit "
                      "function or use an operator (perm, blockdiag, ...)")
    __setitem__ = _no("assigning into", "traced values are immutable; build a new operator instead")
    __contains__ = _no("`in` on", _FLOW)
    __pow__ = _no("`**` on", "`*` scales by a number and `@` multiplies operators")
    __rpow__ = __pow__
    __mod__ = _no("`%` on", "only @ + - * / .T are operators of the language")
    __floordiv__ = _no("`//` on", "use `/` to divide by a number")
    __abs__ = _no("abs() of", "only @ + - * / .T are operators of the language")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise TracedAttributeError(
            f"a traced value has no attribute .{name} ({self._describe()})", caller_span(),
            hint="inside @opdsl.jit, values support @ + - * / .T, unary -, .shape, .ndim and .dtype; "
            "build operators with opdsl.<constructor>(...) (kron, diag, lowrank, monarch, ...)")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        raise TraceError(f"torch.{name} was called on a traced value", caller_span(),
                         hint="an @opdsl.jit function builds a linear operator from opdsl constructors and "
                         "@ + - * / .T; apply nonlinearities outside it (e.g. torch.relu(f(x, W)))")


# ---- constructors: opdsl.<name> for every name in kinds.CONSTRUCTORS ------------------

_CONSTRUCTOR_FNS: dict = {}


def constructor(name: str):
    """The Python function `opdsl.<name>`, for a constructor of the registry."""
    fn = _CONSTRUCTOR_FNS.get(name)
    if fn is not None:
        return fn
    kind = CONSTRUCTORS.get(name)          # None: an option value written as a call (builder.OPTION_CALLS)

    def build(*args, **kwargs):
        ctx = None
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, Traced):
                ctx = a._ctx
                break
        if ctx is None:
            ctx = _current(f"opdsl.{name}(...)")
        span = caller_span()
        vals = [_val(a, ctx, span) for a in args]
        kw = {k: _val(v, ctx, span) for k, v in kwargs.items()}
        src = fmt.call_tree(name, [_src(a) for a in args], {k: _src(v) for k, v in kwargs.items()})
        return _wrap(ctx, ctx.b.call(name, vals, kw, span), src)

    build.__name__ = build.__qualname__ = name
    build.__module__ = "opdsl"
    doc = (kind.__doc__ or kind.doc or "").strip() if kind is not None else OPTION_CALLS[name]
    build.__doc__ = (f"opdsl.{name}(...): the `{name}` constructor of the .op language, on traced values "
                     f"(inside @opdsl.jit).\n\n{doc}")
    _CONSTRUCTOR_FNS[name] = build
    return build


def option_call_names() -> list[str]:
    """Option values written as calls: opdsl.pivchol(15) for precond=."""
    return sorted(OPTION_CALLS)


def constructor_names() -> list[str]:
    return sorted(CONSTRUCTORS)


class ConstructorModule(types.ModuleType):
    """An opdsl submodule whose name is also a constructor (`opdsl.trace` is this module and the
    `trace(A)` constructor): calling the module builds the operator; attributes are the module's."""

    def __call__(self, *args, **kwargs):
        return constructor(self.__name__.rpartition(".")[2])(*args, **kwargs)


def constructors_over_modules(namespace: dict) -> None:
    """Make every submodule in `namespace` (opdsl's globals) that shares a constructor's name callable."""
    for name in CONSTRUCTORS:
        m = namespace.get(name)
        if isinstance(m, types.ModuleType) and not isinstance(m, ConstructorModule):
            m.__class__ = ConstructorModule


# @opdsl.jit itself is opdsl/jit_function.py (it imports this module; the cache keys and guards:
# opdsl/jit_cache.py)
__all__ = ["Tracer", "TraceError", "constructor", "constructor_names", "caller_span"]
