"""The centre network, its peaks, the detections made from them, and its training."""

import json

import numpy as np
import pytest

from astrodask.centre_segments import centre_detections
from astrodask.classes import OBJECT_CODE
from astrodask.errors import InputError
from astrodask.models.centres import (bin_images, binned_positions, build_centre_net,
                                      centre_heatmap, find_centres, refine_peaks, render_target,
                                      unbin_maps, unbinned_positions)


def gaussian(shape, y, x, sigma, amplitude=1.0):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return amplitude * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma ** 2))


def test_target_peaks_at_one_on_each_centre_pixel():
    target = render_target(np.array([[10.3, 12.6], [12.2, 14.4], [-5, 3], [40, 40]]), (32, 32))
    assert target[10, 13] == 1.0 and target[12, 14] == 1.0
    assert target.max() == 1.0 and np.count_nonzero(target == 1.0) == 2
    # the maximum, not the sum, of overlapping Gaussians; nothing from centres outside
    assert target[11, 13] == pytest.approx(max(np.exp(-0.5), np.exp(-1.0)), rel=1e-6)
    assert target[:, :3].max() < 1e-3


def test_centres_are_local_maxima_refined_below_a_pixel():
    heatmap = gaussian((40, 40), 10.3, 20.7, 1.0) + gaussian((40, 40), 14.0, 24.0, 1.0, 0.6)
    heatmap += gaussian((40, 40), 30.0, 8.0, 1.0, 0.2)
    y, x, value = find_centres(heatmap, 0.3)
    assert len(y) == 2
    assert abs(y[0] - 10.3) < 0.01 and abs(x[0] - 20.7) < 0.01
    assert abs(y[1] - 14.0) < 0.05 and abs(x[1] - 24.0) < 0.05
    assert value[0] == pytest.approx(heatmap[10, 21], rel=1e-6)
    # a plateau of two equal pixels is one centre
    flat = np.zeros((9, 9), np.float32)
    flat[4, 4] = flat[4, 5] = 0.8
    assert len(find_centres(flat, 0.5)[0]) == 1


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.5])
def test_peaks_are_refined_to_the_top_of_a_gaussian_of_any_width(sigma):
    offsets = [(0.3, -0.4), (0.1, 0.45), (-0.49, 0.0)]
    heatmap = sum(gaussian((60, 60), 10 + 20 * k + dy, 30 + dx, sigma)
                  for k, (dy, dx) in enumerate(offsets))
    y, x = refine_peaks(heatmap, [10, 30, 50], [30, 30, 30])
    np.testing.assert_allclose(y - [10, 30, 50], [dy for dy, _ in offsets], atol=1e-6)
    np.testing.assert_allclose(x - 30, [dx for _, dx in offsets], atol=1e-6)
    # the 3x3 weighted mean it replaces falls short by about half at sigma 1 (0.3 -> 0.16)
    if sigma == 1.0:
        box = heatmap[9:12, 29:32]
        assert (box.sum(axis=1) @ [-1, 0, 1]) / box.sum() == pytest.approx(0.163, abs=0.001)


def test_a_flat_or_empty_neighbourhood_leaves_the_peak_on_its_pixel():
    flat = np.full((5, 5), 0.5)
    zero = np.zeros((5, 5))
    ridge = np.zeros((5, 5))
    ridge[2, :] = 1.0  # peaked across, flat along
    for weights in (flat, zero):
        assert tuple(np.concatenate(refine_peaks(weights, [2], [2]))) == (2.0, 2.0)
    y, x = refine_peaks(ridge, [2], [2])
    assert (y[0], x[0]) == (2.0, 2.0)
    # on the map's edge what lies beyond is unknown: the peak stays on its pixel across
    # the edge and is refined along it
    edge = gaussian((8, 8), -0.3, 4.2, 1.0)
    y, x = refine_peaks(edge, [0], [4])
    assert y[0] == 0.0 and x[0] == pytest.approx(4.2)


def test_heatmap_follows_the_image_under_rotations_and_mirrors():
    net = build_centre_net(3, widths=(4, 8))
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 24, 16, 3)).astype(np.float32)
    heat = centre_heatmap(net, image)
    turned = centre_heatmap(net, np.ascontiguousarray(np.rot90(image, 1, axes=(1, 2))))
    np.testing.assert_allclose(np.rot90(heat, 1, axes=(1, 2)), turned, atol=1e-5)
    mirrored = centre_heatmap(net, np.ascontiguousarray(image[:, :, ::-1]))
    np.testing.assert_allclose(heat[:, :, ::-1], mirrored, atol=1e-5)
    one = centre_heatmap(net, image, flips=False)
    assert one.shape == heat.shape == (1, 24, 16) and 0 < one.min() and one.max() < 1
    # sides that are not multiples of 8 are padded, and the map cropped back
    assert centre_heatmap(net, image[:, :21, :13]).shape == (1, 21, 13)


def test_the_compiled_inference_call_gives_the_eager_values_at_every_shape():
    # Keras' predict_on_batch relaxes shapes on TensorFlow after a few and then cannot
    # trace the network's bilinear upsampling; the heatmaps' call must take any shape
    from astrodask.framework import inference_call

    net = build_centre_net(3, widths=(4, 8))
    call = inference_call(net)
    assert inference_call(net) is call  # cached on the model
    rng = np.random.default_rng(4)
    for height, width in ((16, 16), (24, 16), (16, 24), (32, 8), (8, 40), (48, 48), (40, 24)):
        batch = rng.normal(size=(2, height, width, 3)).astype(np.float32)
        np.testing.assert_array_equal(np.asarray(call(batch)),
                                      np.asarray(net(batch, training=False)))


def test_a_binned_network_sees_block_means_and_its_peaks_land_on_the_sources_pixels():
    image = np.arange(2 * 8 * 6 * 3, dtype=np.float32).reshape(2, 8, 6, 3)
    binned = bin_images(image, 2)
    assert binned.shape == (2, 4, 3, 3)
    assert binned[1, 2, 1, 2] == pytest.approx(image[1, 4:6, 2:4, 2].mean())
    # a source at full-resolution pixel (13.5, 6.0) is at binned (6.5, 2.75) for b = 2,
    # and back
    y, x = binned_positions([13.5, 6.0], 2)
    assert (y, x) == (6.5, 2.75)
    assert tuple(unbinned_positions([y, x], 2)) == (13.5, 6.0)
    # a map peaked on a binned pixel peaks between two pixels when interpolated back
    small = render_target(np.array([[6.0, 3.0]]), (16, 16), sigma=1.5)
    back = unbin_maps(small[None], 2)[0]
    assert back.shape == (32, 32) and back[12, 6] == back[13, 7] == back.max()
    py, px, _ = find_centres(small, 0.5)
    assert tuple(unbinned_positions([py[0], px[0]], 2)) == (12.5, 6.5)
    # the engine's heatmap of a binned network keeps the window's shape, odd sides too
    net = build_centre_net(3, widths=(4, 8))
    window = np.random.default_rng(2).normal(size=(1, 40, 27, 3)).astype(np.float32)
    heat = centre_heatmap(net, window, flips=False, binning=2)
    assert heat.shape == (1, 40, 27) and 0 < heat.min() and heat.max() < 1
    assert centre_heatmap(net, window, flips=False, binning=2, unbin=False).shape == (1, 20, 14)
    # the binned heatmap is the network's map of the block means, interpolated back
    coarse = centre_heatmap(net, bin_images(window[:, :32, :24], 2), flips=False)
    np.testing.assert_allclose(centre_heatmap(net, window[:, :32, :24], flips=False,
                                              binning=2)[0, 1::2, 1::2][3:-3, 3:-3],
                               unbin_maps(coarse, 2)[0, 1::2, 1::2][3:-3, 3:-3], atol=1e-6)


def test_training_on_binned_fields_records_the_binning(tmp_path):
    from astrodask.train.centres import centres_section, train_centres

    _, state = train_centres(tmp_path / "b", n_fields=1, field_size=96, seed=5, steps=1,
                             batch_size=1, crop=48, binning=2)
    assert centres_section(state, "x.h5", 0.4)["binning"] == 2
    with pytest.raises(InputError, match="binned"):
        train_centres(tmp_path / "c", n_fields=1, field_size=96, crop=64, binning=2)
    with pytest.raises(InputError, match="divisor"):
        train_centres(tmp_path / "d", n_fields=1, field_size=96, binning=5)


def blend_window():
    """Two sources 4 px apart under one Mask R-CNN instance, and a lone star."""
    shape = (48, 48)
    image = gaussian(shape, 20, 20, 1.5, 60) + gaussian(shape, 20, 24, 1.5, 40)
    image += gaussian(shape, 36, 36, 1.2, 50)
    blend = (gaussian(shape, 20, 22, 3.0) > 0.05)
    star = (gaussian(shape, 36, 36, 1.0) > 0.05)  # the detector's mask: too small
    return image.astype(np.float32), np.stack([blend, star])


def test_each_centre_becomes_one_detection_with_its_own_segment():
    brightness, masks = blend_window()
    class_ids = np.array([OBJECT_CODE["galaxy"], OBJECT_CODE["star"]])
    centres = np.array([[20.0, 20.0], [20.0, 24.0], [36.0, 36.0], [5.0, 40.0]])
    out, classes, scores, kept = centre_detections(
        centres, np.array([0.9, 0.7, 0.8, 0.4]), masks, class_ids, np.array([0.95, 0.9]),
        brightness)
    assert len(out) == 4 and np.array_equal(kept, centres)
    assert list(classes) == [OBJECT_CODE["galaxy"], OBJECT_CODE["galaxy"], OBJECT_CODE["star"],
                             OBJECT_CODE["galaxy"]]
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.8, 0.4])
    for k, (y, x) in enumerate(centres.astype(int)):
        assert out[k, y, x]
    assert out.sum(axis=0).max() == 1  # disjoint
    # the blend is split between its two sources, along the valley between them
    assert out[0, 20, 18] and out[1, 20, 26]
    # segments reach past the detector's masks where the source is bright
    assert (out[2] & ~masks[1]).sum() > 10 and (out[2] & masks[1]).sum() == masks[1].sum()


def test_flagged_centres_and_shared_pixels_are_dropped():
    brightness, masks = blend_window()
    brightness[36, 36] = -np.inf
    out, classes, scores, kept = centre_detections(
        np.array([[20.0, 20.0], [20.2, 19.8], [36.0, 36.0]]), np.array([0.9, 0.8, 0.7]),
        masks, np.array([2, 1]), np.array([0.9, 0.9]), brightness)
    assert np.array_equal(kept, [[20.0, 20.0]]) and len(out) == 1
    empty = centre_detections(np.zeros((0, 2)), np.zeros(0), masks, np.array([2, 1]),
                              np.array([0.9, 0.9]), brightness)
    assert empty[0].shape == (0, 48, 48)


def test_a_confident_instance_without_a_centre_is_kept_from_its_core():
    """A large smooth galaxy with no heatmap peak keeps its instance; a ring around a star does not."""
    shape = (64, 64)
    brightness = (gaussian(shape, 30.3, 20.6, 6.0, 40) + gaussian(shape, 30, 50, 1.2, 200)
                  ).astype(np.float32)
    galaxy = gaussian(shape, 30.3, 20.6, 6.0) > 0.1
    ring = (gaussian(shape, 30, 50, 4.0) > 0.2) & (gaussian(shape, 30, 50, 4.0) < 0.8)
    masks = np.stack([galaxy, ring])
    class_ids = np.array([OBJECT_CODE["galaxy"], OBJECT_CODE["galaxy"]])
    star = np.array([[30.0, 50.0]])
    out, classes, scores, kept = centre_detections(
        star, np.array([0.9]), masks, class_ids, np.array([0.95, 0.97]), brightness,
        keep_instances=0.9)
    assert len(out) == 2 and np.array_equal(kept[0], star[0])
    np.testing.assert_allclose(kept[1], [30.3, 20.6], atol=0.5)
    np.testing.assert_allclose(scores, [0.9, 0.95])
    assert classes[1] == OBJECT_CODE["galaxy"] and out[1][galaxy].all() and not out[1, 30, 50]
    assert out.sum(axis=0).max() == 1
    # below the score asked for, or without keep_instances, the galaxy's instance is dropped
    # and the star's segment takes its pixels
    for options in ({"keep_instances": 0.96}, {}):
        out, _, _, kept = centre_detections(star, np.array([0.9]), masks, class_ids,
                                            np.array([0.95, 0.97]), brightness, **options)
        assert np.array_equal(kept, star) and len(out) == 1 and out[0][galaxy].all()


def test_a_source_centred_on_a_bad_column_is_not_kept_beside_it():
    """The centre lies on flagged pixels: the confident instance over the source does not
    bring it back at its brightest unflagged pixel, next to the column."""
    shape = (64, 64)
    brightness = gaussian(shape, 30, 32, 2.5, 100).astype(np.float32)
    brightness[:, 32] = -np.inf
    masks = (gaussian(shape, 30, 32, 2.5) > 0.1)[None]
    on_column = np.array([[30.0, 32.0]])
    args = (masks, np.array([OBJECT_CODE["galaxy"]]), np.array([0.97]), brightness)
    out, _, _, kept = centre_detections(on_column, np.array([0.9]), *args, keep_instances=0.9)
    assert len(out) == 0 and len(kept) == 0
    # nor without the network's centre: the instance's core lies beside the column
    none = (np.zeros((0, 2)), np.zeros(0))
    out, _, _, kept = centre_detections(*none, *args, keep_instances=0.9)
    assert len(out) == 0
    # the same source 6 px from the column is kept from its core
    brightness = gaussian(shape, 30, 38, 2.5, 100).astype(np.float32)
    brightness[:, 32] = -np.inf
    masks = (gaussian(shape, 30, 38, 2.5) > 0.1)[None]
    out, _, _, kept = centre_detections(*none, masks, np.array([OBJECT_CODE["galaxy"]]),
                                        np.array([0.97]), brightness, keep_instances=0.9)
    assert len(out) == 1
    np.testing.assert_allclose(kept[0], [30, 38], atol=0.5)


def test_a_centre_takes_the_class_of_the_instance_whose_core_is_nearest():
    """A star on a galaxy's wing: the galaxy's instance covers both and scores higher."""
    shape = (48, 48)
    brightness = (gaussian(shape, 24, 18, 4.0, 50) + gaussian(shape, 24, 27, 1.2, 30)
                  ).astype(np.float32)
    both = gaussian(shape, 24, 21, 7.0) > 0.1
    star = gaussian(shape, 24, 27, 1.2) > 0.2
    masks = np.stack([both, star])
    class_ids = np.array([OBJECT_CODE["galaxy"], OBJECT_CODE["star"]])
    centres = np.array([[24.0, 18.0], [24.0, 27.0]])
    _, classes, _, _ = centre_detections(centres, np.array([0.9, 0.9]), masks, class_ids,
                                         np.array([0.95, 0.8]), brightness)
    assert list(classes) == [OBJECT_CODE["galaxy"], OBJECT_CODE["star"]]


def test_a_centre_at_a_confident_core_takes_the_instance_score():
    brightness, masks = blend_window()
    centres = np.array([[20.0, 21.0], [20.0, 24.0], [36.0, 36.0]])
    args = (centres, np.array([0.35, 0.3, 0.4]), masks, np.array([2, 1]), np.array([0.95, 0.7]),
            brightness)
    _, _, scores, _ = centre_detections(*args, confirm_instances=0.9)
    # the blend's core (20, 21) is near its first centre only; the star's instance is below 0.9
    np.testing.assert_allclose(scores, [0.95, 0.3, 0.4])
    np.testing.assert_allclose(centre_detections(*args, confirm_instances=0.5)[2], [0.95, 0.3, 0.7])
    np.testing.assert_allclose(centre_detections(*args)[2], [0.35, 0.3, 0.4])


def test_the_core_radius_decides_which_centre_an_instance_vouches_for():
    """At a fine pixel scale a galaxy's peak may lie farther from its core than 3 px."""
    shape = (64, 64)
    brightness = gaussian(shape, 30.0, 30.0, 6.0, 40).astype(np.float32)
    galaxy = gaussian(shape, 30.0, 30.0, 6.0) > 0.1
    centre = np.array([[30.0, 35.0]])  # 5 px from the core
    args = (centre, np.array([0.35]), galaxy[None], np.array([OBJECT_CODE["galaxy"]]),
            np.array([0.95]), brightness)
    _, _, scores, kept = centre_detections(*args, confirm_instances=0.8, keep_instances=0.9)
    # within the default 3 px the core has no centre: the instance is kept on its own
    assert len(kept) == 2 and list(scores) == pytest.approx([0.35, 0.95])
    _, _, scores, kept = centre_detections(*args, confirm_instances=0.8, keep_instances=0.9,
                                           core_radius=6.0)
    assert len(kept) == 1 and list(scores) == pytest.approx([0.95])


def test_an_instance_vouches_for_one_centre_only():
    """A faint second peak 2 px beside a confident galaxy's core is not raised with it."""
    brightness, masks = blend_window()
    centres = np.array([[20.0, 20.0], [20.0, 22.0]])
    _, _, scores, _ = centre_detections(centres, np.array([0.35, 0.3]), masks, np.array([2, 1]),
                                        np.array([0.95, 0.7]), brightness, confirm_instances=0.9)
    np.testing.assert_allclose(scores, [0.95, 0.3])


def test_training_resumes_to_the_same_weights(tmp_path):
    from astrodask.train.centres import attach_centres, train_centres

    options = dict(steps=6, batch_size=2, crop=32, warmup_steps=2)
    whole, state = train_centres(tmp_path / "whole", n_fields=2, field_size=48, seed=5,
                                 **options)
    assert state["step"] == 6 and state["pool"]["seeds"] == [5, 6]
    _, state = train_centres(tmp_path / "parts", n_fields=2, field_size=48, seed=5,
                             max_seconds=0, **options)  # stops after its first step
    assert state["step"] == 1
    parts, state = train_centres(tmp_path / "parts", n_fields=2, field_size=48, seed=5, **options)
    assert state["step"] == 6
    for a, b in zip(whole.get_weights(), parts.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)

    # attached to a copy of a Mask R-CNN card, the engine finds the network there
    from astrodask.models.card import WEIGHTS_DIR, read_model_card
    from astrodask.models.centres import centres_from_card
    import shutil

    model = tmp_path / "m.keras"
    shutil.copyfile(WEIGHTS_DIR / "maskrcnn_decam.keras", model)
    card = json.loads((WEIGHTS_DIR / "maskrcnn_decam.card.json").read_text())
    card["centres"] = {"weights": "old.h5", "threshold": 0.3, "confirm_instances": 0.8}
    (tmp_path / "m.card.json").write_text(json.dumps(card))
    attach_centres(tmp_path / "whole", model, threshold=0.35)
    card = read_model_card(model)
    assert card["centres"]["threshold"] == 0.35 and card["centres"]["training"]["steps"] == 6
    assert card["centres"]["confirm_instances"] == 0.8  # the rules stay with the card
    net, section = centres_from_card(card, model)
    for a, b in zip(whole.get_weights(), net.get_weights()):
        np.testing.assert_array_equal(a, b)
    train_centres(tmp_path / "short", n_fields=1, field_size=48, seed=5, **dict(options, steps=1))
    state_path = tmp_path / "short" / "state.json"
    state = json.loads(state_path.read_text())
    state["settings"]["steps"] = 10
    state_path.write_text(json.dumps(state))
    with pytest.raises(InputError, match="has not finished"):
        attach_centres(tmp_path / "short", model, threshold=0.3)


def test_training_can_start_from_given_weights(tmp_path):
    from astrodask.train.centres import WEIGHTS_FILE, centres_section, train_centres

    options = dict(batch_size=2, crop=32, warmup_steps=1)
    trained, _ = train_centres(tmp_path / "a", n_fields=1, field_size=48, seed=5, steps=2,
                               **options)
    start = tmp_path / "a" / WEIGHTS_FILE
    started, state = train_centres(tmp_path / "b", n_fields=1, field_size=48, seed=7, steps=0,
                                   init_weights=start, **options)
    for a, b in zip(trained.get_weights(), started.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert centres_section(state, "x.h5", 0.4)["training"]["initialised_from"] == WEIGHTS_FILE
    fresh, state = train_centres(tmp_path / "c", n_fields=1, field_size=48, seed=7, steps=0,
                                 **options)
    assert state["init_weights"] is None
    assert not all(np.array_equal(a, b)
                   for a, b in zip(trained.get_weights(), fresh.get_weights()))
    with pytest.raises(InputError, match="no such weights file"):
        train_centres(tmp_path / "d", n_fields=1, field_size=48, init_weights=tmp_path / "no.h5")
    with pytest.raises(InputError, match="cannot start from"):
        train_centres(tmp_path / "e", n_fields=1, field_size=48, steps=1, init_weights=start,
                      widths=(8, 16, 24, 32), **options)


def test_a_widened_network_computes_the_narrow_ones_heatmap():
    from astrodask.models.centres import widen_centre_net

    image = np.random.default_rng(3).normal(size=(2, 48, 40, 3)).astype(np.float32)
    narrow = build_centre_net(3, (8, 16, 24))
    wide = build_centre_net(3, (12, 16, 40))
    widen_centre_net(narrow, wide, noise=0.0)
    expected = np.asarray(narrow(image))
    np.testing.assert_allclose(np.asarray(wide(image)), expected, atol=1e-4)

    def copied_filters():  # the first convolution's new filters that equal an old one
        kernel = wide.get_layer(index=2).get_weights()[0]
        return sum(any(np.array_equal(kernel[..., j], kernel[..., i]) for i in range(8))
                   for j in range(8, 12))

    assert copied_filters() == 4
    # with noise the copies are told apart, and the output moves only a little
    widen_centre_net(narrow, wide, noise=0.01)
    assert copied_filters() == 0
    assert 0 < np.abs(np.asarray(wide(image)) - expected).max() < 0.1 * np.abs(expected).max()
    with pytest.raises(ValueError, match="cannot narrow"):
        widen_centre_net(wide, build_centre_net(3, (8, 16, 40)))
    with pytest.raises(ValueError, match="differ in depth"):
        widen_centre_net(narrow, build_centre_net(3, (8, 16, 24, 32)))


def test_training_can_start_from_a_narrower_network(tmp_path):
    from astrodask.train.centres import WEIGHTS_FILE, centres_section, train_centres

    options = dict(batch_size=2, crop=32, warmup_steps=1)
    narrow, _ = train_centres(tmp_path / "a", n_fields=1, field_size=48, seed=5, steps=1,
                              widths=(8, 16, 24), **options)
    wide, state = train_centres(tmp_path / "b", n_fields=1, field_size=48, seed=7, steps=0,
                                init_weights=tmp_path / "a" / WEIGHTS_FILE,
                                init_widths=(8, 16, 24), widths=(16, 24, 32), **options)
    image = np.random.default_rng(4).normal(size=(1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(centre_heatmap(wide, image, flips=False),
                               centre_heatmap(narrow, image, flips=False), atol=0.02)
    assert state["init_widths"] == [8, 16, 24]
    section = centres_section(state, "x.h5", 0.4)
    assert section["widths"] == [16, 24, 32]
    assert section["training"]["widened_from_widths"] == [8, 16, 24]
    with pytest.raises(InputError, match="cannot narrow"):
        train_centres(tmp_path / "c", n_fields=1, field_size=48, steps=0,
                      init_weights=tmp_path / "a" / WEIGHTS_FILE, init_widths=(8, 16, 24),
                      widths=(8, 8, 24), **options)


def test_the_cli_reads_widths_and_refuses_bad_ones(tmp_path, capsys):
    from astrodask.cli import main

    for option, value in (("--widths", "8,x"), ("--init-widths", "8")):
        with pytest.raises(SystemExit) as exit_:
            main(["train", "centres", str(tmp_path / "run"), option, value])
        assert exit_.value.code == 2
        assert "two or more positive integers" in capsys.readouterr().err
    code = main(["train", "centres", str(tmp_path / "run"), "--fields", "1", "--field-size", "48",
                 "--steps", "0", "--crop", "32", "--widths", "8,16,24"])
    assert code == 0
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["settings"]["widths"] == [8, 16, 24]


def test_bad_training_options_are_refused(tmp_path):
    from astrodask.train.centres import train_centres

    with pytest.raises(InputError, match="unknown centre-training options"):
        train_centres(tmp_path / "a", n_fields=1, field_size=48, stepz=3)
    with pytest.raises(InputError, match="multiple of 8"):
        train_centres(tmp_path / "b", n_fields=1, field_size=48, crop=30)


def test_damaged_crops_hold_noise_and_no_centre_on_their_flagged_region():
    from astrodask.train.centres import flag_region, make_batch

    rng = np.random.default_rng(3)
    for _ in range(30):
        region = flag_region(64, rng)
        assert region.any() and not region.all()
    images = np.full((2, 64, 64, 3), 50.0, np.float16)   # bright everywhere: noise stands out
    targets = np.ones((2, 64, 64), np.float32)
    plain_x, plain_y = make_batch(images, targets, np.random.default_rng(1), 16, 64, 0.0)
    # without damage the batches are those of runs made before the option existed
    again_x, _ = make_batch(images, targets, np.random.default_rng(1), 16, 64, 0.0, damage=0.0)
    np.testing.assert_array_equal(plain_x, again_x)
    x, y = make_batch(images, targets, np.random.default_rng(1), 16, 64, 0.0, damage=1.0)
    flagged = np.abs(x - 50.0) > 10.0
    assert flagged.any(axis=(1, 2, 3)).all()          # every crop damaged
    assert (flagged.all(axis=-1) == flagged.any(axis=-1)).all()  # all bands at once
    assert np.abs(x[flagged]).max() < 8.0             # sky noise of σ 1, standardised
    np.testing.assert_array_equal(y[..., 0] == 0.0, flagged.all(axis=-1))
    assert plain_y.min() == 1.0


def knotty_window():
    """An irregular galaxy with a bright knot 8 px from its core, and a star."""
    shape = (64, 64)
    brightness = (gaussian(shape, 32, 32, 6.0, 50) + gaussian(shape, 32, 40, 1.2, 15)
                  + gaussian(shape, 10, 10, 1.2, 40)).astype(np.float32)
    galaxy = gaussian(shape, 32, 32, 6.0) > 0.05
    star = gaussian(shape, 10, 10, 1.2) > 0.05
    probabilities = np.zeros((5,) + shape, np.float32)  # spheroid, disk, irregular, point, bg
    probabilities[4] = 1.0
    probabilities[2][galaxy], probabilities[4][galaxy] = 0.9, 0.1
    probabilities[3][star], probabilities[4][star] = 0.9, 0.1
    centres = np.array([[32.0, 32.0], [32.0, 40.0], [10.0, 10.0]])
    segments, _, scores, kept = centre_detections(
        centres, np.array([0.9, 0.6, 0.9]), np.stack([galaxy, star]),
        np.array([OBJECT_CODE["galaxy"], OBJECT_CODE["star"]]), np.array([0.95, 0.9]), brightness)
    return segments, scores, kept, np.stack([galaxy, star]), brightness, probabilities


def test_peaks_on_an_irregular_galaxys_knots_fold_into_the_galaxy():
    from astrodask.centre_segments import fold_knot_centres

    segments, scores, centres, masks, brightness, probabilities = knotty_window()
    instance_scores = np.array([0.95, 0.9])
    given = segments.copy()
    keep, folded = fold_knot_centres(segments, scores, centres, masks, instance_scores,
                                     brightness, probabilities, 2, 0.5)
    assert list(keep) == [0, 2]
    np.testing.assert_array_equal(segments, given)  # the input is left as it was
    np.testing.assert_array_equal(folded[0], segments[0] | segments[1])
    np.testing.assert_array_equal(folded[1], segments[2])
    # not where the U-Net calls the knot a disk, nor the galaxy not irregular, nor the
    # knot's segment too large, nor the instance not confident
    disk_knot = probabilities.copy()
    disk_knot[2][segments[1]], disk_knot[1][segments[1]] = 0.0, 0.9
    regular = probabilities[[2, 1, 0, 3, 4]]
    share = segments[1].sum() / segments[0].sum()
    for p, fraction, inst in ((disk_knot, 0.5, instance_scores), (regular, 0.5, instance_scores),
                              (probabilities, 0.9 * share, instance_scores),
                              (probabilities, 0.5, np.array([0.7, 0.9]))):
        keep, kept = fold_knot_centres(segments, scores, centres, masks, inst, brightness, p, 2,
                                       fraction)
        assert list(keep) == [0, 1, 2] and np.array_equal(kept, segments)


def test_the_engine_folds_knot_peaks_only_with_the_unet_and_the_cards_fold():
    from types import SimpleNamespace

    from astrodask.engine.runners import MaskRCNNRunner

    _, _, centres, masks, brightness, probabilities = knotty_window()
    heatmap = sum(gaussian(brightness.shape, y, x, 1.0, peak)
                  for (y, x), peak in zip(centres, (0.9, 0.6, 0.9))).astype(np.float32)
    args = (heatmap, masks, np.array([OBJECT_CODE["galaxy"], OBJECT_CODE["star"]]),
            np.array([0.95, 0.9]), brightness)
    unet = (probabilities, ("spheroid", "disk", "irregular", "point_source", "background"))
    for fold, maps, n in ((0.5, unet, 2), (0.5, None, 3), (None, unet, 3)):
        runner = SimpleNamespace(spec=SimpleNamespace(centres={"threshold": 0.3},
                                                      fold_fragments=fold))
        segments, classes, scores, kept = MaskRCNNRunner.centre(runner, *args, maps)
        assert len(segments) == len(classes) == len(scores) == len(kept) == n


def test_the_engine_maps_a_binned_networks_peaks_back_to_the_windows_pixels():
    from types import SimpleNamespace

    from astrodask.engine.runners import MaskRCNNRunner

    brightness = gaussian((48, 48), 10.5, 14.5, 2.0, 50.0).astype(np.float32)
    binned_heatmap = gaussian((24, 24), 5.0, 7.0, 1.0, 0.9).astype(np.float32)
    runner = SimpleNamespace(spec=SimpleNamespace(centres={"threshold": 0.3, "binning": 2},
                                                  fold_fragments=None))
    segments, _, scores, centres = MaskRCNNRunner.centre(
        runner, binned_heatmap, np.zeros((0, 48, 48), bool), np.zeros(0, np.int64),
        np.zeros(0), brightness, None)
    assert len(centres) == 1 and tuple(centres[0]) == (10.5, 14.5)
    assert scores[0] == pytest.approx(0.9) and segments[0][10, 14]


def contrast_window():
    """A large galaxy with a bump on its flank, a neighbour of its own, and their basins
    (watershed of the image smoothed as the detections' is)."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    shape = (80, 96)
    image = (gaussian(shape, 40, 30, 8.0, 100.0) + gaussian(shape, 40, 44, 1.5, 40.0)
             + gaussian(shape, 40, 70, 5.0, 60.0))
    smoothed = ndimage.gaussian_filter(image, 1.0)
    markers = np.zeros(shape, np.int32)
    for k, (y, x) in enumerate(((40, 44), (40, 30), (40, 70)), start=1):
        markers[y, x] = k
    labels = watershed(-smoothed, markers, mask=smoothed > 0.5)
    return np.array([labels == k for k in (1, 2, 3)]), image


def test_a_bump_that_does_not_stand_out_of_its_galaxys_light_joins_it():
    from astrodask.centre_segments import merge_low_contrast

    segments, image = contrast_window()
    scores = np.array([0.9, 0.5, 0.8])
    for contrast in (None, 0.0):
        keep, same, kept_scores = merge_low_contrast(segments, scores, image, contrast)
        assert list(keep) == [0, 1, 2] and np.array_equal(same, segments)
    # above its saddle with the galaxy the bump holds 2.6e-4 of the footprint's light: gone
    # at 1e-3 (into the galaxy, whose score becomes the best of the two), kept at 1e-4; the
    # neighbour holds 0.17 above its saddle and stays
    keep, merged, kept_scores = merge_low_contrast(segments, scores, image, 1e-3)
    assert list(keep) == [1, 2]
    np.testing.assert_array_equal(merged[0], segments[0] | segments[1])
    np.testing.assert_array_equal(merged[1], segments[2])
    np.testing.assert_allclose(kept_scores, [0.9, 0.8])
    assert list(merge_low_contrast(segments, scores, image, 1e-4)[0]) == [0, 1, 2]
    # at a contrast above the neighbour's share, everything is one object
    keep, merged, _ = merge_low_contrast(segments, scores, image, 0.5)
    assert list(keep) == [1] and merged[0].sum() == segments.sum()
    # flagged pixels (-inf) count no light and do not break the merge
    flagged = image.copy()
    flagged[:, 90:] = -np.inf
    assert list(merge_low_contrast(segments, scores, flagged, 1e-3)[0]) == [1, 2]


def test_a_chain_of_bumps_merges_from_the_faintest_up():
    """A faint bump beside a brighter bump on a galaxy: both join the galaxy, not each other."""
    from skimage.segmentation import watershed

    from astrodask.centre_segments import merge_low_contrast

    shape = (64, 64)
    image = (gaussian(shape, 32, 20, 6.0, 100.0) + gaussian(shape, 32, 31, 1.0, 2.0)
             + gaussian(shape, 32, 36, 1.0, 0.5))
    markers = np.zeros(shape, np.int32)
    for k, (y, x) in enumerate(((32, 36), (32, 31), (32, 20)), start=1):
        markers[y, x] = k
    labels = watershed(-image, markers, mask=image > 0.2)
    segments = np.array([labels == k for k in (1, 2, 3)])
    keep, merged, _ = merge_low_contrast(segments, np.array([0.6, 0.7, 0.95]), image, 1e-3)
    assert list(keep) == [2] and merged[0].sum() == segments.sum()


def test_the_engine_merges_low_contrast_peaks_where_the_card_says():
    from types import SimpleNamespace

    from astrodask.engine.runners import MaskRCNNRunner

    segments, image = contrast_window()
    heatmap = sum(gaussian(image.shape, y, x, 1.0, peak)
                  for (y, x), peak in (((40, 44), 0.9), ((40, 30), 0.5), ((40, 70), 0.8)))
    args = (heatmap.astype(np.float32), np.zeros((0,) + image.shape, bool),
            np.zeros(0, np.int64), np.zeros(0), image.astype(np.float32), None)
    for contrast, n in ((None, 3), (1e-3, 2)):
        centres = {"threshold": 0.3, "deblend_contrast": contrast}
        runner = SimpleNamespace(spec=SimpleNamespace(centres=centres, fold_fragments=None))
        found, _, scores, kept = MaskRCNNRunner.centre(runner, *args)
        assert len(found) == len(scores) == len(kept) == n
    assert scores.max() == pytest.approx(0.9)


def test_a_randomised_pool_draws_the_conditions_of_a_share_of_its_fields(tmp_path):
    from astrodask.simulation.conditions import draw_conditions
    from astrodask.train.centres import build_pool, drawn_conditions, train_centres

    assert drawn_conditions(5, 0.0) is None
    assert drawn_conditions(5, 1.0) == draw_conditions(5)
    share = np.mean([drawn_conditions(s, 0.5) is not None for s in range(200)])
    assert 0.35 < share < 0.65
    assert [drawn_conditions(s, 0.5) for s in range(20)] == \
        [drawn_conditions(s, 0.5) for s in range(20)]
    plain, _ = build_pool(tmp_path / "plain.npz", 1, 48, seed=5, log=lambda _: None)
    varied, _ = build_pool(tmp_path / "varied.npz", 1, 48, seed=5, log=lambda _: None,
                           randomise=1.0)
    assert plain.shape == varied.shape and not np.array_equal(plain, varied)
    with pytest.raises(InputError, match="randomised share"):
        build_pool(tmp_path / "bad.npz", 1, 48, seed=5, randomise=1.5)
    _, state = train_centres(tmp_path / "run", n_fields=1, field_size=48, seed=5, steps=1,
                             batch_size=1, crop=48, randomise=1.0)
    assert state["pool"]["randomise"] == 1.0


def _star_table(rows, origin):
    import pyarrow as pa

    from astrodask.instances import SCHEMA

    columns = {name: [] for name in SCHEMA.names}
    for cls, y, x in rows:
        for name in SCHEMA.names:
            columns[name].append({"class": cls, "centre_y": origin[0] + y,
                                  "centre_x": origin[1] + x}.get(name))
    columns["mask"] = [b""] * len(rows)
    return pa.table(columns, schema=SCHEMA)


def test_bright_stars_move_to_the_peak_of_their_own_light():
    from astrodask.centre_segments import stars_at_image_peaks

    rng = np.random.default_rng(5)
    shape, origin = (64, 96), (1000, 2000)
    image = rng.normal(size=shape)
    for y, x, flux in ((20.3, 30.7, 400.0), (40.6, 60.2, 400.0), (45.2, 20.4, 6.0),
                       (12.0, 80.0, 400.0)):
        image += flux * gaussian(shape, y, x, 1.6) / (2 * np.pi * 1.6 ** 2)
    image[50:, 88:] = -np.inf  # a flagged corner
    table = _star_table([("star", 20.1, 30.5),      # bright star: moves to its peak
                         ("galaxy", 40.4, 60.0),    # bright, but a galaxy: stays
                         ("star", 45.0, 20.6),      # too faint to place itself: stays
                         ("star", 13.4, 80.0),      # its peak lies > 1 px away: stays
                         (None, np.nan, np.nan)], origin)   # no centre
    moved = stars_at_image_peaks(table, image, origin, min_snr=50.0)
    y = moved.column("centre_y").to_numpy() - origin[0]
    x = moved.column("centre_x").to_numpy() - origin[1]
    assert abs(y[0] - 20.3) < 0.05 and abs(x[0] - 30.7) < 0.05
    for name in ("centre_y", "centre_x"):  # the others keep their values bit for bit
        np.testing.assert_array_equal(moved.column(name).to_numpy()[1:],
                                      table.column(name).to_numpy()[1:])
    assert abs(y[0] - table.column("centre_y")[0].as_py() + origin[0]) > 0.1
    assert moved.column_names == table.column_names and moved.num_rows == 5
    # a threshold above every star moves nothing
    same = stars_at_image_peaks(table, image, origin, min_snr=1e6)
    np.testing.assert_array_equal(same.column("centre_y").to_numpy(),
                                  table.column("centre_y").to_numpy())


def disk_with_neighbour(seed=1):
    """A bright exponential disk, a faint compact source on its flank, a comparable galaxy
    beside it, and unit noise; with the three centres."""
    rng = np.random.default_rng(seed)
    shape = (160, 200)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    disk = 200 * np.exp(-np.hypot(yy - 80, xx - 70) / 12.0)
    image = (disk + gaussian(shape, 80, 105, 1.5, 30.0) + gaussian(shape, 80, 160, 4.0, 150.0)
             + rng.normal(0, 1, shape))
    return image, disk, np.array([[80.0, 70.0], [80.0, 105.0], [80.0, 160.0]])


def test_a_faint_source_on_a_disk_keeps_only_the_pixels_its_light_stands_out_on():
    image, disk, centres = disk_with_neighbour()
    args = (centres, np.array([0.9, 0.9, 0.9]), np.zeros((0,) + image.shape, bool),
            np.zeros(0), np.zeros(0), image)
    plain = centre_detections(*args)[0]
    reclaimed = centre_detections(*args, reclaim_sigma=3.0)[0]
    # the watershed's basin of the faint source runs down the disk behind it
    assert plain[1].sum() > 2 * reclaimed[1].sum()
    assert plain[1, 80, 112] and not reclaimed[1, 80, 112] and reclaimed[0, 80, 112]
    # its core stays its own, and what it lost went to the disk
    assert reclaimed[1, 78:83, 103:108].all()
    assert reclaimed[0].sum() + reclaimed[1].sum() == plain[0].sum() + plain[1].sum()
    # the disk's light is now nearly all its own (none of it within 2 px of the source)
    assert disk[reclaimed[0]].sum() > disk[plain[0]].sum()
    # a galaxy as bright as its neighbour keeps its segment whole
    np.testing.assert_array_equal(reclaimed[2], plain[2])
    assert reclaimed.sum(axis=0).max() == 1


def test_reclaiming_never_takes_sky_pixels_or_a_brighter_neighbours():
    from astrodask.centre_segments import reclaim_host_light

    shape = (40, 80)
    smoothed = gaussian(shape, 20, 20, 6.0, 50.0) + gaussian(shape, 20, 40, 2.0, 10.0)
    labels = np.zeros(shape, np.int32)
    labels[:, :30], labels[:, 30:] = 1, 2   # two basins filling the window
    seeds = np.array([[20, 20], [20, 40]])
    out = reclaim_host_light(labels.copy(), smoothed, seeds, 1.0, 3.0)
    # the fainter basin's far pixels are sky on both sides of the mirror: they stay
    assert (out[:, 60:] == 2).all()
    # its core, and pixels where its own light stands out, stay too
    assert out[20, 40] == 2 and out[20, 38] == 2
    # the brighter source never loses a pixel
    assert (out[labels == 1] == 1).all()
    # the basin pixels between them carry the bright one's mirrored light only
    assert out[20, 31] == 1
    # one seed: nothing to do
    one = np.ones(shape, np.int32)
    assert (reclaim_host_light(one.copy(), smoothed, seeds[:1], 1.0) == 1).all()


def test_the_engine_reclaims_host_light_where_the_card_says():
    from types import SimpleNamespace

    from astrodask.engine.runners import MaskRCNNRunner

    image, _, centres = disk_with_neighbour()
    heatmap = sum(gaussian(image.shape, y, x, 1.0, 0.9) for y, x in centres)
    args = (heatmap.astype(np.float32), np.zeros((0,) + image.shape, bool),
            np.zeros(0, np.int64), np.zeros(0), image.astype(np.float32), None)
    areas = {}
    for reclaim in (None, 3.0):
        section = {"threshold": 0.3, "reclaim_sigma": reclaim}
        runner = SimpleNamespace(spec=SimpleNamespace(centres=section, fold_fragments=None))
        found, _, _, kept = MaskRCNNRunner.centre(runner, *args)
        assert len(found) == 3
        faint = int(np.argmin(np.hypot(kept[:, 0] - 80, kept[:, 1] - 105)))
        areas[reclaim] = found[faint].sum()
    assert areas[3.0] < areas[None] / 2


def test_the_host_is_the_basin_of_more_light_not_the_higher_peak():
    """A compact source peaking above a large, diffuse galaxy's nucleus gives the galaxy's
    disk back (the SDSS spiral whose edge a compact galaxy held half of)."""
    rng = np.random.default_rng(2)
    shape = (300, 300)  # mostly sky, as a window is: the noise is measured over it
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    disk = 20 * np.exp(-np.hypot(yy - 150, xx - 150) / 12.0)
    compact = gaussian(shape, 150, 180, 1.2, 60.0)
    image = disk + compact + rng.normal(0, 0.3, shape)
    centres = np.array([[150.0, 150.0], [150.0, 180.0]])
    args = (centres, np.array([0.9, 0.9]), np.zeros((0,) + shape, bool), np.zeros(0),
            np.zeros(0), image)
    plain = centre_detections(*args)[0]
    reclaimed = centre_detections(*args, reclaim_sigma=3.0)[0]
    assert image[150, 180] > image[150, 150]  # the compact source peaks higher
    assert reclaimed[1].sum() < plain[1].sum() / 2
    assert disk[reclaimed[0]].sum() > disk[plain[0]].sum()
    assert reclaimed[1, 148:153, 178:183].all()


def test_per_object_work_on_the_mask_box_matches_the_whole_window():
    """Cores, classes and boxes read in each mask's box give what the whole window gives,
    ties included (the first brightest pixel in row-major order)."""
    from astrodask.centre_segments import _core
    from astrodask.fragments import dominant_classes
    from astrodask.models.detections import mask_box

    rng = np.random.default_rng(3)
    smoothed = np.round(rng.normal(size=(40, 50)), 1)  # many equal values
    masks = rng.random((30, 40, 50)) < rng.random((30, 1, 1)) * 0.05
    masks[0] = False
    probabilities = rng.random((3, 40, 50))
    weight = np.clip(smoothed, 0, None)
    expected = []
    for mask in masks:
        flat = np.argmax(np.where(mask, smoothed, -np.inf))
        assert _core(mask, smoothed) == tuple(int(v) for v in np.unravel_index(flat, mask.shape))
        ys, xs = np.nonzero(mask)
        box = mask_box(mask)
        assert (box is None) if not len(ys) else (
            box == (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)))
        totals = probabilities[:-1][:, mask] @ weight[mask]
        expected.append(int(np.argmax(totals)) if weight[mask].sum() > 0 and totals.max() > 0
                        else -1)
    np.testing.assert_array_equal(dominant_classes(masks, probabilities, weight), expected)
