"""`opdsl explain` and `opdsl graph` on every example; Program.explain()."""
import json
import re
from pathlib import Path

import pytest
import sympy

import opdsl
from opdsl import cost
from opdsl.cli import main
from opdsl.api import explain_file
from opdsl.plan_graph import to_dot, write_program

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
    # each export's own count (one chain each), not the whole file's (×2) under both
    assert a.count("rules fired: reassociate ×1") == 2 and "reassociate ×2" not in a
    assert "16x fewer FLOPs" in a


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
    msg = write_program(opdsl.compile_file(ROOT / "examples" / "chain.op", backend="numpy"), out, None)
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
    msg = write_program(opdsl.compile_file(ROOT / "examples" / "chain.op", backend="numpy"), out, None)
    if out.exists():
        assert out.stat().st_size > 1000 and "<svg" in out.read_text()[:2000]
    else:       # neither graphviz nor matplotlib: DOT text next to it, with an install hint
        assert "install Graphviz" in msg and (tmp_path / "plan.dot").exists()


def test_graph_png_and_unknown_pass(tmp_path, capsys):
    out = tmp_path / "plan.png"
    write_program(opdsl.compile_file(ROOT / "examples" / "project_first.op", backend="numpy"), out, "reassociate")
    assert out.exists() or (tmp_path / "plan.dot").exists()
    assert main(["graph", str(ROOT / "examples" / "chain.op"), "-o", str(tmp_path / "x.dot"), "--after", "nope"]) == 1
    err = capsys.readouterr().err
    assert "unknown pass 'nope'" in err and "reassociate" in err


def test_dot_escapes_labels():
    prog = opdsl.compile('input W : [2, 2]\ninput x : [2, 1]\nexport y = W @ x', backend="numpy")
    dot = to_dot(prog.optimized, 'a "quoted" title')
    assert 'a \\"quoted\\" title' in dot and "\n\n" not in dot.split("{", 1)[1]


LU, CHOL = sympy.Rational(2, 3), sympy.Rational(1, 3)      # FLOPs per n³ of a dense LU / Cholesky


def _dense(src, export):
    prog = opdsl.compile(src, backend="numpy")
    return cost.known(prog.graph, cost.dense_flops(prog.graph, [prog.graph.exports[export]]))


def test_dense_cost_of_linear_algebra_counts_the_factorization():
    """A dense solve is an LU (2n³/3) and two triangular solves per column, not a matrix-vector product."""
    n, k = 100, 3
    head = f"dim n = {n}\ninput x : [n, {k}]\n"
    assert _dense(head + "input W : [n, n]\nexport y = inv(W) @ x", "y") == LU * n ** 3 + 2 * n * n * k
    assert _dense(head + "input W : [n, n]\nexport y = logdet(W)", "y") == LU * n ** 3 + n
    assert _dense(head + "input S : [n, n] psd\nexport y = inv(S) @ x", "y") == CHOL * n ** 3 + 2 * n * n * k
    # (W Wᵀ is a product of tensors, formed: 2n³)
    assert _dense(head + "input W : [n, n]\nexport y = inv(W @ W.T, method=cholesky) @ x", "y") \
        == 2 * n ** 3 + CHOL * n ** 3 + 2 * n * n * k
    assert _dense(head + "input L : [n, n] lower\nexport y = inv(L) @ x", "y") == n * n * k
    assert _dense(head + "input Q : [n, n] orthogonal\nexport y = inv(Q) @ x", "y") == 2 * n * n * k
    # one factorization for two solves with the same matrix (plus W @ x and the sum)
    assert _dense(head + "input W : [n, n]\nexport y = inv(W) @ x + inv(W) @ (W @ x)", "y") \
        == LU * n ** 3 + 3 * 2 * n * n * k + n * k
    # an inverse inside a product is formed (n columns), then the product applied
    assert _dense(head + "input A : [n, n]\ninput B : [n, n]\nexport y = (A @ inv(B)) @ x", "y") \
        == LU * n ** 3 + 2 * n ** 3 + 2 * n * n * k
    # the materialized Kronecker product is factored whole
    N = 12 * 8
    assert _dense(f"input A : [12, 12]\ninput B : [8, 8]\ninput x : [{N}, 1]\nexport y = inv(kron(A, B)) @ x",
                  "y") == LU * N ** 3 + 2 * N * N
    assert _dense(head + "input W : [n, n]\nexport t = trace(W)\nexport d = diag_of(W)", "t") == n
    assert _dense(head + "input W : [n, n]\nexport t = trace(W)\nexport d = diag_of(W)", "d") == 0


def test_explain_dense_row_of_a_solve():
    report = opdsl.compile_file(ROOT / "examples" / "kron_solve.op", backend="numpy").explain()
    solve = report.split("== export solve ==")[1].split("== export")[0]
    dense = next(ln for ln in solve.splitlines() if ln.strip().startswith("dense (materialized)"))
    assert "93.7M" in dense          # 2/3 · 512³ + 2 · 512² · 8, not 2 · 512² · 8 = 4.19M
    diag = report.split("== export diag_K ==")[1]
    assert "fewer FLOPs" in diag and "vs dense" not in diag      # dense reads the diagonal: 0, no ratio


def test_explain_lists_each_exports_own_rules():
    report = opdsl.compile_file(ROOT / "examples" / "woodbury.op", backend="numpy").explain()
    assert "whole file" not in report
    sections = {s.split(" ==")[0]: s for s in report.split("== export ")[1:]}
    assert "inv-woodbury ×1" in sections["alpha"] and "logdet-lemma" not in sections["alpha"]
    assert "logdet-lemma ×1" in sections["logdet_K"] and "inv-woodbury" not in sections["logdet_K"]
    assert "trace-lowrank ×1" in sections["trace_K"] and "diag_of" not in sections["trace_K"].split("cost")[0]
    assert "diag_of-lowrank ×1" in sections["diag_K"] and "trace-" not in sections["diag_K"]


# -- explain --format json (docs/tools.md) ---------------------------------------------------

def _schema():
    return json.loads((ROOT / "docs" / "explain.schema.json").read_text())


@pytest.mark.parametrize("name", ["kron_solve.op", "gp.op", "monarch.op", "chain.op", "graph.op"])
def test_explain_json_follows_its_schema(name):
    jsonschema = pytest.importorskip("jsonschema")
    prog = opdsl.compile_file(ROOT / "examples" / name, backend="numpy")
    data = json.loads(prog.explain(format="json"))
    jsonschema.validate(data, _schema())
    assert data["version"] == _schema()["properties"]["version"]["const"] == 1
    assert [e["name"] for e in data["exports"]] == prog.functions
    from opdsl.explain import fired_per_export
    fired = fired_per_export(prog)
    report = prog.explain()
    for e in data["exports"]:
        want = {}
        for per_pass in fired[e["name"]].values():
            for rule, n in per_pass.items():
                want[rule] = want.get(rule, 0) + n
        got = {k: v["count"] for k, v in e["rules"].items()}
        assert {k: v for k, v in got.items() if k in want} == want
        assert e["stages"][0]["after"] == "source" and len(e["stages"]) == len(prog.records) + 1
        # the IR records are what the text report lists
        from opdsl.explain import compact
        src = compact(prog.graph, [prog.graph.exports[e["name"]]])
        assert all(line in report for line in src)
        assert len(e["stages"][0]["ir"]) == len(src)
        assert e["cost"]["optimized"] <= e["cost"]["source"] or e["cost"]["source"] == 0
        assert e["communication"] == []


def test_explain_json_carries_the_solver_choices_and_free_dims():
    data = json.loads(opdsl.compile_file(ROOT / "examples" / "kron_solve.op", backend="numpy").explain(format="json"))
    assert any(c.startswith("inv: LU") for c in data["choices"])
    assert data["free_dims"]["k"]["hinted"] is True and isinstance(data["free_dims"]["k"]["value"], int)
    assert data["exports"][0]["rules"]["inv-kron"]["identity"] == "inv(A⊗B) = inv(A)⊗inv(B)"


def test_cli_explain_format_json(capsys):
    assert main(["explain", str(ROOT / "examples" / "monarch.op"), "--format", "json", "--dim", "b=8"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == "opdsl-explain" and data["dims"]["b"] == 8
    with pytest.raises(opdsl.OpdslError, match="unknown format"):
        opdsl.compile("input x : [2, 2]\nexport y = x @ x\n", backend="numpy").explain(format="yaml")
