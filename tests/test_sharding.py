"""Sharding over a device mesh (opdsl/sharding.py, backends/jax_shard.py; docs/backends.md).

The device checks run once in a subprocess with 8 forced host devices (tests/sharding_check.py):
XLA_FLAGS must be set before JAX starts.  The plan, its errors and the CLI need no devices."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import opdsl
from opdsl.cli import main
from opdsl.errors import OpdslError

pytest.importorskip("jax")
ROOT = Path(__file__).resolve().parent.parent

from .sharding_check import BLOCKDIAG, KRON  # noqa: E402


def test_sharded_programs_on_eight_devices():
    """One subprocess (JAX starts once, ~20 s) for every device check; xdist would run a module fixture
    once per worker."""
    r = subprocess.run([sys.executable, "-m", "tests.sharding_check"], cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    run = json.loads(r.stdout)
    for part in ("catalogue", "hlo", "numerics"):
        assert "error" not in run[part], run[part]["error"]
    assert run["devices"] == 8

    # every catalogue case with a dim 8, 4 or 2 devices divide agrees with the dense reference sharded over it
    cat = run["catalogue"]
    assert not cat["failed"], "\n".join(cat["failed"])
    assert len(cat["checked"]) >= 30, cat["checked"]
    for kind in ("kron", "monarch", "attention", "delta_attention", "householder", "conv", "kernel", "tridiag"):
        assert any(c.startswith(kind + "-") for c in cat["checked"]), kind

    # blockdiag over blocks, kron over columns, attention over heads: no collective in the HLO
    for case in ("blockdiag", "blockdiag-explicit", "kron-k", "attention-heads"):
        assert run["hlo"][case]["collectives"] == [] and run["hlo"][case]["err"] < 1e-5, (case, run["hlo"][case])

    # results come back sharded (also from jax.make_mesh's Explicit axes); explain agrees
    hlo = run["hlo"]
    assert hlo["blockdiag"]["result_spec"] == "P('d',)" and hlo["blockdiag"]["devices"] == 8
    assert hlo["blockdiag-explicit"]["result_spec"] == "P('d',)"
    assert hlo["attention-heads"]["result_spec"] == "P(None, 'd')"
    assert hlo["blockdiag"]["plan"] and hlo["kron-k"]["plan"] == []

    # a split Kronecker factor: the all-reduce the plan names, and only it
    r = hlo["kron-a"]
    assert r["plan"] == ["all-reduce"] and r["collectives"] == ["all-reduce"] and r["err"] < 1e-4, r

    # gradients through sharded programs equal the unsharded ones; the dot test on sharded arrays
    assert {"grad-kron-a", "grad-kron-k", "grad-blockdiag", "dot-kron-a", "dot-kron-k", "dot-blockdiag"} <= \
        set(run["numerics"])
    for key, err in run["numerics"].items():
        assert err < 1e-5, (key, err)


# -- the plan, without devices ---------------------------------------------------------------

def test_explain_lists_the_communication():
    p = opdsl.compile(KRON, backend="jax", mesh={"d": 4}, shard={"a": "d"})
    text = p.explain()
    assert "mesh: d = 4; split: a over d" in text
    assert "all-reduce over d: 8.19kB" in text            # the [32, 64] float32 result, summed
    data = json.loads(p.explain(format="json"))
    assert data["exports"][0]["communication"][0] == {
        "collective": "all-reduce", "axis": "d", "bytes": 8192.0,
        "why": "the operator contracts the split dim a: partial products are summed", "site": "<string>:8:12"}
    q = opdsl.compile(BLOCKDIAG, backend="jax", mesh={"d": 8}, shard={"nb": "d"})
    assert q.explain().count("communication: none") == 2


def test_monarch_over_b_sums_twice_and_says_so():
    src = "dim b = 8\ndim n = b * b\ninput L : [b, b, b]\ninput R : [b, b, b]\ninput x : [n, 4]\n" \
          "export y = monarch(L, R) @ x\n"
    text = opdsl.compile(src, backend="jax", mesh={"d": 2}, shard={"b": "d"}).explain()
    assert text.count("all-reduce over d: 1.02kB — the operator contracts the split dim b") == 2


@pytest.mark.parametrize("mesh, shard, message", [
    ({"d": 4}, {"q": "d"}, "the program has no dim 'q'"),
    ({"d": 4}, {"a": "model"}, "the mesh has no axis 'model'"),
    ({"d": 3}, {"a": "d"}, "dim a = 8 does not split evenly over mesh axis 'd' of 3 devices"),
    ({"d": 2}, {"a": "d", "b": "d"}, "both split over mesh axis 'd'"),
    (None, {"a": "d"}, "shard= needs mesh="),
    ("d=4", {"a": "d"}, "mesh= takes a jax.sharding.Mesh or a dict"),
])
def test_bad_sharding_is_an_error(mesh, shard, message):
    with pytest.raises(OpdslError, match=message):
        opdsl.compile(KRON, backend="jax", mesh=mesh, shard=shard)


def test_cli_mesh_and_shard(capsys):
    path = ROOT / "examples" / "kron.op"
    assert main(["explain", str(path), "--mesh", "data=4", "--shard", "k=data"]) == 0
    out = capsys.readouterr().out
    assert "split: k over data" in out and "communication: none" in out
    assert main(["compile", str(path), "--backend", "jax", "--mesh", "data=4", "--shard", "k=data"]) == 0
    src = capsys.readouterr().out
    assert "MESH_AXES = {'data': 4}" in src and "def use_mesh(mesh):" in src
    assert main(["explain", str(path), "--mesh", "data", "--shard", "k=data"]) == 1
    assert "--mesh 'data': expected NAME=VALUE" in capsys.readouterr().err


def test_a_mixed_dim_is_gathered_and_said_so():
    from .sharding_check import ATTENTION
    text = opdsl.compile(ATTENTION, backend="jax", mesh={"d": 2}, shard={"L": "d"}).explain()
    # V [2, 8, 64, 16] float32 = 65.5 kB, gathered before attention mixes the sequence
    assert text.count("all-gather over d: 65.5kB — the operator mixes the split dim L: its operand is gathered") == 2
