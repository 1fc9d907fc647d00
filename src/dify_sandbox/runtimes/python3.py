"""How a Python snippet is executed inside the process that runs it.

Shared by the fork child and the thread executor, so both give the same result semantics as
the official service: a fresh ``__main__`` module, the preload first, a traceback on stderr and
exit code 255 for an uncaught exception, ``SystemExit(n)`` giving ``n``.
"""

from __future__ import annotations

import linecache
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from dify_sandbox.executors._rlimits import limit_code_of

__all__ = [
    "CODE_FILENAME",
    "EXIT_UNCAUGHT",
    "PRELOAD_FILENAME",
    "Compiler",
    "SnippetExit",
    "compile_source",
    "exit_code_of",
    "fresh_main_module",
    "run_snippet",
]

# The official prescript's excepthook exits with -1, which the OS reports as 255.
EXIT_UNCAUGHT = 255
CODE_FILENAME = "<code>"
PRELOAD_FILENAME = "<preload>"


def exit_code_of(exc: SystemExit, stderr: TextIO) -> int:
    """The process status Python itself would give for ``SystemExit``."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, bool) or not isinstance(code, int):
        print(code, file=stderr)
        return 1
    return code & 0xFF


Compiler = Callable[[str, str], types.CodeType]


def compile_source(source: str, filename: str) -> types.CodeType:
    """Compiles a snippet and registers its lines, so tracebacks show them as they would for a file."""
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    return compile(source, filename, "exec")


@dataclass(frozen=True, slots=True)
class SnippetExit:
    """How a snippet ended: its exit code, and the limit its uncaught exception shows it hit (0: none)."""

    code: int
    limit: int = 0


def run_snippet(
    code: str, preload: str, main_module: types.ModuleType, stderr: TextIO, compiler: Compiler = compile_source
) -> SnippetExit:
    """Runs ``preload`` then ``code`` as ``__main__``. Never raises."""
    try:
        for source, filename in ((preload, PRELOAD_FILENAME), (code, CODE_FILENAME)):
            if not source:
                continue
            try:
                compiled = compiler(source, filename)
            except (SyntaxError, ValueError) as exc:
                # As a script would show it: the error alone, not the frames of the code compiling it.
                traceback.print_exception(type(exc), exc, None, file=stderr)
                stderr.flush()
                return SnippetExit(EXIT_UNCAUGHT)
            exec(compiled, main_module.__dict__)  # noqa: S102 - running it is the job
    except SystemExit as exc:
        return SnippetExit(exit_code_of(exc, stderr))
    except BaseException as exc:
        _print_user_traceback(exc, stderr)
        return SnippetExit(EXIT_UNCAUGHT, limit_code_of(exc))
    return SnippetExit(0)


def fresh_main_module() -> types.ModuleType:
    """A new, empty ``__main__`` module, as a fresh interpreter would have."""
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = __builtins__
    module.__file__ = CODE_FILENAME
    return module


def _print_user_traceback(exc: BaseException, stderr: TextIO) -> None:
    # Drop our own frame so the traceback starts in the user's code.
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    traceback.print_exception(type(exc), exc.with_traceback(tb), tb, file=stderr)
    stderr.flush()
