"""The Python API (DESIGN.md): compile(), compile_file(), Program."""
from __future__ import annotations

import os
from pathlib import Path

from . import backends as _backends
from . import passes as _passes
from .errors import CallError, OpdslError
from .frontend import to_graph


class Program:
    """A compiled .op program: one callable per export, keyword arguments named as in the source."""

    def __init__(self, text: str, filename: str = "<string>", backend: str = "torch",
                 dims: dict | None = None, dtype: str = "float32", verify: bool | None = None,
                 **options):
        self.filename = filename
        self.backend_name = backend
        self.text = text
        self.dims = dict(dims or {})
        self.dtype = dtype
        self.graph = to_graph(text, filename, dims, dtype)      # operator IR as written
        self._backend = _backends.get(backend, **options)
        self.primitive, self.optimized, self.records = _passes.run(self.graph, verify_each=verify)
        self.source = self._backend.generate(self.primitive)
        self.module = self._backend.load(self.source, self.primitive)
        self.functions = list(self.graph.exports)
        self._callables = {name: self._wrap(name) for name in self.functions}

    def _wrap(self, name):
        fn = self._backend.wrap(getattr(self.module, name), self.primitive, name)
        arg_error = self.module.ArgumentError
        params = [a for a, _ in self._backend._args(self.primitive, name)]
        expected = set(params)

        def call(**kwargs):
            try:
                return fn(**kwargs)
            except arg_error as e:
                raise CallError(str(e), hint=f"signature: {name}({', '.join(params)})") from None
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

    def save(self, path) -> list[str]:
        """Write the generated artifact (source file, or library + manifest for TVM)."""
        return self._backend.save(self, path)

    def explain(self) -> str:
        from .explain import explain
        return explain(self)

    def __repr__(self):
        return f"<opdsl.Program {self.filename} backend={self.backend_name} exports={self.functions}>"


def compile(source: str, backend: str = "torch", dims: dict | None = None, dtype: str = "float32",
            filename: str = "<string>", **kw) -> Program:
    """Compile .op source text for a backend."""
    return Program(source, filename, backend, dims, dtype, **kw)


def compile_file(path, backend: str = "torch", dims: dict | None = None, dtype: str = "float32", **kw) -> Program:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise OpdslError(f"cannot read {path}: {e.strerror}") from None
    return Program(text, os.fspath(path), backend, dims, dtype, **kw)
