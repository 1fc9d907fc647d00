"""A warning per refused ``X-Api-Key``, rate-limited per client address: a wrong key is seen, yet cannot flood the log.

A client stuck with a stale key (say, Dify after ``API_KEY`` changed) retries on every node run:
a line per request would bury everything else, and no line at all leaves the operator guessing
why Dify reports failures. So the first refusal from an address is logged, later ones within
``interval`` seconds are only counted, and the next line says how many were held back. The key
that was sent is never logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

__all__ = ["REFUSAL_LOG_INTERVAL_SECONDS", "RefusedKeyLog"]

logger = structlog.get_logger("dify_sandbox.api")

REFUSAL_LOG_INTERVAL_SECONDS = 60.0
# Addresses remembered at most; past it the quiet ones are forgotten (a scan from many addresses).
MAX_TRACKED_CLIENTS = 10_000


class RefusedKeyLog:
    """Logs refused requests at most once per client address per ``interval``; counts the rest."""

    def __init__(
        self, interval: float = REFUSAL_LOG_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        # Client address -> (when its last line was logged, refusals held back since).
        self._clients: dict[str, tuple[float, int]] = {}

    def refused(self, client: str, reason: str) -> int | None:
        """Records one refusal; returns the held-back count it logged with, or None when it held this one back."""
        now = self.clock()
        last = self._clients.get(client)
        if last is not None and now - last[0] < self.interval:
            self._clients[client] = (last[0], last[1] + 1)
            return None
        held_back = 0 if last is None else last[1]
        if last is None and len(self._clients) >= MAX_TRACKED_CLIENTS:
            self._forget_quiet(now)
        self._clients[client] = (now, 0)
        logger.warning(
            "Request refused: wrong or missing X-Api-Key",
            client=client,
            reason=reason,
            refused_unlogged_since_last=held_back,
            log_interval_s=self.interval,
        )
        return held_back

    def _forget_quiet(self, now: float) -> None:
        # An address past its interval would be logged afresh anyway; only its held-back count is lost.
        self._clients = {client: entry for client, entry in self._clients.items() if now - entry[0] < self.interval}
        if len(self._clients) >= MAX_TRACKED_CLIENTS:
            self._clients.clear()
