"""opdsl's version, in a module of its own: generated code and the cache key read it without
importing the package's top level (which imports the compiler)."""
__version__ = "0.1.0"
