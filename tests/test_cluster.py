"""--ray on a real local Ray cluster, started here on loopback and stopped at the end.

`ray start --head --block` runs a head node with 2 CPUs (so 2 Dreamer actors) on
127.0.0.1, in its own temporary directories; the command line under test joins it as a
user would, in a subprocess.  Checked: outputs byte-identical to the local run with the
same --threads (1: the workers' default; onnxruntime's sums, and so the dreams, depend
on the thread count) for dream, gallery and census, on GoogLeNet too; a worker killed
mid-batch replaced and the batch complete; an unreachable address refused within 30 s;
and no socket of any process started here listening beyond loopback.

A second node is not started: `ray start --address` refuses to join with Ray kept on
loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), and without that Ray listens on every
interface.
"""

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

CPUS = 2
START_TIMEOUT = 90


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(processes):
    """{(ip, port, process name)} of the TCP and UDP sockets that processes listen on."""
    found = set()
    for proc in processes:
        try:
            connections = getattr(proc, "net_connections", None) or proc.connections
            name = proc.name()
            for c in connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and c.laddr):
                    found.add((c.laddr.ip, c.laddr.port, name))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def is_loopback(ip):
    return ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback


class LocalCluster:
    """A head node started by `ray start --head --block`; every process of it is a descendant of proc."""

    def __init__(self, root):
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.node_tmp = root / "node-tmp"  # the nodes' TMPDIR: where actors unpack the model
        self.node_tmp.mkdir()
        self.log = root / "head.log"
        env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
                   TMPDIR=str(self.node_tmp))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                 "--node-ip-address", "127.0.0.1", "--port", str(self.port), "--num-cpus", str(CPUS),
                 "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(root / "ray")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.sockets = set()
        self._sampling = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def wait_started(self):
        deadline = time.monotonic() + START_TIMEOUT
        while "Ray runtime started" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start failed:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        self._sampling.set()
        self._sampler.start()

    def processes(self):
        """This test's processes: the cluster's and the command lines under test (children of pytest)."""
        return psutil.Process().children(recursive=True)

    def dreamers(self):
        """The Dreamer actors' processes (Ray titles them ray::Dreamer, ray::Dreamer.dream_item, ...)."""
        found = []
        for proc in self.processes():
            try:
                if proc.cmdline()[:1] and proc.cmdline()[0].startswith("ray::Dreamer"):
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def _sample(self):
        while self._sampling.is_set():
            self.sockets |= listening(self.processes())
            time.sleep(0.25)

    def stop(self):
        """SIGTERM to `ray start --block`, which stops its node; then any straggler, by pid."""
        self._sampling.clear()
        tree = []
        if self.proc.poll() is None:
            tree = [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]
        self.proc.terminate()
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in tree:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass


@pytest.fixture(scope="module")
def cluster():
    # Short, for Ray's unix sockets (at most 107 bytes) under the temporary directory.
    root = Path(tempfile.mkdtemp(prefix="ddray-", dir="/tmp" if os.path.isdir("/tmp") else None))
    started = time.monotonic()
    c = LocalCluster(root)
    try:
        c.wait_started()
        print(f"\ncluster started in {time.monotonic() - started:.1f} s at {c.address}")
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def run(*args, timeout=300):
    # No RAY_* settings from this process: the command line must keep itself on loopback.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "deepdream_onnx", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    return r, time.monotonic() - started


def contents(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def make_photos(folder, n, h, w):
    rng = np.random.RandomState(n)
    for i in range(n):
        Image.fromarray(rng.randint(0, 256, (h, w, 3)).astype(np.uint8)).save(folder / f"p{i}.png")
    (folder / "bad.png").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """8 different images, and bad.png (text)."""
    return make_photos(tmp_path_factory.mktemp("photos"), 8, 64, 80)


@pytest.fixture(scope="module")
def dream_args(tiny_model_dir, tiny_end):
    return ["--model", tiny_model_dir, "--end", tiny_end, "--iters", 4, "--octaves", 2, "--seed", 11]


@pytest.fixture(scope="module")
def local_batch(tmp_path_factory, photos, dream_args):
    out = tmp_path_factory.mktemp("local")
    r, seconds = run("dream", photos, "-o", out, *dream_args, "--threads", 1, "-q")
    assert r.returncode == 1 and "bad.png is not an image" in r.stderr, r.stderr
    print(f"\nlocal batch: 8 images in {seconds:.2f} s = {8 / seconds:.2f} images/s (process start included)")
    return contents(out)


def test_a_batch_on_the_cluster_equals_the_local_run(cluster, photos, dream_args, local_batch, tmp_path):
    out = tmp_path / "ray"
    r, seconds = run("dream", photos, "-o", out, *dream_args, "--ray", cluster.address)
    print(f"\ncluster batch: 8 images in {seconds:.2f} s = {8 / seconds:.2f} images/s "
          f"(process start, joining, {CPUS} actors loading the model included)")
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].endswith(f"running on {CPUS} Ray workers of 1 thread on 1 node at {cluster.address}")
    assert lines[1:] == [f"deepdream-onnx: error: {photos / 'bad.png'} is not an image (Pillow cannot identify it)",
                         f"deepdream-onnx: 8 written, 1 failed in {out}"]
    assert contents(out) == local_batch
    # The model came as bytes and was written under the node's temporary directory.
    unpacked = list((cluster.node_tmp / "deepdream-onnx-models").glob("*/manifest.json"))
    assert len(unpacked) == 1

    # An objective travels too (a closure over the guide's features, computed here).
    two = [photos / "p1.png", photos / "p2.png", "--guide", photos / "p3.png", *dream_args, "-q"]
    local, _ = run("dream", *two, "-o", tmp_path / "guided-local", "--threads", 1)
    remote, _ = run("dream", *two, "-o", tmp_path / "guided-ray", "--ray", cluster.address)
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    assert contents(tmp_path / "guided-ray") == contents(tmp_path / "guided-local")


def test_gallery_and_census_on_the_cluster_equal_the_local_run(cluster, photos, tiny_model_dir, tiny_end, tmp_path):
    args = ["--model", tiny_model_dir, "--iters", 2, "--octaves", 2, "--seed", 3, "-q"]
    gallery = ["gallery", photos / "p0.png", "--ends", f"conv1,norm1,{tiny_end}", *args]
    census = ["census", "--noise", 6, "--end", tiny_end, *args]
    (local, _), (remote, seconds) = (run(*gallery, "-o", tmp_path / "local.png", "--threads", 1),
                                     run(*gallery, "-o", tmp_path / "ray.png", "--ray", cluster.address))
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    assert (tmp_path / "local.png").read_bytes() == (tmp_path / "ray.png").read_bytes()
    print(f"\ncluster gallery of 3 layers: {seconds:.2f} s")

    (local, _), (remote, seconds) = (run(*census, "--csv", tmp_path / "local.csv", "--threads", 1),
                                     run(*census, "--csv", tmp_path / "ray.csv", "--ray", cluster.address))
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    assert local.stdout == remote.stdout
    assert (tmp_path / "local.csv").read_bytes() == (tmp_path / "ray.csv").read_bytes()
    print(f"cluster census of 6 noise images: {seconds:.2f} s")


@pytest.fixture(scope="module")
def googlenet_batch(tmp_path_factory, googlenet_model_dir):
    """(photos, args, the local outputs): a net large enough for onnxruntime to split its sums by
    thread (the tiny one would not show a wrong thread count), and slow enough to kill a worker mid-batch."""
    photos = make_photos(tmp_path_factory.mktemp("googlenet-photos"), 8, 112, 144)
    args = [photos, "--model", googlenet_model_dir, "--end", "inception_4c/output", "--iters", 5, "--octaves", 2,
            "--seed", 2]
    out = tmp_path_factory.mktemp("googlenet-local")
    r, seconds = run("dream", *args, "-o", out, "--threads", 1, "-q")
    assert r.returncode == 1, r.stderr  # bad.png
    print(f"\nGoogLeNet, 8 images 144x112, 2 octaves of 5 steps, here with 1 thread: {8 / seconds:.2f} images/s "
          "(process start included)")
    return photos, args, contents(out)


def test_a_googlenet_batch_on_the_cluster_equals_the_local_run(cluster, googlenet_batch, tmp_path):
    photos, args, local = googlenet_batch
    r, seconds = run("dream", *args, "-o", tmp_path / "ray", "--ray", cluster.address, "-q")
    assert r.returncode == 1, r.stderr
    assert len(local) == 8 and contents(tmp_path / "ray") == local
    print(f"GoogLeNet, the same on the cluster ({CPUS} workers): {8 / seconds:.2f} images/s "
          "(process start, joining, loading included)")


def test_a_worker_killed_mid_batch_is_replaced_and_the_batch_completes(cluster, googlenet_batch, tmp_path):
    photos, args, local = googlenet_batch
    out = tmp_path / "ray"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    started = time.monotonic()
    cli = subprocess.Popen([sys.executable, "-m", "deepdream_onnx", "dream", *map(str, args), "-o", out,
                            "--ray", cluster.address],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out.is_dir() and any(p.suffix == ".png" for p in out.iterdir())):
            assert cli.poll() is None and time.monotonic() < deadline, "the batch ended or stalled before any output"
            time.sleep(0.01)
        done_before = len([p for p in out.iterdir() if p.suffix == ".png"])
        busy = [p for p in cluster.dreamers() if "dream_item" in " ".join(p.cmdline())]
        assert busy, "no Dreamer actor at work"
        os.kill(busy[0].pid, signal.SIGKILL)
        _, err = cli.communicate(timeout=240)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    print(f"\nkilled a busy actor (pid {busy[0].pid}) after {done_before} of 8 outputs; "
          f"the batch finished in {time.monotonic() - started:.2f} s")
    assert cli.returncode == 1, err  # bad.png only
    assert "a Ray worker was lost; replacing it, its unfinished work goes again" in err
    assert err.splitlines()[-1] == f"deepdream-onnx: 8 written, 1 failed in {out}"
    assert contents(out) == local


def test_an_unreachable_address_fails_within_30_s(cluster, photos, dream_args, tmp_path):
    refused = free_port()  # nothing listens there
    r, seconds = run("dream", photos, "-o", tmp_path / "out", *dream_args, "--ray", f"127.0.0.1:{refused}")
    assert r.returncode == 1 and seconds < 30
    assert r.stderr == (f"deepdream-onnx: error: cannot reach the Ray cluster at 127.0.0.1:{refused} "
                        "(Connection refused); check the address and that `ray start --head` runs there\n")
    assert not (tmp_path / "out").exists()

    with socket.socket() as silent:  # accepts, never answers: ray.init alone would wait for minutes
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        r, seconds = run("dream", photos, "-o", tmp_path / "out", *dream_args,
                         "--ray", f"127.0.0.1:{silent.getsockname()[1]}")
    assert r.returncode == 1 and seconds < 30 and len(r.stderr.splitlines()) == 1
    assert "does not answer" in r.stderr
    print(f"\nrefused: one-line error; silent listener: one-line error in {seconds:.1f} s")


def test_no_socket_listens_beyond_loopback(cluster, photos, dream_args, tmp_path):
    r, _ = run("dream", photos / "p1.png", "-o", f"{tmp_path}/", *dream_args, "--ray", cluster.address, "-q")
    assert r.returncode == 0, r.stderr
    cluster.sockets |= listening(cluster.processes())
    names = {name for _, _, name in cluster.sockets}
    assert "gcs_server" in names and "raylet" in names, cluster.sockets
    assert any(name.startswith("ray::") for name in names)  # the actors' own servers, seen while they ran
    beyond = sorted(s for s in cluster.sockets if not is_loopback(s[0]))
    assert beyond == [], beyond


def test_a_video_on_the_cluster_equals_the_local_run(cluster, tiny_model_dir, tiny_end, tmp_path):
    """--blend 0: each frame dreamed alone on a worker, saved to the same work directory as here."""
    pytest.importorskip("av")
    pytest.importorskip("cv2")
    from test_video import clip_frames, decoded, write_clip

    clip = tmp_path / "clip.mp4"
    write_clip(clip, clip_frames()[:12])
    args = [clip, "--model", tiny_model_dir, "--end", tiny_end, "--iters", 2, "--octaves", 2, "--seed", 5,
            "--blend", 0, "--keep-frames", "-q"]
    local, seconds = run("video", *args, "-o", tmp_path / "local.mp4", "--work", tmp_path / "local",
                         "--threads", 1)
    print(f"\nlocal video: 12 frames in {seconds:.2f} s")
    remote, seconds = run("video", *args, "-o", tmp_path / "ray.mp4", "--work", tmp_path / "ray",
                          "--ray", cluster.address)
    print(f"cluster video: 12 frames in {seconds:.2f} s (process start, joining, actors loading included)")
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    (local_work,), (ray_work,) = (list((tmp_path / d).iterdir()) for d in ("local", "ray"))
    assert local_work.name == ray_work.name  # the same work directory, so either continues the other
    assert contents(ray_work) == contents(local_work) and len(list(ray_work.glob("*.png"))) == 12
    ours, theirs = decoded(tmp_path / "ray.mp4")[0], decoded(tmp_path / "local.mp4")[0]
    assert len(ours) == 12 and all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    assert (tmp_path / "ray.mp4").read_bytes() == (tmp_path / "local.mp4").read_bytes()


def test_a_blended_video_on_the_cluster_runs_in_deterministic_resumable_segments(cluster, tiny_model_dir, tiny_end,
                                                                                 tmp_path):
    """--blend above 0: segments of --segment frames, each from --warmup frames before it, in parallel."""
    pytest.importorskip("av")
    pytest.importorskip("cv2")
    from test_video import clip_frames, decoded, write_clip

    from deepdream_onnx import images
    from deepdream_onnx.cli import video as cli_video
    from deepdream_onnx.video import dream as video_dream

    assert (cli_video.SEGMENT, cli_video.WARMUP) == (video_dream.SEGMENT, video_dream.WARMUP)
    clip = tmp_path / "clip.mp4"
    write_clip(clip, clip_frames()[:18])
    common = [clip, "--model", tiny_model_dir, "--end", tiny_end, "--iters", 2, "--octaves", 2, "--seed", 5,
              "--blend", 0.5, "--keep-frames", "-q"]
    args = [*common, "--segment", 6, "--warmup", 2, "--ray", cluster.address]
    results = []
    for name in "ab":
        r, seconds = run("video", *args, "-o", tmp_path / f"{name}.mp4", "--work", tmp_path / name)
        print(f"\nsegmented video {name}: 18 frames in 3 segments in {seconds:.2f} s")
        assert r.returncode == 0, r.stderr
        (work,) = (tmp_path / name).iterdir()
        assert len(list(work.glob("*.png"))) == 18 and len(decoded(tmp_path / f"{name}.mp4")[0]) == 18
        results.append(work)
    a, b = results
    assert contents(a) == contents(b)  # deterministic: every frame byte-identical

    # The first segment (no warm-up before frame 0) is the sequential run's own loop.
    local, _ = run("video", *common, "--duration", 0.5, "-o", tmp_path / "local.mp4", "--work", tmp_path / "local",
                   "--threads", 1)
    assert local.returncode == 0, local.stderr
    (local_work,) = (tmp_path / "local").iterdir()
    assert local_work.name != a.name  # a segmented run keeps its own work directory
    for t in range(6):
        name = f"{t:06d}.png"
        assert np.array_equal(images.load_image(a / name), images.load_image(local_work / name)), t

    # Resume: a segment with holes continues from the finished frame before each (read back),
    # one not started starts again from its warm-up; finished frames are never redone.
    gone = [3, 8, 10, 12, 13, 14, 15, 16, 17]
    for t in gone:
        (b / f"{t:06d}.png").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in b.glob("*.png")}
    r, seconds = run("video", *args, "-o", tmp_path / "b.mp4", "--work", tmp_path / "b")
    print(f"resumed: {len(gone)} frames in {seconds:.2f} s")
    assert r.returncode == 0, r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in b.glob("*.png") if p.name in kept} == kept
    assert contents(b) == contents(a)

    # --segment and --warmup are for --ray with --blend above 0: refused otherwise, in one line.
    for extra in (["--segment", 6], ["--warmup", 2, "--ray", cluster.address, "--blend", 0]):
        r, _ = run("video", clip, "-o", tmp_path / "c.mp4", "--model", tiny_model_dir, *extra)
        assert r.returncode == 2 and "--ray and --blend above 0" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "c.mp4").exists()
