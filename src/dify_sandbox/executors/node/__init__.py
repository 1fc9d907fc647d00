"""The Node.js executor: a warm pool of started ``node`` processes, one per run (``pool.py``), and
the search for what a finished run left running (``leftovers.py``)."""
