"""The `opdsl` command: compile | check | explain | graph | fmt | bench.

Every error a user can cause is printed as a message (file:line:col, the line
with a caret, a hint) and the command exits 1; no traceback.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .errors import OpdslError


def _dims(pairs) -> dict:
    out = {}
    for p in pairs or []:
        name, eq, value = p.partition("=")
        if not eq or not name.strip():
            raise OpdslError(f"--dim {p!r}: expected NAME=VALUE, e.g. --dim n=8192")
        try:
            out[name.strip()] = int(value)
        except ValueError:
            raise OpdslError(f"--dim {p!r}: {value!r} is not an integer") from None
    return out


def _pairs(pairs, flag: str, value=str) -> dict:
    """--mesh data=8 / --shard B=data (repeatable, or comma-separated) as a dict."""
    out = {}
    for p in ",".join(pairs or []).split(",") if pairs else []:
        name, eq, v = p.partition("=")
        if not eq or not name.strip() or not v.strip():
            raise OpdslError(f"{flag} {p!r}: expected NAME=VALUE", hint=f"e.g. {flag} data=8" if flag == "--mesh"
                             else f"e.g. {flag} B=data")
        try:
            out[name.strip()] = value(v.strip())
        except ValueError:
            raise OpdslError(f"{flag} {p!r}: {v.strip()!r} is not an integer") from None
    return out


def _mesh_options(args) -> dict:
    """mesh= / shard= for the JAX backend from --mesh / --shard (axis sizes only: the plan and the
    generated module's placement; devices are bound with use_mesh when it runs)."""
    mesh, shard = _pairs(getattr(args, "mesh", None), "--mesh", int), _pairs(getattr(args, "shard", None), "--shard")
    if not mesh and not shard:
        return {}
    return {"mesh": mesh, "shard": shard}


def _compile(args, backend=None, **extra):
    from .api import compile_file
    opts = _mesh_options(args)
    if getattr(args, "target", None):
        opts["target"] = args.target
    if getattr(args, "tune", None):
        opts["tune"] = args.tune
    if getattr(args, "softmax_to_favor", None):
        opts["softmax_to_favor"] = args.softmax_to_favor
    if getattr(args, "torch_compile", None):
        opts["compile"] = True
    return compile_file(args.file, backend=backend or args.backend, dims=_dims(args.dim),
                        dtype=args.dtype, **opts, **extra)


def cmd_compile(args) -> int:
    if args.output:       # a bad -o (the input itself, a directory, no such directory) before a slow compile
        from .output import check_targets
        check_targets([args.output], inputs=[args.file])
    prog = _compile(args)
    if args.output:
        for path in prog.save(args.output):
            print(f"wrote {path}")
    else:
        sys.stdout.write(prog.source)
    return 0


CHECK_TOL = {"float64": 1e-9, "float32": 2e-4, "float16": 2e-2, "bfloat16": 5e-2}


def check_program(prog, free: dict | None = None, seed: int = 0):
    """Run every export on random inputs; rows of (export, shape, abs err, rel err, ok)."""
    return [check_export(prog, name, free, seed) for name in prog.functions]


def check_export(prog, name, free: dict | None = None, seed: int = 0):
    """One export against the dense reference: (export, shape, abs err, rel err, ok).

    Inputs honour their declared properties and are well conditioned where inverted
    (reference.random_inputs); a check that would allocate more than the memory limit raises
    MemoryLimitError before allocating anything (reference.check_fits)."""
    from .reference import check_fits, dense_eval, random_inputs
    check_fits(prog.graph, name, free)
    inputs = random_inputs(prog.graph, name, free, seed=seed)
    ref = dense_eval(prog.graph, prog.graph.exports[name], inputs)
    out = to_numpy(prog[name](**to_backend(prog.backend_name, inputs)))
    if out.shape != ref.shape:
        return (name, out.shape, float("inf"), float("inf"), False)
    err = float(np.max(np.abs(out - ref))) if ref.size else 0.0
    rel = err / max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-30)
    tol = CHECK_TOL.get(prog.graph.type(prog.graph.exports[name]).dtype, 1e-4)
    return (name, ref.shape, err, rel, bool(rel <= tol or err <= tol))


def to_backend(backend: str, arrays: dict) -> dict:
    """numpy arrays as the arguments backend `backend` takes (its from_numpy)."""
    from .backends import backend_class
    return backend_class(backend).from_numpy(arrays)


def to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x, dtype=np.float64)


def cmd_check(args) -> int:
    """Check every file, every export; an error in one (a file that does not compile, an export
    that raises or exceeds the memory limit) is a FAIL row with its message (the full message,
    with its location, on stderr) and the next goes on.  Exit 1 when anything failed."""
    files = list(args.file)
    bad_files = 0
    for path in files:
        args.file = path
        print(f"{path} ({args.backend})", flush=True)
        try:
            prog = _compile(args)
        except Exception as e:      # noqa: BLE001 - reported as this file's FAIL row; the others go on
            _check_error(path, e)
            bad_files += 1
            continue
        print(f"  {'export':<16} {'shape':<18} {'max abs err':>12} {'rel err':>10}  result")
        failed = 0
        for name in prog.functions:
            try:
                name, shape, err, rel, ok = check_export(prog, name)
            except Exception as e:  # noqa: BLE001 - as above, for one export
                _check_error(name, e)
                failed += 1
                continue
            failed += not ok
            print(f"  {name:<16} {str(list(shape)):<18} {err:>12.3e} {rel:>10.2e}  {'PASS' if ok else 'FAIL'}")
        bad_files += failed > 0
    if len(files) > 1:
        print(f"{len(files) - bad_files} of {len(files)} files passed")
    return 1 if bad_files else 0


def _check_error(what, e):
    """A FAIL row for an error in `opdsl check` (its first line), the whole message on stderr."""
    if not isinstance(e, OpdslError):
        if os.environ.get("OPDSL_TRACEBACK"):
            raise e
        msg = _internal_error(e)
    else:
        msg = e.render()
    print(msg, file=sys.stderr, flush=True)
    print(f"  {what:<16} FAIL  {msg.splitlines()[0]}", flush=True)


def _internal_error(e) -> str:
    return (f"opdsl: internal error: {type(e).__name__}: {e}\n"
            "hint: this is a bug in opdsl, not in your program; please report it with the .op file "
            "(OPDSL_TRACEBACK=1 shows the traceback)")


def cmd_explain(args) -> int:
    from .api import explain_file
    opts = _mesh_options(args)
    sys.stdout.write(explain_file(args.file, _dims(args.dim), backend="jax" if opts else "numpy",
                                  format=args.format, **opts))
    return 0


def cmd_graph(args) -> int:
    from .api import compile_file
    from .plan_graph import write_program
    print(write_program(compile_file(args.file, backend="numpy", dims=_dims(args.dim)), args.output, args.after))
    return 0


def cmd_fmt(args) -> int:
    """Format files in place (atomically), or with --check / --diff only report; `-` is
    standard input to standard output.  Exit 1 under --check when a file is not formatted."""
    import difflib

    from .api import read_source
    from .fmt import format_source
    from .output import write_files
    unformatted = 0
    for path in args.file:
        text = sys.stdin.read() if path == "-" else read_source(path)
        new = format_source(text, "<stdin>" if path == "-" else path)
        if path == "-" and not (args.check or args.diff):
            sys.stdout.write(new)
            continue
        if new == text:
            continue
        unformatted += 1
        if args.check or args.diff:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(keepends=True),
                                                       new.splitlines(keepends=True),
                                                       f"{path} (as written)", f"{path} (formatted)"))
            continue
        mode = os.stat(path).st_mode & 0o7777
        write_files([(path, new)])
        os.chmod(path, mode)          # a formatted file keeps its permissions
        print(f"formatted {path}", file=sys.stderr)
    if args.check:
        n = len(args.file)
        print(f"{unformatted} of {n} file{'s' * (n != 1)} would be reformatted" if unformatted
              else f"{n} file{'s' * (n != 1)} already formatted", file=sys.stderr)
        return 1 if unformatted else 0
    return 0


def cmd_bench(args) -> int:
    """Time every export on every available backend (or --backends), print the table."""
    from .api import Program, read_source
    from .backend_bench import candidates, measure, resolve, table
    from .backends import available
    names = candidates(available())
    if args.backends:
        asked = [b.strip() for b in args.backends.split(",") if b.strip()]
        unknown = [b for b in asked if b not in names]
        if unknown:
            raise OpdslError(f"--backends: {', '.join(unknown)} not available here",
                             hint=f"available: {', '.join(names)}")
        names = asked
    text, dims = read_source(args.file), _dims(args.dim)
    def make(name):
        backend, opts = resolve(name)
        return Program(text, args.file, backend, dims, args.dtype, **opts)
    timings = measure(make, names, reps=args.reps, progress=sys.stderr.isatty())
    sys.stdout.write(f"{args.file}: {len(names)} backend{'s' * (len(names) != 1)}, dtype {args.dtype}\n")
    sys.stdout.write(table(timings))
    return 0


def parser() -> argparse.ArgumentParser:
    from .backends import names
    from .version import __version__
    p = argparse.ArgumentParser(prog="opdsl", description="Compile structured linear operators (.op files).")
    p.add_argument("--version", action="version", version=f"opdsl {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, many=False):
        sp.add_argument("file", nargs="+" if many else None, help=".op source file" + ("s" if many else ""))
        sp.add_argument("--dim", action="append", metavar="NAME=VALUE", help="set a dim (repeatable)")
        sp.add_argument("--dtype", default="float32", help="default dtype of tensors (float32, float64)")

    def mesh(sp):
        sp.add_argument("--mesh", action="append", metavar="AXIS=SIZE",
                        help="JAX: a device mesh axis and its size (repeatable), e.g. --mesh data=8")
        sp.add_argument("--shard", action="append", metavar="DIM=AXIS",
                        help="JAX: split dim DIM over mesh axis AXIS (repeatable), e.g. --shard B=data")

    c = sub.add_parser("compile", help="write the generated module", description="Compile FILE.op and write the "
                       "generated module (standalone source, or a TVM library + manifest).")
    common(c)
    c.add_argument("--backend", default="torch", choices=names() + ["auto"],
                   help="auto: the fastest backend measured on this machine (opdsl bench)")
    c.add_argument("-o", "--output", help="output path (default: print the source)")
    c.add_argument("--target", help="TVM target: llvm (default) or cuda")
    c.add_argument("--tune", type=int, metavar="TRIALS", help="TVM: tune with MetaSchedule for TRIALS trials")
    c.add_argument("--softmax-to-favor", type=int, metavar="M",
                   help="replace exact softmax_attention with FAVOR+ attention using M random features")
    c.add_argument("--torch-compile", action="store_true",
                   help="torch: run each export through torch.compile (inductor) when the module is loaded "
                   "(the written source is the same)")
    mesh(c)
    c.set_defaults(fn=cmd_compile)

    k = sub.add_parser("check", help="run every export against the dense reference",
                       description="Compile each export, run it on random inputs (declared dims; small values "
                       "for free dims) and compare with the dense numpy reference. Exits 1 on any failure.")
    common(k, many=True)
    k.add_argument("--backend", default="torch", choices=names())
    k.set_defaults(fn=cmd_check)

    e = sub.add_parser("explain", help="show the plan: IR after each pass, rules fired, costs",
                       description="Print, per export, the IR after each pass, the rules that fired and a cost "
                       "table (dense, source-order and optimized FLOPs; largest intermediate).")
    common(e)
    e.add_argument("--format", choices=("text", "json"), default="text",
                   help="json: the same report as a JSON document (schema: docs/tools.md)")
    mesh(e)
    e.set_defaults(fn=cmd_explain)

    g = sub.add_parser("graph", help="draw the IR with graphviz", description="Draw the IR (after the last "
                       "operator pass, or --after PASS) as SVG/PNG (needs the `dot` program) or DOT text.")
    common(g)
    g.add_argument("-o", "--output", required=True, help="plan.svg, plan.png or plan.dot")
    g.add_argument("--after", help="the pass after which to draw (default: the last operator-level pass)")
    g.set_defaults(fn=cmd_graph)

    b = sub.add_parser("bench", help="time every export on every available backend",
                       description="Compile FILE.op for every available backend, run each export on random "
                       "inputs of the declared sizes (free dims at their size hints, 256 without one) and "
                       "print the median time per call; the fastest is what backend='auto' picks.")
    common(b)
    b.add_argument("--backends", help="comma-separated backends to time (default: every available one)")
    b.add_argument("--reps", type=int, default=5, help="timed calls per export (default 5)")
    b.set_defaults(fn=cmd_bench)

    f = sub.add_parser("fmt", help="format .op files in place (--check: only report)",
                       description="Rewrite each FILE.op in its canonical layout (one statement per line, "
                       "aligned declarations, normalized spacing; comments and blank-line groups kept). "
                       "The formatted file compiles to the same program. `-` reads standard input and "
                       "writes standard output.")
    f.add_argument("file", nargs="+", help=".op source files, or - for standard input")
    f.add_argument("--check", action="store_true", help="write nothing; print a diff and exit 1 when a file "
                   "is not formatted (for CI)")
    f.add_argument("--diff", action="store_true", help="write nothing; print the diff of each file")
    f.set_defaults(fn=cmd_fmt)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except OpdslError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:     # `opdsl explain f.op | head`: the reader left; not an error of ours
        try:                    # keep Python's exit from writing to the closed pipe again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except Exception as e:  # noqa: BLE001 - a bug in opdsl: a message, not a traceback (docs/reliability.md)
        if os.environ.get("OPDSL_TRACEBACK"):
            raise
        print(_internal_error(e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
