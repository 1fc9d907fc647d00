"""The exception hierarchy of the service.

Outcomes of user code (non-zero exit, timeout, output limit) are never exceptions: they are
fields of :class:`~dify_sandbox.executors.base.RunResult`. Exceptions describe failures of the
service itself or of a request, and ``api/handlers.py`` maps each to the API's error envelope::

    SandboxError
    ├── ConfigError                     invalid settings; start-up stops
    ├── DependencySyncError             a requirement could not be installed (code -500)
    ├── ExecutorError                   the service could not run the snippet (code -500)
    │   ├── ZygoteUnavailableError      the zygote died or is restarting
    │   ├── ProtocolError               a malformed frame crossed the zygote boundary
    │   └── ForcedStopError             a forced shutdown stopped the run
    └── RequestError                    the request itself is wrong (HTTP 400, code -400)
        ├── UnsupportedLanguageError
        ├── NetworkDisabledError        enable_network asked while disabled (HTTP 200, code -400)
        ├── PayloadTooLargeError        (HTTP 413)
        └── OverloadedError             too many runs in flight (HTTP 503, code -503)
            └── ShuttingDownError       the server is draining
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DependencySyncError",
    "ExecutorError",
    "ForcedStopError",
    "NetworkDisabledError",
    "OverloadedError",
    "PayloadTooLargeError",
    "ProtocolError",
    "RequestError",
    "SandboxError",
    "ShuttingDownError",
    "UnsupportedLanguageError",
    "ZygoteUnavailableError",
]


class SandboxError(Exception):
    """Base of every error the service raises on purpose.

    Errors do not cross the zygote boundary as objects: the zygote reports an errno in a frame and
    the worker raises the error (see ``executors/zygote/protocol.py``).
    """


class ConfigError(SandboxError):
    """A setting is missing or invalid; the service refuses to start."""


class DependencySyncError(SandboxError):
    """``update`` synced the requirements, but some could not be installed; the message names them."""


class ExecutorError(SandboxError):
    """The executor could not run the snippet; the request fails with code -500."""


class ZygoteUnavailableError(ExecutorError):
    """The zygote process died, or did not come back in time after a restart."""


class ProtocolError(ExecutorError):
    """A frame from the zygote did not match the protocol."""


class ForcedStopError(ExecutorError):
    """A second SIGINT stopped the server without waiting for the run; it was killed unfinished."""

    def __init__(self, message: str = "server is shutting down; the run was stopped before it finished") -> None:
        super().__init__(message)


class RequestError(SandboxError):
    """The request is malformed; it is answered with HTTP 400 and code -400."""

    http_status = 400
    code = -400


class UnsupportedLanguageError(RequestError):
    """The language is neither ``python3`` nor ``nodejs``."""

    def __init__(self, message: str = "unsupported language") -> None:
        super().__init__(message)


class NetworkDisabledError(RequestError):
    """The run asked for network access while the operator disabled it (official: HTTP 200)."""

    http_status = 200

    def __init__(self, message: str = "network is disabled, please enable it in the configuration") -> None:
        super().__init__(message)


class PayloadTooLargeError(RequestError):
    """The request body is larger than the configured limit."""

    http_status = 413
    code = -413


class OverloadedError(RequestError):
    """Too many runs are in flight; Dify shows HTTP 503 as "service unavailable"."""

    http_status = 503
    code = -503

    def __init__(self, message: str = "Too many requests") -> None:
        super().__init__(message)


class ShuttingDownError(OverloadedError):
    """The server is draining and takes no new runs."""

    def __init__(self, message: str = "server is shutting down") -> None:
        super().__init__(message)
