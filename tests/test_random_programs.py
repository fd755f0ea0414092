"""Random well-typed programs on every backend against the dense reference (docs/reliability.md).

tests/test_compositions.py composes square samples of every kind.  These
programs go further: non-square operators (dense, lowrank, zeros, kron and
blockdiag of rectangular factors), products through other inner sizes,
transposes, scalars, `let`s shared by several exports, sums of tensors, vector
and batched right-hand sides.  A failure is shrunk by hypothesis and printed as
the .op program, ready to paste into `opdsl check`.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import opdsl
from opdsl.kinds import REGISTRY
from opdsl.reference import random_inputs

from .harness import BACKENDS, PY_BACKENDS, call, run_against_dense

LONG = os.environ.get("OPDSL_FUZZ_LONG", "") not in ("", "0")
SIZES = (2, 3, 4, 6, 8)
FAST = PY_BACKENDS


def budget(small: int, long: int):
    return settings(max_examples=long if LONG else small, deadline=None, derandomize=not LONG,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Decls:
    """Declarations of one program: fresh names, each declared once."""

    def __init__(self):
        self.lines: list[str] = []
        self.n = 0

    def fresh(self, base: str) -> str:
        self.n += 1
        return f"{base}{self.n}"

    def input(self, base: str, shape) -> str:
        name = self.fresh(base)
        self.lines.append(f"input {name} : [{', '.join(str(s) for s in shape)}]")
        return name


class Draws:
    """The generator's choices: from hypothesis (shrinkable) or from a random.Random (fixed seeds)."""

    def __init__(self, draw=None, rng=None):
        self.draw, self.rng = draw, rng

    def pick(self, options):
        options = list(options)
        return self.draw(st.sampled_from(options)) if self.draw else self.rng.choice(options)

    def int(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi)) if self.draw else self.rng.randint(lo, hi)


def square_leaves(n: int) -> list[str]:
    return [k for k in sorted(REGISTRY) if REGISTRY[k].sample(n, "p") is not None]


def operator(c: Draws, m: int, n: int, depth: int, d: Decls, lets: dict) -> str:
    """An operator expression of shape [m, n]."""
    shared = [name for name, shape in lets.items() if shape == (m, n)]
    choices = ["dense", "lowrank", "zeros"] + (["let"] if shared else []) + \
              (["sample", "sample", "sample"] if m == n and square_leaves(n) else [])
    if [a for a in range(2, m) if m % a == 0] and [b for b in range(2, n) if n % b == 0]:
        choices.append("kron")
    if m >= 2 and n >= 2:
        choices.append("blockdiag")
    if depth > 0:
        choices += ["compose", "compose", "sum", "scale", "transpose"]
    what = c.pick(choices)
    if what == "let":
        return c.pick(shared)
    if what == "sample":
        kind = c.pick(square_leaves(n))
        decls, expr = REGISTRY[kind].sample(n, str(d.fresh("s")))
        d.lines.extend(line for line in decls.splitlines() if line.strip())
        return expr
    if what == "dense":
        return d.input("D", (m, n))
    if what == "lowrank":
        r = c.int(1, 3)
        return f"lowrank({d.input('U', (m, r))}, {d.input('V', (n, r))})"
    if what == "zeros":
        return f"zeros({m}, {n})"
    if what == "kron":
        a = c.pick([a for a in range(2, m) if m % a == 0])
        b = c.pick([b for b in range(2, n) if n % b == 0])
        left = operator(c, a, b, depth - 1, d, lets) if depth > 0 else d.input("K", (a, b))
        right = operator(c, m // a, n // b, depth - 1, d, lets) if depth > 0 else d.input("K", (m // a, n // b))
        return f"kron({left}, {right})"
    if what == "blockdiag":
        m1, n1 = c.int(1, m - 1), c.int(1, n - 1)
        return f"blockdiag({d.input('P', (m1, n1))}, {d.input('Q', (m - m1, n - n1))})"
    if what == "compose":
        p = c.pick(SIZES)
        return f"({operator(c, m, p, depth - 1, d, lets)} @ {operator(c, p, n, depth - 1, d, lets)})"
    if what == "sum":
        sign = c.pick(["+", "-"])
        return f"({operator(c, m, n, depth - 1, d, lets)} {sign} {operator(c, m, n, depth - 1, d, lets)})"
    if what == "scale":
        return f"({c.pick(['2', '-0.5', '0.25', '3'])} * {operator(c, m, n, depth - 1, d, lets)})"
    return f"({operator(c, n, m, depth - 1, d, lets)}).T"


def tensor(c: Draws, m: int, rhs: dict, depth: int, d: Decls, lets: dict) -> str:
    """A tensor expression with m rows (and the right-hand side's trailing shape)."""
    n = c.pick(SIZES)
    op = operator(c, m, n, c.int(0, depth), d, lets)
    y = f"{op} @ {rhs[n]}"
    what = c.pick(["apply", "apply", "tsum", "tscale"] + (["chain"] if depth else []))
    if what == "tsum":
        other = tensor(c, m, rhs, max(depth - 1, 0), d, lets)
        return f"({y} {c.pick(['+', '-'])} {other})"
    if what == "tscale":
        return f"{c.pick(['2', '-1', '0.5'])} * ({y})"
    if what == "chain":     # an operator applied to a tensor expression
        inner = tensor(c, n, rhs, depth - 1, d, lets)
        return f"{op} @ ({inner})"
    return y


def make_program(c: Draws) -> str:
    d = Decls()
    form = c.pick(["matrix", "matrix", "vector", "batched"])
    k = c.int(1, 3)
    rhs = {}
    for n in SIZES:                 # one right-hand side per row count that may be needed
        shape = {"matrix": (n, k), "vector": (n,), "batched": (2, n, k)}[form]
        rhs[n] = f"x{n}"
        d.lines.append(f"input x{n} : [{', '.join(str(s) for s in shape)}]")
    lets: dict = {}
    body = []
    for _ in range(c.int(0, 2)):       # shared operators
        m, n = c.pick(SIZES), c.pick(SIZES)
        name = d.fresh("L")
        body.append(f"let {name} = {operator(c, m, n, 1, d, lets)}")
        lets[name] = (m, n)
    for i in range(c.int(1, 3)):       # several exports
        m = c.pick(SIZES)
        body.append(f"export y{i} = {tensor(c, m, rhs, 2, d, lets)}")
    return "\n".join(d.lines + body) + "\n"


@st.composite
def program(draw):
    return make_program(Draws(draw=draw))


def check_all_exports(src: str, backend: str, dtype: str):
    note(f"program ({backend}, {dtype}):\n{src}")
    prog = opdsl.compile(src, backend=backend, dtype=dtype)
    assert prog.functions == [f"y{i}" for i in range(len(prog.functions))]
    run_against_dense(prog, dtype=dtype, seed=7, require_finite=True)


@budget(25, 2000)
@given(program(), st.sampled_from(FAST), st.sampled_from(["float32", "float64"]))
def test_random_program(src, backend, dtype):
    check_all_exports(src, backend, dtype)


@budget(8, 500)
@given(program())
def test_random_program_same_answer_on_every_backend(src):
    """All fast backends give the same numbers (float64), not only each one the reference's."""
    outs = {}
    for backend in FAST:
        prog = opdsl.compile(src, backend=backend, dtype="float64")
        for name in prog.functions:
            outs.setdefault(name, []).append(call(prog, name, random_inputs(prog.graph, name, seed=11)))
    note(src)
    for name, values in outs.items():
        for v in values[1:]:
            np.testing.assert_allclose(v, values[0], rtol=1e-9, atol=1e-9)


@pytest.mark.skipif("tvm" not in BACKENDS, reason="TVM is not installed")
@budget(3, 100)
@given(program())
def test_random_program_tvm(src):
    """TVM compiles slowly: a few programs in CI, more in the long mode."""
    check_all_exports(src, "tvm", "float32")


def test_generator_reaches_every_form():
    """The generator is not vacuous: over fixed seeds it writes rectangular factors, lets, several
    exports, sums of tensors, vectors and batches, and uses every kind that has a square sample."""
    import random
    programs = [make_program(Draws(rng=random.Random(seed))) for seed in range(400)]
    text = "\n".join(programs)
    for needle in ["lowrank(", "blockdiag(", "kron(", "zeros(", ").T", "let L", "export y2", ") + ", ") - ",
                   "input x2 : [2]\n", "input x2 : [2, 2, ", "input x2 : [2, 3]"]:
        assert needle in text, needle
    for kind in sorted(REGISTRY):
        if any(REGISTRY[kind].sample(n, "p") for n in SIZES):
            expr = REGISTRY[kind].sample(4 if REGISTRY[kind].sample(4, "p") else 8, "zz")[1]
            head = expr.split("(")[0] if "(" in expr else None
            assert head is None or f"{head}(" in text, kind
