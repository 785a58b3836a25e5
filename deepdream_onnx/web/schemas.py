"""The JSON the API returns, as pydantic models: FastAPI checks the responses against them
and describes them at /openapi.json."""

from typing import Any, Dict, List, Literal, Optional

from pydantic import BaseModel

Status = Literal["queued", "running", "done", "failed", "cancelled"]


class Error(BaseModel):
    detail: str


class Blob(BaseModel):
    name: str
    channels: int
    stride: Optional[int]
    min_size: List[int]  # [height, width]


class LimitsInfo(BaseModel):
    max_upload_bytes: int
    max_pixels: int
    max_iters: int
    max_octaves: int
    max_side: int
    max_frames: int


class ModelInfo(BaseModel):
    name: str
    blobs: List[Blob]
    spatial_blobs: List[str]
    default_end: str
    classes: Optional[List[str]]
    limits: LimitsInfo


class Concept(BaseModel):
    index: int
    name: str


class Concepts(BaseModel):
    matches: List[Concept]


class Submitted(BaseModel):
    id: str
    status: Literal["queued"]
    position: int  # how many dreams wait before this one


class Progress(BaseModel):
    done: int
    total: int
    octave: int    # 1-based, the octave in progress (the smallest first)
    octaves: int
    step: int      # steps done in that octave
    steps: int
    frame: int     # 1-based; a dream has one frame
    frames: int
    eta_s: Optional[float]


class DreamStatus(BaseModel):
    id: str
    status: Status
    position: Optional[int]
    progress: Optional[Progress]
    message: Optional[str]
    params: Dict[str, Any]
    has_preview: bool
    mode: Literal["dream", "zoom"]


class CancelledDream(BaseModel):
    id: str
    status: Literal["cancelled"]
