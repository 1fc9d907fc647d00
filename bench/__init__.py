"""Benchmark of dify-sandbox-py: starts the real server and measures it side by side with reference figures.

Run it with ``bench/run`` (or ``.venv/bin/python -m bench`` from the repository root); see ``bench/README.md``.
"""
