"""Bare-fork ceiling driver, run as a standalone script by ``ceiling.py`` (one process per core).

A warm parent (httpx, json and base64 already imported, the snippet already compiled) forks one child per run;
the child executes the snippet with stdout on a pipe and leaves with ``os._exit``, the parent reads the pipe to EOF
and reaps it. No HTTP, no isolation, no limits: the most runs/s a fork-per-run design can reach on this machine.

Takes ``{"code", "expected_stdout", "seconds", "start_at"}`` as JSON in its only argument and prints
``{"runs", "wrong", "seconds", "cpu_seconds"}`` as JSON on stdout. ``cpu_seconds`` covers the driver and its
reaped children.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import sys
import time
from types import CodeType

import httpx

WARM_MODULES = (base64, httpx, json)  # imported so each child finds them in sys.modules, as in a zygote


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_once(code: CodeType) -> tuple[bytes, int]:
    """Fork a child that executes ``code`` with stdout on a pipe; return its output and wait status."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            os.close(read_fd)
            os.dup2(write_fd, 1)
            os.close(write_fd)
            exec(code, {"__name__": "__main__"})
            sys.stdout.flush()
        except BaseException:
            status = 1
        os._exit(status)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    _, wait_status = os.waitpid(pid, 0)
    return b"".join(chunks), wait_status


def main() -> None:
    config = json.loads(sys.argv[1])
    code = compile(config["code"], "<snippet>", "exec")
    expected = config["expected_stdout"].encode()
    sys.stdout.flush()  # an empty buffer at fork, so no child repeats the parent's output
    time.sleep(max(0.0, config["start_at"] - time.time()))  # both drivers start together
    runs = wrong = 0
    cpu_start, start = cpu_seconds(), time.perf_counter()
    deadline = start + config["seconds"]
    while time.perf_counter() < deadline:
        output, wait_status = run_once(code)
        runs += 1
        wrong += output != expected or wait_status != 0
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    json.dump({"runs": runs, "wrong": wrong, "seconds": elapsed, "cpu_seconds": cpu}, sys.stdout)


if __name__ == "__main__":
    main()
