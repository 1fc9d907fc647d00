"""The packages snippets may import: read from the requirements files, versions from the installed dists.

Nothing is installed here (``packages/`` syncs the files into the package dir): this module only
lists them (``/v1/sandbox/dependencies``) and names their modules for the zygote to preload. The
files are read as the sync reads them (``packages.requirements``).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from dify_sandbox.packages.requirements import read_lines

__all__ = ["BUILTIN_PACKAGES", "Dependency", "import_names", "read_requirements"]

# Always listed, as the official service does: snippets (and Dify's Jinja2 node) rely on them.
BUILTIN_PACKAGES = ("jinja2", "httpx", "requests")


@dataclass(frozen=True, slots=True)
class Dependency:
    """One package as the official API lists it."""

    name: str
    version: str


def read_requirements(files: Iterable[Path]) -> list[Dependency]:
    """The built-in packages and those named in ``files`` (missing files skipped), each once, with versions."""
    seen: dict[str, Dependency] = {
        canonicalize_name(name): Dependency(name, _installed_version(name)) for name in BUILTIN_PACKAGES
    }
    for line in read_lines(files):
        if line.canonical not in seen:
            seen[line.canonical] = Dependency(line.name, _installed_version(line.name))
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


def _installed_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""
