"""The requirement files as pip reads them: the lines that name packages, and the key of the whole set.

The key names the dir a set of requirements is installed into: a hash of every requirement, the
Python version and the platform. An unchanged file keeps its key, so a restart finds its packages
installed; any change (a line, another Python) gets a fresh dir.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

__all__ = ["RequirementLine", "read_lines", "requirements_key"]

logger = logging.getLogger("dify_sandbox.packages")

# pip's rule: a comment starts at a ``#`` at the start of the line or after whitespace (not in ``url#frag``).
_COMMENT = re.compile(r"(^|\s)#.*$")


@dataclass(frozen=True, slots=True)
class RequirementLine:
    """One requirement as written (``pandas==3.1.1``) and parsed."""

    text: str
    requirement: Requirement

    @property
    def name(self) -> str:
        return self.requirement.name

    @property
    def canonical(self) -> str:
        return canonicalize_name(self.requirement.name)

    @property
    def applies(self) -> bool:
        """False when its environment marker (``; python_version < "3.10"``) excludes this interpreter."""
        marker = self.requirement.marker
        return marker is None or marker.evaluate()


def read_lines(files: Iterable[Path]) -> list[RequirementLine]:
    """Every parsable requirement in ``files``, in order (missing files, comments and pip options skipped)."""
    found: list[RequirementLine] = []
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("Cannot read requirements file %s: %s", path, exc)
            continue
        for line in lines:
            parsed = parse_line(line)
            if parsed is not None:
                found.append(parsed)
    return found


def parse_line(line: str) -> RequirementLine | None:
    """The requirement on ``line``, or None for a blank line, a comment, a pip option or an unparsable line."""
    text = _COMMENT.sub("", line).strip()
    if not text or text.startswith("-"):
        return None
    try:
        return RequirementLine(text, Requirement(text))
    except InvalidRequirement:
        logger.warning("Skipping unparsable requirement %r", text)
        return None


def requirements_key(lines: Iterable[RequirementLine]) -> str:
    """``cp311-linux-x86_64-<hash>``: the dir name of this set of requirements on this interpreter."""
    tag = f"{sys.implementation.cache_tag or sys.implementation.name}-{sysconfig.get_platform()}"
    digest = hashlib.sha256(tag.encode())
    for line in sorted({str(line.requirement) for line in lines}):
        digest.update(b"\0" + line.encode())
    return f"{tag.replace('_', '-')}-{digest.hexdigest()[:16]}"
