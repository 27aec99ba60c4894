"""Benchmarks: hit ratio, latency, memory, persistent and multi-level backends.

Run ``python -m benchmarks`` for every table, or ``python -m benchmarks NAME [args]`` for one.
Speed is always reported beside Django's own backends measured in the same run.
"""
