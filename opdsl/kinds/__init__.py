"""Operator kinds. Importing this package registers every kind (see base.REGISTRY)."""
from . import algebra, basic, blockdiag, kron, lowrank, tensors  # noqa: F401  (registration)
from .base import CONSTRUCTORS, REGISTRY, Kind, Val

__all__ = ["REGISTRY", "CONSTRUCTORS", "Kind", "Val"]
