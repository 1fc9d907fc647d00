"""Sockets: `enable_network: false` leaves a run no network at all (only AF_UNIX), and no run reaches
another run's abstract unix socket. One server (ENABLE_NETWORK at its default) serves both kinds of run."""

from __future__ import annotations

import pytest

from .attacks import node_snippet, python_snippet, snippet

pytestmark = pytest.mark.integration

# name: a Python expression that needs the network (`port` is the service's own).
OFFLINE_PY = {
    "tcp-connect-to-the-service": "call_the_service()",
    "tcp-bind-listen": "listen(socket.socket(socket.AF_INET, socket.SOCK_STREAM), ('127.0.0.1', 0))",
    "tcp6-bind-listen": "listen(socket.socket(socket.AF_INET6, socket.SOCK_STREAM), ('::1', 0))",
    "udp-sendto-the-service-port": "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', port))",
    "udp-bind": "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(('127.0.0.1', 0))",
    "http-client": "urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=3).status",
    "netlink-route": "socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).bind((0, 0))",
    "packet-raw": "socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0x0300)",
    "inet-raw-icmp": "socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
    "vsock": "socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)",  # to the VM's host, if there is one
}

OFFLINE_SETUP_PY = """\
import socket
import urllib.request

port = ARGS["port"]


def call_the_service():
    with socket.create_connection(("127.0.0.1", port), timeout=3) as connection:
        connection.sendall(b"GET /health HTTP/1.0\\r\\n\\r\\n")
        return connection.recv(100)


def listen(sock, address):
    sock.bind(address)
    sock.listen()
    return f"listening on {sock.getsockname()}"


left, right = socket.socketpair()
left.send(b"x")
print("CONTROL unix sockets work" if right.recv(1) == b"x" else "CONTROL unix sockets broken")
"""

# name: a Node.js function returning a promise that needs the network.
OFFLINE_JS = {
    "tcp-connect-to-the-service": "() => callTheService('127.0.0.1')",
    "tcp6-listen": "() => listenOn(net.createServer(), 0, '::1')",
    "tcp-listen": "() => listenOn(net.createServer(), 0, '127.0.0.1')",
    "udp-send-to-the-service-port": "() => udpSend('udp4', '127.0.0.1')",
    "udp6-send": "() => udpSend('udp6', '::1')",
    "http-get": "() => httpGet(`http://127.0.0.1:${ARGS.port}/health`)",
}

OFFLINE_SETUP_JS = """\
const net = require('net');
const dgram = require('dgram');
const http = require('http');

function callTheService(host) {
  return new Promise((resolve, reject) => {
    const connection = net.connect(ARGS.port, host);
    connection.on('connect', () => connection.write('GET /health HTTP/1.0\\r\\n\\r\\n'));
    connection.on('data', (data) => {
      resolve(data.toString('latin1'));
      connection.destroy();
    });
    connection.on('error', reject);
  });
}

function listenOn(server, ...address) {
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(...address, () => {
      resolve(`listening on ${JSON.stringify(server.address())}`);
      server.close();
    });
  });
}

function udpSend(type, host) {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(type);
    sock.on('error', reject);
    sock.send('x', ARGS.port, host, (error) => {
      sock.close();
      if (error) reject(error);
      else resolve('sent');
    });
  });
}

function httpGet(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (response) => {
      resolve(`HTTP ${response.statusCode}`);
      response.resume();
    }).on('error', reject);
  });
}

async function control() {
  const name = `\\0control-${process.pid}`;
  const server = net.createServer((connection) => connection.end('x'));
  await new Promise((resolve) => server.listen(name, resolve));
  const reply = await new Promise((resolve, reject) => {
    const connection = net.connect(name);
    connection.on('data', (data) => resolve(data.toString()));
    connection.on('error', reject);
  });
  server.close();
  console.log(reply === 'x' ? 'CONTROL unix sockets work' : 'CONTROL unix sockets broken');
}
"""

ONLINE_PY = """\
import socket

with socket.create_connection(("127.0.0.1", ARGS["port"]), timeout=3) as connection:
    connection.sendall(b"GET /health HTTP/1.0\\r\\n\\r\\n")
    print(connection.recv(12).decode())
with socket.socket() as listener:
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    print("listening")
"""

ONLINE_JS = """\
const http = require('http');
const net = require('net');
http.get(`http://127.0.0.1:${ARGS.port}/health`, (response) => {
  console.log(`HTTP/1.1 ${response.statusCode}`);
  response.resume();
  const listener = net.createServer().listen(0, '127.0.0.1', () => {
    console.log('listening');
    listener.close();
  });
});
"""

ABSTRACT_PY = """\
import socket


def connect(name):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(name)
        return "connected"


name = b"\\0" + ARGS["name"].encode()
attempt("connect to the victim's abstract unix socket", lambda: connect(name))
# libuv (a node victim) binds the name padded with NULs to the whole sun_path.
attempt("connect to it by its padded name", lambda: connect(name.ljust(108, b"\\0")))
"""

ABSTRACT_JS = """\
const net = require('net');
attemptAsync("connect to the victim's abstract unix socket", () => new Promise((resolve, reject) => {
  const connection = net.connect('\\0' + ARGS.name, () => {
    resolve('connected');
    connection.destroy();
  });
  connection.on('error', reject);
}));
"""


@pytest.mark.parametrize("name", list(OFFLINE_PY))
def test_offline_python_run_has_no_network(sandbox, name):
    """With enable_network false, the call fails (AF_UNIX still works)."""
    body = f"{OFFLINE_SETUP_PY}\nattempt({name!r}, lambda: {OFFLINE_PY[name]})\n"
    report = sandbox.attack(python_snippet(body, port=sandbox.server.port), enable_network=False)
    report.assert_blocked(at_least=1)
    assert "CONTROL unix sockets work" in report.data["stdout"], str(report)
    sandbox.assert_unharmed()


@pytest.mark.parametrize("name", list(OFFLINE_JS))
def test_offline_node_run_has_no_network(sandbox, name):
    """With enable_network false, the call fails (AF_UNIX still works)."""
    body = f"{OFFLINE_SETUP_JS}\ncontrol().then(() => attemptAsync({name!r}, {OFFLINE_JS[name]}));\n"
    report = sandbox.attack(node_snippet(body, port=sandbox.server.port), language="nodejs", enable_network=False)
    report.assert_blocked(at_least=1)
    assert "CONTROL unix sockets work" in report.data["stdout"], str(report)
    sandbox.assert_unharmed()


@pytest.mark.parametrize("language", ["python3", "nodejs"])
def test_online_run_keeps_its_network(sandbox, language):
    """Control: with enable_network true, the same server lets a run call it over TCP and listen."""
    data = sandbox.run_ok(snippet(language, ONLINE_PY, ONLINE_JS, port=sandbox.server.port), language=language)
    assert data == {"stdout": "HTTP/1.1 200\nlistening\n", "stderr": "", "error": "", "exit_code": 0}
    sandbox.assert_unharmed()


@pytest.mark.parametrize(
    ("attacker", "enable_network", "victim_language"),
    [("python3", True, "python3"), ("nodejs", False, "nodejs"), ("python3", False, "nodejs")],
)
def test_abstract_socket_of_another_run_unreachable(sandbox, victim, attacker, enable_network, victim_language):
    """Scenario: a run connects to a concurrent run's abstract unix socket.

    1. A victim run listens on an abstract unix socket and waits.
    2. The attacker (online or offline) connects to it by name: refused.
    3. The victim saw no connection and prints exactly what it would have alone.
    """
    target = victim(victim_language)
    code = snippet(attacker, ABSTRACT_PY, ABSTRACT_JS, name=target.socket_name)
    report = sandbox.attack(code, language=attacker, enable_network=enable_network)
    report.assert_blocked(at_least=1)
    target.assert_unharmed()
    sandbox.assert_unharmed()
