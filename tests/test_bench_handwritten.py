"""The `handwritten` benchmark's workloads (benchmarks/handwritten.py): every hand-written torch
baseline computes what its .op program computes (at the quick sizes), so that a row never times a
wrong answer; and one workload runs through the benchmark's own measuring code."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import opdsl  # noqa: E402
from benchmarks.handwritten import WORKLOADS  # noqa: E402


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_the_hand_written_code_computes_the_program(name):
    w = WORKLOADS[name]
    prog = opdsl.compile(w.source.format(**w.quick), backend="torch")
    args = w.args(w.quick, torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = prog[w.export](**args), w.hand(**args)
    err = float((got.double() - want.double()).abs().max() / want.double().abs().max())
    assert err <= w.rtol, (name, err)


def test_one_workload_through_the_benchmark():
    from benchmarks.bench_handwritten import one
    rows = one("blockdiag", quick=True)
    assert [r["baseline"].split(":")[0] for r in rows] == [
        "hand-written torch", "torch.compile(hand-written), inductor", "torch.compile(hand-written), inductor"]
    assert all(r["opdsl_ms"] > 0 and r["baseline_ms"] > 0 and r["target"] == ">= 1.0x" for r in rows)
    assert rows[2]["workload"].endswith("[compile=True]")
