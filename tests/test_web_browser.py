"""The web page end to end: headless Chromium, driven by Playwright, against `deepdream-onnx serve`.

The server runs in a subprocess on a free 127.0.0.1 port with the tiny model; the page is
used as a person would: pick an image, a layer and small settings, start, watch the
progress, download the result, dream on it, and cancel a long dream.  Screenshots of the
page go to the test's tmp dir and, when DEEPDREAM_ARTIFACTS names a folder, there too.

Needs Debian's chromium (/usr/bin/chromium) and the playwright package; skipped without
them (Playwright's own browser download is not used).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepdream_onnx import images

pytest.importorskip("fastapi", reason="the web server needs fastapi (pip install -e '.[web]')")
pytest.importorskip("playwright", reason="the browser tests need playwright (pip install playwright)")

from playwright.sync_api import expect, sync_playwright  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no browser: {CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)

STARTUP_S = 120  # the server loads the model before it answers
DREAM_MS = 120_000  # the longest wait for one dream in the page


def _get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """The base URL of `deepdream-onnx serve` on the tiny model (port 0: a free one), and its /api/model."""
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [sys.executable, "-m", "deepdream_onnx", "serve", "--model", str(tiny_model_dir),
           "--device", "cpu", "--host", "127.0.0.1", "--port", "0"]
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        url, model = None, None
        while model is None:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log_path.read_text()}")
            if time.perf_counter() - t0 > STARTUP_S:
                pytest.fail(f"the server did not answer in {STARTUP_S} s:\n{log_path.read_text()}")
            if url is None:  # "deepdream-onnx: serving NAME at http://127.0.0.1:PORT/ (...)"
                found = re.search(r" at (http://127\.0\.0\.1:\d+)/", log_path.read_text())
                url = found and found.group(1)
            else:
                try:
                    model = _get_json(url + "/api/model")
                except (urllib.error.URLError, OSError):
                    pass
            if model is None:
                time.sleep(0.1)
        print(f"\n[web] server up at {url} in {time.perf_counter() - t0:.1f} s")
        yield url, model
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(base_url=server[0], accept_downloads=True,
                                  viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    console_errors = []
    pg.on("pageerror", lambda e: console_errors.append(str(e)))
    pg.goto("/")
    expect(pg.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
    yield pg
    context.close()
    assert console_errors == [], console_errors  # no uncaught exceptions in the page's script


def _artifact(page, tmp_path, name):
    """A full-page screenshot in tmp_path and in $DEEPDREAM_ARTIFACTS if set; its path."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    folder = os.environ.get("DEEPDREAM_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / name)
    print(f"[web] screenshot {path}")
    return path


def _photo(path, w=96, h=72):
    """A small smooth colourful PNG."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 / w, y * 255 / h, 128 + 100 * np.sin(x / 7.0) * np.cos(y / 5.0)], axis=-1)
    Image.fromarray(np.uint8(np.clip(img, 0, 255))).save(path)
    return path


def _watch_progress(page):
    """Record every text of #status and value of #progress the page shows from now on."""
    page.evaluate("""() => {
        window.__seen = [];
        const status = document.getElementById('status');
        const bar = document.getElementById('progress');
        const preview = document.getElementById('preview');
        window.__previews = [];
        const note = () => window.__seen.push([status.textContent, bar.value, bar.max]);
        const mo = new MutationObserver(note);
        mo.observe(status, {childList: true, characterData: true, subtree: true});
        mo.observe(bar, {attributes: true});
        new MutationObserver(() => window.__previews.push(preview.getAttribute('src')))
            .observe(preview, {attributes: true, attributeFilter: ['src']});
    }""")


def _wait_state(page, state, timeout=DREAM_MS):
    expect(page.locator("#status")).to_have_attribute("data-state", state, timeout=timeout)


def test_the_page_dreams_downloads_dreams_on_and_cancels(page, server, tmp_path, tiny_end):
    url, model = server
    t0 = time.perf_counter()
    expect(page.locator("#model-name")).not_to_have_text("…")
    expect(page.locator("#error")).to_be_hidden()

    # The layer picker lists the model's spatial blobs with channel counts.
    options = page.locator("#layer option")
    assert options.evaluate_all("os => os.map(o => o.value)") == model["spatial_blobs"]
    page.select_option("#layer", tiny_end)
    channels = {b["name"]: b["channels"] for b in model["blobs"]}[tiny_end]
    expect(page.locator("#layer option:checked")).to_contain_text(f"{channels} ch")
    # The selected layer's thumbnail: a PNG through a path that keeps the name's '/'.
    thumb = page.locator("#layer-thumb")
    expect(thumb).to_have_attribute("src", f"/api/layers/{tiny_end}/thumbnail")
    page.wait_for_function("() => document.getElementById('layer-thumb').naturalWidth > 0", timeout=60_000)

    # Upload an image and set small parameters.
    photo = _photo(tmp_path / "photo.png")
    page.set_input_files("#image-input", str(photo))
    expect(page.locator("#input-image")).to_be_visible()
    for field, value in {"#octaves": "2", "#iters": "3", "#jitter": "4", "#seed": "11"}.items():
        page.fill(field, value)

    _watch_progress(page)
    t1 = time.perf_counter()
    page.click("#start")
    _wait_state(page, "done")
    print(f"[web] first dream in {time.perf_counter() - t1:.1f} s")
    seen = page.evaluate("window.__seen")
    texts = [s[0] for s in seen]
    assert any(t.startswith("Octave") for t in texts), texts  # live octave/step progress was shown
    assert len({s[1] for s in seen}) >= 2, seen  # the bar moved
    bar = page.locator("#progress")
    assert bar.evaluate("b => b.value === b.max && b.max === 6"), seen  # 2 octaves x 3 steps
    previews = page.evaluate("window.__previews")
    assert previews and all(re.fullmatch(r"/api/dreams/\w+/preview\?v=\d+", p) for p in previews), previews

    # The result beside the input, at the input's size, with the CLI's metadata.
    result = page.locator("#result")
    expect(result).to_be_visible()
    page.wait_for_function("() => document.getElementById('result').naturalWidth > 0")
    assert result.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [96, 72]
    expect(page.locator("#cancel")).to_be_disabled()
    expect(page.locator("#strip li")).to_have_count(1)
    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / "downloaded.png"
    info.value.save_as(saved)
    with Image.open(saved) as im:
        assert im.format == "PNG" and im.size == (96, 72)
    params = images.read_png_params(saved)
    assert params is not None
    assert params["layer"] == tiny_end
    assert (params["iterations"], params["octaves"], params["seed"], params["jitter"]) == (3, 2, 11, 4)

    # Dream on the result: it becomes the next start image and a second dream runs.
    first_id = page.locator("#status").get_attribute("data-dream")
    page.click("#dream-on")
    expect(page.locator("#status")).not_to_have_attribute("data-dream", first_id)
    _wait_state(page, "done")
    expect(page.locator("#strip li")).to_have_count(2)
    expect(page.locator("#input-caption")).to_have_text(f"Input: dream-{tiny_end.replace('/', '-')}-{first_id}.png")
    expect(page.locator("#error")).to_be_hidden()
    # The strip shows earlier dreams on click.
    first = page.locator("#strip li button").first
    first.click()
    expect(first).to_have_attribute("aria-current", "true")
    expect(page.locator("#download")).to_have_attribute("href", f"/api/dreams/{first.get_attribute('data-id')}/image")
    shot = _artifact(page, tmp_path, "web-page.png")
    assert shot.stat().st_size > 10_000

    # A long dream from the built-in sky, cancelled while it is queued or running.
    limits = model["limits"]
    page.check("#start-sky")
    expect(page.locator("#size-row")).to_be_visible()
    side = min(limits["max_side"], 1024)
    page.fill("#width", str(side))
    page.fill("#height", str(side * 3 // 4))
    page.fill("#iters", str(limits["max_iters"]))
    page.fill("#octaves", str(min(limits["max_octaves"], 4)))
    page.click("#start")
    expect(page.locator("#cancel")).to_be_enabled()
    dream_id = page.locator("#status").get_attribute("data-dream")
    page.click("#cancel")
    _wait_state(page, "cancelled", timeout=60_000)
    expect(page.locator("#status")).to_have_text("Cancelled.")
    expect(page.locator("#start")).to_be_enabled()
    assert _get_json(f"{url}/api/dreams/{dream_id}")["status"] == "cancelled"
    expect(page.locator("#strip li")).to_have_count(2)
    _artifact(page, tmp_path, "web-page-cancelled.png")
    print(f"[web] page test in {time.perf_counter() - t0:.1f} s")


def test_the_page_shows_the_servers_and_its_own_errors(page, server):
    url, model = server
    # No image chosen: the page says so itself.
    page.click("#start")
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("image")
    # Too many iterations: the server's 4xx message, as it is.
    page.check("#start-noise")
    page.fill("#width", "64")
    page.fill("#height", "48")
    page.fill("#iters", str(model["limits"]["max_iters"] + 1))
    with page.expect_response(lambda r: r.url.endswith("/api/dreams") and r.request.method == "POST") as info:
        page.click("#start")
    response = info.value
    assert 400 <= response.status < 500
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    expect(error).to_have_text(detail)
    expect(page.locator("#start")).to_be_enabled()
    expect(page.locator("#strip li")).to_have_count(0)


def test_the_page_drops_an_image_and_zooms_with_an_objective(page, server, tmp_path):
    url, model = server
    # Every layer's thumbnail, lazily: none but the selected one until the gallery opens.
    expect(page.locator("#layer-grid img")).to_have_count(0)
    page.click("#layer-gallery summary")
    thumbs = page.locator("#layer-grid img")
    expect(thumbs).to_have_count(len(model["spatial_blobs"]))
    page.wait_for_function("() => [...document.querySelectorAll('#layer-grid img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=60_000)
    layer = model["spatial_blobs"][-1]
    page.click(f"#layer-grid button[data-layer='{layer}']")
    expect(page.locator("#layer")).to_have_value(layer)

    # Drop an image file on the page (a drag from the desktop, as the browser delivers it).
    photo = _photo(tmp_path / "dropped.png", 80, 60)
    page.evaluate("""async (bytes) => {
        const file = new File([new Uint8Array(bytes)], 'dropped.png', {type: 'image/png'});
        const data = new DataTransfer();
        data.items.add(file);
        const drop = document.getElementById('drop');
        drop.dispatchEvent(new DragEvent('dragover', {dataTransfer: data, bubbles: true, cancelable: true}));
        drop.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
    }""", list(photo.read_bytes()))
    expect(page.locator("#input-image")).to_be_visible()
    expect(page.locator("#input-caption")).to_have_text("Input: dropped.png")
    expect(page.locator("#start-image")).to_be_checked()

    # The objective: channels, Laplacian levels, a concept with name completion.
    page.click("#objective summary")
    channels = {b["name"]: b["channels"] for b in model["blobs"]}[layer]
    page.fill("#channels", f"0, {channels - 1}")
    page.fill("#laplacian", "2")
    if model["classes"]:
        name = model["classes"][0]
        page.fill("#concept", name[:3])
        expect(page.locator(f"#concept-list option[value='{name}']")).to_have_count(1)
        page.fill("#concept", "")

    # A zoom of 3 frames: the GIF shows and downloads.
    page.check("#zoom")
    expect(page.locator("#frames")).to_be_enabled()
    for field, value in {"#frames": "3", "#zoom-scale": "0.1", "#octaves": "1", "#iters": "2", "#seed": "5"}.items():
        page.fill(field, value)
    page.click("#start")
    _wait_state(page, "done")
    animation = page.locator("#animation")
    expect(animation).to_be_visible()
    page.wait_for_function("() => document.getElementById('animation').naturalWidth > 0")
    gif_url = page.locator("#download-gif").get_attribute("href")
    gif = page.request.get(gif_url)
    assert gif.ok and gif.headers["content-type"] == "image/gif"
    saved = tmp_path / "zoom.gif"
    saved.write_bytes(gif.body())
    with Image.open(saved) as im:
        assert im.format == "GIF" and im.n_frames == 3 and im.size == (80, 60)
    png = tmp_path / "zoom.png"
    png.write_bytes(page.request.get(page.locator("#download").get_attribute("href")).body())
    params = images.read_png_params(png)
    assert params["layer"] == layer and params["channels"] == [0, channels - 1]
    assert params["normalize"] == "laplacian:2" and params["scale"] == 0.1
    expect(page.locator("#result-caption")).to_contain_text("zoom, 3 frames")
    _artifact(page, tmp_path, "web-page-zoom.png")
