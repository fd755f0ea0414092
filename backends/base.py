"""The Backend protocol: what a backend declares and implements, and all the rest of opdsl asks of it.

The compiler (opdsl/api.py), the command line (opdsl/cli.py) and ``@opdsl.jit``
(opdsl/jit_function.py) use a backend only through these attributes and
methods; none of them asks for a backend by name.  A backend is registered by
name in backends/__init__.py (``register_backend``) and found there.

Declared (class attributes):

- ``name``; ``dtypes``: dtype name -> its spelling in generated code (what it cannot
  spell, it does not support); ``emit``: primitive -> emit function, the whole table
  in the class body;
- how tensors come in: ``array`` names them in messages; ``array_module`` is the
  framework whose arrays ``@opdsl.jit`` accepts (None: any array the generated code
  reads; ``refused_array`` says why one is not); ``from_numpy`` converts numpy arrays
  (``opdsl check``, the tests);
- ``has_device``: results follow the arguments' device (``@opdsl.jit`` keys its cache
  by device);
- ``emits_initializers``: the generated module has ``init_params`` (``param``
  declarations with their initializers; ``Program.init``);
- ``reserved``: names the generated module binds (imports, helpers), which
  ``@opdsl.jit`` keeps user names away from; ``layer_api``: parameter names of the
  generated layer code.

Implemented: ``generate`` (primitive graph -> source text), ``load`` (source -> a
module with one function per export and an ``ArgumentError``), ``save`` (``opdsl
compile -o``), ``signature`` (an export's arguments), and the hooks ``wrap``,
``check`` (before generating) and ``check_source`` (after).  A Python-source backend
subclasses ``PythonBackend`` (backends/pycodegen.py), which implements all of it from
the emit table; tests/test_backend_protocol.py adds one from a single file.
"""
from __future__ import annotations

from opdsl.errors import BackendError
from opdsl.ir import Graph


class Backend:
    name = ""
    dtypes: dict = {}
    emit: dict = {}                  # primitive name -> emit function (the backend's whole table)
    array = "a numpy array"          # what the generated functions take, for messages
    array_module: str | None = None  # @opdsl.jit: the framework whose arrays a traced call must pass,
    arrays = "arrays"                # those arrays in messages ("torch tensors"),
    convert = ""                     # and how to make one ("torch.as_tensor(...)")
    sparse_modules: tuple = ()       # other libraries whose sparse matrices it takes (numpy: scipy)
    has_device = False
    emits_initializers = False
    reserved: tuple = ()
    sparse_check: str | None = None  # code of the `_check_sparse` of its modules (None: no sparse arguments)
    layer_api: tuple = ()

    def __init__(self, **options):
        if options:
            raise BackendError(f"the {self.name} backend takes no options, got {', '.join(options)}")

    # ---- how tensors come in ----------------------------------------------------------
    @staticmethod
    def from_numpy(arrays: dict) -> dict:
        """numpy arrays as the arguments this backend's functions take (numpy itself by default)."""
        return arrays

    @classmethod
    def refused_array(cls, value) -> str | None:
        """Why @opdsl.jit cannot pass array `value` to this backend's functions (None: it can)."""
        t = type(value)
        root = t.__module__.split(".")[0]
        if cls.array_module is None or root == cls.array_module or root in cls.sparse_modules:
            return None
        return f"is a {t.__module__}.{t.__name__}; the {cls.name} backend takes {cls.arrays}"

    # ---- compile, load, save ------------------------------------------------------------
    def generate(self, g: Graph) -> str:
        raise NotImplementedError

    def load(self, source: str, graph: Graph):
        raise NotImplementedError

    def save(self, program, path) -> list[str]:
        """Write the compiled artifact(s) for `opdsl compile -o`; returns the paths written.

        Through opdsl/output.py: never over the input file, never a partial module."""
        from opdsl.output import write_files
        return write_files([(path, program.source)], inputs=[program.filename])

    def wrap(self, fn, graph: Graph, export: str):
        """Hook: a backend may wrap each loaded function."""
        return fn

    # ---- checks -------------------------------------------------------------------------
    def dtype(self, d: str) -> str:
        return self.dtypes[d]

    def signature(self, g: Graph, name: str) -> list[tuple]:
        """[(argument name, {"shape", "dtype", "role", "sparse"})] of an export, in the source's order."""
        sparse = set(g.meta.get("sparse", ()))
        return [(a, {"shape": s, "dtype": d, "role": r, "sparse": a in sparse})
                for a, s, d, r in g.meta["signatures"][name]]

    def check(self, g: Graph) -> None:
        """Before generating: raise BackendError, at the declaration, for a tensor whose dtype the
        backend cannot spell (e.g. bfloat16 on numpy)."""
        for v in g.live():
            n = g[v]
            d = getattr(n.type, "dtype", None)
            if d is None or not n.is_arg:     # declared tensors; intermediates may be complex (rfft)
                continue
            try:
                self.dtype(d)
            except KeyError:
                ok = ", ".join(self.dtypes)
                raise BackendError(f"the {self.name} backend does not support {d}", n.span,
                                   hint=f"it supports {ok}; use another dtype or backend") from None

    def check_source(self, source: str, g: Graph) -> None:
        """After generating: raise BackendError when the generated source cannot be right (a
        Python-source backend checks that no user name clashes with its own names)."""
