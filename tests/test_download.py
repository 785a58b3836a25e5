import hashlib
import io
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deepdream_onnx import download
from deepdream_onnx.download import fetch_caffemodel, sha1_of
from deepdream_onnx.errors import ChecksumError, DeepDreamError

PAYLOAD = bytes(range(256)) * 1000  # 256 kB: several chunks
PAYLOAD_SHA1 = hashlib.sha1(PAYLOAD).hexdigest()


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class Server:
    """A local HTTP server: /model serves PAYLOAD, /nolength without Content-Length, else 404."""

    def __init__(self):
        self.requests = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests.append(self.path)
                if self.path not in ("/model", "/nolength"):
                    self.send_error(404)
                    return
                self.send_response(200)
                if self.path == "/model":
                    self.send_header("Content-Length", str(len(PAYLOAD)))
                else:
                    self.close_connection = True  # the body ends when the connection does
                self.end_headers()
                self.wfile.write(PAYLOAD)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    s = Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def no_network(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("network accessed")

    monkeypatch.setattr(urllib.request, "urlopen", fail)


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/model"


def test_sha1_of(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(PAYLOAD)
    assert sha1_of(path) == PAYLOAD_SHA1
    assert sha1_of(str(path)) == PAYLOAD_SHA1


def test_constants():
    assert download.GOOGLENET_URL == "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel"
    assert download.GOOGLENET_SHA1 == "405fc5acd08a3bb12de8ee5e23a96bec22f08204"


def test_download_puts_file_in_place_with_progress(server, tmp_path):
    dest = tmp_path / "sub" / "model.caffemodel"
    stream = FakeTTY()
    got = fetch_caffemodel(dest, url=server.url("/model"), sha1=PAYLOAD_SHA1, progress=stream)
    assert got == dest
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "model.caffemodel.part").exists()
    out = stream.getvalue()
    assert "downloading model.caffemodel" in out
    assert "250.0 KiB/250.0 KiB" in out
    assert out.endswith("\n")


def test_download_without_content_length(server, tmp_path):
    dest = tmp_path / "model.caffemodel"
    stream = FakeTTY()
    fetch_caffemodel(dest, url=server.url("/nolength"), sha1=PAYLOAD_SHA1, progress=stream)
    assert dest.read_bytes() == PAYLOAD
    assert "250.0 KiB" in stream.getvalue()
    assert "ETA" not in stream.getvalue()


def test_progress_false_draws_nothing(server, tmp_path, capsys):
    fetch_caffemodel(tmp_path / "m", url=server.url("/model"), sha1=PAYLOAD_SHA1, progress=False)
    assert capsys.readouterr() == ("", "")


def test_default_dest_is_in_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPDREAM_ONNX_CACHE", str(tmp_path / "cache"))
    got = fetch_caffemodel(url=server.url("/model"), sha1=PAYLOAD_SHA1, progress=False)
    assert got == tmp_path / "cache" / "bvlc_googlenet.caffemodel"
    assert got.read_bytes() == PAYLOAD


def test_wrong_sha1_leaves_nothing(server, tmp_path):
    dest = tmp_path / "model.caffemodel"
    with pytest.raises(ChecksumError) as info:
        fetch_caffemodel(dest, url=server.url("/model"), sha1="0" * 40, progress=False)
    message = str(info.value)
    assert "0" * 40 in message and PAYLOAD_SHA1 in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["404", "refused"])
def test_network_error_is_one_line(server, tmp_path, kind):
    url = server.url("/missing") if kind == "404" else closed_port_url()
    dest = tmp_path / "model.caffemodel"
    with pytest.raises(DeepDreamError) as info:
        fetch_caffemodel(dest, url=url, sha1=PAYLOAD_SHA1, progress=False, timeout=5)
    message = str(info.value)
    assert type(info.value) is DeepDreamError
    assert "\n" not in message
    assert message.startswith(f"could not download {url} (")
    assert f"save it as {dest}" in message and "--caffemodel PATH" in message
    if kind == "404":
        assert "404" in message
    assert list(tmp_path.iterdir()) == []


def test_existing_good_file_needs_no_network(tmp_path, no_network):
    dest = tmp_path / "model.caffemodel"
    dest.write_bytes(PAYLOAD)
    assert fetch_caffemodel(dest, url=closed_port_url(), sha1=PAYLOAD_SHA1) == dest
    assert dest.read_bytes() == PAYLOAD


def test_existing_bad_file_is_kept(tmp_path, no_network):
    dest = tmp_path / "model.caffemodel"
    dest.write_bytes(b"not the model")
    with pytest.raises(ChecksumError) as info:
        fetch_caffemodel(dest, url=closed_port_url(), sha1=PAYLOAD_SHA1)
    message = str(info.value)
    assert str(dest) in message and PAYLOAD_SHA1 in message and "\n" not in message
    assert "delete it" in message and "--caffemodel" in message
    assert dest.read_bytes() == b"not the model"


def test_stale_part_file_is_replaced(server, tmp_path):
    dest = tmp_path / "model.caffemodel"
    (tmp_path / "model.caffemodel.part").write_bytes(b"left over from an interrupted run" * 10000)
    fetch_caffemodel(dest, url=server.url("/model"), sha1=PAYLOAD_SHA1, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.caffemodel"]


def test_file_url(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "model.caffemodel"
    fetch_caffemodel(dest, url=source.as_uri(), sha1=PAYLOAD_SHA1, progress=False)
    assert dest.read_bytes() == PAYLOAD
