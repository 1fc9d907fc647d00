"""Common libraries keep working inside a run with the default isolation.

Each case is one snippet and the exact stdout it must print, run through a real server with the default
settings (whatever isolation they turn on). A case fails when a library breaks or degrades loudly (anything on
stderr): the isolation layers must leave a run its own dir (cwd = HOME = TMPDIR) writable, the system paths
readable, and processes, threads and loopback network usable. The HTTP cases talk to a server this module
starts on 127.0.0.1 in the test process.
"""

from __future__ import annotations

import http.server
import textwrap
import threading
from collections.abc import Callable, Iterator

import pytest

from .conftest import Server, alive_shared

pytestmark = pytest.mark.integration

URL = "@URL@"  # replaced in a snippet by the local HTTP server's base URL
PONG = "pong"  # what the local HTTP server answers

# (name, code, exact stdout); the code is dedented before it is sent.
PYTHON_CASES = [
    (
        "numpy",
        """
        import numpy as np
        a = np.arange(12).reshape(3, 4)
        print((a @ a.T).trace(), a.mean())
        """,
        "506 5.5\n",
    ),
    (
        "pandas",
        """
        import os
        import pandas as pd
        df = pd.DataFrame({"x": range(1000)})
        df.to_csv("frame.csv", index=False)
        back = pd.read_csv(os.path.join(os.getcwd(), "frame.csv"))
        print(df.x.sum(), back.x.sum(), len(back))
        """,
        "499500 499500 1000\n",
    ),
    (
        "matplotlib",
        """
        import os
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        plt.plot([1, 2, 3], [4, 1, 9])
        plt.savefig("plot.png")
        cache, home = matplotlib.get_cachedir(), os.environ["HOME"]
        print(os.path.getsize("plot.png") > 0, os.path.commonpath([cache, home]) == home)
        print(any(name.startswith("fontlist") for name in os.listdir(cache)))
        """,
        "True True\nTrue\n",
    ),
    (
        "multiprocessing.Pool",
        """
        import multiprocessing
        def square(x):
            return x * x
        with multiprocessing.Pool(2) as pool:
            print(pool.map(square, range(5)))
        """,
        "[0, 1, 4, 9, 16]\n",
    ),
    (
        "ProcessPoolExecutor",
        """
        from concurrent.futures import ProcessPoolExecutor
        def square(x):
            return x * x
        with ProcessPoolExecutor(2) as executor:
            print(list(executor.map(square, range(5))))
        """,
        "[0, 1, 4, 9, 16]\n",
    ),
    (
        "sqlite3",
        """
        import os, sqlite3
        with sqlite3.connect("data.db") as db:
            db.execute("create table t (x integer)")
            db.executemany("insert into t values (?)", [(i,) for i in range(10)])
        print(sqlite3.connect("data.db").execute("select sum(x) from t").fetchone()[0], os.path.isfile("data.db"))
        """,
        "45 True\n",
    ),
    (
        "tempfile",
        """
        import os, tempfile
        with tempfile.NamedTemporaryFile("w+") as f:
            f.write("named")
            f.seek(0)
            print(f.read(), os.path.dirname(f.name) == os.getcwd())
        with tempfile.TemporaryDirectory() as d:
            open(os.path.join(d, "f"), "w").close()
            print(os.listdir(d), os.path.dirname(d) == os.getcwd())
        fd, path = tempfile.mkstemp()
        os.write(fd, b"mkstemp")
        os.close(fd)
        print(open(path).read(), tempfile.gettempdir() == os.getcwd())
        """,
        "named True\n['f'] True\nmkstemp True\n",
    ),
    (
        "zoneinfo",
        """
        import datetime, zoneinfo
        summer = datetime.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
        print(summer.utcoffset(), summer.tzname())
        """,
        "2:00:00 CEST\n",
    ),
    (
        "datetime with tz",
        """
        import datetime
        d = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=5)))
        print(d.astimezone(datetime.timezone.utc).isoformat(), datetime.datetime.now().astimezone().tzinfo is not None)
        """,
        "2023-12-31T19:00:00+00:00 True\n",
    ),
    ("ssl", "import ssl\nprint(ssl.create_default_context().cert_store_stats()['x509_ca'] > 0)", "True\n"),
    (
        "subprocess",
        """
        import subprocess
        open("listed", "w").close()
        print("listed" in subprocess.run(["ls"], capture_output=True, text=True, check=True).stdout.split())
        print(subprocess.run(["sh", "-c", "echo hi"], capture_output=True, text=True, check=True).stdout, end="")
        """,
        "True\nhi\n",
    ),
    (
        "ctypes.util",
        """
        import ctypes, ctypes.util, os
        name = ctypes.util.find_library("c")
        print(name is not None, ctypes.CDLL(name).getpid() == os.getpid())
        """,
        "True True\n",
    ),
    ("uuid", "import uuid\nprint(uuid.uuid4().version, len({uuid.uuid4() for _ in range(100)}))", "4 100\n"),
    (
        "locale",
        """
        import locale
        print(locale.setlocale(locale.LC_ALL, ""), locale.getpreferredencoding(False))
        print(locale.localeconv()["decimal_point"])
        """,
        "C.UTF-8 UTF-8\n.\n",
    ),
    ("json", "import json\nprint(json.loads(json.dumps({'a': [1, 2.5, None]})))", "{'a': [1, 2.5, None]}\n"),
    (
        "hashlib",
        "import hashlib\nprint(hashlib.sha256(b'abc').hexdigest()[:16], hashlib.md5(b'').hexdigest()[:8])",
        "ba7816bf8f01cfea d41d8cd9\n",
    ),
    ("platform", "import platform\nprint(platform.platform().startswith('Linux'))", "True\n"),
    ("os.cpu_count", "import os\nprint(os.cpu_count() >= 1)", "True\n"),
    ("getpass", "import getpass, os, pwd\nprint(getpass.getuser() == pwd.getpwuid(os.getuid()).pw_name)", "True\n"),
    (
        "threading",
        """
        import threading
        results = []
        lock = threading.Lock()
        def work(i):
            with lock:
                results.append(sum(range(i * 1000)))
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(len(results), sum(results))
        """,
        "8 69986000\n",
    ),
    (
        "asyncio",
        """
        import asyncio
        async def one(i):
            await asyncio.sleep(0.01)
            return i
        async def main():
            return sum(await asyncio.gather(*(one(i) for i in range(10))))
        print(asyncio.run(main()))
        """,
        "45\n",
    ),
    ("httpx", "import httpx\nprint(httpx.get('@URL@/httpx').text)", "pong\n"),
    ("requests", "import requests\nprint(requests.get('@URL@/requests', timeout=10).text)", "pong\n"),
]

NODE_CASES = [
    (
        "fs in cwd",
        """
        const fs = require("fs");
        fs.writeFileSync("a.txt", "written");
        console.log(fs.readFileSync(require("path").join(process.cwd(), "a.txt"), "utf8"));
        """,
        "written\n",
    ),
    (
        "os.tmpdir",
        """
        const fs = require("fs"), os = require("os"), path = require("path");
        const file = path.join(os.tmpdir(), "tmp.txt");
        fs.writeFileSync(file, "tmp");
        console.log(fs.readFileSync(file, "utf8"), os.tmpdir() === process.cwd());
        """,
        "tmp true\n",
    ),
    ("child_process", "process.stdout.write(require('child_process').execSync('echo hi').toString());", "hi\n"),
    (
        "crypto.randomUUID",
        """
        const uuid = require("crypto").randomUUID();
        console.log(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(uuid));
        """,
        "true\n",
    ),
    (
        "zlib",
        """
        const zlib = require("zlib");
        const data = "x".repeat(1000);
        const packed = zlib.gzipSync(data);
        console.log(packed.length < 100, zlib.gunzipSync(packed).toString() === data);
        """,
        "true true\n",
    ),
    (
        "http.get",
        """
        require("http").get("@URL@/node", (res) => {
          let body = "";
          res.on("data", (chunk) => (body += chunk));
          res.on("end", () => console.log(res.statusCode, body));
        });
        """,
        "200 pong\n",
    ),
    (
        "worker_threads",
        """
        const { Worker } = require("worker_threads");
        const code = "require('worker_threads').parentPort.postMessage(6 * 7)";
        new Worker(code, { eval: true }).on("message", (message) => console.log(message));
        """,
        "42\n",
    ),
]

CASES = [pytest.param("python3", code, out, id=f"python3-{name}") for name, code, out in PYTHON_CASES] + [
    pytest.param("nodejs", code, out, id=f"nodejs-{name}") for name, code, out in NODE_CASES
]


class PongHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and the body ``pong``."""

    def do_GET(self) -> None:
        body = PONG.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test output is the report, not an access log."""


@pytest.fixture(scope="module")
def local_url() -> Iterator[str]:
    """The base URL of an HTTP server in a thread of the test process, on 127.0.0.1."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PongHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="pong-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(scope="module")
def _compat_server(session_server_factory: Callable[..., Server]) -> Iterator[Server]:
    server = session_server_factory("library-compat-server")
    yield server
    server.stop()


@pytest.fixture
def compat_server(request: pytest.FixtureRequest, _compat_server: Server) -> Server:
    """A shared server with the default settings (default isolation); fails fast if it died."""
    return alive_shared(request, _compat_server, "library-compat")


@pytest.mark.parametrize(("language", "code", "stdout"), CASES)
def test_library_works_in_an_isolated_run(
    compat_server: Server, local_url: str, language: str, code: str, stdout: str
) -> None:
    """The snippet exits 0 with exactly the expected stdout and nothing on stderr."""
    code = textwrap.dedent(code).strip().replace(URL, local_url)
    data = compat_server.run_ok(code, language=language, enable_network=True)
    assert (data["stdout"], data["stderr"], data["exit_code"]) == (stdout, "", 0), data
