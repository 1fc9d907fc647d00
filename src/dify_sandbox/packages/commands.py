"""``dify-sandbox deps sync`` (for a Dockerfile ``RUN`` or an init container) and ``dify-sandbox deps list``.

Both print JSON on stdout (logs go to stderr). ``sync`` installs what the requirement files add,
exactly as the service does at start, and exits non-zero if anything is left uninstalled.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from dify_sandbox.config import Settings
from dify_sandbox.packages.layout import with_packages_dir
from dify_sandbox.packages.report import dependency_report
from dify_sandbox.packages.sync import RequirementsSync
from dify_sandbox.packages.view import PackagesView

__all__ = ["EXIT_NOT_INSTALLED", "list_command", "sync_command"]

EXIT_NOT_INSTALLED = 1


def _print(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def sync_command(settings: Settings) -> int:
    """Syncs now; 0 only when every requirement is installed."""
    settings = with_packages_dir(settings)
    report = RequirementsSync(settings).run()
    view = PackagesView(settings, report.key)
    _print({**dependency_report(settings, view), "installed_now": list(report.installed_now)})
    return 0 if report.ok else EXIT_NOT_INSTALLED


def list_command(settings: Settings) -> int:
    """Lists the packages with their versions and states; always 0."""
    settings = with_packages_dir(settings)
    key, _ = RequirementsSync(settings).current()
    _print(dependency_report(settings, PackagesView(settings, key)))
    return 0
