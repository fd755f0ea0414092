"""One test per error class a user can cause: the message, the location and the hint."""
import numpy as np
import pytest
import torch

import opdsl
from opdsl.errors import CallError, DimError, NameError_, OpdslError, ParseError, ShapeError, TypeError_


def err(src, cls=OpdslError, **kw):
    with pytest.raises(cls) as e:
        opdsl.compile(src, filename="m.op", **kw)
    return e.value


def test_parse_error_location_caret_and_expected_words():
    e = err("dim n = 4\ninput x : [n, ]\nexport y = x", ParseError)
    text = str(e)
    assert text.startswith("m.op:2:15: error: unexpected ']'")
    assert "    input x : [n, ]\n" in text
    assert "\n" + " " * 4 + " " * 14 + "^" in text
    assert "expected" in e.hint and "a name" in e.hint and "an integer" in e.hint


def test_parse_error_bad_character():
    e = err("dim n = 4\ninput x : [n]\nexport y = x $ x", ParseError)
    assert str(e).startswith("m.op:3:14: error: unexpected character '$'")


def test_parse_error_end_of_file():
    e = err("dim n = 4\ninput x : [n]\nexport y = diag(x) @", ParseError)
    assert "ends in the middle" in e.message and e.span.line == 3


def test_keyword_as_name():
    e = err("dim let = 4", ParseError)
    assert "keyword 'let'" in e.message and "cannot be used as a name" in e.hint


def test_unknown_name_suggests():
    e = err("dim n = 4\ninput weight : [n, n]\ninput x : [n]\nexport y = wieght @ x", NameError_)
    assert e.message == "unknown name 'wieght'"
    assert (e.span.line, e.span.column) == (4, 12)
    assert "weight" in e.hint


def test_unknown_dim():
    e = err("input x : [m, 2]\nexport y = x", NameError_)
    assert "unknown dimension 'm'" in e.message and "dim m" in e.hint


def test_redefinition_points_at_both():
    e = err("dim n = 4\ninput x : [n]\ninput x : [n]\nexport y = x", NameError_)
    assert "'x' is already defined" in e.message and e.span.line == 3
    assert e.notes and e.notes[0][1].line == 2 and "first defined here" in str(e)


def test_shape_mismatch_names_both_shapes_and_spans():
    src = "dim a = 4\ndim b = 3\ninput A : [a, a]\ninput B : [b, b]\ninput x : [10, 2]\nexport y = kron(A, B) @ x"
    e = err(src, ShapeError)
    assert "[a*b, a*b]" in e.message and "[10, 2]" in e.message
    assert (e.span.line, e.span.column) == (6, 12)
    lines = {s.line for _, s in e.notes}
    assert lines == {5, 6}


def test_compose_mismatch():
    e = err("input A : [4, 3]\ninput d : [5]\ninput x : [5]\nexport y = (A @ diag(d)) @ x", ShapeError)
    assert "cannot multiply operators [4, 3] and [5, 5]" in e.message
    assert e.span.column == 13 and {s.column for _, s in e.notes} == {13, 17}


@pytest.mark.parametrize("src,msg", [
    ("dim n = 0\ninput x : [n]\nexport y = x", "not a positive integer"),
    ("dim n = 6\ndim m = n / 4\ninput x : [m]\nexport y = x", "dim m = 3/2 is not a positive integer"),
    ("dim n = 4\ndim m = n - 5\ninput x : [m]\nexport y = x", "not a positive integer"),
])
def test_bad_dims(src, msg):
    e = err(src, DimError)
    assert msg in e.message and e.span.line == 2 - (src.count("\n") == 2) or e.span is not None


def test_inconsistent_dim_override():
    e = err("dim n = 4\ninput x : [n]\nexport y = x", DimError, dims={"q": 3})
    assert "q" in e.message and "declared dims: n" in e.hint
    e = err("dim n = 4\ninput x : [n]\nexport y = x", DimError, dims={"n": -2})
    assert "positive integer" in e.message


def test_type_errors():
    e = err("input d : [4]\ninput x : [4]\nexport y = d @ x", TypeError_)
    assert "cannot be used as an operator" in e.message and "diag(d)" in e.hint
    e = err("input A : [4, 4]\ninput x : [4]\nexport y = A * A @ x", TypeError_)
    assert "`*` scales by a number" in e.hint
    e = err("input A : [4, 4]\ninput x : [4]\nexport y = kronn(A, A) @ x", TypeError_)
    assert "unknown operator kronn" in e.message and "kron" in e.hint


def test_export_of_operator_is_explained():
    e = err("input A : [4, 4]\nexport y = A.T @ A @ eye(4)", TypeError_)
    assert "exports are tensors" in e.message


@pytest.fixture(scope="module")
def prog():
    return opdsl.compile("dim n = 4\ndim k\ninput x : [n, k]\ninput A : [n, n] float64\nexport y = A @ x",
                         filename="m.op")


def test_call_missing_and_extra(prog):
    with pytest.raises(CallError) as e:
        prog.y(x=torch.zeros(4, 2))
    assert "missing A" in e.value.message and "signature: y(x, A)" in e.value.hint
    with pytest.raises(CallError) as e:
        prog.y(x=torch.zeros(4, 2), A=torch.zeros(4, 4, dtype=torch.float64), B=1)
    assert "unexpected B" in e.value.message


def test_call_wrong_shape_names_argument_and_declaration(prog):
    with pytest.raises(CallError) as e:
        prog.y(x=torch.zeros(5, 2), A=torch.zeros(4, 4, dtype=torch.float64))
    assert "argument 'x' has shape [5, 2], expected [n, k]" in e.value.message
    assert "n = 4" in e.value.message
    with pytest.raises(CallError):
        prog.y(x=torch.zeros(4), A=torch.zeros(4, 4, dtype=torch.float64))


def test_call_wrong_dtype(prog):
    with pytest.raises(CallError) as e:
        prog.y(x=torch.zeros(4, 2), A=torch.zeros(4, 4))
    assert "argument 'A' has dtype float32, expected float64" in e.value.message


def test_call_not_a_tensor(prog):
    with pytest.raises(CallError):
        prog.y(x=[[1.0]], A=np.zeros((4, 4)))


def test_unknown_export(prog):
    with pytest.raises(CallError):
        prog["z"]
    with pytest.raises(AttributeError):
        prog.z


# ---- constructors' keyword arguments (issue 12) ----------------------------------------------

KW_HEAD = ("input h : [4]\ninput c : [6]\ninput r : [6]\ninput U : [6, 2]\ninput W : [6, 2]\ninput Q : [6, 3]\n"
           "input K : [6, 3]\ninput S : [6, 6]\ninput x : [6, 2]\ninput v : [4]\n")


@pytest.mark.parametrize("by_name,by_position", [
    ("conv(h, n=6)", "conv(h, 6)"),                             # docs/families_attention_conv.md
    ("conv(n=6, h=h, causal=false)", "conv(h, 6, causal=false)"),
    ("lowrank(V=W, U=U)", "lowrank(U, W)"),
    ("toeplitz(c=c, r=r)", "toeplitz(c, r)"),
    ("circulant(c=c)", "circulant(c)"),
    ("eye(n=6) + zeros(m=6, n=6) + diag(d=c)", "eye(6) + zeros(6, 6) + diag(c)"),
    ("perm(m=2, n=3)", "perm(2, 3)"),
    ("inv(A=S @ S.T + eye(6), method=cholesky)", "inv(S @ S.T + eye(6), method=cholesky)"),
    ("attention(Q, K=K, feature=favor(8, seed=3))", "attention(Q, K, feature=favor(8, 3))"),
    ("softmax_attention(Q=Q, K=K, causal=true)", "softmax_attention(Q, K, causal=true)"),
])
def test_constructor_arguments_by_name(by_name, by_position):
    """A parameter may be given by the name the docs use, as in a Python call; the result is the
    positional form's."""
    from opdsl.reference import random_inputs
    src = KW_HEAD + f"export y = ({by_name}) @ x\nexport z = ({by_position}) @ x\n"
    prog = opdsl.compile(src, backend="numpy", dtype="float64")
    args = random_inputs(prog.graph, "y", seed=1)
    np.testing.assert_allclose(prog.y(**args), prog.z(**args), rtol=1e-12, atol=1e-12)


def test_documented_keyword_forms_exist():
    """Every `f(..., key=...)` of a constructor in the docs names a parameter or an option of f."""
    import re
    from pathlib import Path

    from opdsl.kinds import CONSTRUCTORS
    names = "|".join(sorted(CONSTRUCTORS, key=len, reverse=True))
    call = re.compile(r"(?:(?<![\w.])|(?<=opdsl\.))(" + names + r")\(((?:[^()]|\([^()]*\))*)\)")
    docs = Path(__file__).resolve().parent.parent / "docs"
    seen = []
    for path in sorted(docs.glob("*.md")):
        for m in call.finditer(path.read_text()):
            kind = CONSTRUCTORS[m.group(1)]
            top = re.sub(r"\([^()]*\)", "()", m.group(2))        # the call's own arguments
            for key in re.findall(r"(?:^|,)\s*([A-Za-z_]\w*)\s*=(?!=)", top):
                seen.append(key)
                assert key in (kind.params or ()) + tuple(kind.options), f"{path.name}: {m.group(0)}"
    assert {"n", "causal", "seed", "method"} <= set(seen)


@pytest.mark.parametrize("call,name,hint", [
    ("conv(h, foo=true)", "foo", "usage: conv(h, n, causal=..., mode=..., stride=...)"),
    ("inv(S, meth=lu)", "meth", "did you mean method?"),
    ("kron(S, B=S)", "B", "takes its arguments by position"),
    ("conv(h, h=h)", "h", "usage: conv(h, n, causal=..., mode=..., stride=...)"),        # a parameter given twice
])
def test_unknown_option_caret_is_on_its_name(call, name, hint):
    src = KW_HEAD + f"export y = {call} @ x\n"
    e = err(src, TypeError_)
    line = src.splitlines()[e.span.line - 1]
    assert line[e.span.column - 1:e.span.end_column - 1] == name, str(e)
    assert hint in e.hint


def test_messages_name_the_users_expression():
    """An error shows lowrank(U, U), not the signature lowrank(U, V)."""
    e = err("dim n = 4\ninput U : [n, 2]\ninput x : [n, 1]\nexport y = inv(lowrank(U, U)) @ x", ShapeError)
    assert "lowrank(U, U) has rank at most 2 < n" in e.message and "lowrank(U, V)" not in e.message
    e = err("input U : [4, 2]\ninput W : [4, 3]\ninput x : [4, 1]\nexport y = lowrank(U, W) @ x", ShapeError)
    assert e.message.startswith("lowrank(U, W) needs U and W with the same rank") and "W [4, 3]" in e.message
    e = err("input P : [8, 4]\ninput K : [8, 3]\ninput x : [8, 2]\nexport y = attention(P, K) @ x", ShapeError)
    assert e.message.startswith("attention(P, K) needs P and K") and "P [8, 4] and K [8, 3]" in e.message


@pytest.mark.parametrize("expr,where", [
    ("(1e-400 * A) @ x", "1e-400"),
    ("(A / 1e400) @ x", "1e400"),                   # overflow: already an error, the same way
    ("(0.00000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
     "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
     "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
     "0000000000000000000000000000000000000000000000000000000000000000000000001 * A) @ x", "0.000"),
    ("(1e-200 * 1e-200 * A) @ x", "1e-200 * 1e-200"),
    ("(1e-200 / 1e200 * A) @ x", "1e-200 / 1e200"),
])
def test_number_literals_that_underflow_are_errors(expr, where):
    """A literal that float64 rounds to 0 without it being written 0 is a located error, like
    1e-320 * A in float32; zeros written as zeros, and the smallest subnormal, are fine."""
    src = f"input A : [4, 4] float64\ninput x : [4, 2] float64\nexport y = {expr}\n"
    e = err(src, TypeError_)
    assert (e.span.line, e.span.column) == (3, len("export y = ") + expr.index(where) + 1), str(e)
    for fine in ("(0e-400 * A + A) @ x", "(0.000 * A + A) @ x", "(5e-324 * A) @ x", "(1e-200 * 1e-100 * A) @ x"):
        opdsl.compile(src.replace(expr, fine), backend="numpy")


@pytest.mark.parametrize("expr", [
    "(1e300 * A) @ ((1e300 * B) @ x)",
    "((1e300 * A) @ (1e300 * B)) @ x",
    "(1e300 * (1e300 * A)) @ x",
])
def test_constants_combined_beyond_float64_are_errors(expr):
    """Scales the compiler multiplies together that leave float64 are an error at the expression,
    never `inf` in the generated code (it was a NameError when called)."""
    src = f"input A : [4, 4] float64\ninput B : [4, 4] float64\ninput x : [4, 2] float64\nexport y = {expr}\n"
    e = err(src, TypeError_)
    assert e.span.line == 4 and "beyond float64" in e.message
    ok = opdsl.compile(src.replace("1e300", "1e150"), backend="numpy")
    args = {"A": np.eye(4), "B": np.eye(4), "x": np.ones((4, 2))}
    y = ok.y(**{a: args[a] for a in ok.y.params})
    np.testing.assert_allclose(y, 1e300 * np.ones((4, 2)), rtol=1e-12)
