"""The runtime: when operations run.

``storage`` (the one boundary to an adapter), ``actor`` (turns of one user), ``pump`` (the
executor of busy actors on detached storage, and its storage workers), ``registry`` (live
actors, restarts through ``restarts``), ``sweeps``, ``supervisor`` (the periodic loop),
``events`` and ``metrics``. :class:`Runtime` puts them together for a store.
"""

from .runtime import Runtime

__all__ = ["Runtime"]
