"""The FastAPI application: the page at /, its assets at /static/, the JSON API under /api/
(described at /openapi.json).  create_app builds one for a model.

Nothing is fetched from elsewhere at run time: FastAPI's /docs pages, which load their
scripts from a CDN, are off.  Every error is JSON {"detail": "one line"}.
"""

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Optional

from fastapi import FastAPI, File, Form, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from deepdream_onnx import __version__, paths
from deepdream_onnx.errors import UnknownBlobError
from deepdream_onnx.recipe import DEFAULT_END
from deepdream_onnx.web import concepts, events, schemas
from deepdream_onnx.web.jobs import JobQueue, NotCancellable, QueueFull
from deepdream_onnx.web.limits import CACHE_BYTES, MAX_JOBS, MAX_QUEUED, Limits
from deepdream_onnx.web.net import load_shared
from deepdream_onnx.web.spec import ApiError, DreamParams, Upload, check, parse_params, web_message
from deepdream_onnx.web.store import ANIMATION, PREVIEW, RESULT, ResultStore
from deepdream_onnx.web.thumbnails import Thumbnails

STATIC = Path(__file__).parent / "static"
FORM_OVERHEAD = 1024 * 1024  # the params field and the multipart framing, beyond the files
PARAMS_HELP = ("JSON of DreamParams (#/components/schemas/DreamParams): start, size, end, iters, octaves, octave_scale, "
               "step_size, jitter, seed, channels, concept, laplacian, mode, frames, scale; a missing key takes "
               "the command line's default")


def create_app(model=None, *, cache_dir=None, limits=None, workers=1, device="auto", cache_bytes=CACHE_BYTES,
               max_jobs=MAX_JOBS, max_queued=MAX_QUEUED, net=None):
    """The application for a model (a directory, a .caffemodel or None: the default one).

    cache_dir: where results and thumbnails go (default: the user cache's web/); limits:
    the caps per request (Limits); workers: dreams computed at once; net: an already
    loaded net to share (tests).  The worker threads run while the application runs
    (its lifespan), and results of this process are removed when it stops.
    """
    limits = limits or Limits()
    net = net or load_shared(model, device=device, workers=workers)
    root = Path(cache_dir) if cache_dir is not None else paths.cache_dir() / "web"
    store = ResultStore(root / "results", cache_bytes)
    jobs = JobQueue(store, workers=workers, max_jobs=max_jobs, max_queued=max_queued)
    thumbnails = Thumbnails(net, root / "thumbnails")
    class_names = concepts.classes(net)
    default_end = _default_end(net)

    @asynccontextmanager
    async def lifespan(app):
        jobs.start()
        try:
            yield
        finally:
            await run_in_threadpool(jobs.stop)
            store.close()

    # Any request can fail validation (422), and says so as every other error does.
    app = FastAPI(title="deepdream-onnx", version=__version__, lifespan=lifespan,
                  responses={422: {"model": schemas.Error}},
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None)
    app.state.net, app.state.jobs, app.state.store, app.state.thumbnails = net, jobs, store, thumbnails
    app.add_middleware(BodyLimit, limit=2 * limits.max_upload_bytes + FORM_OVERHEAD)
    _add_error_handlers(app)
    errors = {code: {"model": schemas.Error} for code in (404, 409, 413, 415, 422, 429)}

    @app.get("/", include_in_schema=False)
    def page():
        index = STATIC / "index.html"
        if not index.is_file():
            raise ApiError(404, "the page is not installed; the API is at /api/ (see /openapi.json)")
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")

    @app.get("/api/model", response_model=schemas.ModelInfo)
    def model_info():
        return {"name": net.manifest.get("name") or net.model_dir.name,
                "blobs": [dict(b, min_size=list(b["min_size"])) for b in net.blob_info],
                "spatial_blobs": list(net.spatial_blobs), "default_end": default_end,
                "classes": class_names, "limits": limits.as_dict()}

    @app.get("/api/layers/{name:path}/thumbnail", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, 404: errors[404]})
    def thumbnail(name: str):
        try:
            png = thumbnails.png(name)
        except UnknownBlobError as e:
            raise ApiError(404, web_message(e)) from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/api/concepts", response_model=schemas.Concepts)
    def concept_names(q: Annotated[str, Query(max_length=200)] = "",
                      limit: Annotated[int, Query(ge=1, le=100)] = 10):
        return {"matches": [{"index": i, "name": n} for i, n in concepts.search(class_names, q, limit)]}

    @app.post("/api/dreams", status_code=202, response_model=schemas.Submitted,
              responses={code: errors[code] for code in (413, 415, 422, 429)})
    def submit(params: Annotated[str, Form(description=PARAMS_HELP)],
               image: Annotated[Optional[UploadFile], File(description="the start image (start 'image')")] = None,
               guide: Annotated[Optional[UploadFile], File(description="a guide image: dream its features")] = None):
        parsed = parse_params(params)
        spec = check(parsed, limits, net, default_end, image=_upload(image, "image", limits),
                     guide=_upload(guide, "guide", limits), classes=class_names)
        try:
            job_id, position = jobs.submit(spec)
        except QueueFull as e:
            raise ApiError(429, str(e)) from None
        return {"id": job_id, "status": "queued", "position": position}

    @app.get("/api/dreams/{job_id}", response_model=schemas.DreamStatus, responses={404: errors[404]})
    def dream_status(job_id: str):
        return _known(jobs.status(job_id), job_id)

    @app.get("/api/dreams/{job_id}/events", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}, 404: errors[404]})
    def dream_events(job_id: str):
        _known(jobs.status(job_id), job_id)
        return StreamingResponse(events.stream(jobs, job_id), media_type="text/event-stream",
                                 headers=events.HEADERS)

    @app.get("/api/dreams/{job_id}/preview", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, 404: errors[404]})
    def preview(job_id: str):
        status, path = jobs.file(job_id, PREVIEW)
        _known(status, job_id)
        data = _read(path) if status["has_preview"] else None
        if data is None:
            raise ApiError(404, f"dream {job_id} has no preview yet; one comes after its first octave")
        # Read whole: the file is replaced at every octave.
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.get("/api/dreams/{job_id}/image", response_class=FileResponse,
             responses={200: {"content": {"image/png": {}}}, 404: errors[404], 409: errors[409]})
    def result_image(job_id: str):
        path = _finished_file(jobs, job_id, RESULT)
        return FileResponse(path, media_type="image/png", filename=f"dream-{job_id}.png")

    @app.get("/api/dreams/{job_id}/animation", response_class=FileResponse,
             responses={200: {"content": {"image/gif": {}}}, 404: errors[404], 409: errors[409]})
    def animation(job_id: str):
        status = _known(jobs.status(job_id), job_id)
        if status["mode"] != "zoom":
            raise ApiError(404, f"dream {job_id} is a single dream; only a zoom has an animation")
        path = _finished_file(jobs, job_id, ANIMATION)
        return FileResponse(path, media_type="image/gif", content_disposition_type="inline",
                            filename=f"dream-{job_id}.gif")

    @app.delete("/api/dreams/{job_id}", response_model=schemas.CancelledDream,
                responses={404: errors[404], 409: errors[409]})
    def cancel(job_id: str):
        try:
            jobs.cancel(job_id)
        except KeyError:
            _known(None, job_id)
        except NotCancellable as e:
            raise ApiError(409, str(e)) from None
        return {"id": job_id, "status": "cancelled"}

    described = app.openapi

    def openapi():
        # params is a form field holding JSON; its keys are described beside the responses.
        schema = described()
        schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
            "DreamParams", DreamParams.model_json_schema())
        return schema

    app.openapi = openapi
    return app


def _default_end(net):
    """The notebook's inception_4c/output, or for another model the spatial layer about as
    deep (3/5 of the way in, as 4c is in GoogLeNet)."""
    if DEFAULT_END in net.blobs:
        return DEFAULT_END
    spatial = list(net.spatial_blobs) or list(net.blobs)
    return spatial[int(len(spatial) * 0.6)]


def _upload(file, field, limits):
    """An UploadFile's bytes as an Upload (None for no file), read no further than the limit."""
    if file is None:
        return None
    data = file.file.read(limits.max_upload_bytes + 1)
    if not data and not file.filename:  # an empty file input of a browser form
        return None
    if len(data) > limits.max_upload_bytes:
        raise ApiError(413, f"the {field} file is over this server's limit of {limits.max_upload_bytes:,} bytes")
    return Upload(data, file.filename)


def _known(status, job_id):
    if status is None:
        raise ApiError(404, f"no dream {job_id!r} (unknown, or forgotten: the server keeps the latest ones)")
    return status


def _finished_file(jobs, job_id, name):
    status, path = jobs.file(job_id, name)
    _known(status, job_id)
    if status["status"] != "done":
        raise ApiError(409, f"dream {job_id} is {status['status']}; it has no result"
                            f"{' yet' if status['status'] in ('queued', 'running') else ''}")
    if path is None or not path.is_file():
        raise ApiError(404, f"the result of dream {job_id} was evicted from the server's cache; dream it again")
    return path


def _read(path):
    try:
        return None if path is None else path.read_bytes()
    except OSError:
        return None


def _add_error_handlers(app):
    @app.exception_handler(ApiError)
    async def api_error(request, e):
        return JSONResponse({"detail": e.detail}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, e):
        first = (e.errors() or [{}])[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path"))
        return JSONResponse({"detail": _one_line(f"{where or 'request'}: {first.get('msg', 'invalid')}")},
                            status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request, e):
        return JSONResponse({"detail": _one_line(e.detail)}, status_code=e.status_code, headers=e.headers)


def _one_line(text):
    return " ".join(str(text).split())


class BodyLimit:
    """Refuses (413) a request body over limit bytes: at once by its Content-Length, else as
    it streams in; the multipart parser then never holds more than the limit."""

    def __init__(self, app, limit):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            response = JSONResponse({"detail": self._message()}, status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self):
        return f"the request is over this server's limit of {self.limit:,} bytes"
