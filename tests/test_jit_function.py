"""@opdsl.jit never silently reuses the wrong program or generates code from user text (issue 12).

Names: user names reach generated code NFKC-normalized and renamed away from what the generated code
owns.  Statics: keyed by exact type and value; mutable ones are refused.  Globals and closure
variables the function reads are guarded.  See docs/python.md, "Signatures".
"""
import dataclasses
import enum
import linecache
from typing import NamedTuple

import numpy as np
import pytest
import torch

import opdsl
from opdsl.errors import CallError

X = torch.randn(4, 2, dtype=torch.float64)
D = torch.randn(4, dtype=torch.float64)
U = torch.randn(4, 1, dtype=torch.float64)


def _counting(fn, backend="torch"):
    """fn under @opdsl.jit, with the number of traces in .traces."""
    traces = []

    def traced(*args, **kwargs):
        traces.append(1)
        return fn(*args, **kwargs)

    traced.__name__ = fn.__name__
    f = opdsl.jit(traced, backend=backend)
    f.traces = traces
    return f


# ---- names ------------------------------------------------------------------------------------

def test_fullwidth_keyword_does_not_collide_with_a_temporary():
    """`ｔ1` is `t1` to Python; it used to be pasted as-is and overwritten by the temporary t1."""
    @opdsl.jit
    def f(x, **kw):
        return opdsl.lowrank(kw["ｔ1"], kw["ｔ1"]) @ x + x

    torch.testing.assert_close(f(X, **{"ｔ1": U}), U @ U.T @ X + X)
    src = f.program(X, **{"ｔ1": U}).source
    assert "def f(*, x, t1):" in src and "ｔ1 =" not in src

    @opdsl.jit
    def g(x, **kw):        # both spellings at once: two arguments, two names
        return opdsl.diag(kw["t1"]) @ x - opdsl.diag(kw["ｔ1"]) @ x

    D2 = torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(g(X, **{"t1": D, "ｔ1": D2}), (D - D2)[:, None] * X)


@pytest.mark.parametrize("name", ["if", "None", "_dev", "np", "torch", "getattr", "t1", "_shape_error", "x_",
                                  "ArgumentError", "lambda", "２x", "a b", "a'b\"", "é", "ｎｐ"])
def test_any_keyword_name_is_safe(name):
    @opdsl.jit
    def f(x, **kw):
        return opdsl.diag(kw[name]) @ x + opdsl.eye(4) @ x + opdsl.diag(kw[name]) @ x

    torch.testing.assert_close(f(X, **{name: D}), 2 * D[:, None] * X + X)


def test_pytree_keys_and_result_keys_are_never_source_text():
    keys = ["y", "if", "ｔ1", "np", "a b", "q'\")\n", 3, ("t", 1)]

    @opdsl.jit
    def f(x, p):
        return {k: opdsl.diag(p[k]) @ x for k in p}

    p = {k: torch.randn(4, dtype=torch.float64) for k in ["if", "ｔ1", "a b", "q'\")\n", "t1"]}
    out = f(X, p)
    assert list(out) == list(p)
    for k in p:
        torch.testing.assert_close(out[k], p[k][:, None] * X)

    @opdsl.jit
    def g(x):
        return {k: (i + 1) * (opdsl.eye(4) @ x) for i, k in enumerate(keys)}

    out = g(X)
    assert list(out) == keys
    for i, k in enumerate(keys):
        torch.testing.assert_close(out[k], (i + 1) * X)


@pytest.mark.parametrize("filename", ["odd_user_code.py", 'C:\\Users\\me\\odd """ user\'s.py'])
def test_odd_characters_in_the_users_source_lines(filename):
    """The generated code quotes the user's lines and file name (comments, docstrings): backslashes,
    quotes and unicode there must not break it (trace.py pastes no text; pycodegen escapes it)."""
    src = ('def f(x, d):\n'
           '    A = opdsl.diag(d)  # C:\\Users\\me\\A.npy """ \'\'\' \\N{BULLET} \\x00\n'
           '    return A @ x  # C:\\new\\table \\\n')
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    opdsl.trace._TEXTS.pop(filename, None)
    ns = {"opdsl": opdsl}
    exec(compile(src, filename, "exec"), ns)
    for backend, x, d in [("torch", X, D), ("numpy", X.numpy(), D.numpy())]:
        f = opdsl.jit(ns["f"], backend=backend)
        np.testing.assert_allclose(np.asarray(f(x, d)), D.numpy()[:, None] * X.numpy())
        assert "A = opdsl.diag(d)  # C:\\Users\\me" in f.program(x, d).source     # the line, quoted


# ---- statics: keyed by exact type and value -------------------------------------------------------

class Pair(NamedTuple):
    a: float
    b: float


@dataclasses.dataclass(frozen=True)
class Config:
    scale: float
    causal: bool = False


class Mode(enum.Enum):
    DOUBLE = 1
    TRIPLE = 2


def test_statics_of_different_types_are_different_signatures():
    def fn(x, s):
        # the result depends on the static's exact type, as user code may
        return (2 if "float" in repr(type(s[0])) or "." in repr(s) else 3) * (opdsl.eye(4) @ x)

    f = _counting(fn)
    torch.testing.assert_close(f(X, (1, 2)), 3 * X)
    torch.testing.assert_close(f(X, (1.0, 2.0)), 2 * X)      # used to reuse the (1, 2) program: 3 * X
    torch.testing.assert_close(f(X, (1, 2)), 3 * X)
    assert len(f.traces) == 2 and f.cache_size == 2

    g = _counting(lambda x, s: opdsl.eye(4) @ x)
    for s in [True, 1, 1.0, -0.0, 0.0, 0, False, (1, (2, 3)), (1, (2, 3.0)), Pair(1.0, 2.0), (1.0, 2.0),
              np.float32(1.0), np.float64(1.0), frozenset({1}), frozenset({1.0}), "1", b"1"]:
        g(X, s)
    assert g.cache_size == len(g.traces) == 17
    for s in [True, 1, 1.0, -0.0, 0.0, (1, (2, 3)), Pair(1.0, 2.0), np.float32(1.0)]:     # found again
        g(X, s)
    assert len(g.traces) == 17


def test_nan_static_hits_the_cache():
    def fn(x, s):
        s0 = s[0] if isinstance(s, tuple) else s
        return (opdsl.eye(4) @ x) if s0 != s0 else s0 * (opdsl.eye(4) @ x)

    f = _counting(fn)
    for _ in range(3):
        torch.testing.assert_close(f(X, float("nan")), X)      # a new NaN object each call
        torch.testing.assert_close(f(X, np.float32("nan")), X)
        torch.testing.assert_close(f(X, Pair(float("nan"), 1.0)), X)
    assert len(f.traces) == 3 and f.cache_size == 3


def test_frozen_dataclasses_enums_and_functions_are_statics():
    def fn(x, cfg, mode, op):
        k = cfg.scale * (2 if mode is Mode.DOUBLE else 3)
        return k * (op(4) @ x)

    f = _counting(fn)
    torch.testing.assert_close(f(X, Config(1.5), Mode.DOUBLE, opdsl.eye), 3 * X)
    torch.testing.assert_close(f(X, Config(1.5), Mode.DOUBLE, opdsl.eye), 3 * X)    # an equal config
    torch.testing.assert_close(f(X, Config(1.0), Mode.TRIPLE, opdsl.eye), 3 * X)
    assert len(f.traces) == 2


class Mutable:
    def __init__(self):
        self.scale = 2.0


@dataclasses.dataclass
class MutableConfig:
    scale: float


@pytest.mark.parametrize("value,what", [
    ([1, 2], "is a list"), ({"a": 1}, "is a dict"), ({1, 2}, "is a set"), (Mutable(), "hashed by identity"),
    (MutableConfig(2.0), "not frozen"), ((1, [2]), "is a list"), (Config([1.0]), "is a list"),
])
def test_mutable_statics_are_refused(value, what):
    """A mutated object used to keep the program traced with its old attributes."""
    @opdsl.jit
    def f(x, cfg):
        return opdsl.eye(4) @ x

    with pytest.raises(CallError, match=what) as e:
        f(X, value)
    assert "argument 'cfg'" in str(e.value) and "frozen dataclass" in str(e.value)
    assert "test_jit_function.py" in str(e.value)      # located at the call


def test_mutated_object_no_longer_keeps_its_old_value():
    cfg = Mutable()

    @opdsl.jit
    def f(x, cfg):
        return cfg.scale * (opdsl.eye(4) @ x)

    with pytest.raises(CallError, match="hashed by identity"):
        f(X, cfg)


def test_pytree_structure_is_part_of_the_signature():
    f = _counting(lambda p, x: opdsl.diag(p[0]) @ x if isinstance(p, list) else opdsl.diag(p[0]) @ (2 * x))
    torch.testing.assert_close(f([D], X), D[:, None] * X)
    torch.testing.assert_close(f({0: D}, X), 2 * D[:, None] * X)     # flattened to the same leaf name
    torch.testing.assert_close(f((D,), X), 2 * D[:, None] * X)
    assert len(f.traces) == 3

    class Factors(NamedTuple):
        d: torch.Tensor
        u: torch.Tensor

    g = opdsl.jit(lambda fs, x: (opdsl.diag(fs.d) + opdsl.lowrank(fs.u, fs.u)) @ x)
    torch.testing.assert_close(g(Factors(D, U), X), (torch.diag(D) + U @ U.T) @ X)


# ---- guards: globals and closure variables ----------------------------------------------------------

SCALE = 2.0
MODE = "double"
TRACES = []


def _scaled(x):
    TRACES.append(1)
    return SCALE * (opdsl.eye(4) @ x)


def test_a_changed_global_retraces():
    """Guarded: the globals the decorated function itself reads (not those of the helpers it calls)."""
    global SCALE
    f = opdsl.jit(_scaled)
    f.traces = TRACES
    TRACES.clear()
    try:
        torch.testing.assert_close(f(X), 2 * X)
        SCALE = 3.0
        torch.testing.assert_close(f(X), 3 * X)        # used to return 2 * X
        SCALE = 2.0
        torch.testing.assert_close(f(X), 2 * X)        # the first program, from the cache
        SCALE = float("2.0")                            # another object, the same value: no retrace
        torch.testing.assert_close(f(X), 2 * X)
        assert len(f.traces) == 2 and f.cache_size == 2
    finally:
        SCALE = 2.0


def test_globals_read_in_comprehensions_and_static_calls_are_guarded():
    global MODE

    def fn(x, k):
        ys = [(3 if MODE == "triple" else 2) * (opdsl.eye(4) @ x) for _ in range(k)]
        return ys[-1]

    f = opdsl.jit(fn, backend="torch")
    try:
        torch.testing.assert_close(f(X.float(), 1), 2 * X.float())
        MODE = "triple"
        torch.testing.assert_close(f(X.float(), 1), 3 * X.float())     # slow path (a static argument)
    finally:
        MODE = "double"


def test_a_changed_closure_variable_retraces():
    scale = 2.0

    @opdsl.jit
    def f(x):
        return scale * (opdsl.eye(4) @ x)

    torch.testing.assert_close(f(X), 2 * X)
    scale = 5.0
    torch.testing.assert_close(f(X), 5 * X)
    assert f.cache_size == 2
