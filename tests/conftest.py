"""Session settings: environment the compiler reads, hypothesis profiles.  (The shared helpers,
compile / run / compare with the dense reference, are in tests/harness.py.)"""
import os

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
