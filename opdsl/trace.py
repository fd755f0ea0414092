"""The Python embedding: tracer objects and ``@opdsl.jit``.

A function decorated with ``@opdsl.jit(backend=...)`` is called once per
signature (the shapes, dtypes and device of its tensor arguments, and the
values of its other arguments) with *tracer* objects in place of its tensors.
The operators on tracers (``@ + - * / .T``, unary ``-``) and the constructors
``opdsl.kron``, ``opdsl.diag``, ... go through the same ``Builder`` as the
``.op`` frontend (opdsl/builder.py), so both front ends build the same IR with
one meaning and one list of constructors: ``opdsl.<name>`` exists for every
name in ``opdsl.kinds.CONSTRUCTORS``.  The graph is compiled by the same
pipeline as an ``.op`` file (``Program.from_graph``), and later calls with the
same signature reuse the compiled function.

Traced values have static shapes and no data: Python code may branch on
``x.shape`` or on non-tensor arguments, but ``if x ...``, comparisons,
indexing and conversions to numbers raise a ``TraceError`` that points at the
line of the function that did it.
"""
from __future__ import annotations

import functools
import inspect
import linecache
import numbers
import sys
import threading
import types
from itertools import islice

import sympy as sp

from .builder import Builder, describe
from .dims import DimTable
from .errors import OpdslError, Span, TypeError_
from .ir import Graph
from .kinds import CONSTRUCTORS, REGISTRY, Val
from .kinds.base import DTYPES

_HERE = __file__
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


def caller_span() -> Span | None:
    """The span of the innermost frame outside this module (the user's expression)."""
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename == _HERE:
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
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        raise TraceError(f"a {type(x).__module__}.{type(x).__name__} that is not an argument of the traced "
                         "function", span,
                         hint="tensors used inside an @opdsl.jit function must be its arguments "
                         "(a captured tensor would be baked into the compiled code)")
    raise TraceError(f"cannot use a {type(x).__name__} in an operator expression", span,
                     hint="operands are the function's tensor arguments, operators built from them, "
                     "numbers, strings (options such as feature='relu') and booleans")


def _wrap(ctx: Context, val: Val):
    return Tracer(ctx, val) if val.tag == "node" else Traced(ctx, val)


class Traced:
    """A traced non-tensor value a constructor returned (e.g. a feature map, opdsl.favor(8))."""

    __slots__ = ("_ctx", "_val")
    __array_ufunc__ = None   # numpy defers to our reflected operators (which then explain the error)

    def __init__(self, ctx: Context, val: Val):
        self._ctx = ctx
        self._val = val

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
        return Tracer(self._ctx, self._ctx.b.attr(self._val, "T", span))

    def __repr__(self):
        return f"<opdsl traced {self._describe()}>"

    # -- the operators of the language --
    def _bin(self, fn, a, b):
        span = caller_span()
        return _wrap(self._ctx, fn(_val(a, self._ctx, span), _val(b, self._ctx, span), span))

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
        return _wrap(self._ctx, self._ctx.b.negate(self._val, span))

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
    kind = CONSTRUCTORS[name]

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
        return _wrap(ctx, ctx.b.call(name, vals, kw, span))

    build.__name__ = build.__qualname__ = name
    build.__module__ = "opdsl"
    doc = (kind.__doc__ or kind.doc or "").strip()
    build.__doc__ = (f"opdsl.{name}(...): the `{name}` constructor of the .op language, on traced values "
                     f"(inside @opdsl.jit).\n\n{doc}")
    _CONSTRUCTOR_FNS[name] = build
    return build


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


# ---- @opdsl.jit ---------------------------------------------------------------------

def _dtype_name(dt) -> str:
    s = str(dt)
    if s.startswith("torch."):
        s = s[len("torch."):]
    else:
        try:
            import numpy as np
            s = np.dtype(dt).name
        except TypeError:
            pass
    return s


def _is_tensor(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, (numbers.Number, Traced))


def _static_key(name, x):
    try:
        hash(x)
    except TypeError:
        raise OpdslError(f"argument {name!r} ({type(x).__name__}) is neither a tensor nor a hashable value",
                         hint="@opdsl.jit arguments are tensors, or static values (numbers, strings, tuples) "
                         "that become part of the compiled signature") from None
    return ("static", type(x), x)


def _flatten(name, x, out):
    """(name, value) leaves of an argument: tensors and static values; lists, tuples, dicts recursively."""
    if isinstance(x, (list, tuple)) and any(_is_tensor(e) or isinstance(e, (list, tuple, dict)) for e in x):
        for i, e in enumerate(x):
            _flatten(f"{name}_{i}", e, out)
    elif isinstance(x, dict) and any(_is_tensor(e) for e in x.values()):
        for k in x:
            _flatten(f"{name}_{k}", x[k], out)
    else:
        out.append((name, x))


def _structure(x, leaves):
    """x with each leaf replaced from the iterator `leaves` (the inverse of _flatten)."""
    if isinstance(x, (list, tuple)) and any(_is_tensor(e) or isinstance(e, (list, tuple, dict)) for e in x):
        return type(x)(_structure(e, leaves) for e in x)
    if isinstance(x, dict) and any(_is_tensor(e) for e in x.values()):
        return {k: _structure(x[k], leaves) for k in x}
    return next(leaves)


class Compiled:
    """One signature of a jit function: its Program and a fast caller of the generated functions."""

    def __init__(self, program, outs, structure, arg_names):
        self.program = program
        self.structure = structure        # "one" | "tuple" | "list" | "dict"
        self.outs = outs                  # [(result key, export name)]
        index = {a: i for i, a in enumerate(arg_names)}
        lines, env = [], {}
        for j, (key, export) in enumerate(outs):
            fn = program._backend.wrap(getattr(program.module, export), program.primitive, export)
            env[f"f{j}"] = fn
            used = [a for a, _ in program._backend._args(program.primitive, export)]
            call = ", ".join(f"{a}=a[{index[a]}]" for a in used)
            lines.append(f"f{j}({call})")
        if structure == "one":
            body = lines[0]
        elif structure == "dict":
            body = "{" + ", ".join(f"{key!r}: {line}" for (key, _), line in zip(outs, lines)) + "}"
        elif structure == "list":
            body = "[" + ", ".join(lines) + "]"
        else:
            body = "(" + ", ".join(lines) + ("," if len(lines) == 1 else "") + ")"
        src = f"def call(a):\n    return {body}\n"
        exec(compile(src, f"<opdsl.jit caller of {program.filename}>", "exec"), env)
        self.call = env["call"]   # a[i] are the flattened argument values


class JitFunction:
    """A function traced and compiled per signature; call it like the original function."""

    def __init__(self, fn, backend: str = "torch", verify: bool | None = None, **options):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.backend = backend
        self.verify = verify
        self.options = options
        self.signature = inspect.signature(fn)
        kinds = [p.kind for p in self.signature.parameters.values()]
        self._npos = len(kinds) if all(k == inspect.Parameter.POSITIONAL_OR_KEYWORD for k in kinds) else -1
        self._fast: dict = {}       # per-tensor (shape, dtype[, device]) keys of plain positional calls
        self._cache: dict = {}      # full signature key -> Compiled
        self._with_device = backend == "torch"
        self._texts = None

    # -- calling --
    def __call__(self, *args, **kwargs):
        if not kwargs and len(args) == self._npos:
            try:
                key = tuple([(a.shape, a.dtype, a.device) for a in args]) if self._with_device else \
                    tuple([(a.shape, a.dtype) for a in args])
            except AttributeError:
                key = None
            if key is not None:
                entry = self._fast.get(key)
                if entry is not None:
                    return entry.call(args)
        return self._slow(args, kwargs)

    def _slow(self, args, kwargs):
        if any(isinstance(a, Traced) for a in list(args) + list(kwargs.values())):
            return self.fn(*args, **kwargs)      # called inside another trace: inline it
        leaves, bound = self._bind(args, kwargs)
        entry = self._entry(leaves, bound)
        if not kwargs and len(args) == self._npos and all(_is_tensor(a) for a in args):
            key = tuple([(a.shape, a.dtype, a.device) for a in args]) if self._with_device else \
                tuple([(a.shape, a.dtype) for a in args])
            self._fast[key] = entry
        return entry.call([v for _, v in leaves])

    def _bind(self, args, kwargs):
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise OpdslError(f"{self.__name__}(): {e}", hint=f"signature: {self.__name__}{self.signature}") from None
        bound.apply_defaults()
        leaves = []
        for name, value in bound.arguments.items():
            p = self.signature.parameters[name]
            if p.kind == inspect.Parameter.VAR_POSITIONAL:
                for i, v in enumerate(value):
                    _flatten(f"{name}_{i}", v, leaves)
            elif p.kind == inspect.Parameter.VAR_KEYWORD:
                for k, v in value.items():
                    _flatten(k, v, leaves)
            else:
                _flatten(name, value, leaves)
        return leaves, bound

    def _key(self, leaves):
        key = []
        for name, v in leaves:
            if _is_tensor(v):
                dev = getattr(v, "device", None) if self._with_device else None
                key.append((name, tuple(v.shape), _dtype_name(v.dtype), str(dev)))
            else:
                key.append((name, _static_key(name, v)))
        return tuple(key)

    def _entry(self, leaves, bound) -> Compiled:
        key = self._key(leaves)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._cache[key] = self._compile(leaves, bound)
        return entry

    def program(self, *args, **kwargs):
        """The compiled Program for these arguments (compiling it if needed): .source, .explain(), ..."""
        leaves, bound = self._bind(args, kwargs)
        return self._entry(leaves, bound).program

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    # -- tracing --
    def _check_arg(self, name, v, span):
        mod = type(v).__module__.split(".")[0]
        if self.backend == "torch" and mod != "torch":
            raise OpdslError(f"{self.__name__}(): argument {name!r} is a {type(v).__module__}.{type(v).__name__}; "
                             "the torch backend takes torch tensors", span,
                             hint="convert with torch.as_tensor(...) or use @opdsl.jit(backend=...) for its framework")
        if self.backend == "numpy" and mod != "numpy":
            raise OpdslError(f"{self.__name__}(): argument {name!r} is a {type(v).__name__}; the numpy backend "
                             "takes numpy arrays", span)
        dt = _dtype_name(v.dtype)
        if dt not in DTYPES:
            raise OpdslError(f"{self.__name__}(): argument {name!r} has dtype {dt}", span,
                             hint=f"opdsl computes in {', '.join(DTYPES)}; convert the tensor")
        return dt

    def _compile(self, leaves, bound) -> Compiled:
        from .api import Program
        from .frontend import signatures
        fn = self.fn
        span = _def_span(fn)
        filename = span.file if span is not None else "<opdsl.jit>"
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            source = ""
        ctx = Context(filename, source)
        g = ctx.graph
        g.meta["decl_order"] = []
        names = [n for n, _ in leaves]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise OpdslError(f"{self.__name__}(): arguments flatten to the same name {', '.join(dup)}", span)
        tracers = []
        for name, v in leaves:
            if not _is_tensor(v):
                tracers.append(v)
                continue
            if not name.isidentifier():
                raise OpdslError(f"{self.__name__}(): argument name {name!r} is not a Python identifier", span)
            dt = self._check_arg(name, v, span)
            attrs = {"name": name, "role": "input", "shape": tuple(sp.Integer(int(s)) for s in v.shape),
                     "dtype": dt, "props": ()}
            node = g.add("input", [], attrs, span, name)
            g.meta["decl_order"].append(name)
            tracers.append(Tracer(ctx, Val("node", node, span)))
        it = iter(tracers)
        args, kwargs = self._rebuild(bound, it)
        _push(ctx)
        try:
            out = fn(*args, **kwargs)
        finally:
            _pop()
        outs, structure = self._exports(out, ctx, span, set(names))
        g.meta["signatures"] = signatures(g)
        g.meta["inits"] = {}
        program = Program.from_graph(g, self.backend, verify=self.verify, **self.options)
        return Compiled(program, outs, structure, names)

    def _rebuild(self, bound, it):
        """The bound arguments with tensors replaced by tracers, as (args, kwargs)."""
        new = {}
        for name, value in bound.arguments.items():
            p = self.signature.parameters[name]
            if p.kind == inspect.Parameter.VAR_POSITIONAL:
                new[name] = tuple(_structure(v, it) for v in value)
            elif p.kind == inspect.Parameter.VAR_KEYWORD:
                new[name] = {k: _structure(v, it) for k, v in value.items()}
            else:
                new[name] = _structure(value, it)
        ba = inspect.BoundArguments(self.signature, new)
        return ba.args, ba.kwargs

    def _exports(self, out, ctx, span, taken):
        g = ctx.graph
        base = self.__name__ if self.__name__.isidentifier() else "fn"
        if isinstance(out, dict):
            items, structure = list(out.items()), "dict"
            bad = [k for k, _ in items if not (isinstance(k, str) and k.isidentifier())]
            if bad:
                raise OpdslError(f"{self.__name__}() returned a dict with key {bad[0]!r}, which is not a name",
                                 span, hint="return a tensor, a tuple of tensors or a dict with identifier keys")
            names = [k for k, _ in items]
        elif isinstance(out, (tuple, list)):
            items = list(enumerate(out))
            structure = "tuple" if isinstance(out, tuple) else "list"
            names = [f"{base}_{i}" for i in range(len(items))]
        else:
            items, structure, names = [(None, out)], "one", [base]
        if not items:
            raise OpdslError(f"{self.__name__}() returned nothing to compute", span,
                             hint="return the result of applying an operator, e.g. `return A @ x`")
        outs = []
        reserved = taken | {"np", "torch", "jax", "jnp", "functools", "init", "init_params", "X64", "PARAMS"}
        for (key, value), name in zip(items, names):
            while name in reserved or name in g.exports:
                name += "_out"
            if not isinstance(value, Tracer):
                raise OpdslError(f"{self.__name__}() returned {type(value).__name__}, not a traced tensor", span,
                                 hint="return operators applied to the tensor arguments, e.g. `return A @ x`")
            if value._ctx is not ctx:
                raise TraceError("returned a traced value from another trace", span)
            v = value._val.v
            if g.type(v).is_op:
                raise TraceError(f"{self.__name__}() returned an operator {g.type(v)}; the compiled function "
                                 "returns tensors", g[v].span or span,
                                 hint="apply it to an argument: `return A @ x`")
            if not g[v].name and g.kind(v) != "input":
                g.rename(v, name)
            g.exports[name] = v
            g.meta.setdefault("export_spans", {})[name] = g[v].span or span
            outs.append((key, name))
        return outs, structure

    def __repr__(self):
        return f"<opdsl.jit {self.__name__} backend={self.backend} compiled={len(self._cache)}>"


def jit(fn=None, *, backend: str = "torch", verify: bool | None = None, **options):
    """Trace and compile a Python function of tensors: ``@opdsl.jit`` or ``@opdsl.jit(backend="jax")``.

    The first call for each signature (shapes, dtypes, device of the tensor
    arguments; values of the others) traces the function with tracer objects and
    compiles the IR it built; later calls with that signature call the compiled
    function directly.  `options` go to the backend (e.g. target= for tvm).
    """
    if fn is None:
        return lambda f: JitFunction(f, backend, verify, **options)
    if not callable(fn):
        raise OpdslError(f"@opdsl.jit decorates a function, got {type(fn).__name__}",
                         hint="write @opdsl.jit or @opdsl.jit(backend='torch')")
    return JitFunction(fn, backend, verify, **options)


__all__ = ["jit", "JitFunction", "Tracer", "TraceError", "constructor", "constructor_names", "caller_span"]
