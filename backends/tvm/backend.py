"""The TVM backend: each export becomes one TVM PrimFunc, compiled with tvm.compile.

Pipeline (per export): primitive graph -> TE stages (builder.py, one
`te.compute` per primitive through the table in emit.py) -> `te.create_prim_func` ->
schedule (schedule.py: fusion, then a CPU or GPU schedule, or MetaSchedule
with ``tune=TRIALS``, tune.py) -> one IRModule with a function per export ->
`tvm.compile(mod, target)` (target.py).

Free dims stay symbolic (``te.var``): a program compiles once and its kernels
take any value of the free dims, bound from the argument shapes.

Calling: the Program API is the same as for the Python backends.  Arguments
may be numpy arrays or torch tensors; they are handed to the kernel through
DLPack without a copy (a non-contiguous argument is made contiguous first; a
read-only numpy array is passed as is).  A call with a free dim of size 0 gets
what the numpy backend computes (TVM kernels cannot take zero-size arrays).
The result has the type of the first argument (torch in, torch out; numpy
in, numpy out).  Arguments are checked with the same messages as the Python
backends before the kernel runs.

`Program.source` is a readable Python module: the argument checks and the
kernel calls, then a table of the TE stages (primitive, .op line, what the
schedule did) and the TVMScript of the scheduled kernels (for target cuda,
also the CUDA source).

Options: ``target`` ("llvm" = this CPU, the default; "cuda"; or any TVM target
string), ``tune`` (MetaSchedule trials per export, 0 = the built-in
schedule), ``cache`` (default True: compiled kernels are kept by
opdsl.cache, keyed by the program, dims, dtype, target and opdsl version).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import sympy as sp

from opdsl.errors import BackendError
from opdsl.primitives import PRIMS
from opdsl.pytext import comment
from opdsl.version import __version__

from ..numpy_backend import NumpyBackend
from ..pychecks import arg_checks, check_arg_runtime
from ..pycodegen import PythonBackend, exec_module, exports_summary, function_doc, header, module_dims
from ..pyexpr import shape_code
from ..pyruntime import RUNTIME, prim_runtime, site
from .emit import EMIT
from .runtime import GPU_RUNTIME, WRAPPER_RUNTIME
from .target import make_target, set_num_threads, threads_configured

ARTIFACT = "kernels.so"
CALLING_CONVENTION = (
    "destination-passing: call FUNCTION(arg_1, ..., arg_n, const_1, ..., const_m, out) with one DLTensor "
    "per argument (tvm.runtime.Tensor, or any DLPack array: numpy, torch) in the order of 'args', then "
    "the function's 'constants' (row-major 'data' given here), then the output; "
    "every tensor is row-major, contiguous and 64-byte aligned (the kernels use aligned vector "
    "loads), with the listed shape and dtype; the function returns "
    "nothing and writes the result into 'out'. Free dims (names in shapes) are bound from the "
    "arguments' shapes at call time.")


# Free dims: a call whose arguments and result have at least SPECIALIZE_MIN_ELEMENTS elements in
# all runs a kernel compiled for its sizes (on first use; kept by the compile cache), at most
# SPECIALIZE_MAX sizes per export; other calls run the symbolic kernel.  kron 64x64 with a free
# column count, 256 columns: 134 ms symbolic, 1.5 ms specialized (2 cores).
SPECIALIZE_MIN_ELEMENTS = 1 << 16
SPECIALIZE_MAX = 16


class TvmBackend(PythonBackend):
    name = "tvm"
    reserved = ("np", "tvm", "torch", "_lib")
    array = "a numpy array or a torch.Tensor"
    emit = EMIT                  # primitive -> fn(builder, node, operand tensors) -> TE tensor (emit.py)

    def __init__(self, target: str = "llvm", tune: int = 0, cache: bool = True, specialize: bool = True,
                 **options):
        if options:
            raise BackendError(f"the tvm backend takes the options target, tune, cache and specialize; "
                               f"got {', '.join(options)}")
        self.specialize = bool(specialize)
        self.specialized = []      # (export, free dims) of the kernels compiled for a call's sizes
        try:
            self.tune = int(tune or 0)
        except (TypeError, ValueError):
            raise BackendError(f"tune must be a number of trials, got {tune!r}") from None
        if self.tune < 0:
            raise BackendError(f"tune must be a number of trials >= 0, got {self.tune}")
        self.target_name = (target or "llvm").strip()
        self.target = make_target(self.target_name)
        self.gpu = "gpu" in self.target.keys
        self.cache = cache and os.environ.get("OPDSL_CACHE", "1") != "0"
        self.lib = None            # the compiled module (tvm.runtime.Module or Executable)
        self.artifact = None       # path of the cached shared library, when cached
        self.manifest = None
        self.cache_hit = None
        self.compile_seconds = None
        self._compiled = None      # (source, lib, manifest) of a cache build that could not be stored
        self.memory = {}           # export -> memory.plan of its kernel ({"peak": bytes or None, ...})

    def dtype(self, d: str) -> str:
        return repr(d)

    # ---- compile ---------------------------------------------------------------
    def generate(self, g) -> str:
        t0 = time.perf_counter()
        cached = self._cached_compile(g) if self.cache else None
        if cached is None:          # no cache, or one that cannot be used (warned): kernels in memory
            source, lib, manifest = self._compiled or self._compile(g)
            self.lib, self.manifest, self.artifact = lib, manifest, None
            self.cache_hit = False
        else:
            source = cached
        self._compiled = None
        self.compile_seconds = time.perf_counter() - t0
        return source

    def _cached_compile(self, g) -> str | None:
        """Compile through opdsl.cache: the source, with self.lib / manifest / artifact / cache_hit
        set; or None (and a warning) when the cache cannot be used: a directory that is not the
        user's, writable by others, not a directory, read-only or full.  A build that compiled but
        could not write leaves its kernels in self._compiled, so the caller does not compile twice."""
        import tvm

        from opdsl import cache
        parts = self._cache_parts(g)
        key = cache.make_key(**parts)
        built = {}
        self._compiled = None

        def build(tmp: Path):
            self._compiled = self._compile(g, work_dir=tmp)
            source, lib, manifest = self._compiled
            try:
                lib.export_library(str(tmp / ARTIFACT))
            except Exception as e:  # noqa: BLE001 - the linker could not write there (a full disk, ...)
                msg = str(e).strip().splitlines()
                raise cache.Unavailable(f"TVM could not write the library into {tmp.parent}: "
                                        f"{msg[-1] if msg else type(e).__name__}") from None
            (tmp / "source.py").write_text(source, encoding="utf-8")
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            built["lib"] = lib
        try:
            entry, hit = cache.get_or_build(key, build, parts=parts)
            source = (entry / "source.py").read_text(encoding="utf-8")
            manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
            lib = built.get("lib") or tvm.runtime.load_module(str(entry / ARTIFACT))
        except (cache.Unavailable, OSError) as e:   # OSError: the entry went away after the check
            cache.warn_uncached(e, stacklevel=4)
            return None
        self.manifest, self.artifact, self.lib, self.cache_hit = manifest, entry / ARTIFACT, lib, hit
        self.memory = {f["name"]: {"peak": f.get("intermediate_bytes")} for f in manifest.get("functions", [])}
        return source

    def _cache_parts(self, g) -> dict:
        return {
            "backend": self.name, "target": str(self.target), "tune": self.tune,
            "source": g.meta.get("source", ""), "file": g.meta.get("file", ""),
            "dims": {k: str(v) for k, v in sorted((str(s), v) for s, v in g.dims.values.items())},
            "primitive": g.to_text(),
        }

    def _compile(self, g, work_dir: Path | None = None):
        """(source, compiled module, manifest) for every export of primitive graph g."""
        import tvm

        from .memory import plan
        funcs, reports = {}, {}
        self._consts = {}
        self._kernel_shapes = {}
        self.memory = {}
        for name in g.exports:
            funcs[name], b, notes, how = self._schedule(g, name, work_dir=work_dir)
            kept = [s for s in b.stages if notes.get(s) != "inlined"]
            self.memory[name] = plan(b.stages, kept, b.out_name)
            if b.out_view is not None:
                self._kernel_shapes[name] = tuple(g.type(b.kernel_root).shape)
            self._consts[name] = [(c, value) for c, _, value in b.consts]
            reports[name] = (b, notes, how)
        mod = tvm.IRModule(funcs)
        lib = self._build(mod)
        manifest = self._manifest(g)
        source = self._source(g, reports, mod, lib)
        return source, lib, manifest

    def _schedule(self, g, name, dims=None, work_dir=None):
        """(scheduled PrimFunc named `name`, its TE builder, schedule notes, how it was scheduled)
        for one export; `dims`: a DimTable with values for free dims (a specialized kernel)."""
        import tvm
        from tvm import te

        from .schedule import schedule_cpu, schedule_gpu
        from .builder import Builder

        b = Builder(g, name, gpu=self.gpu, dims=dims)
        ins, out = b.build()
        f = te.create_prim_func(list(ins) + [out])
        mod = tvm.IRModule({"main": f})
        out_name = out.op.name
        if self.gpu:
            smod, notes = schedule_gpu(mod, b.stages, out_name, self.target)
        else:
            smod, notes = schedule_cpu(mod, b.stages, out_name)
        how = "built-in schedule"
        if self.tune:
            tuned = self._tune(mod, smod, name, work_dir, b.stages, out_name)
            if tuned is not None:
                smod, how = tuned
        return smod["main"].with_attr("global_symbol", name), b, notes, how

    def _build(self, mod):
        import tvm
        try:
            return tvm.compile(mod, target=self.target)
        except Exception as e:  # noqa: BLE001 - a TVM failure is a backend error with TVM's message
            msg = str(e).strip().splitlines()
            raise BackendError(f"TVM could not compile this program for {self.target_name}: "
                               f"{msg[-1] if msg else type(e).__name__}") from None

    # ---- kernels specialized to the free dims of a call ----------------------------------
    def _specializer(self, g):
        """The module's _SPECIALIZE: (export, {free dim: value}) -> a kernel compiled for those
        sizes, or None (the symbolic kernel runs) for small calls and past SPECIALIZE_MAX sizes."""
        import warnings

        from opdsl.dims import DimTable

        from .builder import WIDE_ELEMENTS
        counts: dict[str, int] = {}

        def needs_wide(name, bind) -> bool:
            sizes = (sp.prod([sp.sympify(g.dims.subs(d)).subs(bind) for d in g.type(v).shape])
                     for v in g.live([g.exports[name]]))
            return any(int(n) >= WIDE_ELEMENTS for n in sizes if sp.sympify(n).is_Integer)

        def specialize(name, free):
            bind = {g.dims.symbols[k]: int(v) for k, v in free.items()}
            shapes = [n["shape"] for _, n in self.signature(g, name)] + [g.type(g.exports[name]).shape]
            elements = sum(int(sp.prod([sp.sympify(g.dims.subs(d)).subs(bind) for d in shp])) for shp in shapes)
            if elements < SPECIALIZE_MIN_ELEMENTS:
                return None
            if counts.get(name, 0) >= SPECIALIZE_MAX and not needs_wide(name, bind):
                return None      # past the cap the symbolic kernel runs, unless its int32 indices would wrap
            counts[name] = counts.get(name, 0) + 1
            dims = DimTable(symbols=dict(g.dims.symbols), values={**g.dims.values, **bind},
                            derived=dict(g.dims.derived), hints=dict(g.dims.hints))
            try:
                kernel = self._specialized(g, name, dims, free)
                self.specialized.append((name, dict(free)))
                return kernel
            except Exception as e:  # noqa: BLE001 - the symbolic kernel still computes the same thing
                warnings.warn(f"tvm backend: no kernel specialized to {free} for {name!r} "
                              f"({type(e).__name__}: {e}); the symbolic kernel runs", RuntimeWarning, stacklevel=2)
                return None
        return specialize

    def _specialized(self, g, name, dims, free):
        import tvm
        if not self.cache:
            func = self._schedule(g, name, dims=dims)[0]
            return self._build(tvm.IRModule({name: func}))[name]
        from opdsl import cache
        parts = {**self._cache_parts(g), "export": name, "free": {k: int(v) for k, v in sorted(free.items())}}
        built = {}

        def build(tmp: Path):
            func = self._schedule(g, name, dims=dims, work_dir=tmp)[0]
            built["lib"] = self._build(tvm.IRModule({name: func}))
            try:
                built["lib"].export_library(str(tmp / ARTIFACT))
            except Exception as e:  # noqa: BLE001 - the linker could not write there (a full disk, ...)
                raise cache.Unavailable(f"TVM could not write a library into {tmp.parent}: {e}") from None
        try:
            entry, _ = cache.get_or_build(cache.make_key(**parts), build, parts=parts)
            return tvm.runtime.load_module(str(entry / ARTIFACT))[name]
        except (cache.Unavailable, OSError) as e:
            cache.warn_uncached(e, stacklevel=4)
            lib = built.get("lib") or self._build(tvm.IRModule({name: self._schedule(g, name, dims=dims)[0]}))
            return lib[name]

    def _tune(self, mod, smod, name, work_dir, stages, out_name):
        """MetaSchedule (or a search of the built-in schedule's tiles) with self.tune trials;
        keeps whichever schedule is fastest (tune.py)."""
        from .tune import tune_and_pick
        return tune_and_pick(mod, smod, self.target, self.tune, work_dir, self.gpu, stages, out_name)

    # ---- the source text -----------------------------------------------------------
    def _source(self, g, reports, mod, lib) -> str:
        file = g.meta.get("file", "<string>")
        sigs = {name: self.signature(g, name) for name in g.exports}
        lines = header(file, f"tvm (target: {self.target})", exports_summary(self, g),
                       ("", "Each export is one TVM PrimFunc (TVMScript at the end of this file), compiled with",
                        "tvm.compile and called through DLPack; `_lib` is the compiled module."))
        lines += ["import numpy as np",
                 "import tvm",
                 RUNTIME.format(array=self.array).rstrip("\n"),
                 check_arg_runtime(self)]
        lines.extend(prim_runtime(g))
        lines.append(WRAPPER_RUNTIME.rstrip("\n"))
        if self.gpu:
            lines.append(GPU_RUNTIME.rstrip("\n"))
        lines.append("")
        dims = module_dims(g)
        if dims:
            lines.append("")
            lines.extend(dims)
        for name, root in g.exports.items():
            lines.append("")
            lines.append("")
            lines.extend(self._function(g, name, root, sigs[name]))
        for name in g.exports:
            b, notes, how = reports[name]
            lines.append("")
            lines.append("")
            lines.append(f"# ---- {name}: TE stages ({how}) " + "-" * max(4, 60 - len(name) - len(how)))
            lines.append(f"#   {'stage':<18} {'primitive':<10} {'schedule':<44} from")
            for st_name, st in b.stages.items():
                row = f"{st_name:<18} {st.prim:<10} {notes.get(st_name, '-'):<44} {st.line}"
                lines.append(f"#   {comment(row)}".rstrip())
        lines.append("")
        lines.append("")
        lines.append("# ---- TVMScript of the scheduled kernels " + "-" * 38)
        for text in mod.script().splitlines():
            lines.append(("# " + comment(text)).rstrip())
        if self.gpu:
            try:
                cuda = lib.mod.imports[0].inspect_source()
            except Exception:  # noqa: BLE001
                cuda = ""
            if cuda:
                lines.append("")
                lines.append("# ---- CUDA source " + "-" * 60)
                for text in cuda.splitlines():
                    lines.append(("# " + comment(text)).rstrip())
        return "\n".join(lines) + "\n"

    def dtype_check(self, a: str, dtype: str) -> str:
        """Arguments may be numpy arrays or torch tensors: compare dtype names (check_dtype)."""
        return f"_dtype_name({a}) != {dtype}"

    def check_dtype(self, dtype: str) -> str:
        return repr(dtype)

    def device_check(self, a: str, first: str) -> str | None:
        return f"_device_name({a}) != _device_name({first})"

    def _function(self, g, name, root, args) -> list[str]:
        """The Python entry point: the same checks as the Python backends, then the kernel call."""
        out = [f"def {name}(*, {', '.join(a for a, _ in args)}):" if args else f"def {name}():"]
        out.append(function_doc(g, name))
        out.extend(arg_checks(self, g, name, args, root))
        rt = g.type(root)
        first = args[0][0] if args else "None"
        out.append(f"    _out = _empty({first}, {shape_code(rt.shape)}, {rt.dtype!r})")
        call_args = ", ".join([f"_arg({a})" for a, _ in args]
                              + [f"_constant({c!r}, {first})" for c, _ in self._consts.get(name, [])])
        kshape = self._kernel_shapes.get(name)
        dest = "_out" if kshape is None else f"_out.reshape({shape_code(kshape)})"
        if kshape is not None:
            out.append("    # the kernel writes the result before its final reshape (same memory, row-major)")
        free = self._free_dims(g, name)
        kernel = (f"_kernel({name!r}, {', '.join(f'{d}={d}' for d in free)})" if free else f"_lib[{name!r}]")
        if free:     # only a free dim can be 0 (declared dims are positive)
            names = ", ".join(a for a, _ in args)
            out.append(f"    if _no_elements(_out, {names}):")
            out.append(f"        return _zero_size({name!r}, {first}, _out, {{{', '.join(f'{a!r}: {a}' for a, _ in args)}}})")
        if self.gpu:
            out.append(f"    _call({kernel}, [{call_args}], {dest})")
        else:
            out.append(f"    {kernel}({call_args + ', ' if call_args else ''}{dest})")
        sites = sorted({site(g[v].span) for v in g.live([root]) if PRIMS[g[v].kind].singular})
        if sites:
            out.append(f"    _finite({'; '.join(sites)!r}, _out)")
        out.append("    return _out")
        return out

    def _free_dims(self, g, name) -> list[str]:
        """The free dims of an export: bound from its arguments' shapes at call time."""
        return sorted({str(s) for a, n in self.signature(g, name) for d in n["shape"]
                       for s in sp.sympify(g.dims.subs(d)).free_symbols})

    # ---- manifest ---------------------------------------------------------------------
    def _manifest(self, g) -> dict:
        def dims_of(shape):
            return [int(v) if (v := g.dims.value(d)) is not None else str(d) for d in shape]
        funcs = []
        for name, root in g.exports.items():
            args = [{"name": a, "shape": dims_of(n["shape"]), "dtype": n["dtype"]} for a, n in self.signature(g, name)]
            rt = g.type(root)
            free = self._free_dims(g, name)
            consts = [{"name": c, "shape": list(v.shape), "dtype": str(v.dtype), "data": v.reshape(-1).tolist()}
                      for c, v in self._consts.get(name, [])]
            output = {"name": name, "shape": dims_of(rt.shape), "dtype": rt.dtype}
            if name in self._kernel_shapes:   # the kernel's out buffer: the same memory, another shape
                output["buffer_shape"] = dims_of(self._kernel_shapes[name])
            funcs.append({"name": name, "symbol": name, "args": args, "constants": consts,
                          "output": output,
                          "free_dims": free,
                          # bytes of intermediates the kernel holds at once (memory.plan; null: free dims)
                          "intermediate_bytes": self.memory.get(name, {}).get("peak")})
        return {"format": "opdsl-tvm-kernels/1", "opdsl_version": __version__,
                "source_file": g.meta.get("file", "<string>"), "target": str(self.target),
                "device": "cuda" if self.gpu else "cpu", "calling_convention": CALLING_CONVENTION,
                "functions": funcs}

    # ---- loading ------------------------------------------------------------------------
    def load(self, source: str, graph):
        if not self.gpu and not threads_configured():     # once per process: the user's later choice stands
            set_num_threads(respect_env=True)
        mod = exec_module(source, graph, self.name, "opdsl_tvm", {"_lib": self.lib})
        if self.specialize and "_SPECIALIZE" in mod.__dict__:
            mod._SPECIALIZE = self._specializer(graph)
        if "_ZERO_SIZE" in mod.__dict__:
            mod._ZERO_SIZE = _numpy_fallback(graph, mod.ArgumentError)
        import numpy as np
        for f in self.manifest["functions"]:
            for c in f.get("constants", []):
                mod._CONSTS[c["name"]] = mod._arg(np.asarray(c["data"], dtype=c["dtype"]).reshape(c["shape"]))
        return mod

    def save(self, program, path) -> list[str]:
        """`opdsl compile --backend tvm -o kernels.so`: the shared library and kernels.json beside it,
        written together or not at all (opdsl/output.py), never over the input file."""
        from opdsl.output import write_files
        path = Path(path)
        if path.suffix in ("", ".py", ".json"):
            raise BackendError(f"the tvm backend writes a shared library, got -o {path}",
                               hint="name the output like kernels.so (a manifest kernels.json is written beside it)")

        def library(tmp: Path):
            if self.artifact is not None and Path(self.artifact).exists():
                shutil.copyfile(self.artifact, tmp)
                return
            try:
                self.lib.export_library(str(tmp))
            except Exception as e:  # noqa: BLE001 - TVM's message (a full disk, no linker), as a user error
                msg = str(e).strip().splitlines()
                raise BackendError(f"cannot write {path}: TVM could not export the library: "
                                   f"{msg[-1] if msg else type(e).__name__}") from None
        manifest = dict(self.manifest)
        manifest["library"] = path.name
        return write_files([(path, library), (path.with_suffix(".json"), json.dumps(manifest, indent=1) + "\n")],
                           inputs=[program.filename])


def _numpy_fallback(g, arg_error):
    """The module's _ZERO_SIZE: (export, {argument: numpy array}) -> the numpy backend's result for
    primitive graph g (compiled on first use: only calls with a zero-size free dim need it)."""
    module = []

    def run(name, args):
        if not module:
            nb = NumpyBackend()
            try:
                module.append(nb.load(nb.generate(g), g))
            except BackendError as e:     # a dtype numpy lacks (bfloat16)
                raise arg_error(f"{name}(): a free dim is 0; the tvm backend computes such calls with "
                                f"numpy, which cannot run this program: {e}") from None
        return getattr(module[0], name)(**args)
    return run
