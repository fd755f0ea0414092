"""The memory a TVM kernel needs for its intermediates: an allocation plan over its kept stages.

A stage the schedule inlines has no buffer.  Every other stage but the output (written straight
into the caller's array) has one, live from the stage that writes it to the last kept stage that
reads it.  TVM's lowering (its StorageRewrite pass) places buffers so that a dead intermediate's
memory serves a later one: an elementwise stage writes in place over an input of its size that
dies there, and a buffer freed earlier is reused by a later one of the same or smaller size.
`plan` replays that on the stage list: a pool of freed buffers, best fit first, and a new
allocation only when none fits; the peak is the pool's size at its largest.  Measured peaks stay
at or under the plan (tests/test_tvm_backend.py: exact attention, Kronecker and Monarch chains);
without reuse the same kernels would need the sum of their intermediates, 2–4 times as much.
"""
from __future__ import annotations

import numpy as np

from .stages import ELEMENTWISE


def _bytes(st) -> int | None:
    if st.numel is None:
        return None
    width = 2 if st.dtype == "bfloat16" else np.dtype(st.dtype).itemsize
    return st.numel * width * (2 if st.complex else 1)


def plan(stages: dict, kept: list, out_name: str) -> dict:
    """{"peak": bytes at once, "total": bytes without reuse, "buffers": count} for a kernel whose
    kept stages (in execution order) are `kept`; peak None where a size is symbolic (free dims)."""
    order = {name: i for i, name in enumerate(kept)}
    last = {}
    for name in kept:
        for p in _reads(stages, name, set(kept)):
            if p in order:
                last[p] = max(last.get(p, -1), order[name])
    held = [n for n in kept if n != out_name]
    sizes = {n: _bytes(stages[n]) for n in held}
    if any(s is None for s in sizes.values()):
        return {"peak": None, "total": None, "buffers": len(held)}
    free: list[int] = []          # sizes of buffers no longer live
    owner: dict[str, int] = {}    # stage -> the size of the buffer it uses
    pool = peak = 0
    for i, name in enumerate(kept):
        if name in sizes:
            need = sizes[name]
            dying = [p for p in _reads(stages, name, set(kept)) if last.get(p) == i and p in owner]
            if stages[name].role == ELEMENTWISE and any(owner[p] >= need for p in dying):
                p = next(p for p in dying if owner[p] >= need)       # in place over a dying input
                owner[name] = owner.pop(p)
            else:
                fit = [s for s in free if s >= need]
                if fit:
                    s = min(fit)
                    free.remove(s)
                    owner[name] = s
                else:
                    owner[name] = need
                    pool += need
                    peak = max(peak, pool)
        for p in _reads(stages, name, set(kept)):
            if last.get(p) == i and p in owner:
                free.append(owner.pop(p))
    return {"peak": peak, "total": sum(sizes.values()), "buffers": len(held)}


def _reads(stages, name, kept) -> list:
    """The kept stages `name` reads, looking through inlined ones."""
    out = []
    for i in stages[name].inputs:
        if i not in stages:
            continue
        if i in kept:
            out.append(i)
        else:
            out.extend(_reads(stages, i, kept))
    return out
