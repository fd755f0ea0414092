"""The TVM backend's user-facing names at the path the documentation gives them
(`opdsl.backends.tvm_backend.set_num_threads()`); the backend is the package backends/tvm/."""
from .tvm.backend import TvmBackend  # noqa: F401
from .tvm.target import set_num_threads  # noqa: F401
