"""The Python API (docs/architecture.md): compile(), compile_file(), Program, explain_file()."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from . import backends as _backends
from . import passes as _passes
from .errors import CallError, OpdslError
from .frontend import to_graph
from .ir import run_deep


class Program:
    """A compiled .op program: one callable per export, keyword arguments named as in the source."""

    def __init__(self, text: str, filename: str = "<string>", backend: str = "torch",
                 dims: dict | None = None, dtype: str = "float32", verify: bool | None = None,
                 **options):
        self.auto = None
        if backend == "auto":          # the fastest backend measured on this machine (backend_bench.py)
            backend = self._fastest(text, filename, dims, dtype, options)
        self.filename = filename
        self.backend_name = backend
        self.text = text
        self.dims = dict(dims or {})
        self.dtype = dtype
        self.graph = to_graph(text, filename, dims, dtype)      # operator IR as written
        run_deep(lambda: self._build(verify, options), self.graph.depth())   # deep nesting: big stack

    def _fastest(self, text, filename, dims, dtype, options) -> str:
        """backend="auto": every available backend timed on this program (once per program, dims,
        dtype and machine: the choice is kept in the compile cache); self.auto says what was measured."""
        from . import backend_bench
        from .backends import available
        if options:
            raise OpdslError(f"backend='auto' takes no backend options (got {', '.join(sorted(options))})",
                             hint="options such as target= or tune= belong to one backend: name it")
        names = backend_bench.candidates(available())

        def make(name):
            backend, opts = backend_bench.resolve(name)
            return Program(text, filename, backend, dims, dtype, **opts)
        parts = {"source": text, "dims": dict(dims or {}), "dtype": dtype, "backends": names}
        choice, timings, hit = backend_bench.cached_choice(parts, lambda: backend_bench.measure(make, names))
        self.auto = {"backend": choice, "timings": timings, "cached": hit}
        backend, opts = backend_bench.resolve(choice)
        options.update(opts)                   # torch+compile: the torch backend with compile=True
        return backend

    @classmethod
    def from_graph(cls, graph, backend: str = "torch", verify: bool | None = None, **options) -> "Program":
        """Compile operator IR built elsewhere (the Python tracer, opdsl/trace.py) through the same pipeline.

        The graph needs what the .op frontend leaves: exports, meta["signatures"] (frontend.signatures)."""
        self = cls.__new__(cls)
        self.auto = None
        self.filename = graph.meta.get("file", "<graph>")
        self.backend_name = backend
        self.text = graph.meta.get("source", "")
        self.dims = {}
        self.dtype = None
        self.graph = graph
        run_deep(lambda: self._build(verify, options), self.graph.depth())
        return self

    def _build(self, verify, options):
        backend = self.backend_name
        favor = options.pop("softmax_to_favor", None)        # compile option: exact softmax -> FAVOR+
        favor_seed = options.pop("favor_seed", 0)
        if favor:
            from .kinds.attention import replace_softmax
            self.graph = replace_softmax(self.graph, favor, favor_seed)
        self._backend = _backends.get(backend, **options)
        split = getattr(self._backend, "shard", None)
        if split:                  # dims split over a mesh: lowering keeps their axes apart (Apply.lower)
            self.graph.meta["split"] = tuple(sorted(split))
        self.primitive, self.optimized, self.records = _passes.run(self.graph, verify_each=verify)
        self._backend.check(self.primitive)
        self.source = self._backend.generate(self.primitive)
        self._backend.check_source(self.source, self.primitive)
        self.module = self._backend.load(self.source, self.primitive)
        self.functions = list(self.graph.exports)
        self._callables = {name: self._wrap(name) for name in self.functions}

    def _wrap(self, name):
        fn = self._backend.wrap(getattr(self.module, name), self.primitive, name)
        arg_error = self.module.ArgumentError
        # a singular matrix at run time (docs/linalg.md); only modules that factor matrices define it
        singular = tuple(c for c in (getattr(self.module, "SingularError", None),) if c is not None)
        signature = self._backend.signature(self.primitive, name)
        params = [a for a, _ in signature]
        expected = set(params)
        own = tuple(a for a, node in signature if node["role"] == "param")

        def call(*values, **kwargs):
            if values:               # prog.f(params, **inputs): params from a dict (e.g. a JAX pytree)
                if len(values) > 1 or not isinstance(values[0], Mapping):
                    got = ", ".join(type(v).__name__ for v in values)
                    raise CallError(f"{name}() takes keyword arguments (and at most a dict of params "
                                    f"before them), got {len(values)} positional ({got})",
                                    hint=f"call {name}({', '.join(f'{a}=...' for a in params)})")
                kwargs = {**{a: values[0][a] for a in own if a in values[0]}, **kwargs}
            try:
                return fn(**kwargs)
            except arg_error as e:
                raise CallError(str(e), hint=f"signature: {name}({', '.join(params)})") from None
            except singular as e:
                raise SingularError(str(e), hint="the matrix has no inverse (or is not positive definite) to "
                                    "working precision; check the arguments, or regularize (A + c * eye(n))") from None
            except TypeError as e:
                if set(kwargs) != expected:
                    missing = sorted(expected - set(kwargs))
                    extra = sorted(set(kwargs) - expected)
                    parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                            ([f"unexpected {', '.join(extra)}"] if extra else [])
                    raise CallError(f"{name}(): {'; '.join(parts)}",
                                    hint=f"signature: {name}({', '.join(params)}), all keyword arguments") from None
                raise

        call.__name__ = name
        call.__doc__ = getattr(self.module, name).__doc__
        call.params = params
        return call

    def __getitem__(self, name: str):
        try:
            return self._callables[name]
        except KeyError:
            raise CallError(f"no export named {name!r}",
                            hint=f"exports: {', '.join(self.functions)}") from None

    def __getattr__(self, name: str):
        if name.startswith("_") or "_callables" not in self.__dict__:
            raise AttributeError(name)
        if name in self._callables:
            return self._callables[name]
        raise AttributeError(f"program has no export {name!r}; exports: {', '.join(self.functions)}")

    @property
    def apply(self):
        """The export named `apply`, else the first export; either way `prog.apply(params, **inputs)`
        takes the params as a dict (from prog.init) and the inputs as keywords."""
        if "apply" in self._callables:
            return self._callables["apply"]
        return self._callables[self.functions[0]]

    @property
    def init(self):
        """`prog.init(key)`: fresh params as a dict (a pytree), with the initializers of the source.

        key: a jax.random key or an int seed (jax); a torch.Generator or an int seed (torch).
        (An export named `init` takes precedence over this.)"""
        if "init" in self._callables:
            return self._callables["init"]
        fn = getattr(self.module, "init_params", None)
        if fn is None:
            def fn(*args, **kwargs):
                from .errors import BackendError
                raise BackendError(f"the {self.backend_name} backend does not emit initializers"
                                   if not self._backend.emits_initializers else "the program has no params",
                                   hint="compile with backend='torch' or backend='jax' and declare `param`s")
        return fn

    def save(self, path) -> list[str]:
        """Write the generated artifact (source file, or library + manifest for TVM)."""
        return self._backend.save(self, path)

    def explain(self, format: str = "text") -> str:
        """The plan: IR after each pass, rules fired, costs, solver choices.  format="json": the
        same as a JSON document (schema docs/explain.schema.json, described in docs/tools.md)."""
        from .explain import explain, explain_json
        if format not in ("text", "json"):
            raise OpdslError(f"explain(format={format!r}): unknown format", hint="format='text' or format='json'")
        fn = explain if format == "text" else explain_json
        return run_deep(lambda: fn(self), self.graph.depth())   # cost rules recurse through kinds

    def hlo(self, export: str, **args) -> str:
        """The compiled HLO text of an export for these arguments (JAX backend): what XLA runs,
        the collectives of a sharded program included."""
        self[export]                                     # an unknown export: CallError
        fn = getattr(getattr(self.module, export), "hlo", None)
        if fn is None:
            from .errors import BackendError
            raise BackendError(f"Program.hlo is for the jax backend, not {self.backend_name}",
                               hint="compile with backend='jax'")
        return fn(**args)

    def to_op(self) -> str:
        """The program as formatted .op text: a compiled file's own text in its canonical layout
        (`opdsl fmt`), or for a program traced by @opdsl.jit the trace written out — its tensor
        arguments as `input`s, its results as `export`s (opdsl/fmt.py)."""
        from .fmt import format_source
        traced = self.__dict__.get("_op_text")
        return traced() if traced is not None else format_source(self.text, self.filename)

    def _repr_html_(self) -> str:
        """Jupyter's display: exports, costs, rules fired and the plan as SVG (opdsl/notebook.py)."""
        from .notebook import program_html
        return run_deep(lambda: program_html(self), self.graph.depth())

    def _repr_markdown_(self) -> str:
        from .notebook import program_markdown
        return run_deep(lambda: program_markdown(self), self.graph.depth())

    def __repr__(self):
        return f"<opdsl.Program {self.filename} backend={self.backend_name} exports={self.functions}>"


def compile(source: str, backend: str = "torch", dims: dict | None = None, dtype: str = "float32",
            filename: str = "<string>", **kw) -> Program:
    """Compile .op source text for a backend."""
    return Program(source, filename, backend, dims, dtype, **kw)


def compile_file(path, backend: str = "torch", dims: dict | None = None, dtype: str = "float32", **kw) -> Program:
    return Program(read_source(path), os.fspath(path), backend, dims, dtype, **kw)


def read_source(path) -> str:
    """A .op file's text; an unreadable or non-UTF-8 file is an OpdslError (located at the byte)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise OpdslError(f"cannot read {path}: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        from .errors import Span
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise OpdslError(f"{path} is not UTF-8 text: byte {data[e.start]:#04x} at offset {e.start}",
                         Span(os.fspath(path), line, column), hint="save the .op file as UTF-8") from None
    return text


def explain_file(path, dims: dict | None = None, backend: str = "numpy", format: str = "text", **options) -> str:
    """The report for a .op file (what `opdsl explain FILE.op --dim n=...` prints; opdsl/explain.py).
    options: backend options (mesh=, shard= for the plan of a sharded JAX program)."""
    return compile_file(path, backend=backend, dims=dims, **options).explain(format)     # on a big stack when deep


class SingularError(OpdslError):
    """A matrix a compiled program factors or solves with is singular (or, for a Cholesky
    factorization, not positive definite) at run time (opdsl/kinds/linalg.py)."""

    kind = "error"
