"""fusekit's version, in a module of its own: caches key on it from every layer."""

__version__ = "0.1.0"
