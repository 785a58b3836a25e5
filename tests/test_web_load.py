"""`deepdream-onnx serve` under load, as a real server in a subprocess: 20 dreams submitted at
once all complete with no server error and bounded memory; a cancelled dream frees its
worker for the next; Ctrl+C stops it cleanly and removes its results."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")

FINAL = ("done", "failed", "cancelled")
RSS_LIMIT = 1.5 * 2**30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    """(base URL, process, cache dir) of `deepdream-onnx serve` on the tiny model, stopped after the test."""
    port = free_port()
    cache = tmp_path / "cache"
    env = dict(os.environ, DEEPDREAM_ONNX_CACHE=str(cache))
    process = subprocess.Popen([sys.executable, "-m", "deepdream_onnx", "serve", "--model", str(tiny_model_dir),
                                "--device", "cpu", "--port", str(port)], env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    wait_until_up(base, process)
    yield base, process, cache
    if process.poll() is None:
        process.kill()
        process.communicate()


def wait_until_up(base, process, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            if httpx.get(f"{base}/api/model", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.1)


def peak_rss(pid):
    """The process's peak resident memory in bytes (Linux), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None


def dream_to_the_end(base, params):
    """Submit, follow the events to the final status; (submit status, final status, statuses seen)."""
    with httpx.Client(base_url=base, timeout=60) as http:
        r = http.post("/api/dreams", data={"params": json.dumps(params)})
        if r.status_code != 202:
            return r.status_code, None, [r.status_code]
        job = r.json()["id"]
        with http.stream("GET", f"/api/dreams/{job}/events") as events:
            seen = [events.status_code]
            last = None
            for line in events.iter_lines():
                if line.startswith("data: "):
                    last = json.loads(line[6:])
        final = http.get(f"/api/dreams/{job}")
        seen.append(final.status_code)
        image = http.get(f"/api/dreams/{job}/image")
        seen.append(image.status_code)
        return 202, (last or {}).get("status"), seen


def test_twenty_dreams_at_once_then_cancel_frees_the_worker(server, tiny_end):
    base, process, cache = server
    params = [{"start": "noise", "size": [64 + 8 * i, 48], "end": tiny_end, "iters": 3, "octaves": 2, "seed": i}
              for i in range(20)]
    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda p: dream_to_the_end(base, p), params))
    elapsed = time.monotonic() - started
    assert [r[0] for r in results] == [202] * 20
    assert [r[1] for r in results] == ["done"] * 20
    assert all(code < 500 for r in results for code in r[2])
    rss = peak_rss(process.pid)
    print(f"\n20 concurrent dreams in {elapsed:.1f} s; server peak RSS "
          f"{'unknown' if rss is None else f'{rss / 2**20:.0f} MiB'}")
    if rss is not None:
        assert rss < RSS_LIMIT

    with httpx.Client(base_url=base, timeout=30) as http:
        long = http.post("/api/dreams", data={"params": json.dumps(
            {"start": "sky", "size": [1024, 1024], "end": tiny_end, "iters": 100, "octaves": 4})}).json()
        nxt = http.post("/api/dreams", data={"params": json.dumps(params[0])}).json()
        deadline = time.monotonic() + 30
        while http.get(f"/api/dreams/{long['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert http.get(f"/api/dreams/{nxt['id']}").json()["status"] == "queued"
        cancelled_at = time.monotonic()
        assert http.delete(f"/api/dreams/{long['id']}").json()["status"] == "cancelled"
        while http.get(f"/api/dreams/{nxt['id']}").json()["status"] not in FINAL:
            assert time.monotonic() < cancelled_at + 10, "the next dream did not start"
            time.sleep(0.05)
        assert http.get(f"/api/dreams/{nxt['id']}").json()["status"] == "done"
        print(f"the next dream was done {time.monotonic() - cancelled_at:.2f} s after the cancel")

    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert list((cache / "web" / "results").iterdir()) == []


def test_serve_refuses_a_busy_port_in_one_line(server, tiny_model_dir):
    base, _, _ = server
    port = base.rsplit(":", 1)[1]
    r = subprocess.run([sys.executable, "-m", "deepdream_onnx", "serve", "--model", str(tiny_model_dir),
                        "--port", port], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"deepdream-onnx: error: cannot listen on 127.0.0.1:{port}")


def test_serve_warns_when_listening_beyond_this_machine(tmp_path, tiny_model_dir):
    port = free_port()
    env = dict(os.environ, DEEPDREAM_ONNX_CACHE=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-m", "deepdream_onnx", "serve", "--model", str(tiny_model_dir),
                                "--host", "0.0.0.0", "--port", str(port)], env=env, stdin=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        warning = process.stderr.readline()
        assert warning.startswith("deepdream-onnx: warning: listening on 0.0.0.0")
        assert f"serving TinyNet at http://127.0.0.1:{port}/" in process.stderr.readline()
        wait_until_up(f"http://127.0.0.1:{port}", process)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0
