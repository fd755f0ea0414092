"""`opdsl explain` and `opdsl graph` on every example; Program.explain()."""
import re
from pathlib import Path

import pytest

import opdsl
from opdsl import cost
from opdsl.cli import main
from opdsl.explain import explain_file
from opdsl.plan_graph import to_dot, write_plan

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.op"))
# Examples written so that the order as written is not the cheapest one.
NEED_REORDERING = {"attention_product.op", "lowrank_product.op", "project_first.op", "sum_of_products.op",
                   "chain.op", "transposes.op"}


def _no_times(report: str) -> str:
    return re.sub(r"\d+\.\d ms", "T ms", report)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_explain_every_example(path):
    prog = opdsl.compile_file(path, backend="numpy")
    report = prog.explain()
    for name in prog.functions:
        assert f"== export {name} ==" in report
    assert "-- as written --" in report and "-- after reassociate" in report and "dense (materialized)" in report
    for name in prog.functions:
        s = cost.summarize(prog, name).numbers()
        assert s["optimized"] <= s["source"] * (1 + 1e-12), (name, s)
        assert s["source"] > 0 or s["optimized"] == 0


@pytest.mark.parametrize("name", sorted(NEED_REORDERING))
def test_examples_built_to_need_reordering_get_cheaper(name):
    prog = opdsl.compile_file(ROOT / "examples" / name, backend="numpy")
    s = cost.summarize(prog, prog.functions[0]).numbers()
    assert s["optimized"] < s["source"]


def test_program_explain_is_the_report_of_explain_file():
    path = ROOT / "examples" / "attention_product.op"
    a = opdsl.compile_file(path, backend="numpy").explain()
    b = explain_file(path, {})
    assert _no_times(a) == _no_times(b)
    assert "reassociate ×2" in a and "16x fewer FLOPs" in a


def test_explain_shows_rules_with_their_identities_and_costs_at_hints(capsys):
    assert main(["explain", str(ROOT / "examples" / "transposes.op")]) == 0
    out = capsys.readouterr().out
    assert "transpose-lowrank ×1" in out and "lowrank(U, V)ᵀ = lowrank(V, U)" in out
    assert "k = 32 (hint)" in out and "leading order" in out


def test_explain_dim_override(capsys):
    assert main(["explain", str(ROOT / "examples" / "attention_product.op"), "--dim", "L=64", "--dim", "d=8"]) == 0
    out = capsys.readouterr().out
    assert "L = 64" in out and "4*L^2*d" not in out


def test_graph_writes_dot(tmp_path):
    out = tmp_path / "plan.dot"
    msg = write_plan(ROOT / "examples" / "chain.op", out, {}, None)
    text = out.read_text()
    assert "wrote" in msg and text.startswith("digraph") and "lowrank" in text and "export y" in text


@pytest.mark.parametrize("after", ["source", "simplify", "reassociate", "cleanup", "lower"])
def test_graph_after_each_pass(tmp_path, after, capsys):
    out = tmp_path / "plan.dot"
    assert main(["graph", str(ROOT / "examples" / "attention_product.op"), "-o", str(out), "--after", after]) == 0
    text = out.read_text()
    assert ("matmul" in text) == (after == "lower")


def test_graph_writes_a_picture(tmp_path):
    out = tmp_path / "plan.svg"
    msg = write_plan(ROOT / "examples" / "chain.op", out, {}, None)
    if out.exists():
        assert out.stat().st_size > 1000 and "<svg" in out.read_text()[:2000]
    else:       # neither graphviz nor matplotlib: DOT text next to it, with an install hint
        assert "install Graphviz" in msg and (tmp_path / "plan.dot").exists()


def test_graph_png_and_unknown_pass(tmp_path, capsys):
    out = tmp_path / "plan.png"
    write_plan(ROOT / "examples" / "project_first.op", out, {}, "reassociate")
    assert out.exists() or (tmp_path / "plan.dot").exists()
    assert main(["graph", str(ROOT / "examples" / "chain.op"), "-o", str(tmp_path / "x.dot"), "--after", "nope"]) == 1
    err = capsys.readouterr().err
    assert "unknown pass 'nope'" in err and "reassociate" in err


def test_dot_escapes_labels():
    prog = opdsl.compile('input W : [2, 2]\ninput x : [2, 1]\nexport y = W @ x', backend="numpy")
    dot = to_dot(prog.optimized, 'a "quoted" title')
    assert 'a \\"quoted\\" title' in dot and "\n\n" not in dot.split("{", 1)[1]
