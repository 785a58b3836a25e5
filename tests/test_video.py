"""The video command and deepdream_onnx.video on clips the tests make themselves with PyAV:
moving shapes on a textured ground, 2 s at 12 fps, with a tone that changes pitch at 1 s."""

import json
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")
pytest.importorskip("cv2")

from deepdream_onnx import images  # noqa: E402
from deepdream_onnx.video import dream_video, flow, media  # noqa: E402

W, H, FPS, SECONDS = 64, 48, 12, 2
RATE = 44100
TONES = (440.0, 880.0)  # Hz in the first and the second second
AMPLITUDE = 0.3
DREAM = dict(iter_n=2, octave_n=2, step_size=3.0)


# --------------------------------------------------------------------------- clips


def clip_frames():
    """uint8 RGB frames: a square moving right and a disc moving down-left over a still texture."""
    # Smooth, so that H.264 keeps it and the flow finds it still: waves of a few pixels.
    y, x = np.mgrid[:H, :W]
    wave = np.sin(x / 2.3) * np.cos(y / 3.1) + 0.5 * np.sin((x + 2 * y) / 4.7)
    ground = 120 + 50 * wave[..., None] * [1.0, 0.8, 0.6]
    frames = []
    for k in range(FPS * SECONDS):
        img = ground.copy()
        sx, sy = 2 + 2 * k, 8
        square = (x >= sx) & (x < sx + 20) & (y >= sy) & (y < sy + 20)
        img[square] = ((x[square] - sx) // 4 % 2 * 150 + 60)[:, None] * [1.0, 0.6, 0.2]
        cx, cy = 52 - 1.5 * k, 10 + 1.2 * k
        disc = (x - cx) ** 2 + (y - cy) ** 2 < 100
        img[disc] = 40 + 40 * np.sin((x[disc] - cx) / 2.0)[:, None] + [0, 160, 190]
        frames.append(np.uint8(img))
    return frames


def tone(seconds=SECONDS):
    t = np.arange(int(RATE * seconds)) / RATE
    return np.float32(AMPLITUDE * np.sin(2 * np.pi * np.where(t < 1, TONES[0], TONES[1]) * t))


def write_clip(path, frames, audio=None, fmt=None):
    with av.open(str(path), "w", format=fmt) as out:
        video = out.add_stream("libx264", rate=FPS, options={"qp": "0"})
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        sound = None
        if audio is not None:
            sound = out.add_stream("aac", rate=RATE)
            sound.layout = "mono"
        for k, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, FPS)
            out.mux(video.encode(frame))
        if sound is not None:
            for i in range(0, len(audio), 1024):
                chunk = av.AudioFrame.from_ndarray(audio[None, i:i + 1024], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = RATE, i, Fraction(1, RATE)
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
        out.mux(video.encode(None))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_clip(path, clip_frames(), tone())
    return path


def decoded(path):
    """(frames as uint8 RGB, fps, audio samples as float mono or None, audio rate) of a video file."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        fps = stream.average_rate
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return frames, fps, None, None
        rate = c.streams.audio[0].sample_rate
        chunks = [f.to_ndarray().astype(np.float64) for f in c.decode(audio=0)]
    samples = np.concatenate([_mono(c) for c in chunks]) if chunks else np.zeros(0)
    return frames, fps, samples, rate


def _mono(chunk):
    if chunk.dtype.kind == "i" or np.abs(chunk).max() > 1.5:  # s16
        chunk = chunk / 32768.0
    return chunk.mean(axis=0) if chunk.shape[0] > 1 else chunk[0]


def dominant(samples, rate):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()]


def rms(samples):
    return float(np.sqrt(np.mean(samples ** 2)))


def kept_frames(work_root):
    (work,) = list(work_root.iterdir())
    return sorted(work.glob("*.png"))


def dreamed(tiny_net, tiny_end, clip, out, work, **kwargs):
    kwargs = dict(dict(DREAM, seed=7, work_root=work), **kwargs)
    if "cycle" not in kwargs:
        kwargs["end"] = tiny_end
    return dream_video(tiny_net, clip, out, **kwargs)


# --------------------------------------------------------------------------- the output


def test_the_output_has_the_inputs_frames_rate_size_and_audio(tiny_net, tiny_end, clip, tmp_path):
    out = tmp_path / "out.mp4"
    result = dreamed(tiny_net, tiny_end, clip, out, tmp_path / "work")
    assert (result.frames, result.fps, result.size) == (FPS * SECONDS, FPS, (W, H))
    frames, fps, samples, rate = decoded(out)
    assert len(frames) == FPS * SECONDS and fps == FPS and frames[0].shape == (H, W, 3)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
        assert c.streams.audio[0].codec_context.name == "aac"
        assert abs(c.duration / 1e6 - SECONDS) < 0.05
    source = tone()
    assert rate == RATE and abs(len(samples) - len(source)) < 0.03 * RATE
    for half, hz in enumerate(TONES):
        part = samples[int((half + 0.1) * RATE):int((half + 0.9) * RATE)]
        assert abs(dominant(part, rate) - hz) < 3
        assert rms(part) == pytest.approx(AMPLITUDE / np.sqrt(2), rel=0.1)
    assert list((tmp_path / "work").iterdir()) == []  # finished: the frames are gone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_flow_blending_is_more_coherent_than_frames_alone(tiny_net, tiny_end, clip, tmp_path):
    inputs = media.read_frames(media.open_span(clip))
    inputs = list(inputs)
    errors = {}
    for name, kwargs in {"flow": {}, "no flow": dict(flow=False), "alone": dict(blend=0)}.items():
        work = tmp_path / name
        dreamed(tiny_net, tiny_end, clip, tmp_path / "out.mp4", work, keep_frames=True, **kwargs)
        errors[name] = flow.warp_error([images.load_image(p) for p in kept_frames(work)], inputs)
    factor = errors["alone"] / errors["flow"]
    print(f"\nwarp error between consecutive frames: {errors}; flow blending is {factor:.2f}x more coherent")
    assert factor > 1.05
    assert errors["flow"] < errors["no flow"]


def test_an_interrupted_run_resumes_to_the_same_frames_and_video(tiny_net, tiny_end, clip, tmp_path):
    def stop_after_5(t, frames, seconds):
        if t == 4:
            raise KeyboardInterrupt

    out = tmp_path / "resumed.mp4"
    with pytest.raises(KeyboardInterrupt):
        dreamed(tiny_net, tiny_end, clip, out, tmp_path / "resumed", keep_frames=True, seed=None,
                progress=stop_after_5)
    assert len(kept_frames(tmp_path / "resumed")) == 5 and not out.exists()
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary file left
    resumed = dreamed(tiny_net, tiny_end, clip, out, tmp_path / "resumed", keep_frames=True, seed=None)
    # seed None again: the seed the interrupted run drew and recorded, so the frames chain up
    dreamed(tiny_net, tiny_end, clip, tmp_path / "whole.mp4", tmp_path / "whole", keep_frames=True, seed=resumed.seed)
    a, b = kept_frames(tmp_path / "whole"), kept_frames(tmp_path / "resumed")
    assert [p.name for p in a] == [p.name for p in b] and len(a) == FPS * SECONDS
    for p, q in zip(a, b):
        assert np.array_equal(images.load_image(p), images.load_image(q)), p.name
    for f, g in zip(decoded(tmp_path / "whole.mp4")[0], decoded(out)[0]):
        assert np.array_equal(f, g)


def test_start_duration_size_and_fps_cut_and_scale(tiny_net, tiny_end, clip, tmp_path):
    out = tmp_path / "cut.mp4"
    result = dreamed(tiny_net, tiny_end, clip, out, tmp_path / "work", start=1.25, duration=0.5)
    frames, fps, samples, rate = decoded(out)
    assert len(frames) == result.frames == 6 and fps == FPS
    whole = list(media.read_frames(media.open_span(clip)))
    cut = list(media.read_frames(media.open_span(clip, 1.25, 0.5)))
    assert len(cut) == 6 and all(np.array_equal(a, b) for a, b in zip(cut, whole[15:21]))
    assert abs(len(samples) / rate - 0.5) < 0.03
    assert abs(dominant(samples[int(0.05 * rate):int(0.45 * rate)], rate) - TONES[1]) < 5

    out = tmp_path / "small.mp4"
    dreamed(tiny_net, tiny_end, clip, out, tmp_path / "work", size=(32, 24), fps=6, duration=1)
    frames, fps, samples, rate = decoded(out)
    assert (len(frames), fps, frames[0].shape) == (6, 6, (24, 32, 3))
    assert abs(len(samples) / rate - 1) < 0.03
    resampled = list(media.read_frames(media.open_span(clip, fps=6, duration=1)))
    assert all(np.array_equal(a, b) for a, b in zip(resampled, whole[0:12:2]))
    assert media.open_span(clip, fps=24, duration=0.25).picks == (0, 0, 1, 1, 2, 2)


def test_webm_gif_and_webp_outputs(tiny_net, tiny_end, clip, tmp_path):
    work = tmp_path / "work"
    dreamed(tiny_net, tiny_end, clip, tmp_path / "out.webm", work, keep_frames=True)
    frames, fps, samples, rate = decoded(tmp_path / "out.webm")
    assert (len(frames), fps, frames[0].shape) == (FPS * SECONDS, FPS, (H, W, 3))
    with av.open(str(tmp_path / "out.webm")) as c:
        assert c.streams.video[0].codec_context.name in ("vp9", "vp8")
        assert c.streams.audio[0].codec_context.name in ("opus", "vorbis")
    assert abs(dominant(samples[int(0.1 * rate):int(0.9 * rate)], rate) - TONES[0]) < 3
    from PIL import Image

    for ext in (".gif", ".webp"):
        # The frames are still in the work directory: only the encoding runs again.
        dreamed(tiny_net, tiny_end, clip, tmp_path / f"out{ext}", work, keep_frames=True)
        with Image.open(tmp_path / f"out{ext}") as im:
            assert (im.n_frames, im.size) == (FPS * SECONDS, (W, H))


def test_a_clip_without_audio_gives_a_video_without_audio(tiny_net, tiny_end, tmp_path):
    silent = tmp_path / "silent.mkv"
    write_clip(silent, clip_frames()[:6])
    dreamed(tiny_net, tiny_end, silent, tmp_path / "out.mp4", tmp_path / "work")
    frames, fps, samples, _ = decoded(tmp_path / "out.mp4")
    assert (len(frames), fps, samples) == (6, FPS, None)


# --------------------------------------------------------------------------- the command line


def run(*args, env=None):
    env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "deepdream_onnx", *map(str, args)], capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL, env=env)


def assert_one_line_error(result, match, status=2):
    assert result.returncode == status, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepdream-onnx: error: "), result.stderr
    assert match in lines[0], lines[0]


def test_the_command_cycles_layers_and_matches_the_api(tiny_net, tiny_model_dir, tiny_end, clip, tmp_path):
    out, work = tmp_path / "cycle.mp4", tmp_path / "work"
    r = run("video", clip, "-o", out, "--model", tiny_model_dir, "--device", "cpu", "--cycle", f"conv1,{tiny_end}",
            "--cycle-every", 3, "--iters", 2, "--octaves", 2, "--step-size", 3, "--seed", 7, "--duration", 1,
            "--work", work, "--keep-frames", "-q")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert len(decoded(out)[0]) == FPS
    layers = [images.read_png_params(p)["layer"] for p in kept_frames(work)]
    assert layers == ["conv1"] * 3 + [tiny_end] * 3 + ["conv1"] * 3 + [tiny_end] * 3
    params = images.read_png_params(kept_frames(work)[4])
    assert (params["frame"], params["seed"], params["cycle"], params["blend"]) == (4, 7, ["conv1", tiny_end], 0.5)

    # The API with the same parameters dreams the same frames; without the cycle, others.
    api, plain = tmp_path / "api", tmp_path / "plain"
    dreamed(tiny_net, tiny_end, clip, tmp_path / "api.mp4", api, keep_frames=True, duration=1,
            cycle=["conv1", tiny_end], cycle_every=3)
    dreamed(tiny_net, tiny_end, clip, tmp_path / "plain.mp4", plain, keep_frames=True, duration=1)
    for p, q in zip(kept_frames(work), kept_frames(api)):
        assert np.array_equal(images.load_image(p), images.load_image(q)), p.name
    assert not np.array_equal(images.load_image(kept_frames(work)[0]), images.load_image(kept_frames(plain)[0]))


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, clip):
    d = tmp_path_factory.mktemp("bad")
    (d / "notes.txt").write_text("not a video\n" * 50)
    (d / "noise.mp4").write_bytes(np.random.RandomState(0).bytes(5000))
    images.save_image(d / "still.png", np.zeros((H, W, 3), np.uint8))
    with av.open(str(d / "sound.m4a"), "w") as out:
        sound = out.add_stream("aac", rate=RATE)
        sound.layout = "mono"
        chunk = av.AudioFrame.from_ndarray(tone(0.1)[None], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts, chunk.time_base = RATE, 0, Fraction(1, RATE)
        out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    (d / "a-file").write_text("")
    return d


@pytest.mark.parametrize("name, args, match", [
    ("notes.txt", [], "is not a video"),
    ("noise.mp4", [], "is not a video"),
    ("still.png", [], "is a still image, not a video"),
    ("sound.m4a", [], "has no video stream"),
    ("missing.mp4", [], "cannot read"),
    ("clip", ["-o", "{out}.avi"], "unknown video extension '.avi'"),
    ("clip", ["--duration", "2.5"], "goes beyond the end"),
    ("clip", ["--start", "1.5", "--duration", "0.6"], "goes beyond the end"),
    ("clip", ["--start", "3"], "beyond the end"),
    ("clip", ["--size", "63x48"], "even width and height"),
    ("clip", ["--work", "{bad}/a-file/work"], "work directory"),
    ("clip", ["--cycle", "conv1", "--end", "conv1"], "--cycle gives the layers"),
    ("clip", ["--cycle-every", "3"], "give --cycle too"),
    ("clip", ["--blend", "1.5"], "--blend"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_input_is_a_one_line_error_and_writes_nothing(bad_inputs, clip, tiny_model_dir, tmp_path,
                                                           name, args, match):
    source = clip if name == "clip" else bad_inputs / name
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = [a.format(out=out_dir / "dream", bad=bad_inputs) for a in args]
    if "-o" not in args:
        args += ["-o", out_dir / "dream.mp4"]
    if "--work" not in args:
        args += ["--work", tmp_path / "work"]
    r = run("video", source, *args, "--model", tiny_model_dir, "-q",
            env=dict(DEEPDREAM_ONNX_CACHE=str(tmp_path / "cache")))
    assert_one_line_error(r, match)
    assert list(out_dir.iterdir()) == []


def test_a_missing_extra_names_the_pip_command(tmp_path, clip):
    code = ("import sys; sys.modules['av'] = None\n"
            "from deepdream_onnx.cli.main import main\n"
            f"sys.exit(main(['video', {str(clip)!r}, '-o', {str(tmp_path / 'o.mp4')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert_one_line_error(r, "pip install deepdream-onnx[video]", status=1)


def test_the_work_directory_is_named_by_input_and_parameters(tiny_net, tiny_end, clip, tmp_path):
    from deepdream_onnx.video.frames import WorkDir

    a = WorkDir(tmp_path, clip, {"blend": 0.5})
    assert a.path.parent == tmp_path and a.path.name.startswith("clip-")
    assert WorkDir(tmp_path, clip, {"blend": 0.5}).path == a.path
    assert WorkDir(tmp_path, clip, {"blend": 0.4}).path != a.path
    seed = a.open()
    assert a.open() == seed and json.loads((a.path / "state.json").read_text())["seed"] == seed


def test_time_and_rate_arguments():
    import argparse

    from deepdream_onnx.cli.video import _fps, _seconds

    assert [_seconds(t) for t in ("12.5", "1:30", "1:02:03", "0")] == [12.5, 90.0, 3723.0, 0.0]
    assert [_fps(t) for t in ("12", "29.97", "30000/1001")] == [12, Fraction(2997, 100), Fraction(30000, 1001)]
    for bad, parse in (("-1", _seconds), ("1:x", _seconds), ("inf", _seconds), ("0", _fps), ("1/0", _fps)):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)
