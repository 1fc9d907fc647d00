"""The packages snippets may import: read from the requirements files, versions from the installed dists.

Nothing is installed here: packages are installed when the image or venv is built. This module
only lists them (``/v1/sandbox/dependencies``) and names their modules for the zygote to preload.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

__all__ = ["BUILTIN_PACKAGES", "Dependency", "import_names", "read_requirements"]

logger = logging.getLogger("dify_sandbox.dependencies")

# Always listed, as the official service does: snippets (and Dify's Jinja2 node) rely on them.
BUILTIN_PACKAGES = ("jinja2", "httpx", "requests")


@dataclass(frozen=True, slots=True)
class Dependency:
    """One package as the official API lists it."""

    name: str
    version: str


def read_requirements(files: Iterable[Path]) -> list[Dependency]:
    """The built-in packages and those named in ``files`` (missing files skipped), each once, with versions."""
    seen = {canonicalize_name(name): Dependency(name, _installed_version(name)) for name in BUILTIN_PACKAGES}
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("Cannot read requirements file %s: %s", path, exc)
            continue
        for line in lines:
            name = _requirement_name(line)
            if name is None or canonicalize_name(name) in seen:
                continue
            seen[canonicalize_name(name)] = Dependency(name, _installed_version(name))
    return list(seen.values())


def import_names(dependencies: Iterable[Dependency]) -> list[str]:
    """Top-level modules provided by the installed ``dependencies`` (for preloading)."""
    wanted = {canonicalize_name(dep.name) for dep in dependencies if dep.version}
    modules = []
    for module, dists in importlib.metadata.packages_distributions().items():
        if module.startswith("_") or not module.isidentifier():
            continue
        if any(canonicalize_name(dist) in wanted for dist in dists):
            modules.append(module)
    return sorted(modules)


def _requirement_name(line: str) -> str | None:
    text = line.split("#", 1)[0].strip()
    if not text or text.startswith("-"):
        return None
    try:
        return Requirement(text).name
    except InvalidRequirement:
        logger.warning("Skipping unparsable requirement %r", text)
        return None


def _installed_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""
