"""``@opdsl.jit``: trace a Python function once per signature, compile it, call the compiled code.

The tracer objects and constructors live in opdsl/trace.py; the cache keys, generated names and
guards in opdsl/jit_cache.py.  A signature is: the structure of the arguments (lists, tuples, dicts
of tensors), the shape, dtype, type and device of each tensor, the exact type and value of every
other argument, and the values of the globals and closure variables the function reads.
"""
from __future__ import annotations

import ast
import functools
import inspect

import sympy as sp

from . import backends, fmt, jit_cache
from .errors import CallError, OpdslError
from .jit_cache import STATIC_HINT, Guards, Unkeyable, code_names, is_sparse, is_tensor, static_key
from .kinds import Val
from .kinds.base import DTYPES, INDEX_DTYPES
from .trace import Context, TraceError, Traced, Tracer, _def_span, _pop, _push, caller_span, internal

internal(__file__)


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


# ---- arguments as leaves: tensors and static values, in lists / tuples / dicts ---------------------

def _is_tree(x) -> bool:
    """A list, tuple or dict holding tensors (or containers): flattened; anything else is one leaf."""
    if isinstance(x, (list, tuple)):
        return any(is_tensor(e) or isinstance(e, (list, tuple, dict)) for e in x)
    if isinstance(x, dict):
        return any(is_tensor(e) or isinstance(e, (list, tuple, dict)) for e in x.values())
    return False


def _flatten(path, shown, raw, x, out):
    """Append the leaves of x as (path, shown, raw, value): `path` keys the structure exactly
    (container types and keys), `shown` is how a message names it (factors[0], kw['a']), `raw` is
    the user text its generated name comes from."""
    if isinstance(x, dict) and _is_tree(x):
        for k, v in x.items():
            try:
                kk = static_key(k)
            except Unkeyable as e:
                raise CallError(f"argument {shown} has a key that is {e.what}", caller_span(),
                                hint="use strings, numbers or tuples as keys") from None
            _flatten(path + ((type(x), kk),), f"{shown}[{k!r}]", f"{raw}_{k}", v, out)
    elif _is_tree(x):
        for i, v in enumerate(x):
            _flatten(path + ((type(x), i),), f"{shown}[{i}]", f"{raw}_{i}", v, out)
    else:
        out.append((path, shown, raw, x))


def _structure(x, leaves):
    """x with each leaf replaced from the iterator `leaves` (the inverse of _flatten)."""
    if isinstance(x, dict) and _is_tree(x):
        return type(x)((k, _structure(v, leaves)) for k, v in x.items())
    if _is_tree(x):
        items = [_structure(e, leaves) for e in x]
        return type(x)(*items) if hasattr(type(x), "_fields") else type(x)(items)   # named tuples
    return next(leaves)


def _trampoline(calls, structure, keys, filename):
    """`call(a)`: the generated functions called on a[i] (the flattened arguments), as `structure`.

    Built as an AST: argument names and result keys never become source text (keys are bound
    in the environment, names are keyword nodes), so no user text can change the code."""
    env = {}
    mod = ast.parse("def call(a):\n    return None\n")
    exprs = []
    for j, (fn, used) in enumerate(calls):
        env[f"f{j}"] = fn
        kws = [ast.keyword(arg=name, value=ast.Subscript(ast.Name("a", ast.Load()), ast.Constant(i), ast.Load()))
               for name, i in used]
        exprs.append(ast.Call(ast.Name(f"f{j}", ast.Load()), [], kws))
    if structure == "one":
        body = exprs[0]
    elif structure == "dict":
        for j, k in enumerate(keys):
            env[f"k{j}"] = k
        body = ast.Dict([ast.Name(f"k{j}", ast.Load()) for j in range(len(keys))], exprs)
    elif structure == "list":
        body = ast.List(exprs, ast.Load())
    else:
        body = ast.Tuple(exprs, ast.Load())
    mod.body[0].body[0].value = body
    ast.fix_missing_locations(mod)
    exec(compile(mod, f"<opdsl.jit caller of {filename}>", "exec"), env)
    return env["call"]


def _op_text(decls, srcs) -> str:
    """The traced program as .op text (Program.to_op): its arguments as inputs, its results as
    exports, spelled as the function spelled them (opdsl/fmt.py, traced_program)."""
    missing = [n for n, t in srcs if t is None]
    if missing:
        raise OpdslError(f"the traced result {missing[0]} uses a value the .op language cannot spell "
                         "(an infinite or NaN number, or an option that is not a name)",
                         hint="to_op prints programs whose numbers are finite and options are names")
    return fmt.traced_program(decls, srcs)


class Compiled:
    """One signature of a jit function: its Program and a fast caller of the generated functions."""

    def __init__(self, program, outs, structure, arg_names):
        self.program = program
        self.structure = structure        # "one" | "tuple" | "list" | "dict"
        self.outs = outs                  # [(result key, export name)]
        index = {a: i for i, a in enumerate(arg_names)}
        calls = []
        for key, export in outs:
            fn = program._backend.wrap(getattr(program.module, export), program.primitive, export)
            used = [(a, index[a]) for a, _ in program._backend.signature(program.primitive, export)]
            calls.append((fn, used))
        self.call = _trampoline(calls, structure, [k for k, _ in outs], program.filename)


class JitFunction:
    """A function traced and compiled per signature; call it like the original function."""

    _opdsl_static_identity = True     # may be a static argument or a guarded global (by identity)

    def __init__(self, fn, backend: str = "torch", verify: bool | None = None, **options):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.backend = backend
        self.verify = verify
        self.options = options
        try:
            self.signature = inspect.signature(fn)
        except (TypeError, ValueError):
            raise OpdslError(f"@opdsl.jit cannot read the signature of {fn!r}", caller_span(),
                             hint="decorate a Python function (def or lambda)") from None
        kinds = [p.kind for p in self.signature.parameters.values()]
        self._npos = len(kinds) if all(k == inspect.Parameter.POSITIONAL_OR_KEYWORD for k in kinds) else -1
        self._guards = Guards(fn)
        self._fast: dict = {}       # _fast_key of plain positional calls -> (entry, guard ids, objects)
        self._cache: dict = {}      # full signature key -> Compiled
        self._backend_class = None  # found on the first call (an unknown backend is an error there)
        self._with_device = False   # the backend has devices: signatures include them (set with the class)

    # -- calling --
    def __call__(self, *args, **kwargs):
        if not kwargs and len(args) == self._npos:
            try:
                key = self._fast_key(args)
            except AttributeError:
                key = None
            if key is not None:
                hit = self._fast.get(key)
                if hit is not None and hit[1] == self._guards.ids():   # globals read: the same objects
                    return hit[0].call(args)
        return self._slow(args, kwargs)

    def _slow(self, args, kwargs):
        if any(isinstance(a, Traced) for a in list(args) + list(kwargs.values())):
            return self.fn(*args, **kwargs)      # called inside another trace: inline it
        self._resolve_backend()
        leaves, bound = self._bind(args, kwargs)
        seen = self._guards.snapshot()
        entry = self._entry(leaves, bound, seen)
        if not kwargs and len(args) == self._npos and all(is_tensor(a) for a in args):
            self._fast[self._fast_key(args)] = (entry, [id(v) for v in seen], seen)    # `seen` keeps the ids' objects alive
        return entry.call([leaf[3] for leaf in leaves])

    def _fast_key(self, args) -> tuple:
        """The key of a plain positional call: shapes, dtypes, devices, and the layout (torch) or the
        type (a scipy.sparse matrix, a BCOO): a sparse matrix is another program than a dense one."""
        if self._with_device:
            return tuple([(a.shape, a.dtype, a.device, getattr(a, "layout", type(a))) for a in args])
        return tuple([(a.shape, a.dtype, type(a)) for a in args])

    def _resolve_backend(self):
        """The backend's class, on the first call: whether signatures include devices, which arrays it
        takes, the names its generated module reserves (BackendError for an unknown backend)."""
        if self._backend_class is None:
            self._backend_class = backends.backend_class(self.backend)
            self._with_device = self._backend_class.has_device

    def _bind(self, args, kwargs):
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise CallError(f"{self.__name__}(): {e}", caller_span(),
                            hint=f"signature: {self.__name__}{self.signature}") from None
        bound.apply_defaults()
        leaves = []
        for name, value in bound.arguments.items():
            p = self.signature.parameters[name]
            if p.kind == inspect.Parameter.VAR_POSITIONAL:
                for i, v in enumerate(value):
                    _flatten((name, i), f"{name}[{i}]", f"{name}_{i}", v, leaves)
            elif p.kind == inspect.Parameter.VAR_KEYWORD:
                for k, v in value.items():       # `**kw` keys cannot repeat a parameter's: tagged by `name`
                    _flatten((name, k), f"{name}[{k!r}]", k, v, leaves)
            else:
                _flatten((name,), repr(name), name, value, leaves)
        return leaves, bound

    def _key(self, leaves):
        key = []
        for path, shown, _, v in leaves:
            if is_tensor(v):
                dev = getattr(v, "device", None) if self._with_device else None
                key.append((path, type(v), tuple(v.shape), _dtype_name(v.dtype), str(dev), is_sparse(v)))
                continue
            try:
                key.append((path, static_key(v)))
            except Unkeyable as e:
                raise CallError(f"{self.__name__}(): argument {shown} is {e.what}; it is not a tensor, so it "
                                "would be a static part of the signature", caller_span(), hint=STATIC_HINT) from None
        return tuple(key)

    def _entry(self, leaves, bound, seen) -> Compiled:
        key = (self._key(leaves), tuple(jit_cache._guard_part(v) for v in seen))
        entry = self._cache.get(key)
        if entry is None:
            entry = self._cache[key] = self._compile(leaves, bound)
        return entry

    def program(self, *args, **kwargs):
        """The compiled Program for these arguments (compiling it if needed): .source, .explain(), ..."""
        self._resolve_backend()
        leaves, bound = self._bind(args, kwargs)
        return self._entry(leaves, bound, self._guards.snapshot()).program

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    # -- tracing --
    def _check_arg(self, shown, v, span):
        why = self._backend_class.refused_array(v)
        if why:
            raise OpdslError(f"{self.__name__}(): argument {shown} {why}", span,
                             hint=f"convert with {self._backend_class.convert} or use @opdsl.jit(backend=...) "
                             "for its framework")
        dt = _dtype_name(v.dtype)
        if dt not in DTYPES and dt not in INDEX_DTYPES:
            raise OpdslError(f"{self.__name__}(): argument {shown} has dtype {dt}", span,
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
        reserved = frozenset(self._backend_class.reserved)
        names = code_names([raw for _, _, raw, _ in leaves], reserved=reserved)
        tracers, decls = [], []
        for (_, shown, _, v), name in zip(leaves, names):
            if not is_tensor(v):
                tracers.append(v)
                continue
            dt = self._check_arg(shown, v, span)
            attrs = {"name": name, "role": "input", "shape": tuple(sp.Integer(int(s)) for s in v.shape),
                     "dtype": dt, "props": ()}
            sparse = is_sparse(v)
            if sparse:
                if len(v.shape) != 2:
                    raise OpdslError(f"{self.__name__}(): argument {shown} is a sparse tensor of {len(v.shape)} dims",
                                     span, hint="sparse arguments are matrices [m, n]")
                attrs["layout"] = "sparse"
            node = g.add("input", [], attrs, span, name)
            g.meta["decl_order"].append(name)
            if sparse:                  # as `input name : [m, n] sparse`: the operator over it
                g.meta.setdefault("sparse", []).append(name)
                node = g.add("sparse", [node], {"T": False}, span)
            tracers.append(Tracer(ctx, Val("node", node, span), fmt.name_tree(name)))
            decls.append((name, tuple(int(s) for s in v.shape), [dt] + ["sparse"] * sparse))
        args, kwargs = self._rebuild(bound, iter(tracers))
        _push(ctx)
        try:
            out = fn(*args, **kwargs)
        finally:
            _pop()
        outs, structure, srcs = self._exports(out, ctx, span, set(names) | reserved)
        g.meta["signatures"] = signatures(g)
        g.meta["inits"] = {}
        program = Program.from_graph(g, self.backend, verify=self.verify, **self.options)
        program._op_text = functools.partial(_op_text, decls, srcs)
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
        base = code_names([self.__name__ or "fn"])[0]
        if isinstance(out, dict):
            items, structure = list(out.items()), "dict"
            raws = [k if isinstance(k, str) else f"{base}_{i}" for i, (k, _) in enumerate(items)]
        elif isinstance(out, (tuple, list)):
            items = list(enumerate(out))
            structure = "tuple" if isinstance(out, tuple) else "list"
            raws = [f"{base}_{i}" for i in range(len(items))]
        else:
            items, structure, raws = [(None, out)], "one", [base]
        if not items:
            raise OpdslError(f"{self.__name__}() returned nothing to compute", span,
                             hint="return the result of applying an operator, e.g. `return A @ x`")
        outs, srcs = [], []
        # export names are module-level functions: never an argument's name or the generated module's
        names = code_names(raws, taken=taken | set(g.exports))
        for (key, value), name in zip(items, names):
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
            srcs.append((name, value._src))
        return outs, structure, srcs

    def __repr__(self):
        return f"<opdsl.jit {self.__name__} backend={self.backend} compiled={len(self._cache)}>"


def jit(fn=None, *, backend: str = "torch", verify: bool | None = None, **options):
    """Trace and compile a Python function of tensors: ``@opdsl.jit`` or ``@opdsl.jit(backend="jax")``.

    The first call for each signature (shapes, dtypes, device of the tensor arguments; exact
    types and values of the others; values of the globals and closure variables the function
    reads) traces the function with tracer objects and compiles the IR it built; later calls
    with that signature call the compiled function directly.  `options` go to the backend
    (e.g. target= for tvm).  See docs/python.md.
    """
    if fn is None:
        return lambda f: JitFunction(f, backend, verify, **options)
    if not callable(fn):
        raise OpdslError(f"@opdsl.jit decorates a function, got {type(fn).__name__}",
                         hint="write @opdsl.jit or @opdsl.jit(backend='torch')")
    return JitFunction(fn, backend, verify, **options)
