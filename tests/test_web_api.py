"""The web API (deepdream_onnx.web) in process: every endpoint, each state of a dream and
each refusal, on the tiny model.  One test runs a real uvicorn server in a thread, for a
client that leaves an event stream halfway."""

import io
import json
import socket
import struct
import threading
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")

with warnings.catch_warnings():  # Starlette >= 1.x would rather have httpx2 drive its TestClient
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from deepdream_onnx import images  # noqa: E402
from deepdream_onnx.cli.main import main  # noqa: E402
from deepdream_onnx.errors import DeepDreamError  # noqa: E402
from deepdream_onnx.recipe import dream  # noqa: E402
from deepdream_onnx.runtime import Net  # noqa: E402
from deepdream_onnx.web.app import create_app  # noqa: E402
from deepdream_onnx.web.limits import Limits  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LIMITS = Limits(max_upload_bytes=200_000, max_pixels=600 * 600, max_iters=200, max_octaves=4, max_side=600,
                max_frames=4)
FINAL = ("done", "failed", "cancelled")
SMALL = {"start": "sky", "size": [40, 32], "iters": 2, "octaves": 2, "seed": 1}
LONG = {"start": "sky", "size": [600, 600], "iters": 200, "octaves": 4, "seed": 2}  # tens of seconds, unless cancelled


@pytest.fixture(scope="module")
def net(tiny_model_dir):
    return Net(tiny_model_dir, device="cpu")


@pytest.fixture
def make_client(net, tmp_path):
    """make_client(**create_app options) -> a started TestClient; all are closed after the test."""
    clients = []

    def make(**options):
        options = {"cache_dir": tmp_path / "cache", "limits": LIMITS, "net": net, **options}
        client = TestClient(create_app(**options))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


def submit(client, params=None, files=None, status=202):
    r = client.post("/api/dreams", data={"params": json.dumps(params if params is not None else SMALL)}, files=files)
    assert r.status_code == status, r.text
    return r.json()


def wait(client, job_id, until=FINAL, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        s = client.get(f"/api/dreams/{job_id}").json()
        if s["status"] in until or time.monotonic() > deadline:
            return s
        time.sleep(0.02)


def wait_for(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def refused(r, status, match=""):
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and detail.strip() == detail, detail
    assert match in detail, detail
    return detail


def png_bytes(h=24, w=32, seed=0):
    rgb = np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def header_only_png(w, h):
    """A PNG whose header says w x h but which has no pixel data: any decoding would fail."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- model, page, concepts


def test_model_lists_blobs_classes_and_limits(client, net):
    m = client.get("/api/model").json()
    assert m["name"] == "TinyNet"
    assert [b["name"] for b in m["blobs"]] == net.blobs
    assert m["blobs"][0] == {"name": "conv1", "channels": 8, "stride": 2, "min_size": [1, 1]}
    assert m["spatial_blobs"] == list(net.spatial_blobs) and m["default_end"] in m["spatial_blobs"]
    assert m["classes"] == [f"class {i}" for i in range(5)]  # 5 classes, no labels: not ImageNet's names
    assert m["limits"] == LIMITS.as_dict()


def test_page_assets_and_openapi_without_a_cdn(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert client.get("/static/app.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/api/model", "/api/dreams", "/api/dreams/{job_id}/events", "/api/concepts"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 404  # its scripts would come from a CDN
    refused(client.get("/api/nowhere"), 404)


def test_concepts_complete_names_and_indices(client):
    assert client.get("/api/concepts", params={"q": "class 3"}).json()["matches"][0] == {"index": 3, "name": "class 3"}
    assert [m["index"] for m in client.get("/api/concepts", params={"q": "", "limit": 2}).json()["matches"]] == [0, 1]
    assert client.get("/api/concepts", params={"q": "4"}).json()["matches"][0]["index"] == 4
    assert client.get("/api/concepts", params={"q": "zebra"}).json()["matches"] == []
    refused(client.get("/api/concepts", params={"limit": 0}), 422, "limit")


def test_concept_search_ranks_imagenet_names():
    from deepdream_onnx.labels import imagenet_labels
    from deepdream_onnx.web.concepts import search

    names = imagenet_labels()
    first = search(names, "dumbbell")[0]
    assert names[first[0]] == first[1] and "dumbbell" in first[1]
    assert all("cat" in name.lower() for _, name in search(names, "cat", 5))
    assert search(names, "dumbel", 3)  # misspelt: the closest names


# --------------------------------------------------------------------------- thumbnails


def test_thumbnail_is_made_once_and_kept_on_disk(client, tmp_path, monkeypatch, tiny_end):
    made = []
    real = dream.deepdream
    monkeypatch.setattr(dream, "deepdream", lambda *a, **k: made.append(k["end"]) or real(*a, **k))
    first = client.get(f"/api/layers/{tiny_end}/thumbnail")
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(first.content)).size == (128, 128)
    second = client.get(f"/api/layers/{tiny_end}/thumbnail")
    assert second.content == first.content and made == [tiny_end]
    assert len(list((tmp_path / "cache" / "thumbnails").glob("*/*.png"))) == 1
    refused(client.get("/api/layers/mix/outptu/thumbnail"), 404, "did you mean mix/output")
    refused(client.get("/api/layers/fc/thumbnail"), 422, "classifier")


# --------------------------------------------------------------------------- a dream's life


def test_a_dream_is_the_command_lines_dream(client, tmp_path, tiny_model_dir, tiny_end):
    params = {"start": "noise", "size": [48, 40], "end": tiny_end, "iters": 2, "octaves": 2, "seed": 5,
              "channels": [1, 3]}
    job = submit(client, params)
    assert job["status"] == "queued" and job["position"] == 0
    s = wait(client, job["id"])
    assert s["status"] == "done" and s["message"] is None and s["has_preview"] and s["mode"] == "dream"
    assert s["progress"]["done"] == s["progress"]["total"] == 4 and s["progress"]["eta_s"] == 0
    assert s["params"]["seed"] == 5 and s["params"]["end"] == tiny_end and s["params"]["channels"] == [1, 3]
    r = client.get(f"/api/dreams/{job['id']}/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"] == f'attachment; filename="dream-{job["id"]}.png"'
    (tmp_path / "web.png").write_bytes(r.content)

    out = tmp_path / "cli.png"
    assert main(["dream", "-o", str(out), "--model", str(tiny_model_dir), "--device", "cpu", "--end", tiny_end,
                 "--size", "48x40", "--iters", "2", "--octaves", "2", "--seed", "5", "--channel", "1,3", "-q"]) == 0
    assert images.read_png_params(tmp_path / "web.png") == images.read_png_params(out)
    np.testing.assert_array_equal(images.load_image(tmp_path / "web.png"), images.load_image(out))
    assert client.get(f"/api/dreams/{job['id']}/preview").headers["content-type"] == "image/png"
    refused(client.delete(f"/api/dreams/{job['id']}"), 409, "done")
    refused(client.get(f"/api/dreams/{job['id']}/animation"), 404, "zoom")


def test_queued_running_cancelled_and_the_slot_freed(make_client):
    client = make_client(max_queued=2)
    a = submit(client, LONG)
    b = submit(client)
    c = submit(client)
    refused(client.post("/api/dreams", data={"params": json.dumps(SMALL)}), 429, "waiting")
    running = wait(client, a["id"], until=("running",))
    wait_for(lambda: (client.get(f"/api/dreams/{a['id']}").json()["progress"] or {}).get("done", 0) >= 2)
    running = client.get(f"/api/dreams/{a['id']}").json()
    p = running["progress"]
    assert running["status"] == "running" and running["position"] is None
    assert p["total"] == 800 and p["octaves"] == 4 and p["steps"] == 200 and p["eta_s"] > 0
    assert (client.get(f"/api/dreams/{b['id']}").json()["position"],
            client.get(f"/api/dreams/{c['id']}").json()["position"]) == (0, 1)
    refused(client.get(f"/api/dreams/{a['id']}/image"), 409, "running")
    refused(client.get(f"/api/dreams/{b['id']}/image"), 409, "queued")
    refused(client.get(f"/api/dreams/{b['id']}/preview"), 404, "no preview")

    assert client.delete(f"/api/dreams/{b['id']}").json() == {"id": b["id"], "status": "cancelled"}
    assert client.get(f"/api/dreams/{c['id']}").json()["position"] == 0
    assert client.delete(f"/api/dreams/{a['id']}").json() == {"id": a["id"], "status": "cancelled"}
    assert wait(client, c["id"])["status"] == "done"  # a's worker stopped and took the next one
    stopped = client.get(f"/api/dreams/{a['id']}").json()
    time.sleep(0.2)
    assert client.get(f"/api/dreams/{a['id']}").json() == stopped and stopped["status"] == "cancelled"
    assert stopped["progress"]["done"] < 800
    refused(client.delete(f"/api/dreams/{a['id']}"), 409, "cancelled")
    refused(client.get(f"/api/dreams/{a['id']}/image"), 409, "cancelled")


def test_a_failing_dream_says_why_and_the_server_goes_on(client, monkeypatch):
    def fail(*args, **kwargs):
        raise DeepDreamError("the dream\nbroke")

    monkeypatch.setattr(dream, "deepdream", fail)
    s = wait(client, submit(client)["id"])
    assert s["status"] == "failed" and s["message"] == "the dream broke"
    monkeypatch.setattr(dream, "deepdream", lambda *a, **k: 1 / 0)
    s = wait(client, submit(client)["id"])
    assert s["status"] == "failed" and s["message"].startswith("internal error: ZeroDivisionError")
    monkeypatch.undo()
    assert wait(client, submit(client)["id"])["status"] == "done"


def test_zoom_makes_an_animation(client, tiny_end):
    job = submit(client, {"start": "noise", "size": [40, 32], "end": tiny_end, "iters": 1, "octaves": 1,
                          "mode": "zoom", "frames": 3, "seed": 0})
    s = wait(client, job["id"])
    assert s["status"] == "done" and s["mode"] == "zoom" and s["progress"]["frames"] == 3
    r = client.get(f"/api/dreams/{job['id']}/animation")
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    gif = Image.open(io.BytesIO(r.content))
    assert gif.n_frames == 3 and gif.size == (40, 32)
    png = client.get(f"/api/dreams/{job['id']}/image").content
    params = json.loads(Image.open(io.BytesIO(png)).text["deepdream"])
    assert params["frame"] == 2 and params["scale"] == 0.05 and params["input"] == "(noise)"


def test_upload_guide_and_concept(client, tiny_end):
    files = {"image": ("../../photo.png", png_bytes()), "guide": ("flowers.png", png_bytes(seed=1))}
    s = wait(client, submit(client, {"end": tiny_end, "iters": 1, "octaves": 1}, files=files)["id"])
    assert s["status"] == "done" and s["params"]["start"] == "image" and s["params"]["size"] == [32, 24]
    params = images.read_png_params(io.BytesIO(client.get(f"/api/dreams/{s['id']}/image").content))
    assert params["input"] == "photo.png" and params["guide"] == "flowers.png"
    # The page sends its layer along with a concept: the concept wins, as it dreams at the classifier.
    s = wait(client, submit(client, {**SMALL, "end": tiny_end, "concept": "class 2"})["id"])
    assert s["status"] == "done" and s["params"]["end"] == "fc" and s["params"]["concept"] == 2


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("params, match", [
    ("{not json", "Invalid JSON"),
    ("[1, 2]", "object"),
    ({"iters": "10"}, "iters"),
    ({"iters": True}, "iters"),
    ({"colour": "blue"}, "colour"),
    ({"start": "photo"}, "start"),
    ({"octave_scale": 1.0}, "octave_scale"),
    ({"step_size": 0}, "step_size"),
    ({"channels": [-1]}, "channels"),
    ({"end": "mix/outptu"}, "did you mean mix/output"),
    ({"end": "mix/output", "channels": [18]}, "out of range"),
    ({"concept": 7}, "out of range"),
    ({"concept": "zebra"}, "zebra"),
    ({"concept": 1, "channels": [0]}, "concept"),
    ({"iters": 201}, "limit of 200"),
    ({"octaves": 5}, "limit of 4"),
    ({"mode": "zoom", "frames": 5}, "limit of 4"),
    ({"size": [601, 10]}, "limit of 600"),
    ({"size": [0, 10]}, "size"),
    ({"start": "image"}, "image file"),
    ({"start": "sky", "size": [4, 4], "octaves": 4}, "smallest of 4 octaves"),
], ids=str)
def test_bad_params_are_one_line_422s(client, params, match):
    text = params if isinstance(params, str) else json.dumps({"end": "mix/output", **params})
    refused(client.post("/api/dreams", data={"params": text}), 422, match)


def test_bad_uploads(client, monkeypatch):
    refused(client.post("/api/dreams"), 422, "params")
    refused(submit_raw(client, files={"image": ("notes.png", b"not a picture")}), 415, "not an image")
    refused(submit_raw(client, files={"image": ("cut.png", png_bytes()[:60])}), 422, "image file")
    refused(submit_raw(client, files={"image": ("big.bin", b"\0" * 200_001)}), 413, "200,000")
    refused(submit_raw(client, {"start": "image", "size": [40, 40]}, files={"image": ("a.png", png_bytes())}),
            422, "size")
    refused(submit_raw(client, {"start": "noise"}, files={"image": ("a.png", png_bytes())}), 422, "noise")
    refused(submit_raw(client, files={"image": ("a.png", png_bytes()), "guide": ("g.png", png_bytes(2, 2))}),
            422, "guide image")
    # Over the pixels from the header alone: nothing is decoded.
    decoded = []
    real = images._to_rgb8
    monkeypatch.setattr(images, "_to_rgb8", lambda im: decoded.append(im) or real(im))
    refused(submit_raw(client, files={"image": ("bomb.png", header_only_png(30_000, 30_000))}), 413, "pixels")
    bomb = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(bomb, format="PNG")  # 10^8 pixels in ~12 KB
    refused(submit_raw(client, files={"image": ("bomb.png", bomb.getvalue())}), 413, "10000x10000")
    assert decoded == []
    refused(submit_raw(client, files={"image": ("tall.png", png_bytes(601, 4))}), 413, "601")
    # A body over the limit is refused by its length before it is read, or without one as it streams in.
    multipart = {"content-type": "multipart/form-data; boundary=x"}
    refused(client.post("/api/dreams", content=b"x", headers={**multipart, "content-length": str(10**9)}), 413, "bytes")
    chunks = (b"x" * 100_000 for _ in range(20))
    r = client.post("/api/dreams", content=chunks, headers=multipart)
    assert r.request.headers["transfer-encoding"] == "chunked"
    refused(r, 413, "bytes")


def submit_raw(client, params=None, files=None):
    return client.post("/api/dreams", data={"params": json.dumps(params or {"end": "mix/output"})}, files=files)


def test_unknown_dreams_are_404s(client):
    for method, path in [("GET", ""), ("GET", "/events"), ("GET", "/preview"), ("GET", "/image"),
                         ("GET", "/animation"), ("DELETE", "")]:
        refused(client.request(method, f"/api/dreams/0123456789abcdef{path}"), 404, "no dream")
    refused(client.get("/api/dreams/..%2F..%2Fetc%2Fpasswd/image"), 404)


# --------------------------------------------------------------------------- keeping bounded


def test_old_results_are_evicted_and_old_dreams_forgotten(make_client, tmp_path):
    client = make_client(cache_bytes=1, max_jobs=2)  # every finished dream is over the cache's size
    first = wait(client, submit(client)["id"])
    assert first["status"] == "done"
    # The worker evicts right after it has finished the dream.
    wait_for(lambda: client.get(f"/api/dreams/{first['id']}").json()["message"] is not None)
    assert client.get(f"/api/dreams/{first['id']}").json()["message"].startswith("the result was evicted")
    refused(client.get(f"/api/dreams/{first['id']}/image"), 404, "evicted")
    for _ in range(2):
        wait(client, submit(client)["id"])
    refused(client.get(f"/api/dreams/{first['id']}"), 404, "no dream")
    results = list((tmp_path / "cache" / "results").glob("run-*"))
    assert len(results) == 1 and len(list(results[0].iterdir())) <= 2


def test_results_are_removed_when_the_server_stops(net, tmp_path):
    with TestClient(create_app(cache_dir=tmp_path, limits=LIMITS, net=net)) as client:
        wait(client, submit(client)["id"])
        assert list((tmp_path / "results").glob("run-*/*/result.png"))
    assert list((tmp_path / "results").iterdir()) == []


def test_the_shared_net_builds_each_session_once(tiny_model_dir, tiny_end, monkeypatch):
    from deepdream_onnx import runtime

    built = []
    real = runtime.ort.InferenceSession

    def slow_session(*args, **kwargs):
        built.append(args[0])
        time.sleep(0.2)  # long enough for the other threads to arrive meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime.ort, "InferenceSession", slow_session)
    shared = Net(tiny_model_dir, device="cpu")
    data = np.zeros((1, 3, 16, 16), np.float32)
    threads = [threading.Thread(target=shared.gradient, args=(data, tiny_end)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1


# --------------------------------------------------------------------------- events


def parse_events(text):
    return [json.loads(line[len("data: "):]) for line in text.splitlines() if line.startswith("data: ")]


def test_events_stream_until_the_final_status(client):
    job = submit(client, {**SMALL, "size": [200, 160], "iters": 5, "octaves": 3})
    r = client.get(f"/api/dreams/{job['id']}/events")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_events(r.text)
    kinds = {e["type"] for e in events}
    assert kinds == {"status", "progress", "preview"}
    assert events[-1]["type"] == "status" and events[-1]["status"] == "done"
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == 15
    previews = [e["url"] for e in events if e["type"] == "preview"]
    assert previews[-1] == f"/api/dreams/{job['id']}/preview?v=3"
    assert client.get(previews[-1]).headers["content-type"] == "image/png"
    # A finished dream's stream is its final status at once.
    again = parse_events(client.get(f"/api/dreams/{job['id']}/events").text)
    assert again[-1]["status"] == "done"


def test_a_client_leaving_an_event_stream_leaves_the_server_healthy(net, tmp_path):
    import uvicorn

    app = create_app(cache_dir=tmp_path, limits=LIMITS, net=net)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            job = http.post("/api/dreams", data={"params": json.dumps(LONG)}).json()
            for _ in range(3):  # leave after the first event, three times
                with http.stream("GET", f"/api/dreams/{job['id']}/events") as r:
                    first = next(line for line in r.iter_lines() if line.startswith("data: "))
                    assert json.loads(first[6:])["type"] in ("status", "progress")
            jobs = app.state.jobs
            wait_for(lambda: not jobs._listeners)  # each stream unsubscribed as its client left
            assert http.get("/api/model").status_code == 200
            assert http.delete(f"/api/dreams/{job['id']}").json()["status"] == "cancelled"
            small = http.post("/api/dreams", data={"params": json.dumps(SMALL)}).json()
            events = parse_events(http.get(f"/api/dreams/{small['id']}/events").text)
            assert events[-1]["status"] == "done"
    finally:
        server.should_exit = True
        thread.join(10)
    assert not thread.is_alive()
