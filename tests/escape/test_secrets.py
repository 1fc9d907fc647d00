"""The API key: in no process's environment block, not readable from /proc, and the config file out of reach."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.integration.conftest import _cmdline

from .attacks import LANGUAGES, snippet

pytestmark = pytest.mark.integration

ENVIRON_WALK_PY = """\
service = set(ARGS["service"])
for name in os.listdir("/proc"):
    if not name.isdigit() or int(name) == os.getpid():
        continue
    pid = int(name)
    try:
        with open(f"/proc/{pid}/environ", "rb") as file:
            block = file.read()
    except OSError as exc:
        if pid in service:
            print(f"BLOCKED environ of {pid}: {_errno.errorcode.get(exc.errno, exc.errno)}")
        continue
    keys = [entry.decode(errors="replace") for entry in block.split(b"\\0") if entry.startswith(b"API_KEY=")]
    if pid in service or keys:
        print(f"LEAK environ of {pid}: {keys or 'readable'}")
"""

ENVIRON_WALK_JS = """\
const service = new Set(ARGS.service);
for (const name of fs.readdirSync('/proc')) {
  if (!/^\\d+$/.test(name) || Number(name) === process.pid) continue;
  const pid = Number(name);
  let block;
  try {
    block = fs.readFileSync(`/proc/${pid}/environ`, 'latin1');
  } catch (error) {
    if (service.has(pid)) console.log(`BLOCKED environ of ${pid}: ${error.code}`);
    continue;
  }
  const keys = block.split('\\0').filter((entry) => entry.startsWith('API_KEY='));
  if (service.has(pid) || keys.length) console.log(`LEAK environ of ${pid}: ${show(keys.join(' ') || 'readable')}`);
}
"""

CONFIG_PY = """\
config = ARGS["config"]


def read(path):
    with open(path) as file:
        return file.read()


def through_symlink():
    os.symlink(config, "config-link.yaml")
    return read("config-link.yaml")


def through_hard_link():
    os.link(config, "config-hard.yaml")
    return read("config-hard.yaml")


attempt("read the config file", lambda: read(config))
attempt("list the config dir", lambda: os.listdir(os.path.dirname(config)))
attempt("list the service's working dir", lambda: os.listdir(ARGS["workdir"]))
attempt("read it through /proc/<supervisor>/cwd", lambda: read(f"/proc/{ARGS['supervisor']}/cwd/conf/config.yaml"))
attempt("open it for writing", lambda: os.close(os.open(config, os.O_WRONLY | os.O_APPEND)) or "opened")
attempt("read it through a symlink in the run dir", through_symlink)
attempt("read it through a hard link in the run dir", through_hard_link)
"""

CONFIG_JS = """\
const config = ARGS.config;
const path = require('path');
attempt('read the config file', () => fs.readFileSync(config, 'utf8'));
attempt('list the config dir', () => fs.readdirSync(path.dirname(config)));
attempt("list the service's working dir", () => fs.readdirSync(ARGS.workdir));
attempt('read it through /proc/<supervisor>/cwd', () =>
  fs.readFileSync(`/proc/${ARGS.supervisor}/cwd/conf/config.yaml`, 'utf8'));
attempt('open it for writing', () => {
  fs.closeSync(fs.openSync(config, 'a'));
  return 'opened';
});
attempt('read it through a symlink in the run dir', () => {
  fs.symlinkSync(config, 'config-link.yaml');
  return fs.readFileSync('config-link.yaml', 'utf8');
});
attempt('read it through a hard link in the run dir', () => {
  fs.linkSync(config, 'config-hard.yaml');
  return fs.readFileSync('config-hard.yaml', 'utf8');
});
"""


def test_no_service_process_holds_the_key_in_its_environment(sandbox):
    """Read as root, no /proc/<pid>/environ of the service holds `API_KEY=` or the key's value."""
    sandbox.settle()
    holders = []
    for proc in sandbox.processes():
        with contextlib.suppress(OSError):
            block = Path(f"/proc/{proc.pid}/environ").read_bytes()
            if b"API_KEY=" in block or sandbox.secret.encode() in block:
                holders.append((proc.pid, _cmdline(proc)))
    assert not holders, f"processes with the API key in their environment: {holders}"
    sandbox.assert_unharmed()


@pytest.mark.parametrize("enable_network", [True, False], ids=["online", "offline"])
@pytest.mark.parametrize("language", LANGUAGES)
def test_environ_of_service_processes_unreadable(sandbox, language, enable_network):
    """A run that walks /proc reads no service process's environ, and no environ with API_KEY at all."""
    roles = sandbox.settle()
    code = snippet(language, ENVIRON_WALK_PY, ENVIRON_WALK_JS, service=roles.everything)
    report = sandbox.attack(code, language=language, enable_network=enable_network)
    assert sandbox.secret not in str(report), f"the API key leaked:\n{report}"
    stable = 1 + len(roles.workers) + len(roles.trackers) + len(roles.zygotes)  # processes no run replaces
    report.assert_blocked(at_least=stable)
    sandbox.assert_unharmed()


@pytest.mark.parametrize("language", LANGUAGES)
def test_config_file_out_of_reach(sandbox, language):
    """The config file (uid 1000, mode 0600, holds the key) cannot be read, linked, listed or opened for writing."""
    code = snippet(
        language,
        CONFIG_PY,
        CONFIG_JS,
        config=str(sandbox.config_file),
        workdir=str(sandbox.config_file.parent.parent),
        supervisor=sandbox.server.proc.pid,
    )
    report = sandbox.attack(code, language=language)
    assert sandbox.secret not in str(report), f"the API key leaked:\n{report}"
    report.assert_blocked(at_least=7)
    sandbox.assert_unharmed()
