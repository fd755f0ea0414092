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
