"""The cache keys, generated names and guards of ``@opdsl.jit`` (opdsl/jit_function.py).

- ``static_key``: a non-tensor argument is part of the signature, keyed by its exact type and value,
  recursively: ``(1, 2)`` and ``(1.0, 2.0)``, ``True`` and ``1``, ``0.0`` and ``-0.0`` are different
  signatures; floats are keyed by their bits, so a NaN finds its program again.  Values that can
  change after the call (lists, dicts, sets, objects hashed by identity) are refused, like
  ``jax.jit``'s unhashable static arguments: a mutated object would silently keep its old program.
- ``code_names``: the names that user text (parameters, ``**kwargs`` keys, pytree keys, dict keys of
  the result) becomes in generated code.  Python NFKC-normalizes identifiers in source (``ｔ1`` is
  ``t1``), so names are normalized first; then anything the generated code owns (``_`` names,
  keywords, builtins, imports and helpers of the generated module) is renamed, and names are made
  unique.  The generated temporaries avoid these names (backends/pynames.Names), so no user name
  can be or become one of them.
- ``Guards``: the module globals and closure variables a jit function reads.  Their values at trace
  time are part of the key (immutable values by value, functions / classes / modules by identity),
  so rebinding one retraces instead of silently keeping the old value.
"""
from __future__ import annotations

import builtins
import dataclasses
import dis
import enum
import keyword
import numbers
import sys
import types
import unicodedata

MISSING = object()   # an unbound global or an empty closure cell

# names of the generated modules (imports, runtime helpers, module constants of every Python backend);
# names starting with "_" are the generated code's own (docs/reliability.md, "Names")
GENERATED = frozenset({"np", "torch", "jax", "jnp", "functools", "tvm", "X64", "PARAMS", "ArgumentError",
                       "SingularError", "CG_RESIDUALS", "init", "init_params"})
RESERVED = GENERATED | frozenset(keyword.kwlist) | frozenset(dir(builtins))


class Unkeyable(Exception):
    """A value that cannot be part of a signature; `what` says what it is, for the message."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def _identity_ok(x) -> bool:
    """Values that never change and are keyed by identity: functions, classes, modules, torch dtypes."""
    t = type(x)
    return (isinstance(x, (types.FunctionType, types.BuiltinFunctionType, type, types.ModuleType))
            or getattr(t, "_opdsl_static_identity", False)                  # a JitFunction
            or (t.__module__ == "torch" and t.__name__ in ("dtype", "layout", "memory_format")))


def is_tensor(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, numbers.Number) \
        and not getattr(type(x), "_opdsl_traced", False)


def is_sparse(x) -> bool:
    """Whether tensor x is a sparse matrix: a torch tensor of a sparse layout, a JAX BCOO, a scipy.sparse
    matrix (traced as `input x : [m, n] sparse`, and keyed apart from a dense tensor of its shape)."""
    layout = getattr(x, "layout", None)
    if layout is not None:
        return str(layout) != "torch.strided"
    return type(x).__name__ == "BCOO" or hasattr(x, "tocsr")


def static_key(x):
    """A hashable key equal for two values exactly when they are the same static value.

    Raises Unkeyable for a value that may change after the call or cannot be compared."""
    t = type(x)
    if t is bool or t is int or t is str or t is bytes:
        return (t, x)
    if t is float:
        return (t, x.hex())                      # bits: -0.0 != 0.0, nan == nan
    if x is None or x is Ellipsis:
        return (t,)
    if isinstance(x, enum.Enum):                 # before int: IntEnum members are ints too
        return (t, "enum", x.name)
    np = sys.modules.get("numpy")
    if np is not None and isinstance(x, np.generic):
        return (t, x.tobytes())                  # numpy scalars: type and bits
    if isinstance(x, bool):
        return (bool, bool(x))
    if isinstance(x, numbers.Integral):
        return (t, int(x))
    if isinstance(x, float):
        return (t, float(x).hex())
    if isinstance(x, complex):
        return (t, x.real.hex(), x.imag.hex())
    if isinstance(x, numbers.Rational):         # fractions.Fraction: exact
        return (t, "rational", static_key(x.numerator), static_key(x.denominator))
    if isinstance(x, (str, bytes)):
        return (t, str(x) if isinstance(x, str) else bytes(x))
    if isinstance(x, tuple):                     # tuples and named tuples, element by element
        return (t, tuple(static_key(e) for e in x))
    if isinstance(x, frozenset):
        return (t, frozenset(static_key(e) for e in x))
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        if not t.__dataclass_params__.frozen:
            raise Unkeyable(f"a {t.__name__} (a dataclass that is not frozen: it can change after the call)")
        return (t, tuple((f.name, static_key(getattr(x, f.name))) for f in dataclasses.fields(x)))
    if _identity_ok(x):
        return (t, "id", x)
    if is_tensor(x):
        raise Unkeyable(f"a {t.__module__}.{t.__name__}")
    if isinstance(x, (list, dict, set, bytearray)):
        raise Unkeyable(f"a {t.__name__} (it can change after the call)")
    try:
        hash(x)
    except TypeError:
        raise Unkeyable(f"a {t.__name__} (it is not hashable)") from None
    if t.__hash__ is object.__hash__:
        raise Unkeyable(f"a {t.__name__} object, which is hashed by identity (its attributes can change "
                        "after the call)")
    try:                                         # a value equal to itself is found again by ==
        same = bool(x == x)
    except Exception:
        raise Unkeyable(f"a {t.__name__} that cannot be compared") from None
    return (t, "eq", x) if same else (t, "repr", repr(x))


STATIC_HINT = ("a non-tensor argument of an @opdsl.jit function is static: part of the compiled "
               "signature, keyed by type and value, so it must not change after the call; pass a tuple "
               "instead of a list, a frozen dataclass or a tuple instead of a dict or object")


# ---- names -----------------------------------------------------------------------------------

def _identifier(text: str) -> str:
    """text as an identifier the way Python reads one (NFKC), other characters as '_'."""
    s = unicodedata.normalize("NFKC", text)
    s = "".join(c if (c == "_" or ("a" + c).isidentifier()) else "_" for c in s)
    s = unicodedata.normalize("NFKC", s)
    if s[:1].isdigit():
        s = "a" + s
    return s if s.isidentifier() else "_"


def code_names(raws, taken=(), reserved=frozenset()) -> list[str]:
    """Safe, distinct identifiers for user names `raws`, avoiding `taken` and what the generated code owns.

    NFKC first (``ｔ1`` -> ``t1``: Python would read the source that way); a name starting with ``_``
    loses its leading underscores (``_dev`` -> ``dev``); a keyword, builtin or generated-module name
    gets a trailing ``_`` (``np`` -> ``np_``); a name already used gets ``_2``, ``_3``, ..."""
    used = {unicodedata.normalize("NFKC", t) for t in taken}
    out = []
    for raw in raws:
        s = _identifier(str(raw)).lstrip("_") or "arg"
        if s in RESERVED or s in reserved:
            s += "_"
        cand, i = s, 2
        while cand in used:
            cand, i = f"{s}_{i}", i + 1
        used.add(cand)
        out.append(cand)
    return out


# ---- guards: the globals and closure variables the function reads -----------------------------

def _global_loads(code) -> list[str]:
    """Names loaded as globals by `code` and the code objects nested in it (lambdas, comprehensions)."""
    names, seen, stack = [], set(), [code]
    while stack:
        c = stack.pop()
        for ins in dis.get_instructions(c):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and ins.argval not in seen:
                seen.add(ins.argval)
                names.append(ins.argval)
        stack.extend(k for k in reversed(c.co_consts) if isinstance(k, types.CodeType))
    return names


def _contents(cell):
    try:
        return cell.cell_contents
    except ValueError:
        return MISSING


def _guard_part(v):
    if v is MISSING:
        return ("unbound",)
    try:
        return static_key(v)
    except Unkeyable:
        return ("not guarded",)      # a list, dict, tensor, object: mutable, documented as not guarded


class Guards:
    """The globals (``fn.__globals__``, names the code loads as globals) and closure cells of `fn`.

    `key()` (slow path) is their values as static keys; `snapshot()` is the objects themselves, whose
    identities the fast path compares: the same objects give the same key."""

    def __init__(self, fn):
        code = getattr(fn, "__code__", None)
        self.ns = getattr(fn, "__globals__", None)
        self.names = tuple(_global_loads(code)) if code is not None and self.ns is not None else ()
        cells = getattr(fn, "__closure__", None) or ()
        self.cells = tuple(cells) if code is not None else ()

    def snapshot(self) -> tuple:
        get = self.ns.get if self.ns is not None else None
        return tuple([get(n, MISSING) for n in self.names] + [_contents(c) for c in self.cells])

    def ids(self) -> list:
        get = self.ns.get if self.ns is not None else None
        out = [id(get(n, MISSING)) for n in self.names]      # (no names without a namespace)
        for c in self.cells:
            out.append(id(_contents(c)))
        return out

    def key(self) -> tuple:
        return tuple(_guard_part(v) for v in self.snapshot())
