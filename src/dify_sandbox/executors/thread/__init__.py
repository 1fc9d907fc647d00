"""The thread executor (opt-in, for trusted code): snippets run in pool threads of the worker
(``executor.py``, ``snippet_threads.py``), each run's output captured apart from every other's
(``output_capture.py``)."""
