"""``python -m bench``: the load benchmark, run from the repository.

The benchmark itself lives in :mod:`assistant_sessions.benchmark` so that the installed
``assistant-sessions bench`` command runs the same code.
"""
