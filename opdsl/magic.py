"""The IPython extension: `%load_ext opdsl` registers the `%%opdsl` cell magic.

`%%opdsl [NAME] [--backend B] [--dim n=64 ...] [--dtype D]`: the cell is .op source, compiled into
a Program bound to NAME in the user's namespace (displayed, opdsl/notebook.py, when no NAME is
given).  An error prints its message with the caret under the offending cell text, without a
traceback.  IPython is imported only when the extension loads.
"""
from __future__ import annotations

import sys


def load_ipython_extension(ipython) -> None:
    """`%load_ext opdsl`: register the %%opdsl cell magic."""
    ipython.register_magics(_magics_class())


def _magics_class():
    from IPython.core.magic import Magics, cell_magic, magics_class
    from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

    @magics_class
    class OpdslMagics(Magics):
        @magic_arguments()
        @argument("name", nargs="?", help="bind the compiled Program to this name")
        @argument("--backend", default="torch", help="numpy, torch, jax or tvm (default torch)")
        @argument("--dim", action="append", metavar="NAME=VALUE", help="set a dim (repeatable)")
        @argument("--dtype", default="float32", help="default dtype of tensors")
        @cell_magic
        def opdsl(self, line, cell):
            """Compile the cell (.op source) into an opdsl Program."""
            from .api import compile as compile_source
            from .cli import _dims
            from .errors import OpdslError
            args = parse_argstring(self.opdsl, line)
            if args.name is not None and not args.name.isidentifier():
                print(f"opdsl: {args.name!r} is not a Python name to bind the program to", file=sys.stderr)
                return None
            try:
                prog = compile_source(cell, backend=args.backend, dims=_dims(args.dim), dtype=args.dtype,
                                      filename=f"<cell {args.name}>" if args.name else "<cell>")
            except OpdslError as err:
                print(err.render(), file=sys.stderr)
                return None
            if args.name:
                self.shell.user_ns[args.name] = prog
                return None
            return prog

    return OpdslMagics
