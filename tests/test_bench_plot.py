"""benchmarks/plot.py: the rows of results.md with a speed-up, drawn to results.png."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import plot

ROOT = Path(__file__).resolve().parent.parent


def test_rows_are_read_from_the_tables():
    text = ("## core\n\n| workload | baseline | speed-up | met |\n|---|---|---|---|\n"
            "| kron a\\|b | dense torch matmul | 12.5 | yes |\n| compile time | | | |\n"
            "| attention | SDPA | 0.5 | **no** |\nnot a row\n")
    got = plot.rows(text)
    assert [(r["workload"], r["speedup"]) for r in got] == [("kron a|b", 12.5), ("attention", 0.5)]
    assert got[0]["section"] == "core" and "no" in got[1]["met"]
    assert plot.dense_baseline("dense torch matmul") and not plot.dense_baseline("SDPA is_causal")


def test_the_committed_results_draw(tmp_path):
    pytest.importorskip("matplotlib")
    data = plot.rows((ROOT / "benchmarks" / "results.md").read_text())
    assert len(data) > 100 and {"core", "shard", "torch_compile"} <= {r["section"] for r in data}
    out = plot.draw(data[:20], tmp_path / "r.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
