"""opdsl: a compiler for structured linear operators."""
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
