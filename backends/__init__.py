"""Backends: one class per target (the protocol: backends/base.py), registered here by name.

`get(name)` returns an instance and `backend_class(name)` the class, importing its module on first
use: the registry names modules, it does not import them, so a backend (and the framework it needs)
is loaded only when a program asks for it.  A new backend is one module plus one
`register_backend(name, module, class, requires)` call.
"""
from __future__ import annotations

from importlib import import_module

from opdsl.errors import BackendError

# name -> (module, class, the package the backend needs)
_BACKENDS = {
    "numpy": ("opdsl.backends.numpy_backend", "NumpyBackend", "numpy"),
    "torch": ("opdsl.backends.torch_backend", "TorchBackend", "torch"),
    "jax": ("opdsl.backends.jax_backend", "JaxBackend", "jax"),
    "tvm": ("opdsl.backends.tvm.backend", "TvmBackend", "tvm"),
}


def register_backend(name: str, module: str, cls: str, requires: str):
    """Make backend class `cls` of module `module` (imported on first use) available as `name`;
    `requires`: the package it needs (`available()` lists it only when that imports)."""
    _BACKENDS[name] = (module, cls, requires)


def unregister_backend(name: str):
    _BACKENDS.pop(name, None)


def names() -> list[str]:
    return list(_BACKENDS)


def modules() -> dict[str, str]:
    """{backend name: the module that defines it} (imported on first use)."""
    return {name: mod for name, (mod, _, _) in _BACKENDS.items()}


def available() -> list[str]:
    """Backends whose framework is installed and whose module exists."""
    out = []
    for name, (mod, _, req) in _BACKENDS.items():
        try:
            import_module(req)
            import_module(mod)
            out.append(name)
        except ImportError:
            pass
    return out


def backend_class(name: str):
    """The class of backend `name` (BackendError when it is unknown or its package is missing)."""
    if name not in _BACKENDS:
        raise BackendError(f"unknown backend {name!r}", hint=f"choose one of: {', '.join(_BACKENDS)}")
    mod, cls, req = _BACKENDS[name]
    try:
        import_module(req)
    except ImportError:
        raise BackendError(f"the {name} backend needs the {req!r} package, which is not installed",
                           hint=f"pip install 'opdsl[{name}]'") from None
    return getattr(import_module(mod), cls)


def get(name: str, **options):
    """A backend instance; options (e.g. target="cuda", tune=64) go to its constructor."""
    return backend_class(name)(**options)
