import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Every compile in the tests re-checks every shape rule after each pass.
os.environ.setdefault("OPDSL_VERIFY", "1")
# Compiled kernels go to a cache of this test session, not the user's (opdsl/cache.py).
if "OPDSL_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile
    os.environ["OPDSL_CACHE_DIR"] = tempfile.mkdtemp(prefix="opdsl-test-cache-")
    atexit.register(shutil.rmtree, os.environ["OPDSL_CACHE_DIR"], ignore_errors=True)

settings.register_profile("ci", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("OPDSL_HYPOTHESIS", "ci"))

TOL = {"float32": 2e-4, "float64": 1e-9}


def assert_matches(out, ref, dtype):
    from opdsl.cli import to_numpy
    out = to_numpy(out)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    if ref.size == 0:
        return
    scale = max(1.0, float(np.max(np.abs(ref))))
    err = float(np.max(np.abs(out - ref))) / scale
    assert err <= TOL[dtype], f"relative error {err:.3e} > {TOL[dtype]}"


@pytest.fixture
def check_against_dense():
    """Compile src on a backend and compare every export with the dense reference."""
    def run(src, backend, dtype="float32", **kw):
        import opdsl
        from opdsl.cli import to_backend
        from opdsl.reference import dense_eval, random_inputs
        prog = opdsl.compile(src, backend=backend, dtype=dtype, **kw)
        for name in prog.functions:
            inputs = random_inputs(prog.graph, name)
            ref = dense_eval(prog.graph, prog.graph.exports[name], inputs)
            assert_matches(prog[name](**to_backend(backend, inputs)), ref, dtype)
        return prog
    return run
