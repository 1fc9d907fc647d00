"""Pure parts of the dependency sync: requirement lines, the key of a set, the schedule, the import hint."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dify_sandbox.config import Settings
from dify_sandbox.packages import layout
from dify_sandbox.packages.requirements import parse_line, read_lines, requirements_key
from dify_sandbox.packages.schedule import DEFAULT_INTERVAL, FIRST_RETRY, next_delay, parse_go_duration
from dify_sandbox.packages.status import PackageStatus, SyncStatus
from dify_sandbox.packages.view import PackagesView


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("pandas==3.1.1", "pandas"),
        ("  numpy>=2 # the comment", "numpy"),
        ("httpx[socks]==0.28.1", "httpx"),
        ("# only a comment", None),
        ("", None),
        ("-r other.txt", None),
        ("--index-url http://x/simple", None),
        ("not a requirement ===", None),
    ],
)
def test_requirement_lines_are_read_as_pip_reads_them(line, name):
    """Comments, blank lines and pip options name no package."""
    parsed = parse_line(line)
    assert (parsed.name if parsed else None) == name


def test_the_key_ignores_order_and_comments_and_changes_with_a_line(tmp_path: Path):
    """Reordering or commenting a file keeps its key; adding a package gives a new one."""
    first = tmp_path / "a.txt"
    first.write_text("pandas==3.1.1\nnumpy\n")
    second = tmp_path / "b.txt"
    second.write_text("# packages\nnumpy\n\npandas==3.1.1  # data frames\n")
    assert requirements_key(read_lines([first])) == requirements_key(read_lines([second]))
    second.write_text("numpy\npandas==3.1.1\ntinypkg\n")
    assert requirements_key(read_lines([first])) != requirements_key(read_lines([second]))
    assert requirements_key([]).startswith("cpython-")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800.0), ("1h30m", 5400.0), ("90s", 90.0), ("500ms", 0.5), ("45", 45.0), (None, DEFAULT_INTERVAL)],
)
def test_the_update_interval_is_read_as_a_go_duration(text, seconds):
    """`python_deps_update_interval` takes Go durations, as the official service does."""
    assert parse_go_duration(text) == seconds


def test_an_unparsable_interval_falls_back_to_the_default():
    """A value Go would reject does not stop the service: the official default applies."""
    assert parse_go_duration("soon") == DEFAULT_INTERVAL


def test_failures_back_off_up_to_the_interval():
    """After failures the next sync comes sooner than the interval, doubling each time."""
    assert next_delay(600.0, 0) == 600.0
    assert next_delay(600.0, 1) == FIRST_RETRY
    assert next_delay(600.0, 2) == 2 * FIRST_RETRY
    assert next_delay(600.0, 20) == 600.0


def test_a_failed_import_of_a_pending_package_gets_a_hint(tmp_path: Path):
    """The hint names the package and how long ago its install started; other imports get none."""
    settings = Settings(packages_dir=tmp_path)
    status = SyncStatus(key="k", result="running", packages={"pandas": PackageStatus("pandas", "pending", time.time())})
    status.write(tmp_path / "k" / "status.json")
    view = PackagesView(settings, "k")
    hint = view.import_hint("Traceback ...\nModuleNotFoundError: No module named 'pandas'\n")
    assert hint.startswith("pandas is being installed, started ")
    assert hint.endswith(" s ago\n")
    assert view.import_hint("ModuleNotFoundError: No module named 'scipy'\n") == ""


def test_a_temp_package_dir_others_can_write_is_not_used(tmp_path):
    """The fallback's name in the shared temp dir is predictable: a dir another user could plant is passed over."""
    planted = tmp_path / "dify-sandbox-packages-1000"
    planted.mkdir()
    planted.chmod(0o777)  # as another user would leave it
    chosen = layout._own_temp_dir(planted)
    assert chosen != planted
    assert not chosen.stat().st_mode & 0o022
    chosen.rmdir()
    planted.chmod(0o755)
    assert layout._own_temp_dir(planted) == planted
