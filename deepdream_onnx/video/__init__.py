"""DeepDream for videos: every frame dreamt, each continuing the last one's dream along the
optical flow, resumable frame by frame.  Needs the `video` extra (PyAV, OpenCV):

    import deepdream_onnx
    from deepdream_onnx.video import dream_video

    net = deepdream_onnx.load()
    dream_video(net, "clip.mp4", "dream.mp4", blend=0.5, iter_n=5, octave_n=3, seed=0, progress=True)

Modules: media (decoding, the span, encoding), flow (carrying detail along the motion),
frames (the resumable work directory), dream (dream_video).
"""

try:
    import av  # noqa: F401
    import cv2  # noqa: F401
except ImportError as e:
    raise ImportError(f"deepdream_onnx.video needs PyAV and OpenCV ({e.name} is missing): "
                      "pip install deepdream-onnx[video]") from e

from deepdream_onnx.video.dream import (  # noqa: E402
    CYCLE_EVERY,
    VideoResult,
    check_video,
    default_work_root,
    dream_video,
)
from deepdream_onnx.video.media import OUTPUTS, VideoInputError  # noqa: E402

__all__ = ["CYCLE_EVERY", "OUTPUTS", "VideoInputError", "VideoResult", "check_video", "default_work_root",
           "dream_video"]
