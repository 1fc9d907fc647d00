"""Files: a run writes only in its own dir, and sees neither other runs' files nor what earlier runs planted."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .attacks import LANGUAGES, snippet

pytestmark = pytest.mark.integration

SIBLINGS_PY = """\
own = os.getcwd()
root = os.path.dirname(own)
victim_dir, pid = ARGS["victim_cwd"], ARGS["victim"]
secret_file = os.path.join(victim_dir, "secret.txt")


def read(path):
    with open(path) as file:
        return file.read()


def write(path, text):
    with open(path, "w") as file:
        file.write(text)
    return "written"


for name in attempt("list the run root (the parent of the run's dir)", lambda: os.listdir(root)) or []:
    sibling = os.path.join(root, name)
    if sibling != own and os.path.isdir(sibling):
        attempt(f"list the sibling {name}", lambda: os.listdir(sibling))
attempt("list /tmp", lambda: os.listdir("/tmp"))
attempt("list the victim's dir", lambda: os.listdir(victim_dir))
attempt("read the victim's secret.txt", lambda: read(secret_file))
attempt("read it through /proc/<victim>/cwd", lambda: read(f"/proc/{pid}/cwd/secret.txt"))
attempt("overwrite the victim's secret.txt", lambda: write(secret_file, "OVERWRITTEN"))
attempt("plant a file in the victim's dir", lambda: write(os.path.join(victim_dir, "planted.txt"), "x"))
attempt("rename the victim's secret.txt", lambda: os.rename(secret_file, secret_file + ".moved") or "renamed")
"""

SIBLINGS_JS = """\
const path = require('path');
const own = process.cwd();
const root = path.dirname(own);
const victimDir = ARGS.victim_cwd;
const secretFile = path.join(victimDir, 'secret.txt');
for (const name of attempt('list the run root (the parent of the run\\'s dir)', () => fs.readdirSync(root)) || []) {
  const sibling = path.join(root, name);
  if (sibling !== own) attempt(`list the sibling ${name}`, () => fs.readdirSync(sibling));
}
attempt('list /tmp', () => fs.readdirSync('/tmp'));
attempt("list the victim's dir", () => fs.readdirSync(victimDir));
attempt("read the victim's secret.txt", () => fs.readFileSync(secretFile, 'utf8'));
attempt('read it through /proc/<victim>/cwd', () => fs.readFileSync(`/proc/${ARGS.victim}/cwd/secret.txt`, 'utf8'));
attempt("overwrite the victim's secret.txt", () => fs.writeFileSync(secretFile, 'OVERWRITTEN') || 'written');
attempt("plant a file in the victim's dir", () => {
  fs.writeFileSync(path.join(victimDir, 'planted.txt'), 'x');
  return 'written';
});
attempt("rename the victim's secret.txt", () => fs.renameSync(secretFile, secretFile + '.moved') || 'renamed');
"""

PLANT_PY = """\
import multiprocessing

root = os.path.dirname(os.getcwd())


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        file.write(text)
    return "written"


for where, path in ARGS["plants"].items():
    path = path.replace("<root>", root)
    attempt(f"write {path} ({where})", lambda: write(path, ARGS["payloads"][os.path.splitext(path)[1]]))
attempt("list /dev/shm", lambda: os.listdir("/dev/shm"))
with multiprocessing.Lock():  # a POSIX semaphore in /dev/shm, created by name: must keep working
    print("CONTROL multiprocessing works")
"""

PLANT_JS = """\
const path = require('path');
const root = path.dirname(process.cwd());
for (const [where, template] of Object.entries(ARGS.plants)) {
  const file = template.replace('<root>', root);
  attempt(`write ${file} (${where})`, () => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, ARGS.payloads[path.extname(file)]);
    return 'written';
  });
}
attempt('list /dev/shm', () => fs.readdirSync('/dev/shm'));
console.log('CONTROL node works');
"""

LATER_PY = """\
import importlib

root = os.path.dirname(os.getcwd())


def read(path):
    with open(path) as file:
        return file.read()


for where, path in ARGS["plants"].items():
    path = path.replace("<root>", root)
    attempt(f"read {path} ({where})", lambda: read(path))
try:
    importlib.import_module(ARGS["module"])
    print(f"LEAK import {ARGS['module']}: imported")
except ImportError as exc:
    print(f"BLOCKED import {ARGS['module']}: {type(exc).__name__}")
attempt("list /dev/shm", lambda: os.listdir("/dev/shm"))
"""

LATER_JS = """\
const path = require('path');
const root = path.dirname(process.cwd());
for (const [where, template] of Object.entries(ARGS.plants)) {
  const file = template.replace('<root>', root);
  attempt(`read ${file} (${where})`, () => fs.readFileSync(file, 'utf8'));
}
attempt(`require('${ARGS.module}')`, () => require(ARGS.module));
attempt('list /dev/shm', () => fs.readdirSync('/dev/shm'));
"""


def _plants(token: str, service_dir: Path, site_packages: str) -> dict[str, str]:
    """Where a run tries to leave something behind (`<root>`: the parent of the run's own dir)."""
    module = f"planted_{token}"
    return {
        "/tmp": f"/tmp/planted-{token}.txt",
        "/var/tmp": f"/var/tmp/planted-{token}.txt",
        "the run root": f"<root>/planted-{token}.txt",
        "node_modules in the run root": f"<root>/node_modules/{module}/index.js",
        "node_modules in /tmp": f"/tmp/node_modules/{module}/index.js",
        "the image's site-packages": f"{site_packages}/{module}.py",
        "the service's working dir": f"{service_dir}/planted-{token}.txt",
        "the service's config dir": f"{service_dir}/conf/planted-{token}.txt",
    }


@pytest.fixture
def plant_token() -> Iterator[str]:
    """A unique name part for planted files; whatever got planted is removed afterwards."""
    token = secrets.token_hex(6)
    yield token
    patterns = [f"/tmp/planted-{token}*", f"/var/tmp/planted-{token}*", f"/tmp/dify-*/planted-{token}*",
                f"/tmp/dify-*/server*/planted-{token}*", f"/tmp/dify-*/server*/conf/planted-{token}*",
                f"/tmp/image-venv*/lib/python3*/site-packages/planted_{token}.py"]  # fmt: skip
    for path in (found for pattern in patterns for found in glob.glob(pattern)):
        with contextlib.suppress(OSError):
            os.remove(path)
    module_dirs = glob.glob(f"/tmp/node_modules/planted_{token}") + glob.glob(
        f"/tmp/dify-*/node_modules/planted_{token}"
    )
    for module_dir in module_dirs:
        shutil.rmtree(module_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(module_dir))  # the node_modules dir, if the planter made it and it is empty


@pytest.mark.parametrize(
    ("attacker", "victim_language"),
    [("python3", "python3"), ("nodejs", "python3"), ("python3", "nodejs"), ("nodejs", "nodejs")],
)
def test_other_runs_files_out_of_reach(sandbox, victim, attacker, victim_language):
    """Scenario: a run looks for a concurrent run's files.

    1. A victim run writes secret.txt in its own dir and waits.
    2. The attacker lists the parent of its own dir and every sibling in it, and /tmp; it lists, reads,
       overwrites, renames and plants next to the victim's file by its path (handed over by the test)
       and through /proc/<victim>/cwd.
    3. Every attempt is refused, the secret is not in the attacker's output, and the victim reads its
       file back unchanged.
    """
    target = victim(victim_language)
    code = snippet(attacker, SIBLINGS_PY, SIBLINGS_JS, victim=target.pid, victim_cwd=target.cwd)
    report = sandbox.attack(code, language=attacker)
    assert target.secret not in str(report), f"the victim's secret leaked:\n{report}"
    report.assert_blocked(at_least=8)
    target.assert_unharmed()
    sandbox.assert_unharmed()


@pytest.mark.parametrize("planter", LANGUAGES)
def test_planted_files_not_seen_by_later_runs(sandbox, planter, plant_token):
    """Scenario: a run tries to leave files for later tenants.

    1. The planter writes into /tmp, /var/tmp, the run root, a node_modules dir in the run root and in
       /tmp, the image's site-packages, the service's working dir and its config dir: all refused.
       Listing /dev/shm is refused; multiprocessing (semaphores in /dev/shm by name) still works.
    2. Three later python3 and three later nodejs runs read none of those paths, cannot import or
       require the planted module, and cannot list /dev/shm.
    """
    module = f"planted_{plant_token}"
    site_packages = str(next(sandbox.venv.glob("lib/python3*/site-packages")))
    plants = _plants(plant_token, sandbox.config_file.parent.parent, site_packages)
    payloads = {
        ".txt": f"PLANTED-{plant_token}",
        ".js": f"console.log('PLANTED-{plant_token}'); module.exports = 'PLANTED';",
        ".py": f"print('PLANTED-{plant_token}')",
    }
    report = sandbox.attack(snippet(planter, PLANT_PY, PLANT_JS, plants=plants, payloads=payloads), language=planter)
    report.assert_blocked(at_least=len(plants) + 1)
    assert "CONTROL" in report.data["stdout"], str(report)
    for language in ("python3", "nodejs") * 3:
        later = sandbox.attack(snippet(language, LATER_PY, LATER_JS, plants=plants, module=module), language=language)
        assert f"PLANTED-{plant_token}" not in str(later), f"a later {language} run saw a planted file:\n{later}"
        later.assert_blocked(at_least=len(plants) + 2)
    sandbox.assert_unharmed()


CHMOD_ROOT_PY = """\
root = os.path.dirname(os.getcwd())
attempt("chmod the run root to 0", lambda: os.chmod(root, 0) or "changed")
"""

CHMOD_ROOT_JS = """\
const root = require('path').dirname(process.cwd());
attempt('chmod the run root to 0', () => { fs.chmodSync(root, 0); return 'changed'; });
"""

LATER_RUNS = 8  # over both workers


@pytest.mark.parametrize("changer", LANGUAGES)
def test_run_root_mode_does_not_outlive_the_run(sandbox, changer):
    """Scenario: a run takes away the run root's permissions (Landlock does not cover metadata).

    1. It chmods the parent of its own dir to 0; it may (the service's uid owns it).
    2. Every later python3 and nodejs run still gets its dir and works: the root's owner puts the
       mode back before it makes the next run's dir.
    """
    sandbox.attack(snippet(changer, CHMOD_ROOT_PY, CHMOD_ROOT_JS), language=changer)
    for index in range(LATER_RUNS):
        for language, code in (("python3", "print(open('f', 'w').write('ok'))"), ("nodejs", "console.log('ok')")):
            data = sandbox.run_ok(code, language=language)
            assert data["exit_code"] == 0, (index, language, data)
            assert data["stdout"].strip() in ("2", "ok"), (index, language, data)
    sandbox.assert_unharmed()
