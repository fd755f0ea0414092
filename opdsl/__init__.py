"""opdsl: a compiler for structured linear operators."""
import os as _os
import sys as _sys

# OpenMP (the thread pool of torch's kernels and of MKL) reads its wait policy once, when torch is
# first imported.  GNU OpenMP's default lets a thread that finishes its share of a kernel spin
# before it sleeps; when another process holds a core, the spinning threads take the time the
# working ones need, and a program of many small kernels slows down several times (benchmarks/
# results.md "contention": the Woodbury solve 4.1-4.4x slower beside one busy process with the
# default, 1.3-1.6x with PASSIVE).  So, unless the user chose a policy or torch is already loaded,
# opdsl asks for PASSIVE; OPDSL_THREAD_DEFAULTS=0 leaves it alone (docs/backends.md "Threads").
if _os.environ.get("OPDSL_THREAD_DEFAULTS", "1") != "0" and "OMP_WAIT_POLICY" not in _os.environ \
        and "torch" not in _sys.modules:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from .version import __version__  # noqa: E402,F401

from . import kinds  # noqa: E402,F401  (registers every operator kind)
from .api import Program, compile, compile_file  # noqa: E402
from .errors import OpdslError  # noqa: E402
from .jit_function import jit  # noqa: E402

__all__ = ["compile", "compile_file", "Program", "OpdslError", "jit", "__version__"]


def _constructor_modules():
    from .trace import constructors_over_modules
    constructors_over_modules(globals())   # opdsl.trace is a module and the trace(A) constructor


_constructor_modules()


def load_ipython_extension(ipython):
    """`%load_ext opdsl`: the %%opdsl cell magic (opdsl/magic.py)."""
    from .magic import load_ipython_extension as load
    load(ipython)


def __getattr__(name):
    """`opdsl.<constructor>` for every constructor of the registry (kinds.CONSTRUCTORS), for use inside
    @opdsl.jit functions; `opdsl.torch` and `opdsl.jax` import on first use."""
    from .builder import OPTION_CALLS
    if name in kinds.CONSTRUCTORS or name in OPTION_CALLS:     # OPTION_CALLS: opdsl.pivchol(15)
        from .trace import constructor
        return constructor(name)
    if name in ("torch", "jax"):
        from importlib import import_module
        return import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'opdsl' has no attribute {name!r}")


def __dir__():
    from .builder import OPTION_CALLS
    return sorted(set(globals()) | set(kinds.CONSTRUCTORS) | set(OPTION_CALLS) | {"torch", "jax"})
