"""``python -m bench``: the load benchmark, run from the repository root.

A thin alias: the benchmark is the package :mod:`assistant_sessions_bench` (in
``bench/assistant_sessions_bench``), installed with the library, which is what the installed
``assistant-sessions bench`` command runs.
"""
