"""Backends: one emit table per target. `get(name)` returns an instance, importing lazily."""
from __future__ import annotations

from importlib import import_module

from opdsl.errors import BackendError

_BACKENDS = {
    "numpy": ("opdsl.backends.numpy_backend", "NumpyBackend", "numpy"),
    "torch": ("opdsl.backends.torch_backend", "TorchBackend", "torch"),
    "jax": ("opdsl.backends.jax_backend", "JaxBackend", "jax"),
    "tvm": ("opdsl.backends.tvm_backend", "TvmBackend", "tvm"),
}


def register_backend(name: str, module: str, cls: str, requires: str):
    _BACKENDS[name] = (module, cls, requires)


def names() -> list[str]:
    return list(_BACKENDS)


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


def get(name: str, **options):
    """A backend instance; options (e.g. target="cuda", tune=64) go to its constructor."""
    if name not in _BACKENDS:
        raise BackendError(f"unknown backend {name!r}", hint=f"choose one of: {', '.join(_BACKENDS)}")
    mod, cls, req = _BACKENDS[name]
    try:
        import_module(req)
    except ImportError:
        raise BackendError(f"the {name} backend needs the {req!r} package, which is not installed",
                           hint=f"pip install 'opdsl[{name}]'") from None
    return getattr(import_module(mod), cls)(**options)
