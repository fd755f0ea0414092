"""`opdsl bench FILE.op` and `backend="auto"`: the backends timed on a program, the fastest chosen.

`measure` compiles the program for every available backend (or those named), runs every export on
random inputs of the declared sizes — free dims at their size hints (`dim k ~ 1024`), 256 without
one — and times it: one warm-up call, then the median of `reps` calls (a JAX result is waited
for).  A backend that refuses a primitive by name, or fails, has no time for that export and says
why.  `choose` picks the backend with the least total time over the exports among those that ran
them all.  `backend="auto"` (api.compile) measures once per program, dims, dtype and machine and
keeps the choice in the compile cache (opdsl/cache.py), so later compiles of the same program
skip the measurement.  This module compiles nothing itself: the caller passes `make(backend)`.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

from .errors import OpdslError

DEFAULT_FREE = 256          # a free dim without a size hint, as explain costs it
# backends with an option worth timing as a backend of its own: name -> (backend, options)
VARIANTS = {"torch+compile": ("torch", {"compile": True})}


def candidates(available: list[str]) -> list[str]:
    """The available backends and the variants of them (torch+compile: torch.compile of each export)."""
    return list(available) + [v for v, (b, _) in VARIANTS.items() if b in available]


def resolve(name: str) -> tuple[str, dict]:
    """(backend, options) of a candidate name."""
    return VARIANTS.get(name, (name, {}))


@dataclass
class Timing:
    backend: str
    export: str
    ms: float | None            # median milliseconds per call; None: it did not run
    compile_s: float | None
    note: str = ""


def inputs_for(prog, export: str) -> dict:
    """Random numpy arguments of an export at the declared sizes (free dims at their hints)."""
    from .reference import random_inputs
    dims = prog.graph.dims
    free = {str(s): int(dims.hints.get(s, DEFAULT_FREE)) for s in dims.free()}
    return random_inputs(prog.graph, export, free, seed=0)


def _wait(out):
    for x in out if isinstance(out, (tuple, list)) else (out,):
        if hasattr(x, "block_until_ready"):
            x.block_until_ready()


def measure(make: Callable, backends: list[str], reps: int = 5, progress: bool = False) -> list[Timing]:
    """Time every export of `make(backend)` on each backend; `make` compiles the program."""
    from .backends import backend_class
    from .errors import BackendError
    out: list[Timing] = []
    bar = _progress(len(backends), progress)
    for name in backends:
        t0 = time.perf_counter()
        try:
            prog = make(name)
        except (BackendError, OpdslError) as e:
            out.append(Timing(name, "*", None, None, f"does not compile: {str(e).splitlines()[0]}"))
            bar(name)
            continue
        compile_s = time.perf_counter() - t0
        for export in prog.functions:
            try:
                args = backend_class(resolve(name)[0]).from_numpy(inputs_for(prog, export))
                fn = prog[export]
                _wait(fn(**args))
                times = []
                for _ in range(reps):
                    t = time.perf_counter()
                    _wait(fn(**args))
                    times.append((time.perf_counter() - t) * 1e3)
                out.append(Timing(name, export, statistics.median(times), compile_s))
            except Exception as e:  # noqa: BLE001 - a backend that cannot run an export: reported in its row
                out.append(Timing(name, export, None, compile_s, f"{type(e).__name__}: {str(e).splitlines()[0]}"))
        bar(name)
    return out


def _progress(total: int, on: bool):
    """A progress bar on stderr (tqdm when installed), advanced once per backend."""
    if not on:
        return lambda name: None
    try:
        from tqdm import tqdm
    except ImportError:
        return lambda name: print(f"  timed {name}", file=sys.stderr, flush=True)
    bar = tqdm(total=total, desc="opdsl bench", unit="backend", file=sys.stderr, leave=False)

    def step(name):
        bar.set_postfix_str(name)
        bar.update(1)
        if bar.n >= total:
            bar.close()
    return step


def choose(timings: list[Timing]) -> str:
    """The backend with the least total time among those that ran every export."""
    exports = {t.export for t in timings if t.export != "*"}
    totals = {}
    for b in dict.fromkeys(t.backend for t in timings):
        mine = {t.export: t.ms for t in timings if t.backend == b}
        if exports and all(mine.get(e) is not None for e in exports):
            totals[b] = sum(mine[e] for e in exports)
    if not totals:
        raise OpdslError("no backend ran every export of this program",
                         hint="`opdsl bench FILE.op` shows why each backend failed")
    return min(totals, key=totals.get)


def table(timings: list[Timing]) -> str:
    """The times as a text table, one row per export, a column per backend; the fastest marked."""
    backends = list(dict.fromkeys(t.backend for t in timings))
    exports = list(dict.fromkeys(t.export for t in timings if t.export != "*"))
    cell = {(t.backend, t.export): t for t in timings}
    width = max([10] + [len(b) for b in backends])
    lines = [f"{'export':<16}" + "".join(f"{b:>{width + 2}}" for b in backends)]
    for e in exports:
        ran = {b: cell[(b, e)].ms for b in backends if (b, e) in cell and cell[(b, e)].ms is not None}
        best = min(ran, key=ran.get) if ran else None
        row = f"{e:<16}"
        for b in backends:
            t = cell.get((b, e))
            text = "-" if t is None or t.ms is None else f"{t.ms:.3f}" + ("*" if b == best else "")
            row += f"{text:>{width + 2}}"
        lines.append(row)
    lines.append("(median ms per call; * the fastest; - did not run)")
    notes = [f"  {t.backend}{'' if t.export == '*' else ' ' + t.export}: {t.note}" for t in timings if t.note]
    compiles = {t.backend: t.compile_s for t in timings if t.compile_s is not None}
    lines.append("compile: " + ", ".join(f"{b} {s:.2f} s" for b, s in compiles.items()))
    if notes:
        lines += ["not run:"] + notes
    try:
        lines.append(f"fastest over all exports: {choose(timings)}")
    except OpdslError:
        lines.append("fastest over all exports: none ran them all")
    return "\n".join(lines) + "\n"


def machine() -> str:
    return f"{platform.machine()} {platform.processor()} {os.cpu_count()} cores"


def cached_choice(parts: dict, compute: Callable[[], list[Timing]]) -> tuple[str, list[Timing], bool]:
    """(backend, timings, whether they came from the cache) for the program described by `parts`;
    `compute` measures when the cache has no choice for it (or cannot be used: then uncached)."""
    import json

    from . import cache
    key = cache.make_key(what="backend-choice", machine=machine(), **parts)
    made: dict = {}

    def build(tmp):
        made["timings"] = compute()
        made["backend"] = choose(made["timings"])
        (tmp / "choice.json").write_text(json.dumps({"backend": made["backend"],
                                                     "timings": [asdict(t) for t in made["timings"]]}))
    try:
        entry, hit = cache.get_or_build(key, build)
        data = json.loads((entry / "choice.json").read_text())
        return data["backend"], [Timing(**t) for t in data["timings"]], hit
    except (cache.Unavailable, OSError) as e:
        cache.warn_uncached(e, stacklevel=4)
        if "backend" not in made:
            made["timings"] = compute()
            made["backend"] = choose(made["timings"])
        return made["backend"], made["timings"], False
