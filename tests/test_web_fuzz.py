"""The web API under generated requests: schemathesis over /openapi.json (every operation,
in process), and hypothesis over the params JSON and the uploaded bytes, which the schema
can only call strings.  No request may end in a server error, and every refusal is JSON
with a one-line detail."""

import io
import json
import warnings

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

with warnings.catch_warnings():  # Starlette >= 1.x would rather have httpx2 drive its TestClient
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from deepdream_onnx.runtime import Net  # noqa: E402
from deepdream_onnx.web.app import create_app  # noqa: E402
from deepdream_onnx.web.limits import Limits  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Small caps, so that whatever passes validation dreams in milliseconds.
LIMITS = Limits(max_upload_bytes=50_000, max_pixels=64 * 64, max_iters=2, max_octaves=2, max_side=64, max_frames=2)
FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    app = create_app(cache_dir=tmp_path_factory.mktemp("web-fuzz"), limits=LIMITS,
                     net=Net(tiny_model_dir, device="cpu"), max_queued=8)
    with TestClient(app):  # runs the workers for the module, and stops them after
        yield app


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app)


@pytest.fixture(scope="module")
def web_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def assert_no_server_error(response):
    assert response.status_code < 500, response.text
    if response.status_code >= 400 and response.headers.get("content-type") == "application/json":
        detail = response.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail, detail


OPERATIONS = [
    ("GET", "/api/model"), ("GET", "/api/layers/{name}/thumbnail"), ("GET", "/api/concepts"),
    ("POST", "/api/dreams"), ("GET", "/api/dreams/{job_id}"), ("GET", "/api/dreams/{job_id}/events"),
    ("GET", "/api/dreams/{job_id}/preview"), ("GET", "/api/dreams/{job_id}/image"),
    ("GET", "/api/dreams/{job_id}/animation"), ("DELETE", "/api/dreams/{job_id}"),
]


# schemathesis's own pytest plugin (schema.parametrize) does not run under pytest 9, so each
# operation's strategy is drawn by hypothesis directly.
@pytest.mark.parametrize("method, path", OPERATIONS, ids=lambda v: v)
def test_every_operation_answers_without_a_server_error(web_schema, method, path):
    operation = web_schema[path][method]

    @given(case=operation.as_strategy())
    @FUZZ
    def check(case):
        assert_no_server_error(case.call())

    check()


# --------------------------------------------------------------------------- params and uploads

# Any JSON value, for any key: the type checks.
wild = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=12), st.lists(st.integers(-2, 40), max_size=4), st.dictionaries(st.text(max_size=3),
                                                                                                   st.integers(), max_size=2))
# Values of the right types, around the edges of what the caps and the tiny model take: the checks after the types.
valid = {
    "start": st.sampled_from(["image", "sky", "noise"]),
    "size": st.lists(st.integers(-1, 80), min_size=2, max_size=2),
    "end": st.sampled_from(["mix/output", "conv1", "mix_1x1", "pool2", "fc", "prob", "mix/outptu", ""]),
    "iters": st.integers(-1, 3), "octaves": st.integers(-1, 3), "octave_scale": st.floats(0.5, 3),
    "step_size": st.floats(-1, 3), "jitter": st.integers(-1, 40), "seed": st.integers(-2**40, 2**40),
    "channels": st.lists(st.integers(-1, 20), max_size=3), "concept": st.integers(-1, 6) | st.text(max_size=8),
    "laplacian": st.integers(-1, 20), "mode": st.sampled_from(["dream", "zoom"]), "frames": st.integers(-1, 3),
    "scale": st.floats(-0.5, 1.5),
}
params = st.one_of(
    st.fixed_dictionaries({}, optional=valid),
    st.fixed_dictionaries({}, optional={key: strategy | wild for key, strategy in valid.items()}),
    st.dictionaries(st.text(max_size=8), wild, max_size=3),
)


def png(h, w, mode="RGB"):
    buffer = io.BytesIO()
    Image.fromarray(np.random.RandomState(h * w).randint(0, 256, (h, w, 3)).astype(np.uint8)).convert(mode).save(
        buffer, format="PNG")
    return buffer.getvalue()


uploads = st.one_of(
    st.none(),
    st.binary(max_size=300),
    st.builds(png, st.integers(1, 80), st.integers(1, 80), st.sampled_from(["RGB", "L", "RGBA", "P", "1"])),
    st.builds(lambda data, cut: data[:cut], st.just(png(32, 32)), st.integers(0, 400)),  # truncated
)


@given(params=params, image=uploads, guide=uploads)
@settings(FUZZ, max_examples=80)
def test_generated_params_and_uploads(client, params, image, guide):
    files = {name: (f"{name}.png", data) for name, data in (("image", image), ("guide", guide)) if data is not None}
    r = client.post("/api/dreams", data={"params": json.dumps(params)}, files=files or None)
    assert_no_server_error(r)
    if r.status_code == 202:
        assert client.delete(f"/api/dreams/{r.json()['id']}").status_code in (200, 409)
