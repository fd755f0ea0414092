"""Schedules for the PrimFuncs built by backends/tvm/builder.py.

Fusion (both targets)
    Views (reshape, permute, slice, concat, ...) and constants are inlined
    into their consumers: they become index arithmetic in the loads of the
    stage that reads them.  An elementwise stage is inlined into its single
    elementwise consumer, so chains of elementwise work run as one loop nest.
    Nothing arithmetic is inlined into a contraction (it would be recomputed
    once per output column); a view is inlined into a contraction unless it
    breaks the contiguity of the axis the CPU schedule vectorizes.  An
    elementwise consumer of a contraction is computed tile by tile right
    after it (the contraction's epilogue).

CPU
    Contractions: the two innermost output axes are tiled (rows by 8,
    columns by one vector of 16, see DEFAULT_TILE), the tile is accumulated
    in a local buffer, the outer tile loops are fused and run in parallel, the inner
    column loop is vectorized.  Other stages: the outer loops are fused and
    parallel, the innermost loop is vectorized when its length allows.

GPU (target cuda)
    TVM's dlight rules (Matmul, GEMV, Reduction, GeneralReduction, Fallback)
    on the fused function; blocks the rules leave unbound get a plain
    thread binding (fused spatial loops split over blockIdx.x / threadIdx.x).
"""
from __future__ import annotations

import tvm
import tvm.s_tir as s_tir

from .stages import CONST, ELEMENTWISE, EXTERN, FFT_STAGE, REDUCTION, VIEW

INJECTIVE = (VIEW, ELEMENTWISE, CONST)


def _try(fn, *args, **kw):
    """fn(*args) or None when TVM refuses it (schedule primitives check before they change anything)."""
    try:
        out = fn(*args, **kw)
        return True if out is None else out
    except Exception:  # noqa: BLE001 - TVM raises several error types for a refused primitive
        return None


def _extent(sch, loop):
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tvm.tirx.IntImm) else None


# ---- fusion ---------------------------------------------------------------------

def present_stages(sch, stages: dict) -> dict:
    """The stages whose block is in the function (create_prim_func drops what the output does not use)."""
    names = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))} \
        if _has_root(sch) else set(stages)
    live = {k: v for k, v in stages.items() if k in names}
    for st in live.values():
        st.consumers = [c for c in st.consumers if c in names]
    return live


def _has_root(sch):
    try:
        sch.get_sblock("root")
        return True
    except Exception:  # noqa: BLE001
        return False


def fuse_stages(sch, stages: dict, out_name: str, gpu: bool = False) -> dict:
    """Inline what should be inlined; returns {stage name: "inlined" | "kept"}."""
    stages = present_stages(sch, stages)
    decided: dict[str, str] = {}
    contig: dict[str, bool] = {}

    def final_consumers(name, seen=()):
        out = []
        for c in dict.fromkeys(stages[name].consumers):
            st = stages.get(c)
            if st is None:
                continue
            if st.role == VIEW and c != out_name and c not in seen:
                out.extend(final_consumers(c, seen + (c,)))
            else:
                out.append(st)
        return out

    for name, st in stages.items():
        if name == out_name or st.role not in INJECTIVE:
            decided[name] = "kept"
            continue
        consumers = [stages[c] for c in dict.fromkeys(st.consumers) if c in stages]
        if not consumers or any(c.role == EXTERN for c in consumers):
            decided[name] = "kept"
            continue
        if st.role == CONST:
            ok = True
        elif st.role == VIEW:
            own = st.keeps_last_axis and all(contig.get(i, True) for i in st.inputs)
            contig[name] = own
            ok = gpu or own or not any(c.role == REDUCTION and name in c.vec_inputs for c in consumers)
        else:  # elementwise
            finals = final_consumers(name)
            ok = (not st.complex and len(dict.fromkeys(st.consumers)) == 1
                  and all(c.role in INJECTIVE for c in finals))
        if ok and _try(sch.compute_inline, sch.get_sblock(name)) is not None:
            decided[name] = "inlined"
        else:
            decided[name] = "kept"
            contig[name] = True
    return decided


# ---- CPU --------------------------------------------------------------------------

def _vec_width(ext, dtype_bits=32, cap=16):
    if ext is None:
        return None
    w = cap if dtype_bits <= 32 else cap // 2
    while w >= 4:
        if ext % w == 0:
            return w
        w //= 2
    return None


def _const_prod(sch, loops):
    """The product of the loops' extents (a large number when one is symbolic)."""
    out = 1
    for lp in loops:
        e = _extent(sch, lp)
        out *= e if e is not None else 1 << 20
    return out


def schedule_injective_cpu(sch, block, bits=32, vectorize=True):
    loops = sch.get_loops(block)
    if not loops:
        return "scalar"
    inner = loops[-1]
    ext = _extent(sch, inner)
    w = _vec_width(ext, bits) if vectorize else None
    note = []
    outer = list(loops[:-1])
    if w is not None and ext > w:
        o, v = sch.split(inner, factors=[None, w])
        if _const_prod(sch, outer) < 64:      # too few outer iterations to share: add the vector chunks
            outer.append(o)
        if _try(sch.vectorize, v) is not None:
            note.append(f"vectorized x{w}")
    elif w is not None:
        _try(sch.vectorize, inner)
        note.append(f"vectorized x{w}")
    else:
        outer = list(loops)
        if len(outer) > 1:
            outer = outer[:-1]
    if outer:
        f = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        sch.parallel(f)
        note.insert(0, "parallel")
    return ", ".join(note)


# rows x (vectors of columns) per register tile; measured on the benchmark workloads
# (benchmarks/bench_backends.py): one vector of columns and 8 unrolled rows keeps the
# accumulators in registers; `tune=` searches the alternatives
DEFAULT_TILE = {"it": 8, "jvecs": 1, "unroll_i": True}


def schedule_reduction_cpu(sch, block, n_spatial: int, epilogue: str | None, bits=32, params=None):
    """Tile the two innermost output axes (rows by `it`, columns by `jvecs` vectors), accumulate a
    tile in a local buffer, run the fused outer tile loops in parallel, vectorize the columns."""
    params = {**DEFAULT_TILE, **(params or {})}
    loops = sch.get_loops(block)
    spatial, reduce_ = list(loops[:n_spatial]), list(loops[n_spatial:])
    if not spatial:
        return "serial", None
    J = _extent(sch, spatial[-1])
    vec = _vec_width(J, bits)
    if vec is None or J < 8:
        outer = spatial[:-1] if len(spatial) > 1 else spatial
        f = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        sch.parallel(f)
        return "parallel", None
    jt = next(vec * m for m in (params["jvecs"], 4, 2, 1) if J % (vec * m) == 0)
    j0, j1 = sch.split(spatial[-1], factors=[None, jt])
    j1o, j1v = sch.split(j1, factors=[None, vec])
    outer = spatial[:-2]
    i1 = None
    note = []
    if len(spatial) >= 2:
        I = _extent(sch, spatial[-2])
        it = next((t for t in (params["it"], 8, 4, 2) if I is not None and I % t == 0 and I >= t), None)
        if it is not None and I > it:
            i0, i1 = sch.split(spatial[-2], factors=[None, it])
            outer = outer + [i0]
        elif it is not None:
            i1 = spatial[-2]
        else:
            outer = outer + [spatial[-2]]
        note.append(f"tiled {it or 1}x{jt}")
    order = outer + [j0] + reduce_ + ([i1] if i1 is not None else []) + [j1o, j1v]
    sch.reorder(*order)
    top = sch.fuse(*(outer + [j0])) if outer else j0
    sch.parallel(top)
    cw = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(cw, top)
    sch.vectorize(j1v)
    sch.unroll(j1o)
    if params["unroll_i"] and i1 is not None:
        sch.unroll(i1)
    if reduce_:
        sch.decompose_reduction(block, reduce_[0])
    # the copy back from the tile buffer: vectorize its innermost loop
    cl = sch.get_loops(cw)
    if len(cl) > 1:
        w = _vec_width(_extent(sch, cl[-1]), bits)
        if w is not None:
            if _extent(sch, cl[-1]) > w:
                _, v = sch.split(cl[-1], factors=[None, w])
                _try(sch.vectorize, v)
            else:
                _try(sch.vectorize, cl[-1])
    note.append("parallel, vectorized")
    if epilogue is not None:
        eb = sch.get_sblock(epilogue)
        if _try(sch.reverse_compute_at, eb, top) is not None:
            el = sch.get_loops(eb)
            inner = el[-1]
            w = _vec_width(_extent(sch, inner), bits)
            if w is not None and len(el) > 1:
                if _extent(sch, inner) > w:
                    _, v = sch.split(inner, factors=[None, w])
                    _try(sch.vectorize, v)
                else:
                    _try(sch.vectorize, inner)
            note.append(f"epilogue {epilogue} fused")
            return ", ".join(note), epilogue
    return ", ".join(note), None



def schedule_cpu(mod, stages: dict, out_name: str, params=None):
    """The CPU schedule of one PrimFunc; returns (module, {stage: what was done})."""
    sch = s_tir.Schedule(mod)
    decided = fuse_stages(sch, stages, out_name)
    notes = {k: "inlined" for k, v in decided.items() if v == "inlined"}
    done = set()
    order = [n for n in stages if decided.get(n) == "kept"]
    for name in order:
        st = stages[name]
        if name in done or st.role == EXTERN:
            if st.role == EXTERN:
                notes[name] = "sequential scan, parallel over the other axes (topi)"
            continue
        block = sch.get_sblock(name)
        bits = 64 if st.dtype == "float64" else 32
        if st.role == REDUCTION:
            ep = _epilogue(stages, name, decided)
            n_sp = len(sch.get(block).iter_vars) - sum(1 for iv in sch.get(block).iter_vars if iv.iter_type == 2)
            trial = sch.copy()
            r = _try(schedule_reduction_cpu, trial, block, n_sp, ep, bits, params)
            if r is None:
                trial = sch.copy()
                r = _try(schedule_reduction_cpu, trial, block, n_sp, None, bits, params)
            if r is None:
                notes[name] = "default loop nest"
                continue
            sch = trial
            notes[name], fused = r
            if fused:
                done.add(fused)
                notes[fused] = f"computed per tile of {name}"
        else:
            trial = sch.copy()
            # FFT stages gather through bit-reversed / mirrored indices: TVM's vectorizer
            # miscompiles some of those (wrong lanes), so they stay scalar loops
            r = _try(schedule_injective_cpu, trial, block, bits, st.role != FFT_STAGE)
            if r is not None:
                sch = trial
            notes[name] = r or "default loop nest"
        done.add(name)
    return sch.mod, notes


def _epilogue(stages, name, decided):
    cons = [c for c in dict.fromkeys(stages[name].consumers)]
    if len(cons) != 1:
        return None
    c = stages.get(cons[0])
    if c is None or decided.get(c.name) != "kept" or c.role not in (ELEMENTWISE, VIEW):
        return None
    # Moved into the contraction's tile loop, the epilogue runs before every stage that comes
    # after the contraction; what else it reads must be computed by then.  TVM cannot check
    # this itself where a producer is an extern (FFT) block, which declares no reads or writes.
    order = list(stages)
    for p in _producers(stages, c.name, decided):
        if p != name and p in stages and order.index(p) > order.index(name):
            return None
    return c.name


def _producers(stages, name, decided):
    """The kept stages `name` reads, looking through the ones inlined into it."""
    out = []
    for i in stages[name].inputs:
        if i in stages and decided.get(i) == "inlined":
            out.extend(_producers(stages, i, decided))
        else:
            out.append(i)
    return out


# ---- GPU --------------------------------------------------------------------------

def schedule_gpu(mod, stages: dict, out_name: str, target):
    from tvm.s_tir import dlight as dl
    sch = s_tir.Schedule(mod)
    decided = fuse_stages(sch, stages, out_name, gpu=True)
    notes = {k: "inlined" for k, v in decided.items() if v == "inlined"}
    fused = sch.mod
    with target:
        try:
            out = dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                          dl.gpu.GeneralReduction(), dl.gpu.Fallback())(fused)
            if _all_bound(out):
                for k, v in decided.items():
                    if v == "kept":
                        notes[k] = "dlight"
                return out, notes
        except Exception:  # noqa: BLE001 - fall back to the plain binding below
            pass
    sch = s_tir.Schedule(fused)
    max_threads = int(target.attrs.get("max_num_threads", 1024))
    for name, v in decided.items():
        if v != "kept" or stages[name].role == EXTERN:
            continue
        block = sch.get_sblock(name)
        loops = sch.get_loops(block)
        it = sch.get(block).iter_vars
        n_sp = len(it) - sum(1 for iv in it if iv.iter_type == 2)
        sp_loops = loops[:n_sp]
        if not sp_loops:
            continue
        f = sch.fuse(*sp_loops) if len(sp_loops) > 1 else sp_loops[0]
        bx, tx = sch.split(f, factors=[None, min(256, max_threads)])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        notes[name] = "one thread per output element (blockIdx.x, threadIdx.x)"
    return sch.mod, notes


def _all_bound(mod) -> bool:
    """Whether every loop nest of every function is bound to GPU threads (a cheap check)."""
    text = mod.script()
    return "blockIdx" in text
