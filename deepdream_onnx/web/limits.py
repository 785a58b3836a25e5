"""The caps a server puts on what one request may ask for (GET /api/model shows them)."""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 16 * 1024 * 1024   # per uploaded file
    max_pixels: int = 2048 * 2048              # of an upload, or of a sky or noise start
    max_iters: int = 100                       # per octave
    max_octaves: int = 8
    max_side: int = 2048                       # width or height, upload or start
    max_frames: int = 100                      # of a zoom

    def as_dict(self):
        return asdict(self)


# Beyond the caps per request: how much the server keeps.
CACHE_BYTES = 512 * 1024 * 1024  # results on disk; the oldest finished dreams are evicted first
MAX_JOBS = 200                   # dreams remembered; the oldest finished ones are forgotten
MAX_QUEUED = 64                  # dreams waiting; more are refused (429) until some start
