"""/proc and ptrace: a run cannot look into, write into or attach to the service's processes or another run."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import pytest

from .attacks import LANGUAGES, python_snippet, snippet

if TYPE_CHECKING:
    from .conftest import Roles

pytestmark = pytest.mark.integration

PROC_FILES_PY = """\
def open_mem(pid):
    with open(f"/proc/{pid}/mem", "rb"):
        return "opened"


def read(path):
    with open(path, "rb") as file:
        return file.read(200)


for role, pid in ARGS["targets"]:
    if pid == os.getpid():
        continue
    attempt(f"open /proc/{pid}/mem of the {role}", lambda: open_mem(pid))
    attempt(f"read /proc/{pid}/environ of the {role}", lambda: read(f"/proc/{pid}/environ"))
    attempt(f"read /proc/{pid}/maps of the {role}", lambda: read(f"/proc/{pid}/maps"))
    if pid not in ARGS["listable"]:
        attempt(f"list /proc/{pid}/fd of the {role}", lambda: os.listdir(f"/proc/{pid}/fd"))
    attempt(f"readlink /proc/{pid}/fd/0 of the {role}", lambda: os.readlink(f"/proc/{pid}/fd/0"))
    attempt(f"list /proc/{pid}/cwd of the {role}", lambda: os.listdir(f"/proc/{pid}/cwd"))
"""

PROC_FILES_JS = """\
function read(path) {
  const fd = fs.openSync(path, 'r');
  try {
    const buffer = Buffer.alloc(200);
    return buffer.subarray(0, fs.readSync(fd, buffer, 0, 200, null)).toString('latin1');
  } finally {
    fs.closeSync(fd);
  }
}
for (const [role, pid] of ARGS.targets) {
  if (pid === process.pid) continue;
  attempt(`open /proc/${pid}/mem of the ${role}`, () => {
    fs.closeSync(fs.openSync(`/proc/${pid}/mem`, 'r'));
    return 'opened';
  });
  attempt(`read /proc/${pid}/environ of the ${role}`, () => read(`/proc/${pid}/environ`));
  attempt(`read /proc/${pid}/maps of the ${role}`, () => read(`/proc/${pid}/maps`));
  if (!ARGS.listable.includes(pid)) {
    attempt(`list /proc/${pid}/fd of the ${role}`, () => fs.readdirSync(`/proc/${pid}/fd`));
  }
  attempt(`readlink /proc/${pid}/fd/0 of the ${role}`, () => fs.readlinkSync(`/proc/${pid}/fd/0`));
  attempt(`list /proc/${pid}/cwd of the ${role}`, () => fs.readdirSync(`/proc/${pid}/cwd`));
}
"""

# The victim's secret is looked for in its memory by its shape (the attacker does not know it).
VICTIM_PROC_PY = """\
import re

pid = ARGS["victim"]


def scan_memory():
    found = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(value, 16) for value in fields[0].split("-"))
            if not fields[1].startswith("rw") or end - start > 1 << 27:
                continue
            try:
                mem.seek(start)
                found.update(re.findall(rb"victim-secret-[0-9a-f]{16}", mem.read(end - start)))
            except OSError:
                continue
    return sorted(found) or "opened, secret not found"


def read(path):
    with open(path, "rb") as file:
        return file.read(200)


def open_fd(path, flags):
    fd = os.open(path, flags | os.O_NONBLOCK)
    os.close(fd)
    return "opened"


def inject():
    fd = os.open(f"/proc/{pid}/fd/1", os.O_WRONLY | os.O_NONBLOCK)
    try:
        return f"{os.write(fd, b'INJECTED into the victim')} bytes written"
    finally:
        os.close(fd)


attempt("scan the victim's memory through /proc/<victim>/mem", scan_memory)
if not ARGS["listable"]:
    attempt("list the victim's /proc/<victim>/fd", lambda: os.listdir(f"/proc/{pid}/fd"))
attempt("read the victim's /proc/<victim>/environ", lambda: read(f"/proc/{pid}/environ"))
attempt("open the victim's stdout for reading", lambda: open_fd(f"/proc/{pid}/fd/1", os.O_RDONLY))
attempt("write into the victim's stdout", inject)
attempt("list the victim's dir through /proc/<victim>/cwd", lambda: os.listdir(f"/proc/{pid}/cwd"))
"""

VICTIM_PROC_JS = """\
const pid = ARGS.victim;

function scanMemory() {
  const found = new Set();
  const maps = fs.readFileSync(`/proc/${pid}/maps`, 'latin1');
  const mem = fs.openSync(`/proc/${pid}/mem`, 'r');
  try {
    for (const line of maps.split('\\n')) {
      const fields = line.split(/\\s+/);
      if (fields.length < 2 || !fields[1].startsWith('rw')) continue;
      const [start, end] = fields[0].split('-').map((value) => parseInt(value, 16));
      if (end - start > 2 ** 27) continue;
      const buffer = Buffer.alloc(end - start);
      try {
        fs.readSync(mem, buffer, 0, buffer.length, start);
      } catch (error) {
        continue;
      }
      for (const match of buffer.toString('latin1').matchAll(/victim-secret-[0-9a-f]{16}/g)) found.add(match[0]);
    }
  } finally {
    fs.closeSync(mem);
  }
  return found.size ? [...found].join(' ') : 'opened, secret not found';
}

attempt("scan the victim's memory through /proc/<victim>/mem", scanMemory);
if (!ARGS.listable) attempt("list the victim's /proc/<victim>/fd", () => fs.readdirSync(`/proc/${pid}/fd`));
attempt("read the victim's /proc/<victim>/environ", () => fs.readFileSync(`/proc/${pid}/environ`, 'latin1'));
attempt("open the victim's stdout for reading", () => {
  fs.closeSync(fs.openSync(`/proc/${pid}/fd/1`, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK));
  return 'opened';
});
attempt("write into the victim's stdout", () => {
  const fd = fs.openSync(`/proc/${pid}/fd/1`, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  try {
    return `${fs.writeSync(fd, 'INJECTED into the victim')} bytes written`;
  } finally {
    fs.closeSync(fd);
  }
});
attempt("list the victim's dir through /proc/<victim>/cwd", () => fs.readdirSync(`/proc/${pid}/cwd`));
"""

# Writes `payload` into every pipe of the targets it can open through /proc/<pid>/fd/<n>. Into an idle
# node process's code pipe, the payload is a header and code that would run for the next tenant.
PIPE_WRITE_PY = """\
payload = ARGS["payload"].encode()


def write(path):
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        return f"{os.write(fd, payload)} bytes"
    finally:
        os.close(fd)


for role, pid in ARGS["targets"]:
    if pid == os.getpid():
        continue
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        fds = range(32)  # not listable: guess
    for fd in fds:
        path = f"/proc/{pid}/fd/{fd}"
        try:
            target = os.readlink(path)
        except FileNotFoundError:
            continue
        except OSError:
            target = "unknown"  # blocked; try the write blind, it is the attack
        if target.startswith("pipe:") or target == "unknown":
            attempt(f"write into fd {fd} ({target}) of the {role} {pid}", lambda: write(path))
"""

PIPE_WRITE_JS = """\
function write(path) {
  const fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  try {
    return `${fs.writeSync(fd, ARGS.payload)} bytes`;
  } finally {
    fs.closeSync(fd);
  }
}
for (const [role, pid] of ARGS.targets) {
  if (pid === process.pid) continue;
  let fds;
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch (error) {
    fds = [...Array(32).keys()]; // not listable: guess
  }
  for (const fd of fds) {
    const path = `/proc/${pid}/fd/${fd}`;
    let target;
    try {
      target = fs.readlinkSync(path);
    } catch (error) {
      if (error.code === 'ENOENT') continue;
      target = 'unknown';
    }
    if (target.startsWith('pipe:') || target === 'unknown') {
      attempt(`write into fd ${fd} (${target}) of the ${role} ${pid}`, () => write(path));
    }
  }
}
"""

PTRACE_PY = """\
class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def seize(pid):
    syscall(101, 0x4206, pid, 0, 0)  # ptrace(PTRACE_SEIZE): a tracer without stopping the tracee
    return "attached"


def read_memory(pid):
    buffer = ctypes.create_string_buffer(16)
    local, remote = IoVec(ctypes.addressof(buffer), 16), IoVec(id(None), 16)  # None: same address in every fork
    try:
        return f"{syscall(310, pid, local, 1, remote, 1, 0)} bytes read"  # process_vm_readv
    except OSError as exc:
        if exc.errno == _errno.EFAULT:
            return "permitted (EFAULT: that address is not mapped there)"
        raise


def steal_fds(pid):
    pidfd = syscall(434, pid, 0)  # pidfd_open
    try:
        stolen = []
        for target in (0, 1, 2):
            try:
                fd = syscall(438, pidfd, target, 0)  # pidfd_getfd
            except OSError as exc:
                if exc.errno != _errno.EBADF:
                    raise
                stolen.append(f"fd {target}: permitted (EBADF)")
                continue
            stolen.append(os.readlink(f"/proc/self/fd/{fd}"))
            os.close(fd)
        return stolen
    finally:
        os.close(pidfd)


for role, pid in ARGS["targets"]:
    if pid == os.getpid():
        continue
    attempt(f"ptrace(PTRACE_SEIZE) the {role} {pid}", lambda: seize(pid))
    attempt(f"process_vm_readv from the {role} {pid}", lambda: read_memory(pid))
    attempt(f"pidfd_getfd from the {role} {pid}", lambda: steal_fds(pid))
    attempt(f"kcmp(KCMP_VM) with the {role} {pid}", lambda: syscall(312, os.getpid(), pid, 1, 0, 0))
"""


# A node process, and multiprocessing's resource tracker, is dumpable again after exec (neither can call
# prctl before it runs), so the kernel lets the same uid list its /proc/<pid>/fd (fd numbers, no targets:
# readdir asks no LSM). What those fds are, and opening them, needs ptrace access, which Landlock refuses;
# that is asserted for every process.
def listable(roles: Roles) -> list[int]:
    """Pids whose /proc/<pid>/fd listing is allowed by design: the node processes and the resource tracker."""
    return [*roles.nodes, *roles.trackers]


SERVICE_ROLES = {
    "zygote": ("zygotes",),
    "spare": ("spares",),
    "idle-node": ("nodes",),
    "supervisor-workers-tracker": ("supervisor", "workers", "trackers"),
}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("role", list(SERVICE_ROLES))
def test_proc_files_of_service_processes_closed(sandbox, role, language):
    """A run cannot open mem, environ, maps, fd/0, cwd in /proc/<pid> of a service process nor list fd/ (`listable`)."""
    roles = sandbox.settle()
    targets = roles.targets(*SERVICE_ROLES[role])
    assert targets, f"no {role} process found"
    code = snippet(language, PROC_FILES_PY, PROC_FILES_JS, targets=targets, listable=listable(roles))
    report = sandbox.attack(code, language=language)
    assert sandbox.secret not in str(report), f"the API key leaked:\n{report}"
    report.assert_blocked(at_least=5)  # at least one target that is not the attacker itself
    sandbox.assert_unharmed()


@pytest.mark.parametrize(
    ("attacker", "victim_language"),
    [("python3", "python3"), ("nodejs", "python3"), ("python3", "nodejs")],
)
def test_proc_files_of_another_run_closed(sandbox, victim, attacker, victim_language):
    """Scenario: a run goes through /proc after a concurrent run's secret.

    1. A victim run holds a secret in memory and waits.
    2. The attacker scans its memory via /proc/<victim>/mem, lists its fds (a Python victim's; see
       `listable`), reads its environ, opens its stdout pipe for reading and for writing (to inject
       output), and lists its dir via /proc/<victim>/cwd.
    3. Every attempt is refused, the secret is not in the attacker's output, and the victim prints
       exactly what it would have alone.
    """
    target = victim(victim_language)
    code = snippet(attacker, VICTIM_PROC_PY, VICTIM_PROC_JS, victim=target.pid, listable=victim_language == "nodejs")
    report = sandbox.attack(code, language=attacker)
    assert target.secret not in str(report), f"the victim's secret leaked:\n{report}"
    report.assert_blocked(at_least=5)
    target.assert_unharmed()
    sandbox.assert_unharmed()


@pytest.mark.parametrize("language", LANGUAGES)
def test_service_pipes_cannot_be_written(sandbox, language):
    """Scenario: a run writes into the pipes of the service's processes, then ten runs follow.

    1. The attacker opens every pipe of the zygotes, spares, idle node processes, workers and resource
       tracker through /proc/<pid>/fd/<n> (blind fds 0-31 if it cannot list them) and writes a payload
       that, in an idle node process's code pipe, would run `console.log("INJECTED-...")` for the next
       tenant, and in a stdout pipe would show up in the next tenant's output.
    2. Every open is refused.
    3. Ten later runs, python3 and nodejs in turn, print exactly their own output.
    """
    marker = f"INJECTED-{secrets.token_hex(6)}"
    payload = f'{{"network": true}}\nconsole.log("{marker}");//'  # the comment swallows the real header line
    targets = sandbox.settle().targets("zygotes", "spares", "nodes", "workers", "trackers")
    code = snippet(language, PIPE_WRITE_PY, PIPE_WRITE_JS, targets=targets, payload=payload)
    report = sandbox.attack(code, language=language)
    outputs = []
    for index in range(10):
        later_language = ("python3", "nodejs")[index % 2]
        statement = f'print("after", {index})' if later_language == "python3" else f'console.log("after", {index})'
        outputs.append((later_language, sandbox.run_ok(statement, language=later_language, timeout=15)))
    disturbed = [
        (later_language, data)
        for index, (later_language, data) in enumerate(outputs)
        if data != {"stdout": f"after {index}\n", "stderr": "", "error": "", "exit_code": 0}
    ]
    assert not disturbed, f"later runs were disturbed: {disturbed}\n{report}"
    report.assert_blocked(at_least=len(targets) - 1)
    sandbox.assert_unharmed()


@pytest.mark.parametrize("role", ["zygotes", "spares", "nodes", "workers", "victim"])
def test_ptrace_family_refused(sandbox, victim, role):
    """ptrace, process_vm_readv, pidfd_getfd, kcmp on a service process or another run: EPERM (Python only)."""
    if role == "victim":
        target = victim("python3")
        targets = [("victim", target.pid)]
    else:
        target = None
        targets = sandbox.settle().targets(role)
    assert targets, f"no {role} process found"
    report = sandbox.attack(python_snippet(PTRACE_PY, syscalls=True, targets=targets))
    assert not sandbox.stopped(), f"stopped: {sandbox.stopped()}\n{report}"
    report.assert_blocked(at_least=4, only=("EPERM",))
    if target is not None:
        target.assert_unharmed()
    sandbox.assert_unharmed()
