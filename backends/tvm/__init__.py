"""The TVM backend (docs/backends.md): each export of a program becomes one TVM PrimFunc.

- backend.py: TvmBackend (compile, cache, the Python entry points, the manifest, save), with
  runtime.py (the Python around the kernels in a generated module) and target.py (targets,
  the CPU thread pool: `set_num_threads`);
- builder.py: primitive graph -> TE stages, through the emit table in emit.py, whose entries
  live in views.py, elementwise.py, contract.py, fft.py and linalg.py, over the stage roles
  and complex pairs of stages.py and the index arithmetic of index.py;
- schedule.py: fusion and the CPU / GPU schedules; tune.py: ``tune=TRIALS``;
- bounds.py: bounds-checked kernels, for the tests (tests/tvm_bounds_check.py).
"""
