"""The core: what an operation does to one user's sessions, with no concurrency and no I/O."""
