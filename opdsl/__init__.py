"""opdsl: a compiler for structured linear operators."""
__version__ = "0.1.0"

from . import kinds  # noqa: E402,F401  (registers every operator kind)
from .api import Program, compile, compile_file  # noqa: E402
from .errors import OpdslError  # noqa: E402

__all__ = ["compile", "compile_file", "Program", "OpdslError", "__version__"]
