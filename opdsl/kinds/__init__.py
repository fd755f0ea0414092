"""Operator kinds, one module per family.

Importing this package imports every module in it, which registers its kinds
(base.register): adding a family is adding a file here, nothing else.  A few
modules hold what several kinds share and register nothing: rule.py (rewrite
rules and their patterns), linalg_analysis.py, linalg_build.py, linalg_solve.py,
linalg_cg.py, attention_features.py.
"""
import importlib
import pkgutil

from .base import CONSTRUCTORS, REGISTRY, Kind, Val

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _m != "base":
        importlib.import_module(f"{__name__}.{_m}")

__all__ = ["REGISTRY", "CONSTRUCTORS", "Kind", "Val"]
