"""The runtime: when operations run (actors, supervisor, sweeps) and what they publish."""
