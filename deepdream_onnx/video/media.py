"""Video files in and out through PyAV, whose wheel bundles FFmpeg (no system ffmpeg needed).

Input: the span of a video to dream (start, end, output frame rate and size) and its
frames as uint8 H x W x 3 RGB.  Output: the dreamed frames, from image files, encoded by
the output's extension with the input's audio for the same span, written atomically.
"""

import bisect
import contextlib
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import List, Optional, Tuple

import av

from deepdream_onnx import images
from deepdream_onnx.errors import DeepDreamError

# A frame time within this many seconds of a span's edge counts as on it: pts * time_base
# is a float, and 2.0 may come out as 1.9999999999999998.
EPS = 1e-6
DEFAULT_FPS = Fraction(25)  # for a stream that gives no rate at all
# FFmpeg's demuxers that render text files (ANSI art, by the extension) as video.
TEXT_FORMATS = {"tty", "bin", "xbin", "adf", "idf"}


@dataclass(frozen=True)
class Output:
    """How one output extension is written: a container with video and audio encoders,
    or (animation True) an animated image through images.save_animation, without audio."""

    container: Optional[str]
    video: Tuple[str, ...] = ()   # encoders in order of preference: the first one this FFmpeg has
    audio: Tuple[str, ...] = ()
    animation: bool = False
    even_size: bool = False       # H.264 in 4:2:0 cannot code an odd width or height


_H264 = ("libx264",)
OUTPUTS = {
    ".mp4": Output("mp4", _H264, ("aac",), even_size=True),
    ".mkv": Output("matroska", _H264, ("aac",), even_size=True),
    ".webm": Output("webm", ("libvpx-vp9", "libvpx"), ("libopus", "libvorbis")),
    ".gif": Output(None, animation=True),
    ".webp": Output(None, animation=True),
}

# Quality-bound settings, visually close to the PNG frames.  x264's MB-tree is off: with it,
# PyAV's x264 coded the same frames into different files from run to run (it depended on
# the process's memory), and a resumed run should give the very file an uninterrupted one does.
VIDEO_OPTIONS = {
    "libx264": {"crf": "18", "preset": "medium", "x264-params": "mbtree=0"},
    "libvpx-vp9": {"crf": "30", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"},
    "libvpx": {"crf": "10", "b": "2M"},
}
AUDIO_BIT_RATE = {"aac": 160_000, "libopus": 128_000, "libvorbis": 160_000}


class VideoInputError(DeepDreamError):
    """The input is not a readable video, or the span asked of it is not in it."""


def output_kind(path) -> Output:
    """The Output for path's extension; DeepDreamError (one line) for an unknown one."""
    ext = Path(path).suffix.lower()
    if ext not in OUTPUTS:
        shown = f"'{ext}'" if ext else "none"
        raise DeepDreamError(f"unknown video extension {shown} for {path}; use one of {' '.join(OUTPUTS)}")
    return OUTPUTS[ext]


def check_output(path, size):
    """Refuse, before any dreaming, an output that could not be written at size (w, h)."""
    kind = output_kind(path)
    w, h = size
    if kind.even_size and (w % 2 or h % 2):
        raise DeepDreamError(f"H.264 ({Path(path).suffix}) needs an even width and height, not {w}x{h}; "
                             "give --size with even numbers, or write .webm")
    if kind.container is not None:
        _encoder(kind.video)


@dataclass(frozen=True)
class Span:
    """The part of a video to dream: output frame k shows the input frame picks[k]
    (its index in decode order after seeking to start), at fps frames a second."""

    path: Path
    start: float           # seconds from the video's beginning
    end: float
    fps: Fraction
    picks: Tuple[int, ...]
    size: Tuple[int, int]  # (width, height) of the output frames
    audio: bool            # whether the input has an audio stream

    @property
    def frames(self):
        return len(self.picks)


def open_span(path, start=0.0, duration=None, size=None, fps=None) -> Span:
    """Find the frames of [start, start + duration) of the video at path (to its end if
    duration is None): all of them at the stream's rate, or with fps, the frame showing
    at each 1/fps step.  size (w, h) scales the frames; None keeps the input's.

    The frames are decoded once here (not converted), so their count and times are exact
    even where container metadata is missing or wrong.
    Raises VideoInputError (one line) for a file that is not a video or a span beyond its end.
    """
    path = Path(path)
    times = []
    reached_end = True
    with _open(path) as container:
        stream = _video_stream(container, path)
        rate = _rate(stream)
        source_size = (stream.codec_context.width, stream.codec_context.height)
        end = None if duration is None else start + duration
        for t, _ in _frames(container, stream, path, start, rate):
            times.append(t)
            if end is not None and t >= end - EPS:
                reached_end = False  # the span is covered; no need to decode the rest
                break
        has_audio = bool(container.streams.audio)
    if not times:
        raise VideoInputError(f"{path} has no video frames" + (f" after {start:g} s" if start else ""))
    length = times[-1] + 1 / float(rate) if reached_end else math.inf
    if start >= length - EPS:
        raise VideoInputError(f"the start, {start:g} s, is at or beyond the end of {path} ({length:.3f} s long)")
    if end is None:
        end = length
    elif end > length + EPS:
        raise VideoInputError(f"{duration:g} s from {start:g} s goes beyond the end of {path} ({length:.3f} s long)")
    if fps is None:
        picks = [i for i, t in enumerate(times) if start - EPS <= t < end - EPS]
        out_fps = Fraction(rate)
    else:
        out_fps = Fraction(fps)
        count = max(1, round((end - start) * out_fps))
        picks = [_shown_at(times, start + k / out_fps) for k in range(count)]
    if not picks:
        raise VideoInputError(f"{path} has no frame between {start:g} s and {end:g} s")
    return Span(path, float(start), float(end), out_fps, tuple(picks), tuple(size or source_size), has_audio)


def _shown_at(times, t):
    """The index of the frame on screen at time t: the last one starting at or before it."""
    return max(0, bisect.bisect_right(times, t + EPS) - 1)


def read_frames(span: Span):
    """Yield the span's output frames, uint8 H x W x 3 RGB at span.size, in order."""
    w, h = span.size
    with _open(span.path) as container:
        stream = _video_stream(container, span.path)
        k = 0
        for i, (_, frame) in enumerate(_frames(container, stream, span.path, span.start, _rate(stream))):
            if k == len(span.picks):
                return
            if span.picks[k] != i:
                continue
            # AREA averages the pixels a smaller frame covers: no aliasing when scaling down.
            rgb = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")
            while k < len(span.picks) and span.picks[k] == i:  # --fps above the input's repeats frames
                yield rgb
                k += 1
    if k < len(span.picks):
        raise VideoInputError(f"{span.path} changed while it was read: {k} of {len(span.picks)} frames found")


@contextlib.contextmanager
def _open(path):
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        if isinstance(e, OSError) and e.errno is not None and e.errno < 1000:  # the file itself
            raise VideoInputError(f"cannot read {path}: {e.strerror}") from None
        raise VideoInputError(f"{path} is not a video (FFmpeg cannot read it: {_one_line(e)})") from None
    try:
        yield container
    finally:
        container.close()


def _video_stream(container, path):
    if container.format.name in TEXT_FORMATS:
        raise VideoInputError(f"{path} is not a video (FFmpeg would draw it as text: {container.format.name})")
    if container.format.name.endswith("_pipe") or container.format.name == "image2":
        raise VideoInputError(f"{path} is a still image, not a video; dream it with `deepdream-onnx dream`")
    if not container.streams.video:
        raise VideoInputError(f"{path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame threads: decoding is a small share of the time, but free
    return stream


def _rate(stream):
    return stream.average_rate or stream.guessed_rate or stream.base_rate or DEFAULT_FPS


def _origin(stream):
    """The time of the stream's beginning, so that a start of 0 s is its first frame."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _frames(container, stream, path, start, rate):
    """(time from the beginning, frame) in decode order from the keyframe before start."""
    origin = _origin(stream)
    if start > 0:
        with contextlib.suppress(av.FFmpegError):  # a file that cannot seek is read from its beginning
            container.seek(int((origin + start) / stream.time_base), stream=stream, backward=True)
    previous = None
    try:
        for frame in container.decode(stream):
            t = frame.time - origin if frame.time is not None else (
                0.0 if previous is None else previous + 1 / float(rate))
            previous = t
            yield t, frame
    except av.FFmpegError as e:
        raise VideoInputError(f"cannot decode {path}: {_one_line(e)}") from None


# --------------------------------------------------------------------------- output


def write_video(frame_paths: List[Path], out_path, span: Span, audio=True):
    """Encode the image files frame_paths (span.size each) into out_path at span.fps, by its
    extension, with the input's audio cut to the span (if audio and the format carries it).
    Written atomically: a temporary file in out_path's folder, then os.replace."""
    out_path = Path(out_path)
    kind = output_kind(out_path)
    if kind.animation:
        images.save_animation(frame_paths, out_path, round(1000 / span.fps))
        return out_path
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        options = {"movflags": "+faststart"} if kind.container == "mp4" else {}
        with contextlib.ExitStack() as stack:
            container = stack.enter_context(av.open(str(tmp), "w", format=kind.container, options=options))
            source = stack.enter_context(_open(span.path)) if audio and span.audio else None
            _mux(container, kind, frame_paths, span, source)
        os.replace(tmp, out_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return out_path


def _encoder(names):
    for name in names:
        with contextlib.suppress(av.FFmpegError, ValueError):
            return av.Codec(name, "w").name
    raise DeepDreamError(f"this PyAV's FFmpeg has no {' or '.join(names)} encoder")


def _mux(container, kind, frame_paths, span, source):
    """Encode the frames, and the audio of source (the input, open) if given, into container."""
    codec = _encoder(kind.video)
    video = container.add_stream(codec, rate=span.fps, options=VIDEO_OPTIONS.get(codec, {}))
    video.width, video.height = span.size
    video.pix_fmt = "yuv420p"  # what every player decodes
    time_base = 1 / span.fps
    audio, audio_frames = _audio_track(container, kind, span, source) if source else (None, iter(()))
    pending = next(audio_frames, None)
    for k, path in enumerate(frame_paths):
        # Interleaved in time order, so the muxer need not buffer one stream's whole length.
        while pending is not None and pending.time < (k + 1) * float(time_base):
            container.mux(audio.encode(pending))
            pending = next(audio_frames, None)
        frame = av.VideoFrame.from_ndarray(images.load_image(path, max_pixels=0), format="rgb24")
        frame.pts, frame.time_base = k, time_base
        container.mux(video.encode(frame))
    while pending is not None:
        container.mux(audio.encode(pending))
        pending = next(audio_frames, None)
    container.mux(video.encode(None))
    if audio is not None:
        container.mux(audio.encode(None))


def _audio_track(container, kind, span, source):
    """(the output audio stream, the input's audio frames cut to the span, from time 0)."""
    stream_in = source.streams.audio[0]
    rate = stream_in.codec_context.sample_rate or 48000
    layout = stream_in.codec_context.layout
    channels = len(layout.channels) if layout else 2
    layout = layout.name if layout else "stereo"
    codec = _encoder(kind.audio)
    if codec in ("libopus", "libvorbis"):
        # Opus codes 48 kHz (its other rates only lower), and both take at most stereo without a mapping.
        rate = 48000 if codec == "libopus" else rate
        layout = layout if channels <= 2 else "stereo"
    elif rate not in (av.Codec(codec, "w").audio_rates or [rate]):
        rate = 48000
    stream = container.add_stream(codec, rate=rate)
    stream.layout = layout
    stream.bit_rate = AUDIO_BIT_RATE.get(codec, 128_000)
    # The encoder resamples (format, rate, layout) and re-chunks into its frame size itself.
    return stream, _cut_audio(source, stream_in, span)


def _cut_audio(container, stream, span):
    """The audio frames of [span.start, span.end), trimmed to the sample, pts from 0."""
    origin = _origin(container.streams.video[0])
    rate = stream.codec_context.sample_rate
    emitted = 0
    clock = None  # seconds, for frames without timestamps
    try:
        if span.start > 0:
            with contextlib.suppress(av.FFmpegError):
                container.seek(int((origin + span.start) / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            t0 = frame.time - origin if frame.time is not None else (clock or 0.0)
            clock = t0 + frame.samples / rate
            first = max(0, math.ceil((span.start - t0) * rate - EPS))
            last = min(frame.samples, math.ceil((span.end - t0) * rate - EPS))
            if t0 >= span.end - EPS:
                break
            if last <= first:
                continue
            cut = _slice(frame, first, last) if (first, last) != (0, frame.samples) else frame
            if emitted == 0:  # sound that begins after the span does keeps its delay
                emitted = max(0, round((t0 + first / rate - span.start) * rate))
            cut.pts, cut.time_base = emitted, Fraction(1, rate)
            emitted += last - first
            yield cut
    except av.FFmpegError as e:
        raise VideoInputError(f"cannot decode the audio of {span.path}: {_one_line(e)}") from None


def _slice(frame, first, last):
    samples = frame.to_ndarray()
    if not frame.format.is_planar:  # packed: one row of interleaved channels
        channels = len(frame.layout.channels)
        samples = samples[:, first * channels:last * channels]
    else:
        samples = samples[:, first:last]
    cut = av.AudioFrame.from_ndarray(samples.copy(), format=frame.format.name, layout=frame.layout.name)
    cut.sample_rate = frame.sample_rate
    return cut


def _one_line(e):
    return " ".join(str(e).split()) or type(e).__name__
