"""Objectives beyond the notebook: each seed against finite differences of the scalar it claims
to maximize, alone (NumPy, float64) and through the tiny converted network; several blobs in
one run; concept names."""

import numpy as np
import pytest

from deepdream_onnx import labels
from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.recipe import dream, objectives


def numeric_gradient(value, x, eps=1e-4):
    """Central finite differences of the scalar value(x) in every coordinate of x (float64)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + eps
        up = value(x)
        x[i] = saved - eps
        down = value(x)
        x[i] = saved
        g[i] = (up - down) / (2 * eps)
    return g


@pytest.fixture
def dst():
    return np.random.RandomState(0).randn(6, 3, 4)


# --------------------------------------------------------------------------- seeds = d value / d dst


def test_l2_seed_is_the_gradient_of_half_the_squared_norm(dst):
    np.testing.assert_allclose(dream.objective_L2(dst), numeric_gradient(objectives.l2_value, dst), atol=1e-6)


@pytest.mark.parametrize("channels", [3, [0, 5], [4, 1, 4]])
def test_channel_seed_is_the_gradient_of_its_value(dst, channels):
    objective = objectives.objective_channels(channels)
    seed = objective(dst)
    np.testing.assert_allclose(seed, numeric_gradient(objective.value, dst), atol=1e-6)
    chosen = sorted(set(np.atleast_1d(channels)))
    assert objective.value(dst) == pytest.approx(0.5 * sum((dst[c] ** 2).sum() for c in chosen))
    others = [c for c in range(6) if c not in chosen]
    assert not seed[others].any() and np.array_equal(seed[chosen], dst[chosen])


@pytest.mark.parametrize("shape", [(5,), (6, 3, 4)])
def test_class_seed_is_one_hot_and_the_gradient_of_the_logit(shape):
    logits = np.random.RandomState(1).randn(*shape)
    objective = objectives.objective_class(2)
    seed = objective(logits)
    np.testing.assert_allclose(seed, numeric_gradient(objective.value, logits), atol=1e-6)
    assert seed.sum() == np.prod(shape[1:]) and seed[2].min() == 1
    assert objective.value(logits) == pytest.approx(logits[2].sum())


def test_guide_seed_is_the_gradient_of_the_best_match_dot_products(dst):
    guide = np.random.RandomState(2).randn(6, 2, 5)
    y = guide.reshape(6, -1)

    def value(x):  # sum over positions of the best dot product with a guide feature
        return (x.reshape(6, -1).T @ y).max(1).sum()

    np.testing.assert_allclose(dream.objective_guide(guide)(dst), numeric_gradient(value, dst), atol=1e-6)


def test_channel_out_of_range_says_the_count(tiny_net, tiny_end, dst):
    with pytest.raises(DeepDreamError, match=r"channel 18 is out of range: mix/output has 18 channels \(0-17\)"):
        objectives.check_channels(tiny_net, tiny_end, [1, 18])
    with pytest.raises(DeepDreamError, match="channel 6 is out of range: the blob has 6 channels"):
        objectives.objective_channels(6)(dst)
    objectives.check_channels(tiny_net, tiny_end, [0, 17])


# --------------------------------------------------------------------------- through the network


def directional_check(net, end, objective, value_of, data, seed=0, eps=1e-2):
    """<gradient, v> against (value(x + eps v) - value(x - eps v)) / 2 eps, for random v."""
    g = dream.gradient(net, data[0], end, objective, tile=None)
    v = np.random.RandomState(seed).randn(*data.shape).astype(np.float32)
    up = value_of(net.forward(data + eps * v, end))
    down = value_of(net.forward(data - eps * v, end))
    # float32 network: the difference quotient is good to about 1e-3 relative
    assert float((g * v[0]).sum()) == pytest.approx((up - down) / (2 * eps), rel=2e-3, abs=1e-8)


@pytest.fixture(scope="module")
def data():
    return (np.random.RandomState(3).rand(1, 3, 9, 13).astype(np.float32) - 0.5) * 100


def test_channel_gradient_through_the_net(tiny_net, tiny_end, data):
    objective = objectives.objective_channels([2, 9])
    directional_check(tiny_net, tiny_end, objective, lambda dst: objective.value(dst[0]), data)


def test_class_gradient_through_the_net(tiny_net, data):
    objective = objectives.objective_class(3)
    crop = np.ascontiguousarray(data[:, :, :8, :8])  # the classifier takes ~8x8 here
    directional_check(tiny_net, "fc", objective, lambda dst: objective.value(dst[0]), crop)


def test_several_blobs_weighted_through_the_net(tiny_net, data):
    end = {"mix/output": 1.0, "conv1": 0.25}
    directional_check(tiny_net, end, None, lambda dsts: objectives.l2_value([d[0] for d in dsts], end.values()),
                      data)


def test_several_blobs_are_one_run_equal_to_the_weighted_sum(tiny_net, data):
    end = {"mix/output": 1.0, "norm1": 0.5}
    combined = dream.gradient(tiny_net, data[0], end, tile=None)
    separate = sum(w * tiny_net.gradient(data, blob)[0] for blob, w in end.items())
    np.testing.assert_allclose(combined, separate, rtol=1e-5, atol=1e-5 * np.abs(separate).max())


def test_one_weighted_blob_scales_its_gradient(tiny_net, data):
    # One blob's graph has no weights input; the weight (here negative: descend) still counts.
    np.testing.assert_allclose(tiny_net.gradient(data, {"mix/output": -2.0}),
                               -2.0 * tiny_net.gradient(data, "mix/output"), rtol=1e-6)


def test_net_scales_each_seed_by_its_blob_weight(tiny_net, data):
    end = {"mix/output": 2.0, "norm1": 0.5}
    dsts, _ = tiny_net.vjp(data, list(end))
    seeds = [np.random.default_rng(i).standard_normal(d.shape).astype(np.float32) for i, d in enumerate(dsts)]
    weighted = tiny_net.gradient(data, end, seed=seeds)
    separate = sum(w * tiny_net.gradient(data, blob, seed=s) for (blob, w), s in zip(end.items(), seeds))
    np.testing.assert_allclose(weighted, separate, rtol=1e-5, atol=1e-5 * np.abs(separate).max())


def test_several_blobs_with_an_objective_scale_its_seeds_by_the_weights(tiny_net, data):
    end = {"mix/output": 2.0, "norm1": 0.5}
    g = dream.gradient(tiny_net, data[0], end, lambda dsts: [dream.objective_L2(d) for d in dsts], tile=None)
    np.testing.assert_allclose(g, dream.gradient(tiny_net, data[0], end, tile=None), rtol=1e-5,
                               atol=1e-5 * np.abs(g).max())


# --------------------------------------------------------------------------- concepts


LABELS = ["tench, Tinca tinca", "goldfish", "great white shark", "tiger shark", "dumbbell"]


@pytest.mark.parametrize("query, index", [
    ("goldfish", 1), ("GoldFish", 1), ("  great  white shark ", 2), ("tinca tinca", 0), ("dumb", 4),
    (3, 3), ("4", 4),
])
def test_class_index_by_name_or_index(query, index):
    assert objectives.class_index(query, LABELS) == index


def test_class_index_misses_say_what_to_do():
    with pytest.raises(DeepDreamError, match="did you mean dumbbell"):
        objectives.class_index("dumbel", LABELS)
    with pytest.raises(DeepDreamError, match=r"matches 2 classes: great white shark \(2\), tiger shark \(3\)"):
        objectives.class_index("shark", LABELS)
    with pytest.raises(DeepDreamError, match=r"class 5 is out of range: the classifier has 5 classes \(0-4\)"):
        objectives.class_index(5, LABELS)


def test_imagenet_labels_ship_with_the_package():
    names = labels.imagenet_labels()
    assert len(names) == 1000 and names[0] == "tench"
    assert objectives.class_index("dumbbell", names) == 543
    assert names[objectives.class_index("Dumbbell", names)] == "dumbbell"


def test_concept_on_the_tiny_net(tiny_net):
    assert objectives.logits_blob(tiny_net) == "fc"
    end, objective = objectives.concept(tiny_net, "tiger", labels=LABELS)
    assert (end, objective.index) == ("fc", 3)
    assert objectives.concept(tiny_net, 2)[1].index == 2
    with pytest.raises(DeepDreamError, match="fc has 5 classes but the labels name 1000"):
        objectives.concept(tiny_net, "dumbbell")  # ImageNet names, 5-class net
    with pytest.raises(DeepDreamError, match="class 7 is out of range: fc has 5 classes"):
        objectives.concept(tiny_net, 7)


def test_read_labels(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("a\nb b\n\n")
    assert labels.read_labels(path) == ["a", "b b"]
    with pytest.raises(DeepDreamError, match="cannot read labels file"):
        labels.read_labels(tmp_path / "nope.txt")
