"""Benchmarks of baton_dramatiq against bare Dramatiq and its peers.

Run ``python -m bench`` (``--quick`` for a smoke run); see README.md, "Performance".
Not part of the test suite: pytest collects ``tests/`` only.
"""
