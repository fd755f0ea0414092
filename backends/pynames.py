"""Names in generated Python: fresh readable locals, and the check that no source name clashes
with a name the generated module uses (docs/reliability.md, "Names")."""
from __future__ import annotations

import ast
import builtins
import keyword
import re

from opdsl.errors import BackendError
from opdsl.ir import Graph


class Names:
    """Fresh, readable, valid Python names: the source name, then name_2, ...; t1, t2 for the rest."""

    def __init__(self, taken=()):
        # builtins and the runtime helpers too: a local named `getattr` or `_shape_error` would break the checks
        self.taken = set(taken) | set(keyword.kwlist) | set(dir(builtins)) | {"ArgumentError", "_shape_error",
                                                                               "_dtype_error", "_dim_error",
                                                                               "_device_error", "_check_arg"}
        self.n = 0

    def fresh(self, base: str | None) -> str:
        if base:
            base = re.sub(r"\W", "_", base)
            cand, i = base, 2
            while cand in self.taken:
                cand, i = f"{base}_{i}", i + 1
        else:
            self.n += 1
            cand = f"t{self.n}"
            while cand in self.taken:
                self.n += 1
                cand = f"t{self.n}"
        self.taken.add(cand)
        return cand


# Builtins that generated code may call or name (the runtime helpers, the argument checks, the
# emit tables, the layer code).  A source name equal to one of them would shadow it inside a
# generated function, so check_names refuses it.  tests/test_injection.py checks on every example
# and catalogue program that the modules load no other builtin; add here what a new emit uses.
GENERATED_BUILTINS = frozenset({
    "ArithmeticError", "Ellipsis", "Exception", "RuntimeError", "RuntimeWarning", "TypeError", "ValueError", "all", "any", "bool",
    "dict", "enumerate", "float", "getattr", "hasattr", "int", "isinstance", "iter", "len", "list", "max", "min",
    "next", "range", "slice", "sorted", "staticmethod", "str", "sum", "super", "tuple", "type", "zip"})


def user_names(g: Graph) -> tuple[set, set]:
    """(all source names that reach a generated module, those bound at its module level): exports,
    arguments (inputs and params), dims; exports and dims known at compile time are module-level."""
    dims = set(g.dims.symbols) if g.dims is not None else set()
    known = {s.name for s in g.dims.values} if g.dims is not None else set()
    args = {a for sig in g.meta.get("signatures", {}).values() for a, *_ in sig}
    module_user = set(g.exports) | known
    return module_user | dims | args, module_user


def check_names(source: str, g: Graph, backend) -> None:
    """Raise BackendError, at the name, when a source name (export, argument, param, dim) would
    clash with a name the generated module itself uses; never a call-time crash or a layer that
    calls itself (docs/reliability.md, "Names").

    Found on the generated source itself (ast), so it holds for every Python-source backend:
    - a module-level user name (an export, a dim known at compile time) bound twice;
    - any user name equal to a name the compiler binds at module level (an import such as np or
      torch, a runtime helper, PARAMS, X64, init_params, a layer class): arguments and free dims
      are locals of functions that use those names;
    - any user name equal to a builtin that generated code uses (GENERATED_BUILTINS);
    - when the module has layer code (params), a user name equal to a parameter of that code's
      API (backend.layer_api: torch's self, generator, names, device; jax's key).
    The locals of generated helpers start with `_`, which no source name can.
    """
    tree = ast.parse(source)
    exports = set(g.exports)
    user, module_user = user_names(g)

    def rewraps(st):     # `f = wrap(f, ...)` of an export (jax, params): the same binding again
        return (isinstance(st.value, ast.Call) and len(st.targets) == 1
                and isinstance(st.targets[0], ast.Name) and st.targets[0].id in exports
                and any(isinstance(a, ast.Name) and a.id == st.targets[0].id for a in st.value.args))

    bound: dict[str, int] = {}
    for st in tree.body:
        names = []
        if isinstance(st, (ast.Import, ast.ImportFrom)):
            names = [(a.asname or a.name).split(".")[0] for a in st.names]
        elif isinstance(st, (ast.FunctionDef, ast.ClassDef)):
            names = [st.name]
        elif isinstance(st, ast.Assign) and not rewraps(st):
            names = [t.id for t in st.targets if isinstance(t, ast.Name)]
        for n in names:
            bound[n] = bound.get(n, 0) + 1
    spans = {**g.meta.get("name_spans", {}), **g.meta.get("export_spans", {})}
    compiler = {n for n in bound if n not in module_user}
    layer_api = set(getattr(backend, "layer_api", ())) if "init_params" in compiler else set()
    what = getattr(backend, "name", backend)

    def fail(name, clash):
        raise BackendError(f"the name {name!r} clashes with {clash} in the generated {what} module",
                           spans.get(name), hint=f"rename {name!r} in the source (e.g. {name}_)")

    for name in sorted(module_user):
        if bound.get(name, 0) > 1:
            fail(name, "another module-level name")
    for name in sorted(user):
        if name in compiler:
            fail(name, "an import or helper")
        if name in GENERATED_BUILTINS:
            fail(name, f"the builtin {name}()")
        if name in layer_api:
            fail(name, "a parameter of the layer code")
