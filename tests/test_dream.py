"""The recipe against straight transcriptions of the notebook, on the tiny converted model.

The transcriptions below keep the notebook's arithmetic line by line (pycaffe's
src.data / dst.diff become arrays; forward(end) + objective_L2 + backward(start=end) is
net.gradient), so any drift in dream.py shows up as a mismatch.
"""

import numpy as np
import pytest
import scipy.ndimage as nd

from deepdream_onnx import dream
from deepdream_onnx.errors import InputSizeError, UnknownBlobError

NOTEBOOK_MEAN = np.float32([104.0, 116.0, 122.0])  # the notebook's caffe.Classifier mean


# --------------------------------------------------------------------------- the notebook, transcribed


def nb_preprocess(img):
    return np.float32(np.rollaxis(img, 2)[::-1]) - NOTEBOOK_MEAN[:, None, None]


def nb_deprocess(img):
    return np.dstack((img + NOTEBOOK_MEAN[:, None, None])[::-1])


def nb_make_step(net, src_data, step_size=1.5, end="inception_4c/output", jitter=32, clip=True, rng=np.random):
    """make_step of dream.ipynb; src_data is the (1, 3, H, W) data blob, updated in place."""
    src = src_data
    ox, oy = rng.randint(-jitter, jitter + 1, 2)
    src[0] = np.roll(np.roll(src[0], ox, -1), oy, -2)
    g = net.gradient(src, end)[0]  # forward(end=end); objective_L2(dst); backward(start=end)
    src[:] += step_size / np.abs(g).mean() * g
    src[0] = np.roll(np.roll(src[0], -ox, -1), -oy, -2)
    if clip:
        bias = NOTEBOOK_MEAN[:, None, None]
        src[:] = np.clip(src, -bias, 255 - bias)


def nb_deepdream(net, base_img, iter_n=10, octave_n=4, octave_scale=1.4, end="inception_4c/output",
                 clip=True, rng=np.random, **step_params):
    octaves = [nb_preprocess(base_img)]
    for i in range(octave_n - 1):
        octaves.append(nd.zoom(octaves[-1], (1, 1.0 / octave_scale, 1.0 / octave_scale), order=1))
    detail = np.zeros_like(octaves[-1])
    for octave, octave_base in enumerate(octaves[::-1]):
        h, w = octave_base.shape[-2:]
        if octave > 0:
            h1, w1 = detail.shape[-2:]
            detail = nd.zoom(detail, (1, 1.0 * h / h1, 1.0 * w / w1), order=1)
        src = np.empty((1, 3, h, w), np.float32)  # src.reshape(1,3,h,w)
        src[0] = octave_base + detail
        for i in range(iter_n):
            nb_make_step(net, src, end=end, clip=clip, rng=rng, **step_params)
        detail = src[0] - octave_base
    return nb_deprocess(src[0])


# --------------------------------------------------------------------------- helpers


class Recorder(np.random.RandomState):
    """A RandomState that logs every randint call."""

    def __init__(self, seed):
        super().__init__(seed)
        self.calls = []

    def randint(self, low, high=None, size=None, dtype=int):
        self.calls.append((low, high, size))
        return super().randint(low, high, size, dtype)


class Counting:
    """Wraps a Net and counts the network passes it is asked for."""

    def __init__(self, net):
        self.net = net
        self.calls = {"forward": 0, "gradient": 0, "vjp": 0, "pullback": 0}

    def __getattr__(self, name):
        return getattr(self.net, name)

    def forward(self, data, end):
        self.calls["forward"] += 1
        return self.net.forward(data, end)

    def gradient(self, data, end, seed=None):
        self.calls["gradient"] += 1
        return self.net.gradient(data, end, seed)

    def vjp(self, data, end):
        self.calls["vjp"] += 1
        dst, pullback = self.net.vjp(data, end)

        def counted(seed):
            self.calls["pullback"] += 1
            return pullback(seed)

        return dst, counted


def min_size(net, end):
    end = net.resolve(end)
    return next(b["min_size"] for b in net.blob_info if b["name"] == end)


def make_image(net, end, octave_n=2, octave_scale=1.4, seed=0, extra=6):
    """A random RGB image just large enough for octave_n octaves at end."""
    mh, mw = min_size(net, end)
    grow = octave_scale ** (octave_n - 1)
    h, w = int(np.ceil(max(mh, 8) * grow)) + extra, int(np.ceil(max(mw, 8) * grow)) + extra + 3
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)



@pytest.fixture(scope="module")
def img(tiny_net, tiny_end):
    return make_image(tiny_net, tiny_end)


# --------------------------------------------------------------------------- pre/deprocess


def test_preprocess_is_bgr_minus_mean_and_deprocess_inverts_it():
    rgb = np.random.RandomState(1).randint(0, 256, (5, 7, 3)).astype(np.uint8)
    src = dream.preprocess(rgb)
    assert src.dtype == np.float32 and src.shape == (3, 5, 7)
    np.testing.assert_array_equal(src, nb_preprocess(rgb))
    np.testing.assert_array_equal(src[0], rgb[:, :, 2] - np.float32(104))  # B first
    back = dream.deprocess(src)
    assert back.shape == (5, 7, 3)
    np.testing.assert_array_equal(back, rgb.astype(np.float32))


def test_net_mean_is_the_notebooks(tiny_net):
    np.testing.assert_array_equal(np.asarray(tiny_net.mean, np.float32), NOTEBOOK_MEAN)
    np.testing.assert_array_equal(dream.MEAN, NOTEBOOK_MEAN)


# --------------------------------------------------------------------------- make_step


@pytest.mark.parametrize("jitter, clip, step_size", [(32, True, 1.5), (3, False, 0.7), (0, True, 2.0)])
def test_make_step_equals_notebook_step(tiny_net, tiny_end, img, jitter, clip, step_size):
    end = tiny_net.resolve(tiny_end)
    state = nb_preprocess(img)
    expected = state[np.newaxis].copy()
    nb_make_step(tiny_net, expected, step_size, end, jitter, clip, rng=np.random.RandomState(7))

    src = state.copy()
    out = dream.make_step(tiny_net, src, step_size=step_size, end=end, jitter=jitter, clip=clip,
                          rng=np.random.RandomState(7))
    assert out is src and src.dtype == np.float32  # updated in place
    np.testing.assert_allclose(src, expected[0], rtol=1e-6, atol=1e-4)
    assert not np.array_equal(src, state)  # it did move


def test_custom_objective_l2_through_vjp_equals_the_gradient_path(tiny_net, tiny_end, img):
    state = nb_preprocess(img)
    a = dream.make_step(tiny_net, state.copy(), end=tiny_end, rng=np.random.RandomState(3))
    b = dream.make_step(tiny_net, state.copy(), end=tiny_end, objective=dream.objective_L2,
                        rng=np.random.RandomState(3))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)


def test_custom_objective_runs_one_forward_pass_per_step(tiny_net, tiny_end, img):
    net = Counting(tiny_net)
    features = dream.guide_features(tiny_net, img[::-1], tiny_end)
    dream.deepdream(net, img, iter_n=2, octave_n=2, end=tiny_end, objective=dream.objective_guide(features),
                    rng=np.random.RandomState(0))
    assert net.calls == {"forward": 0, "gradient": 0, "vjp": 4, "pullback": 4}


def test_default_objective_uses_the_fused_gradient(tiny_net, tiny_end, img):
    net = Counting(tiny_net)
    dream.deepdream(net, img, iter_n=2, octave_n=2, end=tiny_end, rng=np.random.RandomState(0))
    assert net.calls == {"forward": 0, "gradient": 4, "vjp": 0, "pullback": 0}


def test_zero_gradient_leaves_src_unchanged_without_nan(tiny_net, tiny_end, img):
    state = nb_preprocess(img)
    src = dream.make_step(tiny_net, state.copy(), end=tiny_end, objective=np.zeros_like,
                          rng=np.random.RandomState(0))
    assert np.isfinite(src).all()
    np.testing.assert_array_equal(src, state)


# --------------------------------------------------------------------------- deepdream


@pytest.mark.parametrize("h, w, octave_n, octave_scale",
                         [(37, 53, 4, 1.4), (224, 224, 4, 1.4), (101, 7, 3, 1.7), (20, 30, 1, 1.4), (500, 375, 6, 1.3)])
def test_octave_sizes_are_what_zoom_gives(h, w, octave_n, octave_scale):
    octaves = [np.zeros((1, h, w), np.float32)]
    for i in range(octave_n - 1):
        octaves.append(nd.zoom(octaves[-1], (1, 1.0 / octave_scale, 1.0 / octave_scale), order=1))
    assert dream.octave_sizes(h, w, octave_n, octave_scale) == [o.shape[-2:] for o in octaves]


@pytest.mark.parametrize("clip", [True, False])
def test_deepdream_equals_the_notebook_loop(tiny_net, tiny_end, img, clip):
    end = tiny_net.resolve(tiny_end)
    params = dict(iter_n=3, octave_n=2, octave_scale=1.4, end=end, clip=clip)
    expected_rng, rng = Recorder(11), Recorder(11)
    expected = nb_deepdream(tiny_net, img, rng=expected_rng, **params)
    got = dream.deepdream(tiny_net, img, rng=rng, **params)

    assert rng.calls == expected_rng.calls == [(-32, 33, 2)] * 6  # one (ox, oy) draw per step
    assert got.dtype == np.float32 and got.shape == img.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_deepdream_default_rng_is_numpys_global_state(tiny_net, tiny_end, img):
    saved = np.random.get_state()
    try:
        np.random.seed(5)
        expected = nb_deepdream(tiny_net, img, iter_n=2, octave_n=2, end=tiny_net.resolve(tiny_end))
        np.random.seed(5)
        got = dream.deepdream(tiny_net, img, iter_n=2, octave_n=2, end=tiny_end)
    finally:
        np.random.set_state(saved)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_same_seed_same_image_other_seed_other_image(tiny_net, tiny_end, img):
    run = lambda seed: dream.deepdream(tiny_net, img, iter_n=2, octave_n=2, end=tiny_end,
                                       rng=np.random.RandomState(seed))
    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_progress_callable_and_object(tiny_net, tiny_end, img):
    seen = []
    dream.deepdream(tiny_net, img, iter_n=2, octave_n=2, end=tiny_end, rng=np.random.RandomState(0),
                    progress=lambda *a: seen.append(a))
    assert seen == [(0, 0, 2, 2), (0, 1, 2, 2), (1, 0, 2, 2), (1, 1, 2, 2)]

    class Bar:
        count = 0

        def update(self, n=1, status=""):
            self.count += n

    bar = Bar()
    dream.deepdream(tiny_net, img, iter_n=2, octave_n=2, end=tiny_end, rng=np.random.RandomState(0), progress=bar)
    assert bar.count == 4


def test_too_small_image_fails_before_any_pass(tiny_net, tiny_end):
    net = Counting(tiny_net)
    mh, mw = min_size(tiny_net, tiny_end)
    if (mh, mw) == (1, 1):
        pytest.skip("the tiny end blob accepts any size")
    small = np.zeros((mh, mw, 3), np.uint8)  # fits at octave 1, not after zooming by 1/1.4
    with pytest.raises(InputSizeError, match="octave"):
        dream.deepdream(net, small, iter_n=1, octave_n=2, end=tiny_end)
    assert net.calls == {"forward": 0, "gradient": 0, "vjp": 0, "pullback": 0}


def test_unknown_end_names_close_matches(tiny_net, tiny_end, img):
    with pytest.raises(UnknownBlobError, match="did you mean"):
        dream.deepdream(tiny_net, img, end=tiny_net.resolve(tiny_end) + "x")


def test_end_accepts_underscores(tiny_net, img):
    slashed = next(b for b in tiny_net.blobs if "/" in b)
    if min(min_size(tiny_net, slashed)) * 1.4 > min(img.shape[:2]):
        pytest.skip("image too small for that blob")
    a = dream.deepdream(tiny_net, img, iter_n=1, octave_n=1, end=slashed, rng=np.random.RandomState(0))
    b = dream.deepdream(tiny_net, img, iter_n=1, octave_n=1, end=slashed.replace("/", "_"),
                        rng=np.random.RandomState(0))
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- guided dreams


def test_objective_guide_equals_the_notebook_formula():
    r = np.random.RandomState(0)
    dst_data = r.randn(6, 5, 7).astype(np.float32)
    guide_features = r.randn(6, 3, 4).astype(np.float32)

    # objective_guide of dream.ipynb, dst.diff written into a fresh array
    x = dst_data.copy()
    y = guide_features
    ch = x.shape[0]
    x = x.reshape(ch, -1)
    y = y.reshape(ch, -1)
    A = x.T.dot(y)
    diff = np.zeros_like(dst_data)
    diff.reshape(ch, -1)[:] = y[:, A.argmax(1)]

    seed = dream.objective_guide(guide_features)(dst_data)
    assert seed.shape == dst_data.shape
    np.testing.assert_array_equal(seed, diff)


def test_guide_features_are_the_end_activations(tiny_net, tiny_end, img):
    f = dream.guide_features(tiny_net, img, tiny_end)
    np.testing.assert_array_equal(f, tiny_net.forward(nb_preprocess(img)[None], tiny_net.resolve(tiny_end))[0])


# --------------------------------------------------------------------------- zoom animation


def test_zoom_in_is_the_notebooks_affine_transform():
    frame = np.random.RandomState(0).rand(20, 30, 3).astype(np.float32) * 255
    h, w, s = 20, 30, 0.05
    expected = nd.affine_transform(frame, [1 - s, 1 - s, 1], [h * s / 2, w * s / 2, 0], order=1)
    np.testing.assert_array_equal(dream.zoom_in(frame, s), expected)


def test_zoom_frames_resume_equals_an_uninterrupted_run(tiny_net, tiny_end, img, tmp_path):
    kw = dict(iter_n=1, octave_n=1, end=tiny_end, s=0.1, seed=4)
    full = dream.zoom_frames(tiny_net, img, tmp_path / "full", frames=3, **kw)

    part = tmp_path / "part"
    dream.zoom_frames(tiny_net, img, part, frames=3, **kw)
    (part / "0002.png").unlink()
    (part / "0001.png").unlink()
    kept = (part / "0000.png").stat().st_mtime_ns, (part / "0000.png").read_bytes()
    resumed = dream.zoom_frames(tiny_net, img, part, frames=3, **kw)

    assert [p.name for p in resumed] == ["0000.png", "0001.png", "0002.png"]
    assert ((part / "0000.png").stat().st_mtime_ns, (part / "0000.png").read_bytes()) == kept
    for a, b in zip(full, resumed):
        assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in part.iterdir()) == ["0000.png", "0001.png", "0002.png"]  # no temp files
