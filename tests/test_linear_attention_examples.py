"""The issue-14 examples: examples/retnet.op and examples/deltanet.op against the token-by-token
recurrences of tests/recurrences.py (numpy, float64; their L = 200 is several chunks, the last one
padded), and examples/train_linear_attention.py in its quick mode (each attention kind trains, its
loss goes down, gradients reach every parameter)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import opdsl

from . import recurrences as R

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCRIPT = EXAMPLES / "train_linear_attention.py"
KINDS = ("linear", "retention", "gated", "deltanet", "gated_deltanet")


def compiled(name):
    """The example compiled for numpy in float64, and its (B, H, L, d, dv)."""
    prog = opdsl.compile_file(EXAMPLES / name, backend="numpy", dtype="float64")
    dims = prog.graph.dims
    return prog, tuple(dims.value(dims.symbols[s]) for s in ("B", "H", "L", "d", "dv"))


def draw(sizes, seed):
    """Q, K [B, H, L, d] and V [B, H, L, dv] standard normal (keys not normalized: the delta
    exports do it), β ∈ (0, 1) and log-gates G ≤ 0 [B, H, L], decays γ ∈ (0, 1) [H]."""
    B, H, L, d, dv = sizes
    rng = np.random.default_rng(seed)
    return dict(
        Q=rng.standard_normal((B, H, L, d)), K=rng.standard_normal((B, H, L, d)),
        V=rng.standard_normal((B, H, L, dv)),
        beta=rng.uniform(0.05, 0.95, (B, H, L)),
        G=np.log(rng.uniform(0.3, 1.0, (B, H, L))),
        g=rng.uniform(0.5, 0.99, H),
    )


def assert_close(out, expected):
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())


# ---- the .op examples against the recurrences --------------------------------------------------

@pytest.mark.parametrize("decays", ["retnet", "random"])
def test_retnet_example_is_the_retention_and_gated_recurrences(decays):
    prog, sizes = compiled("retnet.op")
    assert sorted(prog.functions) == ["decayed", "gated", "retention"]    # a new export needs a check here
    B, H, L = sizes[:3]
    x = draw(sizes, seed=1)
    if decays == "retnet":
        x["g"] = R.retnet_decays(H)            # γ_h = 1 − 2^(−5−h): all close to 1
    q, k, v = x["Q"], x["K"], x["V"]

    per_head = R.decay_to_log_gate(x["g"], (B, H), L)
    assert_close(prog["retention"](Q=q, K=k, V=v, g=x["g"]), 0.25 * R.gated_recurrence(q, k, v, per_head))
    assert_close(prog["decayed"](Q=q, K=k, V=v), R.gated_recurrence(q, k, v, R.decay_to_log_gate(0.96, (B, H), L)))
    assert_close(prog["gated"](Q=q, K=k, V=v, G=x["G"]), R.gated_recurrence(q, k, v, x["G"]))


def test_deltanet_example_is_the_delta_recurrence():
    prog, sizes = compiled("deltanet.op")
    assert sorted(prog.functions) == ["deltanet", "gated_deltanet"]
    x = draw(sizes, seed=2)
    q, k, v, beta, G = x["Q"], x["K"], x["V"], x["beta"], x["G"]
    assert_close(prog["deltanet"](Q=q, K=k, V=v, beta=beta),
                 R.delta_recurrence(q, R.l2_normalize(k), v, beta))
    assert_close(prog["gated_deltanet"](Q=q, K=k, V=v, beta=beta, G=G),
                 R.delta_recurrence(R.l2_normalize(q), R.l2_normalize(k), v, beta, G))


# ---- the training script -----------------------------------------------------------------------

def run_script(tmp_path, *args):
    out = tmp_path / "results.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out), *args],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    return r, out


def test_training_example_quick_mode_learns_with_every_kind(tmp_path):
    r, out = run_script(tmp_path)
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())
    assert tuple(results) == KINDS
    rows = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if ln.split()[:1] and ln.split()[0] in KINDS}
    assert tuple(rows) == KINDS                                     # the printed table
    for kind, res in results.items():
        assert math.isfinite(res["loss_before"]) and math.isfinite(res["loss_after"]), kind
        assert res["loss_after"] < res["loss_before"], (kind, res)
        assert res["params_without_gradient"] == [], kind          # Q, K, V, gates and betas all learn
        assert res["programs"] == 1, kind                           # compiled once per kind
        assert 0 <= res["accuracy"] <= 1 and res["steps"] == 30
        assert float(rows[kind][3]) == pytest.approx(res["loss_after"], abs=1e-4)


def test_training_example_fails_when_the_loss_does_not_go_down(tmp_path):
    """With a zero learning rate nothing changes: the quick mode's check must say so."""
    r, out = run_script(tmp_path, "--kinds", "deltanet", "--steps", "2", "--lr", "0")
    assert r.returncode == 1
    assert "deltanet: the loss did not go down" in r.stderr
    res = json.loads(out.read_text())["deltanet"]
    assert res["loss_after"] == res["loss_before"]
