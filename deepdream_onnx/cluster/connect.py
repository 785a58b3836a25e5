"""Joining a running Ray cluster, with a quick answer when it is not there.

ray.init on an address where nothing answers, or where something other than Ray
listens, waits for minutes; connect first opens a TCP connection and checks that the
port speaks HTTP/2 (Ray's GCS and client server are gRPC), each with a short timeout.

A cluster on a loopback address stays on loopback: Ray would otherwise swap 127.0.0.1
for the machine's interface address, on which a cluster started with
`ray start --node-ip-address 127.0.0.1` does not listen.
"""

import contextlib
import logging
import os
import socket

from deepdream_onnx.addresses import is_loopback
from deepdream_onnx.cluster import INSTALL, ClusterError

DEFAULT_PORT = 6379          # `ray start --head`'s GCS port
CLIENT_PREFIX = "ray://"
PROBE_TIMEOUT = 5.0          # seconds for each of: connect, the server's first frame
LOOPBACK = "127.0.0.1"
# The client's preface and an empty SETTINGS frame: an HTTP/2 server answers with its SETTINGS.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS = 4


def import_ray():
    """The ray module, or ClusterError naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise ClusterError(f"--ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


def resolve(address):
    """(host, port, client) of a --ray address: HOST[:PORT], ray://HOST[:PORT] or auto.

    auto: $RAY_ADDRESS, else the cluster `ray start` last started on this machine.
    """
    text = address.strip()
    if text == "auto":
        text = os.environ.get("RAY_ADDRESS") or _last_started()
        if not text:
            raise ClusterError("--ray auto found no Ray cluster: RAY_ADDRESS is not set and `ray start` "
                               "has started none on this machine; give --ray HOST:PORT")
    client = text.startswith(CLIENT_PREFIX)
    host, port = _split(text[len(CLIENT_PREFIX):] if client else text, address)
    return host, port, client


def _split(text, given):
    host, sep, port = text.rpartition(":")
    if not sep or (host.count(":") and not host.endswith("]")):  # no port, or a bare IPv6 address
        host, port = text, str(DEFAULT_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"--ray {given}: expected HOST:PORT, ray://HOST:PORT or auto")
    return host, int(port)


def _last_started():
    # Where `ray start` records its address (ray._common.utils.get_ray_address_file),
    # read without importing Ray, which fixes its choice of node address at import.
    tmp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    try:
        with open(os.path.join(tmp, "ray", "ray_current_cluster"), encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def probe(host, port, timeout=PROBE_TIMEOUT):
    """Raise ClusterError unless host:port accepts a connection and answers HTTP/2."""
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(_HTTP2_HELLO)
            head = _read(s, 9)
    except socket.timeout:
        raise ClusterError(f"the Ray cluster at {where} does not answer (no reply within {timeout:g} s); "
                           "check the address and that `ray start --head` runs there") from None
    except OSError as e:
        raise ClusterError(f"cannot reach the Ray cluster at {where} ({e.strerror or e}); "
                           "check the address and that `ray start --head` runs there") from None
    if len(head) < 9 or head[3] != _SETTINGS:
        raise ClusterError(f"{where} is not a Ray cluster (it does not answer as Ray's gRPC server does); "
                           "give the address `ray start --head` printed")


def _read(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


@contextlib.contextmanager
def connect(address):
    """Join the cluster at address (see resolve) for the duration; yields the ray module.

    No dashboard, no usage statistics, no worker logs copied to this terminal.
    """
    host, port, client = resolve(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    loopback = is_loopback(host)
    if loopback:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = import_ray()
    probe(host, port)
    target = f"{CLIENT_PREFIX}{host}:{port}" if client else f"{_bracketed(host)}:{port}"
    options = dict(address=target, log_to_driver=False, logging_level=logging.ERROR)
    if not client:
        options["include_dashboard"] = False
        if loopback:
            options["_node_ip_address"] = LOOPBACK
    try:
        ray.init(**options)
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError...
        raise ClusterError(f"cannot join the Ray cluster at {host}:{port}: {' '.join(str(e).split())}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _bracketed(host):
    return f"[{host}]" if ":" in host else host
