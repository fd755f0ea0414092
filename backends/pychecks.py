"""The argument checks at the top of every generated function: ranks, free dims bound from the
shapes, sizes, dtypes and devices, with the messages of the module's runtime (pyruntime.RUNTIME).

Per argument, one call of the module's `_check_arg` (check_arg_runtime: rank, dtype, device),
then the lines that bind free dims from its shape and compare its sizes with the dims."""
from __future__ import annotations

import re

import sympy as sp

from opdsl.errors import DimError
from opdsl.ir import Graph

from .pyexpr import pyexpr, shape_str


def _symbols_of(g: Graph, root: int) -> set:
    """The dims that the nodes below root mention, in their types or in their attributes."""
    out = set()

    def visit(x):
        if isinstance(x, sp.Basic):
            out.update(x.free_symbols)
        elif isinstance(x, (tuple, list)):
            for y in x:
                visit(y)
        elif isinstance(x, dict):
            for y in x.values():
                visit(y)

    for v in g.live([root]):
        n = g[v]
        visit(getattr(n.type, "shape", ()))
        visit(n.attrs)
    return out


def _atom(code: str) -> str:
    """code, parenthesized unless it is a name or an integer."""
    return code if re.fullmatch(r"\w+", code) else f"({code})"


def check_arg_runtime(backend) -> str:
    """The module's `_check_arg`: one argument's rank, its sizes when they are all known before it,
    its dtype (named `want`, spelled `dtype` as backend.check_dtype spells it) and, on a backend
    with devices, its device (the first argument's), in the order and with the messages of the
    `if ...: _..._error(...)` lines it stands for (pyruntime.RUNTIME)."""
    lines = ["", "",
             "def _check_arg(fn, name, value, decl, shape, dtype, want, known=None, first=None, first_name=None):",
             '    """Argument `name` of fn(), declared `decl`.  `shape`: its sizes, or only its rank when',
             "    it binds a free dim (its sizes are checked after the binding); `known`: the dims' values",
             '    for the message; `first`: the first argument, whose device it must be on."""',
             "    if shape.__class__ is int:",
             '        if getattr(value, "ndim", None) != shape:',
             "            _shape_error(fn, name, value, decl, {})",
             '    elif getattr(value, "shape", None) != shape:      # which message: the rank, or a size',
             '        if getattr(value, "ndim", None) != len(shape):',
             "            _shape_error(fn, name, value, decl, {})",
             "        if tuple(value.shape) != shape:",
             "            _shape_error(fn, name, value, decl, known or {})",
             f"    if {backend.dtype_check('value', 'dtype')}:",
             "        _dtype_error(fn, name, value, want)"]
    device = backend.device_check("value", "first")
    if device:
        lines += [f"    if first is not None and {device}:",
                  "        _device_error(fn, name, value, first_name, first)"]
    return "\n".join(lines)


def arg_checks(backend, g: Graph, name: str, args, root: int | None = None) -> list[str]:
    """Checks of every argument against the declared signature, binding the free dims.

    Per argument, one call of `_check_arg` (check_arg_runtime): its rank, its dtype, its device
    (the first argument's) and, when every dim of its shape is known before it, its sizes.
    Otherwise, after that call: each free dim it has as a dimension of its own is bound there
    (`k = x.shape[1]`; derived dims are expanded, so `[m]` with `dim m = n / 2` binds nothing);
    derived dims computable from what is bound are computed, with a check that they are
    integers (`n / 2` needs an even n); its other dimensions are compared with their declared
    values.  A free dim that only appears inside expressions (`[2 * n]`, `[a * b]` with a bound) is solved from
    one of them (`n = x.shape[0] // 2`) and the arguments that needed it are checked then;
    one that cannot be found from the shapes is a DimError at compile time.
    """
    t = g.dims
    derived = {s: e for s, e in t.derived.items() if s not in t.values}
    if root is not None:            # only the derived dims this function uses (and what they use)
        used = {x for _, node in args for d in node["shape"] for x in sp.sympify(d).free_symbols}
        used |= _symbols_of(g, root)
        for s in reversed(list(derived)):
            if s in used:
                used |= sp.sympify(derived[s]).free_symbols
        derived = {s: e for s, e in derived.items() if s in used}

    def expand(e):
        e = sp.sympify(e)
        for _ in range(len(derived) + 1):
            new = e.xreplace(derived)
            if new == e:
                break
            e = new
        return e

    out: list[str] = []
    bound = {s for s in t.symbols.values() if s in t.values}
    sources = set()                      # (arg, axis) that bound a dim: nothing to compare there

    def compute_derived():
        for s, e in derived.items():      # declaration order: a derived dim uses earlier dims
            if s not in bound and expand(e).free_symbols <= bound:
                num, den = sp.fraction(sp.together(expand(e)))
                if den != 1:
                    known = ", ".join(f"{x.name!r}: {x.name}" for x in sorted(expand(e).free_symbols, key=str))
                    out.append(f"    if {_atom(pyexpr(num))} % {_atom(pyexpr(den))} != 0:")
                    out.append(f"        _dim_error({name!r}, {f'{s.name} = {e}'!r}, {{{known}}})")
                out.append(f"    {s.name} = {pyexpr(e)}")
                bound.add(s)

    def known_dims(shape) -> str:
        """The `known` dict of a size error: the value of each dim the declared shape names."""
        return "{" + ", ".join(f"{s.name!r}: {s.name}" for s in sorted(
            {x for d in shape for x in sp.sympify(d).free_symbols}, key=str)) + "}"

    def size_check(a, shape):
        checks = [f"{a}.shape[{i}] != {pyexpr(d)}" for i, d in enumerate(shape) if (a, i) not in sources]
        if checks:
            out.append(f"    if {' or '.join(checks)}:")
            out.append(f"        _shape_error({name!r}, {a!r}, {a}, {shape_str(shape)!r}, {known_dims(shape)})")

    def ready(shape):
        return all(sp.sympify(d).free_symbols <= bound for d in shape)

    deferred = []
    devices = bool(backend.device_check("value", "first"))
    for j, (a, node) in enumerate(args):
        shape = node["shape"]
        whole = ready(shape)          # every size known before this argument: compared in the call
        sizes = "(" + ", ".join(pyexpr(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
        known = known_dims(shape) if whole else "{}"
        call = [repr(name), repr(a), a, repr(shape_str(shape)), sizes if whole else str(len(shape)),
                backend.check_dtype(node["dtype"]), repr(node["dtype"]), known if known != "{}" else "None"]
        if j and devices:
            call += [args[0][0], repr(args[0][0])]
        while call[-1] == "None":     # the optional arguments left at their defaults
            call.pop()
        if node.get("sparse"):         # the framework's sparse matrix, before its shape and dtype
            out.append(f"    _check_sparse({name!r}, {a!r}, {a}, {(shape_str(shape) + ' sparse')!r})")
        out.append(f"    _check_arg({', '.join(call)})")
        if whole:
            continue
        for i, d in enumerate(shape):
            e = expand(d)
            if e.is_Symbol and e not in bound:
                out.append(f"    {e.name} = {a}.shape[{i}]")
                bound.add(e)
                sources.add((a, i))
        compute_derived()
        if ready(shape):
            size_check(a, shape)
        else:
            deferred.append((a, shape))
    size = sp.Symbol("_size_", integer=True, positive=True)
    while True:
        for a, shape in [x for x in deferred if ready(x[1])]:   # bound by a later argument
            size_check(a, shape)
            deferred.remove((a, shape))
        if not deferred:
            break
        for a, shape in deferred:
            solved = None
            for i, d in enumerate(shape):
                e = expand(d)
                unknown = sorted(e.free_symbols - bound, key=str)
                if len(unknown) != 1:
                    continue
                try:
                    sol = sp.solve(sp.Eq(e, size), unknown[0])
                except (NotImplementedError, ValueError):
                    continue
                if len(sol) == 1 and sol[0].is_rational_function() and not sol[0].free_symbols - bound - {size}:
                    solved = (unknown[0], pyexpr(sol[0]).replace("_size_", f"{a}.shape[{i}]"))
                    break
            if solved is not None:
                break
        if solved is None:
            unbound = sorted({x for _, sh in deferred for d in sh for x in expand(d).free_symbols} - bound,
                             key=str)
            names = ", ".join(s.name for s in unbound)
            raise DimError(f"{name}(): the free dim{'s' if len(unbound) > 1 else ''} {names} cannot be found "
                           "from the arguments' shapes", g.meta.get("name_spans", {}).get(unbound[0].name),
                           hint="give it a value (`dim n = 64`) or use it alone as some argument's dimension")
        out.append(f"    {solved[0].name} = {solved[1]}")
        bound.add(solved[0])
        compute_derived()
    return out
