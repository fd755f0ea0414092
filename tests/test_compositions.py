"""Random compositions (depth <= 4) of every kind that offers a square sample, against dense."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from opdsl.kinds import REGISTRY

from .harness import BACKENDS, run_against_dense

SIZES = (4, 6, 8)


@st.composite
def operator_expr(draw, n, depth, decls):
    tag = str(len(decls))
    leaves = [k for k in sorted(REGISTRY) if REGISTRY[k].sample(n, "p") is not None]
    choice = draw(st.sampled_from(["leaf"] * 2 + (["compose", "sum", "scale", "transpose", "kron"] if depth else [])))
    if choice == "leaf":
        d, e = REGISTRY[draw(st.sampled_from(leaves))].sample(n, tag)
        decls.append(d)
        return e
    if choice == "kron":
        fs = [a for a in range(2, n) if n % a == 0]
        if not fs:
            return draw(operator_expr(n, depth - 1, decls))
        a = draw(st.sampled_from(fs))
        return f"kron({draw(operator_expr(a, depth - 1, decls))}, {draw(operator_expr(n // a, depth - 1, decls))})"
    a = draw(operator_expr(n, depth - 1, decls))
    if choice == "transpose":
        return f"({a}).T"
    if choice == "scale":
        return f"({draw(st.sampled_from(['2', '-0.5', '3']))} * ({a}))"
    b = draw(operator_expr(n, depth - 1, decls))
    return f"({a} {'@' if choice == 'compose' else draw(st.sampled_from(['+', '-']))} {b})"


@st.composite
def program(draw):
    n = draw(st.sampled_from(SIZES))
    decls = []
    expr = draw(operator_expr(n, draw(st.integers(1, 4)), decls))
    body = "\n".join(d for d in decls if d)
    return f"{body}\ninput x : [{n}, 3]\nexport y = {expr} @ x\n"


@pytest.mark.parametrize("backend", BACKENDS)   # each backend gets the whole sample
@given(program(), st.sampled_from(["float32", "float64"]))
def test_random_composition(backend, src, dtype):
    run_against_dense(src, backend, dtype, exports=["y"], seed=1, require_finite=True)
