"""Bounds-checked TVM kernels, for testing the backend: every memory access is checked at run time.

TVM 0.27's own ``tirx.instrument_bound_checkers`` option does nothing for kernels built from
``te.create_prim_func`` (it needs ``buffer_bound`` attributes that only the old StorageFlatten
path wrote), so this module brings its own check.  Inside ``bounds_checked()``, every
``tvm.compile`` runs one more pass at the end of TVM's lowering, after every simplification
(just before SplitHostDevice, where buffers are flat): each load and store gets its index
replaced by ``if_then_else(0 <= i < size, i, trap(...))``.  ``if_then_else`` is lazy, so
the trap runs only for an access that is really out of bounds; it records (function, buffer,
index, size) in ``OUT_OF_BOUNDS`` and returns 0, so the access goes to the buffer's first
element (a vector access: its first lanes) and the run goes on to report every bad access
instead of crashing; results computed after a bad access are not meaningful.

The check must run this late: an index that TVM's simplifier rewrote (the cause of the
segfault of issue 12, a load in a ``Select`` arm simplified under the Select's condition
but evaluated regardless of it) only exists after the simplification passes.

Vector accesses are checked at their first and last lane (a Ramp) or their value (a
Broadcast); other vector indices (gathers) are counted in ``UNCHECKED`` and not checked.
Kernels built this way are slow (every access branches): use them in tests, with the
compile cache off (``cache=False``), or a cached unchecked kernel is loaded instead.  CPU
targets only (the trap is a call back into Python, which device code cannot make).
"""
from __future__ import annotations

import contextlib
import threading

OUT_OF_BOUNDS: list[tuple] = []        # (function, buffer, index, size) in order; index, size None when unknown
UNCHECKED: list[tuple[str, str]] = []  # (function, buffer) of accesses left unchecked (gathers)
CHECKED = [0]                          # how many accesses were given a check
_SITES: list[tuple[str, str]] = []     # (function, buffer) of each checked access, by site number
_LOCK = threading.Lock()
_TRAP = "opdsl.tvm_out_of_bounds"


def _trap(site):
    """The function a failed check of access `site` calls (a packed function of its own per site:
    TVM sets up the arguments of every packed call in a statement before the statement, in the same
    stack slots, so when two checks in one statement fail the arguments may be the other's; the
    name is not shared)."""
    func, buf = _SITES[site]

    def trap(passed_site, index, size):
        with _LOCK:                    # kernels call this from TVM's worker threads
            mine = int(passed_site) == site
            OUT_OF_BOUNDS.append((func, buf, int(index) if mine else None, int(size) if mine else None))
        return 0
    return trap


def _site(func, buf):
    import tvm
    with _LOCK:
        _SITES.append((func, buf))
        site = len(_SITES) - 1
    tvm.register_global_func(f"{_TRAP}.{site}", _trap(site), override=True)
    return site


def _instrument(func, mod, ctx):
    import tvm
    import tvm_ffi
    from tvm import tirx
    from tvm.ir.prim.expr import Broadcast, Ramp

    fname = str(func.attrs["global_symbol"]) if func.attrs and "global_symbol" in func.attrs else "?"

    def guard(buf, index):
        """`index` of an access to flat buffer `buf`, with the check wrapped around it."""
        size = buf.shape[0]
        if isinstance(index, Ramp):
            lo, hi = index.base, index.base + index.stride * (index.lanes - 1)
            ok = tirx.all(lo >= 0, lo < size, hi >= 0, hi < size)
            return Ramp(guard_scalar(buf, str(lo.ty), index.base, ok, size), index.stride, index.lanes)
        if isinstance(index, Broadcast):
            v = index.value
            return Broadcast(guard_scalar(buf, str(v.ty), v, tirx.all(v >= 0, v < size), size), index.lanes)
        if "x" in str(index.ty):             # a vector of lanes, e.g. int32x8
            UNCHECKED.append((fname, str(buf.name)))
            return index
        return guard_scalar(buf, str(index.ty), index, tirx.all(index >= 0, index < size), size)

    def guard_scalar(buf, dtype, value, ok, size):
        CHECKED[0] += 1
        site = _site(fname, str(buf.name))
        trap = tirx.call_packed(f"{_TRAP}.{site}", site, tirx.Cast("int64", value), tirx.Cast("int64", size))
        return tirx.if_then_else(ok, value, tirx.Cast(dtype, trap))

    def flat(buf, idx):
        if len(idx) == 1 and len(buf.shape) == 1:
            return True
        UNCHECKED.append((fname, str(buf.name)))    # not flattened (none seen in TVM 0.27's pipeline)
        return False

    def on_load(x):
        idx = list(x.indices)
        return tirx.BufferLoad(x.source, [guard(x.source, idx[0])]) if flat(x.source, idx) else x

    def on_store(x):
        idx = list(x.indices)
        return tirx.BufferStore(x.buffer, x.value, [guard(x.buffer, idx[0])]) if flat(x.buffer, idx) else x

    body = tvm_ffi.structural_map(func.body, [(tvm.ir.TensorLoad, on_load), (tirx.BufferStore, on_store)])
    return func.with_body(body)


@contextlib.contextmanager
def bounds_checked():
    """Every tvm.compile inside this block builds kernels that check each memory access
    (recorded in OUT_OF_BOUNDS when the kernels run, also after the block)."""
    import tvm
    from tvm import tirx
    split = tirx.transform.SplitHostDevice
    check = tirx.transform.prim_func_pass(_instrument, opt_level=0, name="OpdslBoundsCheck")
    # the default pipeline looks SplitHostDevice up when it runs: the check goes right before it
    tirx.transform.SplitHostDevice = lambda: tvm.transform.Sequential([check, split()])
    try:
        yield OUT_OF_BOUNDS
    finally:
        tirx.transform.SplitHostDevice = split
