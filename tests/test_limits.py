"""Limits of size (docs/reliability.md, "Limits"): shared subexpressions cost once, long lines
cost what they hold, and a program beyond a documented limit (source size, graph nodes, digits
of an integer) is a located LimitError / DimError, not a slow compile, a blown memory or an
internal error.  Each limit is tested at the limit (compiles) and just beyond (located error).
No timings: work is measured by counting node reads, so a regression fails, not flakes."""
from __future__ import annotations

import numpy as np
import pytest

import opdsl
from opdsl import frontend
from opdsl.errors import QUOTE_WIDTH, DimError, LimitError, OpdslError
from opdsl.ir import Graph
from opdsl.reference import dense_eval

from .harness import assert_located


def doubling(levels: int, step: str, n: int = 2) -> str:
    """a_i = f(a_{i-1}) + a_{i-1}: a DAG with 2**levels paths from the export to a_0."""
    lines = [f"dim n = {n}", "input B : [n, n]", "input x : [n * n, 2]", "let a_0 = kron(B, B)"]
    for i in range(1, levels + 1):
        lines.append(f"let a_{i} = " + step.format(a=f"a_{i - 1}"))
    lines.append(f"export y = a_{levels} @ x")
    return "\n".join(lines) + "\n"


@pytest.fixture
def node_reads(monkeypatch):
    """Fail as soon as the compiler reads graph nodes more than `limit` times (set by the test)."""
    state = {"count": 0, "limit": None}
    read = Graph.__getitem__

    def counted(self, v):
        state["count"] += 1
        if state["limit"] is not None and state["count"] > state["limit"]:
            raise AssertionError(f"more than {state['limit']} node reads: a pass walks the DAG as a tree")
        return read(self, v)

    monkeypatch.setattr(Graph, "__getitem__", counted)
    return state


@pytest.mark.parametrize("step", ["{a} + {a}.T", "inv({a}) + {a}"])
def test_shared_subexpressions_are_processed_once(step, node_reads):
    """30 levels of `a_i = a_{i-1} + a_{i-1}.T` (simplify flattened 2**i transposes) and of
    `inv(a_{i-1}) + a_{i-1}` (costs, triangularity and singularity recursed per path): about
    40,000 node reads for compile and explain together; a pass that expands the DAG into a tree
    needs millions by level 20."""
    node_reads["limit"] = 150_000
    prog = opdsl.compile(doubling(30, step), backend="numpy", dtype="float64")
    prog.explain()
    node_reads["limit"] = None
    rng = np.random.default_rng(0)
    b = 2 * np.eye(2) + 0.3 * rng.standard_normal((2, 2))   # well conditioned: inv at every level
    x = rng.standard_normal((4, 2))
    ref = dense_eval(prog.graph, prog.graph.exports["y"], {"B": b, "x": x})
    np.testing.assert_allclose(prog.y(B=b, x=x), ref, rtol=1e-9, atol=0)


def test_long_lines_are_quoted_in_a_window():
    """An error at the end of a 200,000-character line shows QUOTE_WIDTH characters around the
    caret, with the caret under the offending character."""
    line = "export y = (" + " + ".join(["A"] * 50_000) + ") @ x $"
    src = "input A : [4, 4]\ninput x : [4, 2]\n" + line + "\n"
    with pytest.raises(OpdslError) as e:
        opdsl.compile(src, backend="numpy", filename="long.op")
    assert_located(e.value, src)
    assert (e.value.span.line, e.value.span.column) == (3, len(line))
    rendered = str(e.value).splitlines()
    quoted, caret = rendered[1], rendered[2]
    assert len(quoted) <= 4 + QUOTE_WIDTH + 6 and quoted.startswith("    ...")
    assert quoted[caret.index("^")] == "$"
    assert len(str(e.value)) < 1000


def test_generated_comments_quote_a_clipped_line():
    """The generated code names the source statement it comes from in a comment, once over the
    statements it gives; a long line is clipped there (it was once copied per statement: 55 MB of
    code for a 33 KB line)."""
    body = "x"
    for i in range(400):                    # one line of ~4 KB
        body = [f"(A @ {body})", f"(A.T @ {body})", f"(2 * {body})"][i % 3]
    src = f"input A : [4, 4]\ninput x : [4, 3]\nexport y = {body}\n"
    prog = opdsl.compile(src, backend="numpy")
    comments = [ln for ln in prog.source.splitlines() if ln.lstrip().startswith("# <string>:3")]
    assert len(comments) == 1 and prog.source.count("\n    t") > 100    # one statement: one comment over its code
    assert max(len(c) for c in comments) <= QUOTE_WIDTH + 40
    assert len(prog.source) < 20 * len(src)


def test_source_size_limit():
    head = "input A : [4, 4]\ninput x : [4, 2]\nexport y = A @ x\n"
    pad = frontend.MAX_SOURCE_CHARS - len(head) - 1
    at_limit = head + "#" * pad + "\n"
    assert len(at_limit) == frontend.MAX_SOURCE_CHARS
    assert opdsl.compile(at_limit, backend="numpy").functions == ["y"]
    over = at_limit + "# one more line\n"
    with pytest.raises(LimitError) as e:
        opdsl.compile(over, backend="numpy", filename="big.op")
    assert_located(e.value, over)
    assert (e.value.span.line, e.value.span.column) == (5, 1)   # the first character beyond
    assert "longer than 1,000,000 characters" in e.value.message
    assert len(str(e.value)) < 1000


def test_node_limit_at_and_over(monkeypatch):
    """At most MAX_NODES graph nodes (after sharing); checked on a lowered limit."""
    monkeypatch.setattr(frontend, "MAX_NODES", 12)

    def program(terms):          # 2 inputs, terms - 1 tensor sums, then dense(s) and the apply
        return f"input A : [4, 4]\ninput x : [4, 2]\nlet s = {' + '.join(['A'] * terms)}\nexport y = s @ x\n"

    prog = opdsl.compile(program(9), backend="numpy")
    assert len(prog.graph.g) == 12                                  # at the limit
    over = program(12)                                              # the 13th node is a sum
    with pytest.raises(LimitError) as e:
        opdsl.compile(over, backend="numpy", filename="nodes.op")
    assert_located(e.value, over)
    assert e.value.span.line == 3 and "more than 12 operations" in e.value.message
    monkeypatch.setattr(frontend, "MAX_NODES", 3)
    with pytest.raises(LimitError) as e:                # inputs count too, at their declaration
        opdsl.compile("input A : [4]\ninput B : [4]\ninput C : [4]\ninput D : [4]\nexport y = A",
                      backend="numpy")
    assert (e.value.span.line, e.value.span.column) == (4, 7)


def test_node_limit_stops_a_dense_line_early():
    """The real limit: a sum of MAX_NODES + 1 terms is an error at the term past the limit,
    before the passes (the 800 KB line of 200,000 terms took 21 s and 2 GB to compile)."""
    terms = frontend.MAX_NODES + 1
    src = "input A : [4, 4]\ninput x : [4, 2]\nexport y = (" + " + ".join(["A"] * terms) + ") @ x\n"
    with pytest.raises(LimitError) as e:
        opdsl.compile(src, backend="numpy")
    assert_located(e.value, src)
    assert e.value.span.line == 3 and e.value.span.column == 13


@pytest.mark.parametrize("where", ["dim n = {}", "dim n ~ {}", "input x : [{}]"])
def test_integer_digits_limit(where):
    ok = "9223372036854775807"                     # 2**63 - 1: 19 digits, the largest size
    zeros = "0" * 40 + "4"                         # leading zeros do not count
    for good in (ok, zeros):
        decl = where.format(good)
        src = decl + ("\ninput x : [n]" if "dim" in decl else "") + "\nexport y = x\n"
        assert opdsl.compile(src, backend="numpy").functions == ["y"]
    for digits in (20, 5000):                      # 5,000 digits was Python's int-from-text ValueError
        decl = where.format("1" * digits)
        src = decl + ("\ninput x : [n]" if "dim" in decl else "") + "\nexport y = x\n"
        with pytest.raises(DimError) as e:
            opdsl.compile(src, backend="numpy")
        assert_located(e.value, src)
        assert f"({digits} digits) is too large" in e.value.message
        assert e.value.span.column == where.index("{") + 1
        assert "2**63" in e.value.hint


def test_limits_are_documented():
    """docs/reliability.md states the limits the code enforces."""
    from pathlib import Path
    doc = (Path(__file__).resolve().parent.parent / "docs" / "reliability.md").read_text()
    section = doc[doc.index("### Limits"):]
    for n in (frontend.MAX_SOURCE_CHARS, frontend.MAX_NODES):
        assert f"{n:,}" in section, n
    assert f"{frontend.MAX_INT_DIGITS} digits" in section
    assert str(QUOTE_WIDTH) in section
