"""The torch backend's opt-in `compile=True`: each export handed to `torch.compile` (inductor).

The generated module is unchanged (a readable, standalone file); when the Program loads it, each
export is wrapped with `torch.compile(fn, fullgraph=True)`, so elementwise chains around opdsl's
structured products (a diagonal term, attention's feature maps, masks and normalizers) fuse into
inductor kernels.  `fullgraph=True` holds the generated code to being compile-friendly: a graph
break is an error, not a silent fallback (tests/test_torch_compile.py compiles a sample).

Arguments the generated checks reject would make Dynamo trace the `raise`, which it cannot do
under fullgraph; so a call that fails inside the compiled function runs the plain function again,
which raises the usual CallError (or, for a failure of torch.compile itself on valid arguments,
computes the result without it, warns, and runs that export without torch.compile from then on).
"""
from __future__ import annotations

import functools
import warnings


def compiled(fn, export: str):
    import torch
    fast = torch.compile(fn, fullgraph=True)
    failed = []

    @functools.wraps(fn)
    def call(**kwargs):
        if failed:                             # torch.compile could not: no retracing at every call
            return fn(**kwargs)
        try:
            return fast(**kwargs)
        except Exception as e:  # noqa: BLE001 - rerun eagerly: the plain function raises the real error
            out = fn(**kwargs)                # bad arguments raise here, with the usual message
            # valid arguments that torch.compile could not run (a sparse tensor, say): from now on
            # the export runs without it (retrying traced again at every call: 7.9 ms against 1.2 ms
            # for a sparse product measured)
            failed.append(True)
            warnings.warn(f"opdsl: torch.compile could not run export {export!r} "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); it runs without it",
                          RuntimeWarning, stacklevel=2)
            return out
    call.compiled = fast
    return call
