"""Confinement of runs: a Landlock domain and a seccomp denylist per run, planned once per worker."""
