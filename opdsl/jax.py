"""opdsl.jax: params for the JAX backend.

A program compiled with ``backend="jax"`` that declares ``param``s gets, in its
generated module (and so in ``opdsl compile --backend jax -o layer.py``):

* ``init_params(key)`` (also ``init``): a dict of fresh param values, the
  params pytree, drawn with the initializers of the ``.op`` file;
* every export with params also accepts that dict as its first argument, so
  ``apply(params, x=x)`` works next to ``apply(x=x, L=..., R=...)``; ``apply``
  is the export named ``apply``, or else an alias of the first export.

In Python, ``prog.init(key)`` and ``prog.apply(params, **inputs)`` reach the
same functions (opdsl/api.py).  Everything is a plain function of arrays, so it
composes with ``jax.jit``, ``jax.grad`` and ``jax.vmap``.

The code emission is the JAX backend's, next to the torch backend's layer code:
``JaxBackend.params_source`` and ``JAX_INIT`` in backends/jax_backend.py.
"""
