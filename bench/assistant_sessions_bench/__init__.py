"""The load benchmark of assistant-sessions: ``assistant-sessions bench``.

It is a package of its own, ``assistant_sessions_bench`` (``bench/assistant_sessions_bench`` in
the repository), shipped in the same wheel as the library, which never imports it: the
``assistant-sessions`` command finds ``bench`` through its ``assistant_sessions.commands`` entry
point, :func:`main`. In a checkout, ``python -m bench`` runs the same. The benchmark reaches the
library only through names made for it: the public ``assistant_sessions`` names, the adapter
packages, ``assistant_sessions.testing`` and the core, :mod:`assistant_sessions._core`.

It measures the session store against two baselines run in the same process, interleaved, on
the same seeded workload: the *floor* (the store's bookkeeping called directly, no concurrency
machinery) and a *lock store* (the same semantics guarded by one ``anyio.Lock`` per user, what a
user would write by hand); and, where google-adk is installed, Google ADK's session services
doing the same lookup-or-create with their own API, the in-memory one beside the floor behind
one schedule point a call (the ceiling of any store whose calls each yield). It reports
throughput, latency percentiles and their ratios to the baselines, memory per stored session and
per live actor, the cost of a sweep, and checks that every resolved user ends with exactly one
session (a duplicate fails the run).

Run ``assistant-sessions bench --help`` for the options. The modules:

* ``_workload``: the seeded operations and prefill;
* ``_baselines``: the floor, the lock store and the checkpointed floor;
* ``_adk``: the Google ADK baselines (optional: InMemorySessionService beside the in-memory
  store, DatabaseSessionService beside ``-a postgres --processes``);
* ``_run``: the subjects and their timed runs;
* ``_memory``: the memory phase (heap per session and per actor, idle retirement);
* ``_sweep``: the sweep phase;
* ``_check``: the exactly-once check;
* ``_results``: result types, medians, ratios, targets, JSON;
* ``_adapters``: the registry of adapter factories (``--adapter``);
* ``_processes``: several worker processes on shared storage (``--processes``);
* ``_cleanup``, ``_postgres``: what a run writes to a Redis or PostgreSQL server (key prefixes,
  schemas of its own), deleted when it ends;
* ``_ceiling``: the SQLite write ceiling (``--write-ceiling``);
* ``_report``: tables, charts and the JSON file;
* ``_options``: the argument parser, the plan of points and phases, and its time estimate;
* ``_cli``: the command line, :func:`main`: runs the plan and prints the results;
* ``_modes``: its other modes, ``--processes`` and ``--write-ceiling``.
"""

from __future__ import annotations

from ._cli import main

__all__ = ["main"]
