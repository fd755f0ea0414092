"""`opdsl fmt` and Program.to_op (opdsl/fmt.py): canonical layout, meaning kept, idempotent."""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given

import opdsl
from opdsl.cli import main
from opdsl.errors import OpdslError
from opdsl.explain import compact
from opdsl.fmt import WIDTH, format_source, same_meaning

from .mutations import CORPUS, budget, mutated

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.op"))


def comments(text: str) -> list[str]:
    return sorted(line[line.index("#"):].rstrip() for line in text.splitlines() if "#" in line)


def squash(line: str) -> str:
    """A line laid out badly: no spaces around operators, a comment right after the code."""
    code, sep, comment = line.partition("#")
    code = re.sub(r"\s*([@*/+\-=:,~()\[\]])\s*", r"\1", " ".join(code.split()))
    return code + (" #" + comment if sep else "")


def check_format(text: str) -> str:
    out = format_source(text)
    assert same_meaning(text, out), out
    assert format_source(out) == out, "not idempotent"
    assert comments(out) == comments(text), "a comment was lost or changed"
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_formatted_and_keep_their_program(path):
    text = path.read_text()
    assert format_source(text) == text, f"run `opdsl fmt {path.relative_to(ROOT)}`"
    # the formatted program compiles to the same IR as one laid out differently
    squashed = "\n".join(squash(line) for line in text.splitlines())
    assert check_format(squashed) == text
    a = opdsl.compile(text, backend="numpy")
    b = opdsl.compile(squashed, backend="numpy")
    for name in a.functions:
        assert compact(a.graph, [a.graph.exports[name]]) == compact(b.graph, [b.graph.exports[name]])


def test_fmt_check_passes_on_the_examples(capsys):
    assert main(["fmt", "--check", *map(str, EXAMPLES)]) == 0
    assert "already formatted" in capsys.readouterr().err


def test_every_corpus_program_formats_to_the_same_tree():
    for text in CORPUS:
        check_format(text)


@budget(150, 5000)
@given(mutated())
def test_mutated_programs_format_to_the_same_tree(text):
    try:
        opdsl.fmt.parse(text)
    except OpdslError:
        with pytest.raises(OpdslError):       # a syntax error is the parser's located error
            format_source(text)
        return
    check_format(text)


@pytest.mark.parametrize("src, want", [
    ("export y=(A@B)@x", "export y = (A @ B) @ x\n"),                 # written parentheses are kept
    ("export y=A@(B@x)", "export y = A @ (B @ x)\n"),
    ("export y=A@((B@x))", "export y = A @ (B @ x)\n"),
    ("export y=-(-x)", "export y = -(-x)\n"),
    ("export y=- -x", "export y = -(-x)\n"),
    ("export y=a-(b-c)", "export y = a - (b - c)\n"),                # needed ones are added
    ("export y=-(a@b)", "export y = -(a @ b)\n"),
    ("export y=(2).T@x", "export y = (2).T @ x\n"),
    ("export y=f( a,b ,k = 2 ,)", "export y = f(a, b, k=2)\n"),
    ("export y=[ ]", "export y = []\n"),
    ("export y=g()", "export y = g()\n"),
    ("param W:[n,n]=ones()", "param W : [n, n] = ones\n"),
    ("input x:[ n*(k+1) , 2 ]  psd", "input x : [n * (k + 1), 2] psd\n"),
    ("dim n=2*k~8", "dim n = 2 * k ~ 8\n"),
    ("input x : [] ", "input x : []\n"),
])
def test_layout(src, want):
    assert check_format(src) == want


def test_alignment_blank_lines_and_comments():
    src = """

# head comment
dim n = 4   # size
dim kk ~ 8 # hint


input x : [n, kk]
input long_name : [n] positive # promised
param W : [n, n]
let a = x   # tail
export y = W @ a
# last
"""
    assert check_format(src) == """# head comment
dim n  = 4  # size
dim kk ~ 8  # hint

input x         : [n, kk]
input long_name : [n] positive  # promised
param W         : [n, n]
let a = x  # tail
export y = W @ a
# last
"""


def test_long_statements_break_at_the_outermost_chain_or_between_arguments():
    args = ", ".join(f"arg{i}" for i in range(30))
    out = check_format(f"export y = f({args}) @ x + g(x) - h(x)")
    assert all(len(line) <= WIDTH for line in out.splitlines())
    lines = out.splitlines()
    assert lines[0].startswith("export y = f(arg0, arg1") and lines[1].startswith(" " * len("export y = f("))
    chain = check_format("export y = " + " + ".join(f"kron(A{i}, B{i}) @ x" for i in range(8)))
    assert [line.lstrip()[:2] for line in chain.splitlines()[1:]] == ["+ "] * (len(chain.splitlines()) - 1)
    assert all(len(line) <= WIDTH for line in chain.splitlines())


def test_a_comment_inside_a_broken_statement_moves_above_it():
    src = "export y = kron(A,   # the left factor\n   B) @ x  # applied\n"
    assert check_format(src) == "# the left factor\nexport y = kron(A, B) @ x  # applied\n"


def test_a_syntax_error_is_located():
    with pytest.raises(OpdslError) as e:
        format_source("let a = (\n", "bad.op")
    assert "bad.op:2:1" in e.value.render()


def test_cli_rewrites_in_place_keeping_the_mode(tmp_path, capsys):
    p = tmp_path / "a.op"
    p.write_text("dim n=4\ninput x:[n,n]\nexport y=x@x\n")
    os.chmod(p, 0o640)
    assert main(["fmt", "--check", str(p)]) == 1
    out = capsys.readouterr()
    assert "+input x : [n, n]" in out.out and "-input x:[n,n]" in out.out and "would be reformatted" in out.err
    assert p.read_text() == "dim n=4\ninput x:[n,n]\nexport y=x@x\n"            # --check writes nothing
    assert main(["fmt", "--diff", str(p)]) == 0 and "+export y = x @ x" in capsys.readouterr().out
    assert main(["fmt", str(p)]) == 0
    assert p.read_text() == "dim n = 4\ninput x : [n, n]\nexport y = x @ x\n"
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    assert [q.name for q in tmp_path.iterdir()] == ["a.op"]                     # no temporary left
    assert main(["fmt", "--check", str(p)]) == 0


def test_cli_errors_and_standard_input(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.op"
    bad.write_text("export y = (x\n")
    assert main(["fmt", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.op:2:1" in err and "Traceback" not in err
    assert bad.read_text() == "export y = (x\n"
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("export y=x@x"))
    assert main(["fmt", "-"]) == 0
    assert capsys.readouterr().out == "export y = x @ x\n"


# -- Program.to_op ---------------------------------------------------------------------------

def test_to_op_of_a_file_is_its_formatted_text():
    text = "dim n=4\ninput x:[n,n]\nexport y=x@x # hi\n"
    assert opdsl.compile(text, backend="numpy").to_op() == format_source(text)


def test_to_op_of_a_traced_function_round_trips():
    torch = pytest.importorskip("torch")

    @opdsl.jit
    def f(A, B, x, d, idx):
        M = opdsl.kron(A, B)
        y = M @ x
        return {"y": y + 0.5 * (M.T @ x) - -2.0 * (opdsl.diag(d) @ y),
                "z": opdsl.select(idx, 16) @ x, "w": opdsl.inv(M + 3 * opdsl.eye(16), method="lu") @ x}

    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(4, 4, generator=g), torch.randn(4, 4, generator=g)
    x, d, idx = torch.randn(16, 3, generator=g), torch.randn(16, generator=g), torch.tensor([1, 2, 15])
    text = f.program(A, B, x, d, idx).to_op()
    assert format_source(text) == text
    assert "let t0 = kron(A, B)" in text                      # a value used twice is a let
    assert "input idx : [3] int64" in text and "input x   : [16, 3] float32" in text
    prog = opdsl.compile(text, backend="torch")
    want = f(A, B, x, d, idx)
    got = {"y": prog.y(A=A, B=B, x=x, d=d), "z": prog.z(idx=idx, x=x), "w": prog.w(A=A, B=B, x=x)}
    for k in want:
        np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=1e-5, atol=1e-5)
