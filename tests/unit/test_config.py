"""Settings: defaults, YAML in the official layout, env precedence, validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dify_sandbox.config import load_settings
from dify_sandbox.errors import ConfigError

OFFICIAL_YAML = """
app:
  port: 8195
  debug: True
  key: from-yaml
max_workers: 4
max_requests: 50
worker_timeout: 5
python_path: /usr/local/bin/python3
enable_network: True
proxy:
  socks5: ''
  http: 'http://user:secret@proxy:3128'
  https: ''
sandbox:
  executor: fork
  output_limit_bytes: 4096
"""


def test_defaults_never_disable_the_service() -> None:
    """Without a file or env, every limit has a usable default."""
    settings = load_settings()
    assert settings.port == 8194
    assert settings.api_key.get_secret_value() == "dify-sandbox"
    assert settings.max_workers >= 500
    assert settings.max_requests >= settings.max_workers
    assert settings.worker_timeout == 15
    assert settings.executor == "fork"
    assert settings.keep_alive_seconds >= 15


def test_official_yaml_is_read(tmp_path: Path) -> None:
    """The official conf/config.yaml keys map onto the settings."""
    path = tmp_path / "config.yaml"
    path.write_text(OFFICIAL_YAML)
    settings = load_settings(config_file=path)
    assert settings.port == 8195
    assert settings.api_key.get_secret_value() == "from-yaml"
    assert settings.max_workers == 4
    assert settings.worker_timeout == 5
    assert settings.http_proxy == "http://user:secret@proxy:3128"
    assert settings.output_limit_bytes == 4096


def test_default_file_location_is_cwd_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """conf/config.yaml under the working directory is read without being named."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("max_requests: 7\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings().max_requests == 7


def test_env_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Env vars with the official names win over the file; the CLI wins over both."""
    path = tmp_path / "config.yaml"
    path.write_text(OFFICIAL_YAML)
    monkeypatch.setenv("MAX_WORKERS", "9")
    monkeypatch.setenv("API_KEY", "from-env")
    monkeypatch.setenv("SANDBOX_PORT", "9000")
    settings = load_settings(config_file=path)
    assert settings.max_workers == 9
    assert settings.api_key.get_secret_value() == "from-env"
    assert load_settings(config_file=path, port=9100).port == 9100


@pytest.mark.parametrize(("raw", "seconds"), [("15", 15.0), ("15s", 15.0), ("500ms", 0.5), ("1m", 60.0), ("0", 15.0)])
def test_worker_timeout_accepts_durations(monkeypatch: pytest.MonkeyPatch, raw: str, seconds: float) -> None:
    """WORKER_TIMEOUT takes plain seconds and Go-style durations; 0 means the default."""
    monkeypatch.setenv("WORKER_TIMEOUT", raw)
    assert load_settings().worker_timeout == seconds


@pytest.mark.parametrize(
    ("name", "value"),
    [("MAX_WORKERS", "abc"), ("WORKER_TIMEOUT", "soon"), ("SANDBOX_EXECUTOR", "docker"), ("MAX_REQUESTS", "0")],
)
def test_invalid_value_names_the_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """A bad value raises one ConfigError line naming the env var."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert name in str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_yaml_is_a_config_error(tmp_path: Path) -> None:
    """A YAML syntax error stops start-up with the file named."""
    path = tmp_path / "config.yaml"
    path.write_text("app: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config\.yaml"):
        load_settings(config_file=path)


def test_comma_lists_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """List settings take comma-separated env values."""
    monkeypatch.setenv("ALLOWED_SYSCALLS", "1, 2,3")
    monkeypatch.setenv("SANDBOX_PRELOAD_MODULES", "json,re")
    settings = load_settings()
    assert settings.allowed_syscalls == [1, 2, 3]
    assert settings.preload_modules == ["json", "re"]


def test_redacted_hides_key_and_proxy_password(tmp_path: Path) -> None:
    """The start-up dump shows neither the key nor proxy credentials."""
    path = tmp_path / "config.yaml"
    path.write_text(OFFICIAL_YAML)
    dumped = str(load_settings(config_file=path).redacted())
    assert "from-yaml" not in dumped
    assert "secret" not in dumped
    assert "user:***@proxy:3128" in dumped


def test_run_environment_follows_official_proxy_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """socks5 wins and sets both proxies; nothing is set when the run has no network."""
    monkeypatch.setenv("SOCKS5_PROXY", "socks5://p:1080")
    monkeypatch.setenv("HTTP_PROXY", "http://h:3128")
    monkeypatch.setenv("API_KEY", "k")
    settings = load_settings()
    online = settings.run_environment(enable_network=True)
    assert online["HTTP_PROXY"] == online["HTTPS_PROXY"] == "socks5://p:1080"
    assert "HTTP_PROXY" not in settings.run_environment(enable_network=False)
    assert set(online) <= {"LANG", "PATH", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}


def test_allowed_env_vars_pass_through_but_never_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """ALLOWED_ENV_VARS copies named server variables, except the API key."""
    monkeypatch.setenv("ALLOWED_ENV_VARS", "TZ,API_KEY")
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    monkeypatch.setenv("API_KEY", "k")
    env = load_settings().run_environment(enable_network=True)
    assert env["TZ"] == "Asia/Shanghai"
    assert "API_KEY" not in env


def test_grace_defaults_to_timeout_plus_five(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shutdown grace follows WORKER_TIMEOUT unless set."""
    monkeypatch.setenv("WORKER_TIMEOUT", "7")
    assert load_settings().grace == 12
    monkeypatch.setenv("SANDBOX_GRACE_SECONDS", "3")
    assert load_settings().grace == 3


def test_empty_api_key_is_refused_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty key is one ConfigError line naming API_KEY; SANDBOX_ALLOW_NO_KEY=true accepts it."""
    monkeypatch.setenv("API_KEY", "")
    with pytest.raises(ConfigError, match="API_KEY") as info:
        load_settings()
    assert "\n" not in str(info.value)
    monkeypatch.setenv("SANDBOX_ALLOW_NO_KEY", "true")
    assert load_settings().api_key.get_secret_value() == ""


def test_allowed_syscalls_take_names_too(tmp_path: Path) -> None:
    """Syscall names load as given (they have no effect either way); numbers stay numbers."""
    path = tmp_path / "config.yaml"
    path.write_text("allowed_syscalls: [read, 1, write]\n")
    assert load_settings(config_file=path).allowed_syscalls == ["read", 1, "write"]


def test_named_config_file_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file named by argument or SANDBOX_CONFIG_FILE that does not exist is a ConfigError naming it."""
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load_settings(config_file=missing)
    monkeypatch.setenv("SANDBOX_CONFIG_FILE", str(missing))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()
