"""opdsl.torch: compiled `.op` programs as PyTorch modules.

    layer = opdsl.torch.Module.from_file("layer.op", export="apply")
    y = layer(x)                       # the export's inputs, positionally or by name

The module's parameters are the program's ``param``s, ``torch.nn.Parameter``s
created with the initializers declared in the ``.op`` file (the generated
``init_params``, the same code a standalone ``opdsl compile --backend torch``
module contains).  ``forward`` calls the generated function, plain torch ops,
so autograd, optimizers, ``state_dict``/``load_state_dict``, ``.to(device)``
and ``torch.compile`` work as for any module.  ``.to(dtype)`` (``.double()``,
...) recompiles the program with that default dtype on the next call.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .errors import BackendError, CallError, OpdslError

_PROGRAMS: dict = {}   # (text, filename, dims, dtype) -> Program, shared by modules built from one source


def _compiled(text: str, filename: str, dims: dict, dtype: str):
    key = (text, filename, tuple(sorted(dims.items())), dtype)
    prog = _PROGRAMS.get(key)
    if prog is None:
        from .api import Program
        prog = _PROGRAMS[key] = Program(text, filename, "torch", dims, dtype)
    return prog


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


class Module(nn.Module):
    """One export of a compiled program as an ``nn.Module``: params are ``nn.Parameter``s, inputs are
    the arguments of ``forward``.

    Build it with ``Module.from_file(path, export=...)``, ``Module.from_source(text, ...)`` or
    ``Module(program, export)`` (a Program from ``opdsl.compile``).  ``export`` defaults to the export
    named ``apply``, else the first.  ``generator`` (a torch.Generator or an int seed) makes the
    initial values reproducible; ``device`` places them.
    """

    def __init__(self, program, export: str | None = None, *, device=None, generator=None):
        super().__init__()
        if not program.text:
            raise OpdslError("opdsl.torch.Module needs a program compiled from .op source",
                             hint="use Module.from_file(...) or Module.from_source(...)")
        if program.backend_name != "torch":
            program = _compiled(program.text, program.filename, program.dims, program.dtype)
        else:
            _PROGRAMS.setdefault((program.text, program.filename, tuple(sorted(program.dims.items())),
                                  program.dtype), program)
        from .backends.layers import layer_export
        export = export or layer_export(program.graph)
        if export not in program.functions:
            raise CallError(f"no export named {export!r}", hint=f"exports: {', '.join(program.functions)}")
        sig = program.graph.meta["signatures"][export]
        self._source = (program.text, program.filename, dict(program.dims))
        self.export = export
        self.input_names = tuple(a for a, _, _, r in sig if r != "param")
        self.param_names = tuple(a for a, _, _, r in sig if r == "param")
        for a, shape, _, r in sig:
            free = sorted({str(s) for d in shape for s in program.graph.dims.subs(d).free_symbols}) \
                if r == "param" else []
            if free:
                raise OpdslError(f"param {a} has a shape [{', '.join(map(str, shape))}] with a free dim "
                                 f"{', '.join(free)}", hint="give it a value: Module.from_file(..., dims={"
                                 + ", ".join(f"{d!r}: ..." for d in free) + "})")
            if r == "param" and (hasattr(type(self), a) or a in self.__dict__):
                raise OpdslError(f"param {a!r} would shadow the torch.nn.Module attribute of that name",
                                 hint="rename the param in the .op file")
        values = program.init(generator, names=self.param_names, device=device) if self.param_names else {}
        for a in self.param_names:
            self.register_parameter(a, nn.Parameter(values[a]))
        self._use(program)

    # ---- constructors ----------------------------------------------------------------
    @classmethod
    def from_file(cls, path, export: str | None = None, *, dims: dict | None = None, dtype: str = "float32",
                  device=None, generator=None) -> "Module":
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise OpdslError(f"cannot read {path}: {e.strerror}") from None
        prog = _compiled(text, os.fspath(path), dict(dims or {}), dtype)
        return cls(prog, export, device=device, generator=generator)

    @classmethod
    def from_source(cls, text: str, export: str | None = None, *, dims: dict | None = None,
                    dtype: str = "float32", filename: str = "<string>", device=None, generator=None) -> "Module":
        prog = _compiled(text, filename, dict(dims or {}), dtype)
        return cls(prog, export, device=device, generator=generator)

    @classmethod
    def from_program(cls, program, export: str | None = None, *, device=None, generator=None) -> "Module":
        return cls(program, export, device=device, generator=generator)

    # ---- the compiled function, for the dtype of the params --------------------------
    def _use(self, program):
        self.__dict__["_program"] = program
        self.__dict__["_fn"] = program[self.export]
        self.__dict__["_dtype"] = program.dtype

    @property
    def program(self):
        """The Program whose function forward calls (for the params' current dtype)."""
        self._sync()
        return self.__dict__["_program"]

    def _sync(self):
        p = next(iter(self._parameters.values()), None)
        want = _dtype_name(p.dtype) if p is not None else self.__dict__.get("_dtype")
        if "_fn" not in self.__dict__ or want != self.__dict__.get("_dtype"):
            text, filename, dims = self._source
            self._use(_compiled(text, filename, dims, want or "float32"))

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self._sync()
        return out

    def forward(self, *args, **kwargs):
        if len(args) > len(self.input_names):
            raise CallError(f"{self.export}(): takes {len(self.input_names)} inputs, got {len(args)}",
                            hint=f"forward({', '.join(self.input_names)})")
        for a, v in zip(self.input_names, args):
            if a in kwargs:
                raise CallError(f"{self.export}(): input {a!r} given twice")
            kwargs[a] = v
        params = self._parameters
        for a in self.param_names:
            kwargs[a] = params[a]
        return self.__dict__["_fn"](**kwargs)

    # ---- pickling and deepcopy: the compiled program is rebuilt, not copied ------------
    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        return {k: v for k, v in state.items() if k not in ("_program", "_fn", "_dtype")}

    def __setstate__(self, state):
        super().__setstate__(state)
        self._sync()

    def extra_repr(self) -> str:
        text, filename, dims = self._source
        return (f"{filename}: {self.export}({', '.join(self.input_names)}); params "
                f"{', '.join(self.param_names) or 'none'}")


def layer(path, export: str | None = None, **kw) -> Module:
    """Shorthand for Module.from_file(path, export, **kw)."""
    return Module.from_file(path, export, **kw)


__all__ = ["Module", "layer", "BackendError"]
