"""Tiny wheels made at test time and a PEP 503 index on loopback that serves them (no internet needed).

`build_wheel` writes a wheel's zip directly (one module, the dist-info files pip reads). `PackageIndex`
serves `simple/<name>/` pages and the wheels with `http.server` in a thread; `hold()` makes every wheel
download wait until `release()`, so a test can look at the service while an install is under way.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from packaging.utils import canonicalize_name


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _hex(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_wheel(
    directory: Path, name: str, version: str, module_source: str, requires: Sequence[str] = (), module: str = ""
) -> Path:
    """Writes `<name>-<version>-py3-none-any.whl` with one module (`module`, default: the name) and returns it."""
    module = module or name.replace("-", "_")
    dist = f"{name.replace('-', '_')}-{version}"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {requirement}\n" for requirement in requires
    )
    files = {
        f"{module}/__init__.py": module_source.encode(),
        f"{dist}.dist-info/METADATA": metadata.encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}.dist-info/top_level.txt": f"{module}\n".encode(),
    }
    record = "".join(f"{path},{_digest(data)},{len(data)}\n" for path, data in files.items())
    record += f"{dist}.dist-info/RECORD,,\n"
    path = directory / f"{dist}-py3-none-any.whl"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
        archive.writestr(f"{dist}.dist-info/RECORD", record)
    return path


class PackageIndex:
    """A PEP 503 simple index over a dir of wheels, served on 127.0.0.1 from a thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = root / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self._gate = threading.Event()
        self._gate.set()
        self.downloads: list[str] = []
        index = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(index.root), **kwargs)  # type: ignore[arg-type]

            def do_GET(self) -> None:
                if self.path.split("#")[0].endswith(".whl"):
                    index.downloads.append(self.path)
                    index._gate.wait(timeout=120)
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/simple/"

    def add(self, name: str, version: str, module_source: str, requires: Sequence[str] = (), module: str = "") -> None:
        """Builds a wheel into the index and rewrites the project's page."""
        build_wheel(self.files, name, version, module_source, requires, module)
        project = canonicalize_name(name)
        page = self.root / "simple" / project
        page.mkdir(parents=True, exist_ok=True)
        prefix = name.replace("-", "_") + "-"
        wheels = [wheel for wheel in sorted(self.files.glob("*.whl")) if wheel.name.lower().startswith(prefix.lower())]
        links = "".join(
            f'<a href="../../files/{wheel.name}#sha256={_hex(wheel)}">{wheel.name}</a>\n' for wheel in wheels
        )
        (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")

    def hold(self) -> None:
        """Makes wheel downloads wait (the install stays under way) until `release`."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._gate.set()
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def serving(root: Path) -> Iterator[PackageIndex]:
    """A started index, stopped afterwards."""
    index = PackageIndex(root)
    index.start()
    try:
        yield index
    finally:
        index.stop()
