"""Video: frames per second of `deepdream-onnx video`, and how much flow blending steadies it.

A synthetic clip (shapes moving over a textured ground, lossless H.264) is dreamed twice
with the same seed: with the previous frame's detail carried along the optical flow
(--blend 0.5) and with every frame alone (--blend 0).  The coherence factor is the
warp error between consecutive output frames alone over that with flow blending
(deepdream_onnx.video.flow.warp_error): above 1, blending made the video steadier.
"""

import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

FPS, FRAMES = 12, 24


def clip_frames(w, h, count=FRAMES):
    """uint8 RGB frames: a checked square moving right and a disc moving down-left over still waves."""
    y, x = np.mgrid[:h, :w]
    ground = 120 + 50 * (np.sin(x / 5.0) * np.cos(y / 7.0))[..., None] * [1.0, 0.8, 0.6]
    frames = []
    for k in range(count):
        img = ground.copy()
        side, sx, sy = h // 3, w // 10 + 3 * k, h // 6
        square = (x >= sx) & (x < sx + side) & (y >= sy) & (y < sy + side)
        img[square] = ((x[square] - sx) // 6 % 2 * 150 + 60)[:, None] * [1.0, 0.6, 0.2]
        cx, cy, r = 0.8 * w - 2 * k, 0.2 * h + 1.5 * k, h / 6
        disc = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        img[disc] = [40, 200, 230]
        frames.append(np.uint8(img))
    return frames


def write_clip(path, frames):
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"qp": "0"})  # lossless: the flow sees what we made
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv444p"
        for k, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def run_video(net, end, size=(224, 160), iters=5, octaves=2):
    """Dream a synthetic clip with and without flow blending; print frames/s and the coherence factor."""
    from deepdream_onnx import images
    from deepdream_onnx.video import dream_video
    from deepdream_onnx.video.flow import warp_error

    w, h = size
    inputs = clip_frames(w, h)
    print(f"video: a synthetic {w}x{h} clip, {len(inputs)} frames at {FPS} fps; {end}, "
          f"{octaves} octaves x {iters} steps per frame, seed 0")
    errors = {}
    with tempfile.TemporaryDirectory(prefix="deepdream-bench-video-") as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_clip(clip, inputs)
        for name, blend in (("flow blending (--blend 0.5)", 0.5), ("each frame alone (--blend 0)", 0.0)):
            work = Path(tmp) / f"work-{blend}"
            started = time.perf_counter()
            dream_video(net, clip, Path(tmp) / f"out-{blend}.mp4", blend=blend, seed=0, work_root=work,
                        keep_frames=True, end=end, iter_n=iters, octave_n=octaves)
            seconds = time.perf_counter() - started
            (folder,) = list(work.iterdir())
            frames = [images.load_image(p) for p in sorted(folder.glob("*.png"))]
            errors[name] = warp_error(frames, inputs)
            print(f"  {name}: {len(frames) / seconds:.2f} frames/s (decode, flow, dream, frames and encode); "
                  f"warp error between consecutive frames {errors[name]:.2f}")
    alone, blended = errors["each frame alone (--blend 0)"], errors["flow blending (--blend 0.5)"]
    print(f"  coherence factor (warp error alone / with flow blending): {alone / blended:.2f}")
    return alone / blended
