"""`import opdsl` asks OpenMP for the PASSIVE wait policy (robust when the cores are shared:
benchmarks/results.md "contention") only when the user chose none, torch is not loaded yet, and
OPDSL_THREAD_DEFAULTS is not 0.  Each case in a fresh interpreter: the policy is read at import."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

CASES = [
    ({}, "import opdsl", "PASSIVE"),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "import opdsl", "ACTIVE"),            # the user's choice stands
    ({}, "import torch, opdsl", None),                                   # too late: OpenMP has read it
    ({"OPDSL_THREAD_DEFAULTS": "0"}, "import opdsl", None),
]


@pytest.mark.parametrize("env, imports, want", CASES)
def test_the_wait_policy_default(env, imports, want):
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPDSL_THREAD_DEFAULTS")}
    out = subprocess.run([sys.executable, "-c", f"{imports}; import os; print(os.environ.get('OMP_WAIT_POLICY'))"],
                         env={**base, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(want)
