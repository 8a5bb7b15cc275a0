"""Large-image modes: Morpheus-faithful sliding windows and fast whole tiles."""

import numpy as np
import pytest

from astrodask.errors import InputError
from astrodask.models.unet import build_unet, load_unet
from astrodask.morphology.windows import (classify_faithful, classify_image, classify_tile,
                                          context_radius, standardise_windows)


@pytest.fixture(scope="module")
def morpheus():
    return load_unet("morpheus")[0]


@pytest.fixture(scope="module")
def tiny():
    import keras

    keras.utils.set_random_seed(0)
    return build_unet(n_bands=2, n_classes=3, down_filters=(4,), up_filters=(4,),
                      down_blocks=1, mid_filters=4, up_blocks=1)


def _field(shape, seed=0, bands=4):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = rng.normal(size=(bands, *shape))
    for _ in range(4):
        cy, cx, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(1, 6)
        img += 30 * np.exp(-np.hypot(yy - cy, xx - cx) / r)[None]
    return img.astype(np.float32)


def _naive_faithful(model, image, stride):
    """Reference: one window at a time, plain sums."""
    _, h, w = image.shape
    total = np.zeros((5, h, w))
    total_sq = np.zeros((5, h, w))
    votes = np.zeros((5, h, w))
    n = np.zeros((h, w))
    for y in range(0, h - 39, stride):
        for x in range(0, w - 39, stride):
            win = standardise_windows(image[:, y:y + 40, x:x + 40].transpose(1, 2, 0)[None])
            p = np.asarray(model.predict_on_batch(win))[0, 5:35, 5:35].transpose(2, 0, 1)
            total[:, y + 5:y + 35, x + 5:x + 35] += p
            total_sq[:, y + 5:y + 35, x + 5:x + 35] += p ** 2
            votes[:, y + 5:y + 35, x + 5:x + 35] += p == p.max(axis=0)
            n[y + 5:y + 35, x + 5:x + 35] += 1
    k = np.maximum(n, 1)
    return total / k, total_sq / k - (total / k) ** 2, votes / k, n


def test_standardise_windows_formula():
    win = np.random.default_rng(1).normal(3, 2, size=(2, 40, 40, 4))
    out = standardise_windows(win)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, atol=1e-4)
    flat = standardise_windows(np.full((1, 40, 40, 4), 7.0))
    assert np.all(flat == 0)  # std 0 -> divided by 1/sqrt(N), not by zero


def test_faithful_matches_naive_windows(morpheus):
    image = _field((60, 60), seed=2)
    got = classify_faithful(morpheus, image, stride=5, batch_size=7)
    mean, var, votes, n = _naive_faithful(morpheus, image, 5)
    assert np.array_equal(got["n"], n)
    assert n.max() == 25 and n[0, 0] == 0  # 5 x 5 windows cover the centre
    np.testing.assert_allclose(got["mean"], mean, atol=1e-5)
    np.testing.assert_allclose(got["var"], var, atol=1e-5)
    np.testing.assert_allclose(got["votes"], votes, atol=1e-6)
    assert got["mean"].shape == (5, 60, 60) and got["mean"].dtype == np.float32


def test_faithful_stride1_matches_morpheus_core(morpheus):
    mc = pytest.importorskip("morpheus_core.morpheus_core")
    image = _field((46, 50), seed=3)
    got = classify_faithful(morpheus, image, stride=1)

    def model(batch):
        return np.asarray(morpheus.predict_on_batch(standardise_windows(batch[0])))

    update_map = np.pad(np.ones((30, 30)), 5)
    inputs = [image.transpose(1, 2, 0)]
    _, (mean_var, n) = mc.predict(model, inputs, 5, 256, (40, 40), update_map=update_map,
                                  aggregate_method="mean_var")
    _, (rank_vote, _) = mc.predict(model, inputs, 5, 256, (40, 40), update_map=update_map,
                                   aggregate_method="rank_vote")
    assert np.array_equal(got["n"], n)
    np.testing.assert_allclose(got["mean"], mean_var[..., 0].transpose(2, 0, 1), atol=1e-5)
    np.testing.assert_allclose(got["var"], mean_var[..., 1].transpose(2, 0, 1), atol=1e-5)
    np.testing.assert_allclose(got["votes"], rank_vote.transpose(2, 0, 1), atol=1e-6)


def test_faithful_core_is_final_beyond_context_radius(morpheus):
    image = _field((84, 84), seed=4)
    stride, cut = 3, 12  # tile origin a multiple of the stride
    whole = classify_faithful(morpheus, image, stride=stride)
    tile = classify_faithful(morpheus, image[:, cut:, cut:], stride=stride)
    r = context_radius(mode="faithful", stride=stride)
    core = np.s_[:, cut + r:, cut + r:]
    np.testing.assert_allclose(tile["mean"][:, r:, r:], whole["mean"][core], atol=1e-6)
    assert np.array_equal(tile["n"][r:, r:], whole["n"][core[1:]])
    # nearer the cut the tile has seen fewer windows
    near = r - stride
    assert not np.array_equal(tile["n"][near:, near:], whole["n"][cut + near:, cut + near:])


def test_fast_mode_outputs(morpheus):
    image = _field((64, 72), seed=5)
    one = classify_tile(morpheus, image, mode="fast")
    assert one["mean"].shape == (5, 64, 72)
    assert np.all(one["n"] == 1) and np.all(one["var"] == 0)
    np.testing.assert_allclose(one["mean"].sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(one["votes"].argmax(0), one["mean"].argmax(0))
    eight = classify_tile(morpheus, image, mode="fast", flips=True)
    assert np.all(eight["n"] == 8)
    np.testing.assert_allclose(eight["votes"].sum(0), 1, atol=1e-6)
    assert eight["var"].max() > 0
    # a sharp source in the middle of noise: not background at its peak in either mode
    odd = classify_tile(morpheus, image[:, :61, :59], mode="fast")  # padded internally
    assert odd["mean"].shape == (5, 61, 59)


def test_fast_mode_is_deterministic(morpheus):
    image = _field((48, 48), seed=6)
    a = classify_tile(morpheus, image, mode="fast", flips=True)
    b = classify_tile(morpheus, image, mode="fast", flips=True)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_classify_image_tiles_agree_with_one_pass(tiny):
    image = _field((150, 130), seed=7, bands=2)
    halo = context_radius(tiny, "fast")
    whole = classify_tile(tiny, image, mode="fast")
    tiled = classify_image(tiny, image, mode="fast", tile_size=2 * halo + 24)
    np.testing.assert_allclose(tiled["mean"], whole["mean"], atol=1e-5)


def test_bad_input_is_refused(morpheus):
    with pytest.raises(InputError):
        classify_tile(morpheus, np.zeros((4, 30, 30), np.float32), mode="faithful")
    with pytest.raises(InputError):
        classify_tile(morpheus, np.zeros((30, 30), np.float32))
    with pytest.raises(InputError):
        classify_tile(morpheus, np.zeros((4, 48, 48), np.float32), mode="slow")
