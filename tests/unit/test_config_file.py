"""The config file's unknown keys, with the known key each most resembles, and whether it holds the key."""

from __future__ import annotations

from pathlib import Path

from dify_sandbox.config import Settings
from dify_sandbox.config_file import UnknownKey, holds_api_key, unknown_keys

OWN = list(Settings.model_fields)


def test_official_layout_has_no_unknown_keys() -> None:
    """Every key of Dify's stock file, and our own section, is known."""
    document = {
        "app": {"port": 8194, "debug": True, "key": "dify-sandbox"},
        "max_workers": 4,
        "max_requests": 50,
        "worker_timeout": 5,
        "python_path": "/usr/local/bin/python3",
        "enable_network": True,
        "allowed_syscalls": None,
        "proxy": {"socks5": "", "http": "", "https": ""},
        "sandbox": {"executor": "fork", "workers": 2},
    }
    assert unknown_keys(document, OWN) == []


def test_typos_name_the_close_match() -> None:
    """A typo at any level names the key it most resembles; a stranger key names none."""
    document = {"max_worker": 4, "proxy": {"htps": ""}, "sandbox": {"log_levle": "INFO"}, "colour": "blue"}
    assert unknown_keys(document, OWN) == [
        UnknownKey("max_worker", "max_workers"),
        UnknownKey("proxy.htps", "proxy.https"),
        UnknownKey("sandbox.log_levle", "sandbox.log_level"),
        UnknownKey("colour", None),
    ]


def test_own_setting_at_top_level_points_to_its_section() -> None:
    """A setting of ours written outside `sandbox:` is named with where it belongs."""
    assert unknown_keys({"executor": "thread"}, OWN) == [UnknownKey("executor", "sandbox.executor")]


def test_holds_api_key(tmp_path: Path) -> None:
    """The key in force, as `app.key` or `sandbox.api_key`, is held by the file; another or an empty one is not."""
    path = tmp_path / "config.yaml"
    path.write_text("app:\n  key: k\n")
    assert holds_api_key(path, "k")
    assert not holds_api_key(path, "from-env")
    path.write_text("sandbox:\n  api_key: k\n")
    assert holds_api_key(path, "k")
    path.write_text("app:\n  key: ''\n  port: 1\n")
    assert not holds_api_key(path, "")
