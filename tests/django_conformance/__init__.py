"""Django's own cache test-suite (``BaseCacheTests``), vendored, run against our backends.

See ``docs/conformance.md`` for how to run it against another backend.
"""
