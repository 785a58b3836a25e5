"""The recipe against straight transcriptions of the notebook, on the tiny converted model.

The transcriptions below keep the notebook's arithmetic line by line (pycaffe's
src.data / dst.diff become arrays; forward(end) + objective_L2 + backward(start=end) is
net.gradient), so any drift in dream.py shows up as a mismatch.
"""

import io

import numpy as np
import pytest
import scipy.ndimage as nd

from deepdream_onnx.errors import DeepDreamError, InputSizeError, UnknownBlobError
from deepdream_onnx.recipe import dream, laplacian, objectives, tiling

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
    for _ in range(octave_n - 1):
        octaves.append(nd.zoom(octaves[-1], (1, 1.0 / octave_scale, 1.0 / octave_scale), order=1))
    detail = np.zeros_like(octaves[-1])
    for octave, octave_base in enumerate(octaves[::-1]):
        h, w = octave_base.shape[-2:]
        if octave > 0:
            h1, w1 = detail.shape[-2:]
            detail = nd.zoom(detail, (1, 1.0 * h / h1, 1.0 * w / w1), order=1)
        src = np.empty((1, 3, h, w), np.float32)  # src.reshape(1,3,h,w)
        src[0] = octave_base + detail
        for _ in range(iter_n):
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
    return net.info(end)["min_size"]


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
    for _ in range(octave_n - 1):
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
    def run(seed):
        return dream.deepdream(tiny_net, img, iter_n=2, octave_n=2, end=tiny_end, rng=np.random.RandomState(seed))

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


# --------------------------------------------------------------------------- beyond the notebook: several blobs


def test_several_blobs_take_one_gradient_run_per_step(tiny_net, tiny_end, img):
    net = Counting(tiny_net)
    end = {tiny_end: 1.0, "norm1": 0.5}
    out = dream.deepdream(net, img, iter_n=2, octave_n=2, end=end, rng=np.random.RandomState(0))
    assert net.calls == {"forward": 0, "gradient": 4, "vjp": 0, "pullback": 0}
    assert out.shape == img.shape and np.isfinite(out).all()


def test_several_blobs_are_resolved_and_checked(tiny_net, tiny_end, img):
    assert dream.check_dream_size(tiny_net, {"mix_output": 2, "conv1": 1}, *img.shape[:2], 2) == \
        {"mix/output": 2.0, "conv1": 1.0}
    with pytest.raises(UnknownBlobError, match="did you mean"):
        dream.check_dream_size(tiny_net, {"mix/outptu": 1}, *img.shape[:2], 2)
    with pytest.raises(InputSizeError, match="octave"):
        dream.check_dream_size(tiny_net, [tiny_end, "conv1"], 8, 8, 3)


# --------------------------------------------------------------------------- Laplacian-pyramid normalization


def test_laplacian_levels_of_a_known_input():
    # A constant is all low-pass; the checkerboard is the highest frequency, which the
    # binomial kernel removes entirely ([1, 4, 6, 4, 1] . [1, -1, 1, -1, 1] = 0): one band.
    yy, xx = np.mgrid[:24, :36]
    checker = np.float32((-1.0) ** (yy + xx))
    g = np.stack([5 + 2 * checker, -3 + checker, 7 + 0 * checker]).astype(np.float32)
    levels = laplacian.lap_split(g, 3)
    assert [lv.shape for lv in levels] == [(3, 3, 5), (3, 6, 9), (3, 12, 18), (3, 24, 36)]
    np.testing.assert_allclose(levels[0], np.float32([5, -3, 7])[:, None, None] * np.ones((3, 3, 5)), atol=1e-5)
    np.testing.assert_allclose(levels[1], 0, atol=1e-5)
    np.testing.assert_allclose(levels[2], 0, atol=1e-5)
    np.testing.assert_allclose(levels[3], g - np.float32([5, -3, 7])[:, None, None], atol=1e-5)

    normalized = [laplacian.normalize_std(lv) for lv in levels]
    for lv in (normalized[0], normalized[3]):
        assert np.sqrt(np.mean(lv.astype(np.float64) ** 2)) == pytest.approx(1, rel=1e-5)
    np.testing.assert_allclose(normalized[1], 0, atol=1e-4)  # zero bands stay zero, not NaN


@pytest.mark.parametrize("shape, n", [((3, 37, 53), 4), ((3, 32, 48), 3), ((2, 5, 3), 4), ((3, 64, 64), 1)])
def test_laplacian_merge_reproduces_the_gradient_and_normalized_levels_have_rms_1(shape, n):
    g = np.random.RandomState(0).randn(*shape).astype(np.float32) * 1e-3
    levels = laplacian.lap_split(g, n)
    assert len(levels) == n + 1
    np.testing.assert_allclose(laplacian.lap_merge(levels), g, rtol=1e-5, atol=1e-8)
    for lv in levels:
        assert np.sqrt(np.mean(laplacian.normalize_std(lv).astype(np.float64) ** 2)) == pytest.approx(1, rel=1e-5)
    np.testing.assert_allclose(laplacian.lap_normalize(g, n),
                               laplacian.lap_merge([laplacian.normalize_std(lv) for lv in levels]), rtol=1e-6)


def test_laplacian_step_keeps_step_size_the_mean_change(tiny_net, tiny_end, img):
    state = nb_preprocess(img)
    src = dream.make_step(tiny_net, state.copy(), step_size=1.5, end=tiny_end, jitter=0, clip=False,
                          normalize="laplacian", levels=3, rng=np.random.RandomState(0))
    assert np.abs(src - state).mean() == pytest.approx(1.5, rel=1e-3)
    plain = dream.make_step(tiny_net, state.copy(), end=tiny_end, jitter=0, clip=False, rng=np.random.RandomState(0))
    assert not np.allclose(src, plain)
    with pytest.raises(DeepDreamError, match="normalize"):
        dream.deepdream(tiny_net, img, normalize="std")


# --------------------------------------------------------------------------- noise start


def test_noise_image_is_seeded_grey_noise():
    a = dream.noise_image(20, 30, np.random.RandomState(1))
    assert a.shape == (20, 30, 3) and a.dtype == np.float32
    assert 100 <= a.min() and a.max() < 101
    np.testing.assert_array_equal(a, dream.noise_image(20, 30, np.random.RandomState(1)))
    assert not np.array_equal(a, dream.noise_image(20, 30, np.random.RandomState(2)))


# --------------------------------------------------------------------------- tiles


@pytest.mark.parametrize("size, tile", [(160, 64), (100, 48), (64, 64), (70, 80), (97, 32)])
def test_tile_spans_are_equal_windows_whose_owned_parts_partition_the_axis(size, tile):
    spans = tiling.tile_spans(size, tile)
    owned = np.zeros(size, int)
    for start, lo, hi in spans:
        assert 0 <= start and start + min(tile, size) <= size  # equal size, inside the image
        assert start <= lo < hi <= start + tile
        owned[lo:hi] += 1
    assert (owned == 1).all()
    assert len(spans) == -(-size // tile)


def interior_mask(h, w, shape, roll, margin):
    """Pixels of the unrolled image whose tile edges (in the rolled image) and image edges
    (the wrap seam, once rolled) are at least margin away."""
    th, tw = shape
    mask = np.zeros((h, w), bool)
    for y, y0, y1 in tiling.tile_spans(h, th):
        for x, x0, x1 in tiling.tile_spans(w, tw):
            yy, xx = np.mgrid[y0:y1, x0:x1]
            mask[y0:y1, x0:x1] = ((yy - y >= margin) & (y + th - 1 - yy >= margin)
                                  & (xx - x >= margin) & (x + tw - 1 - xx >= margin))
    mask = np.roll(mask, (-roll[0], -roll[1]), (0, 1))
    mask[:margin] = mask[-margin:] = False
    mask[:, :margin] = mask[:, -margin:] = False
    return mask


@pytest.mark.parametrize("roll", [(0, 0), (16, 32), (8, 4)])
def test_tiled_gradient_equals_the_whole_image_one_away_from_tile_borders(tiny_net, tiny_end, roll):
    src = (np.random.RandomState(0).rand(3, 160, 192).astype(np.float32) - 0.5) * 200
    end = tiny_net.resolve(tiny_end)
    whole = tiny_net.gradient(src[np.newaxis], end)[0]
    runs = []
    tiled = tiling.tiled_gradient(src, (64, 96), lambda batch: runs.append(batch.shape) or tiny_net.gradient(batch, end),
                                  roll=roll, per_run=2)
    assert {s[1:] for s in runs} == {(3, 64, 96)}  # one shape for onnxruntime
    # 16 pixels: the receptive field of mix/output is 15 pixels wide; rolls are
    # multiples of its stride (4), so the tiles sit on the whole image's pooling grid.
    mask = interior_mask(160, 192, (64, 96), roll, 16)
    assert mask.mean() > 0.2
    scale = np.abs(whole).max()
    np.testing.assert_allclose(tiled[:, mask], whole[:, mask], rtol=1e-5, atol=1e-6 * scale)
    assert not np.allclose(tiled, whole, rtol=1e-5, atol=1e-6 * scale)  # the borders do differ


@pytest.mark.parametrize("roll, shape", [((12, 20), (16, 24)), ((0, 8), (40, 24)), ((4, 0), (16, 64))])
def test_a_rolled_tiling_is_the_tiling_of_the_rolled_image_rolled_back(roll, shape):
    src = np.random.RandomState(0).rand(2, 30, 50).astype(np.float32)
    def batch_gradient(batch):  # depends on the tile
        return batch ** 2 + batch.mean(axis=(1, 2, 3), keepdims=True)

    expected = np.roll(tiling.tiled_gradient(np.roll(src, roll, (-2, -1)), shape, batch_gradient), (-roll[0], -roll[1]),
                       (-2, -1))
    np.testing.assert_array_equal(tiling.tiled_gradient(src, shape, batch_gradient, roll, per_run=3), expected)


def test_tile_shape_auto_follows_the_memory_budget(tiny_net, tiny_end):
    per_pixel = tiling.bytes_per_pixel(tiny_net, tiny_end)
    assert tiling.tile_shape(tiny_net, tiny_end, 200, 300, "auto", memory_budget=200 * 300 * per_pixel) is None
    # a little too large: two halves, not a budget-sized tile and a mostly overlapping one
    assert tiling.tile_shape(tiny_net, tiny_end, 200, 300, "auto", memory_budget=200 * 290 * per_pixel) == (200, 152)
    th, tw = tiling.tile_shape(tiny_net, tiny_end, 200, 300, "auto", memory_budget=100 * 100 * per_pixel)
    assert th * tw <= 100 * 100 and th % 4 == 0 and tw % 4 == 0
    assert (th, tw) == (100, 100)  # square tiles of at most 100 * 100 pixels
    assert tiling.tile_shape(tiny_net, tiny_end, 200, 300, 64) == (64, 64)
    assert tiling.tile_shape(tiny_net, tiny_end, 50, 300, 66) == (50, 64)  # rounded to the stride, clamped
    assert tiling.tile_shape(tiny_net, tiny_end, 50, 60, 64) is None  # one tile is the whole image
    assert tiling.tile_shape(tiny_net, tiny_end, 200, 300, 0) is None
    assert tiling.tile_shape(tiny_net, tiny_end, 200, 300, None) is None
    with pytest.raises(InputSizeError, match="smaller than"):
        tiling.tile_shape(tiny_net, tiny_end, 200, 300, 3)
    assert tiling.bytes_per_pixel(tiny_net, [tiny_end, "conv1"]) == per_pixel  # up to the deepest


def test_tiled_dream_is_reproducible_and_moves_the_grid_every_step(tiny_net, tiny_end):
    img = np.random.RandomState(1).randint(0, 256, (96, 120, 3)).astype(np.uint8)
    def run(tile, rng):
        return dream.deepdream(tiny_net, img, iter_n=2, octave_n=2, end=tiny_end, tile=tile, rng=rng)

    rng = Recorder(0)
    a = run(48, rng)
    # per step: the jitter, then the tiles' roll in strides (48 / 4 = 12 per axis)
    assert rng.calls == [(-32, 33, 2), (0, [12, 12], None)] * 4
    np.testing.assert_array_equal(a, run(48, np.random.RandomState(0)))
    assert not np.array_equal(a, run(None, np.random.RandomState(0)))
    # tiles as large as the image are no tiles: the notebook's step, the same draws
    np.testing.assert_array_equal(run(200, np.random.RandomState(0)), run(None, np.random.RandomState(0)))


def test_a_windowed_blob_gets_its_input_size_and_pads_small_images(tiny_net):
    assert tiling.input_window(tiny_net, "fc") == (8, 8)
    assert tiling.input_window(tiny_net, "mix/output") is None
    assert tiling.tile_shape(tiny_net, "fc", 100, 100, None) == (8, 8)  # whatever tile says
    src = np.random.RandomState(0).randn(3, 5, 6).astype(np.float32) * 50
    seed = np.zeros((1, 5), np.float32)
    seed[0, 1] = 1
    g = dream.gradient(tiny_net, src, "fc", objectives.objective_class(1))
    padded = np.zeros((1, 3, 8, 8), np.float32)
    padded[0, :, 1:6, 1:7] = src
    np.testing.assert_allclose(g, tiny_net.gradient(padded, "fc", seed)[0, :, 1:6, 1:7], rtol=1e-6)


def test_concept_dream_raises_the_class_logit_over_the_window_grid(tiny_net):
    end, objective = objectives.concept(tiny_net, 2)
    base = dream.noise_image(24, 40, np.random.RandomState(0))
    out = dream.deepdream(tiny_net, base, iter_n=4, octave_n=2, end=end, objective=objective, step_size=1.0,
                          jitter=4, rng=np.random.RandomState(0))

    def mean_logit(img):  # the objective on every 8x8 window at stride 8
        src = dream.preprocess(img)
        windows = np.stack([src[:, y:y + 8, x:x + 8] for y in range(0, 17, 8) for x in range(0, 33, 8)])
        return tiny_net.forward(windows, end)[:, 2].mean()

    assert out.shape == base.shape and mean_logit(out) > mean_logit(base)


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("call, error, match", [
    (lambda net, end, img: dream.make_step(net, dream.preprocess(img), end=end, normalize="max"),
     DeepDreamError, "normalize must be one of"),
    (lambda net, end, img: dream.make_step(net, dream.preprocess(img), end=end, normalize="laplacian", levels=0),
     DeepDreamError, "levels must be an integer of at least 1"),
    (lambda net, end, img: dream.deepdream(net, img, octave_n=0, end=end), DeepDreamError, "octave_n must be at least 1"),
    (lambda net, end, img: dream.deepdream(net, img, octave_scale=1.0, end=end),
     DeepDreamError, "octave_scale must be greater than 1"),
    (lambda net, end, img: dream.deepdream(net, img, end=end, tile="big"), DeepDreamError, "tile must be 'auto'"),
    (lambda net, end, img: tiling.tile_shape(net, end, 400, 400, memory_budget=1000),
     InputSizeError, r"a memory budget for \d+ pixels is too small for the"),
    (lambda net, end, img: objectives.objective_channels([]), DeepDreamError, "no channels given"),
    (lambda net, end, img: dream.zoom_frames(net, img, "unused", end=end, seed=1, rng=np.random.RandomState(1)),
     TypeError, "takes seed or rng, not both"),
])
def test_bad_arguments_fail_in_one_line(tiny_net, tiny_end, img, call, error, match):
    with pytest.raises(error, match=match) as err:
        call(tiny_net, tiny_end, img)
    assert "\n" not in str(err.value)


def test_zoom_resume_refuses_frames_of_another_size(tiny_net, tiny_end, img, tmp_path):
    kw = dict(iter_n=1, octave_n=1, end=tiny_end, s=0.1, seed=4)
    dream.zoom_frames(tiny_net, img, tmp_path, frames=1, **kw)
    bigger = make_image(tiny_net, tiny_end, extra=10)
    with pytest.raises(DeepDreamError, match=r"0000.png is \d+x\d+, not \d+x\d+ like the start image; resume into"):
        dream.zoom_frames(tiny_net, bigger, tmp_path, frames=2, **kw)


def test_progress_true_draws_a_bar_and_closes_it(tiny_net, tiny_end, img, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    out = dream.deepdream(tiny_net, img, iter_n=2, octave_n=2, end=tiny_end, rng=np.random.RandomState(0),
                          progress=True)
    drawn = terminal.getvalue()
    assert out.shape == img.shape
    assert "dream" in drawn and "4/4" in drawn and "octave 2/2 step 2/2" in drawn
    assert drawn.endswith("\n")  # closed: the next output starts on a line of its own


def test_on_octave_sees_each_octave_s_dream_and_can_stop_it(tiny_net, tiny_end, img):
    seen = []
    out = dream.deepdream(tiny_net, img, iter_n=2, octave_n=3, end=tiny_end, rng=np.random.RandomState(0),
                          on_octave=lambda octave, shown: seen.append((octave, shown.shape)))
    assert [o for o, _ in seen] == [0, 1, 2] and seen[-1][1] == out.shape
    assert seen[0][1][0] < seen[1][1][0] < seen[2][1][0]  # smallest octave first

    class Stop(Exception):
        pass

    def stop(octave, shown):
        raise Stop

    with pytest.raises(Stop):
        dream.deepdream(tiny_net, img, iter_n=2, octave_n=3, end=tiny_end, on_octave=stop)
