"""Test-time flips of the Mask R-CNN: the 8 passes, mapping back, fusion, equivariance."""

import keras
import numpy as np
import pytest

from astrodask.dihedral import DIHEDRAL, transform, untransform
from astrodask.errors import InputError
from astrodask.evaluate import boxes_from_masks
from astrodask.models.maskrcnn import MaskRCNNConfig, build_maskrcnn, detect
from astrodask.models.maskrcnn.flips import fuse_passes, undo_boxes
from test_maskrcnn import TINY


def _l_shape(shape, y0, x0, size):
    """One image (1, H, W, 1) holding an asymmetric L of ``size`` pixels at (y0, x0)."""
    image = np.zeros((1,) + shape + (1,), np.float32)
    image[0, y0:y0 + size, x0:x0 + 2, 0] = 1.0
    image[0, y0 + size - 2:y0 + size, x0:x0 + size, 0] = 1.0
    return image


def test_the_eight_passes_are_distinct_and_boxes_map_back():
    image = _l_shape((40, 60), 5, 30, 8)  # not square: odd turns swap the sides
    truth_box = boxes_from_masks(image[..., 0] > 0)
    seen = set()
    for k, flip in DIHEDRAL:
        moved = transform(image, k, flip, axes=(1, 2))
        assert moved.shape[1:3] == ((60, 40) if k % 2 else (40, 60))
        seen.add(moved.tobytes())
        found_box = boxes_from_masks(moved[..., 0] > 0)
        np.testing.assert_array_equal(undo_boxes(found_box, k, flip, (40, 60)), truth_box)
    assert len(seen) == 8


def test_mask_grids_map_back():
    # a 12 x 12 box holding the L: its box-relative grid at 12 x 12 is the crop itself
    image = _l_shape((30, 30), 7, 11, 12)
    crop = image[0, 7:19, 11:23, 0]
    for k, flip in DIHEDRAL:
        moved = transform(image, k, flip, axes=(1, 2))[0, ..., 0]
        y1, x1, y2, x2 = boxes_from_masks(moved[None] > 0)[0].astype(int)
        grid = moved[y1:y2, x1:x2][None]
        np.testing.assert_array_equal(untransform(grid, k, flip, axes=(1, 2))[0], crop)


def _pass(boxes, classes, scores, grid_value=None):
    grids = np.ones((len(boxes), 4, 4), np.float32) * (grid_value if grid_value is not None
                                                        else np.asarray(scores)[:, None, None])
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes),
            np.asarray(scores, np.float32), grids)


def test_fusion_known_case():
    passes = [
        # object A seen by every pass (galaxy twice, star once); object B by pass 0 only
        _pass([[0, 0, 10, 10], [50, 50, 60, 60]], [2, 1], [0.9, 0.6]),
        _pass([[0, 2, 10, 12]], [2], [0.6]),
        # pass 2 has two boxes on A: only its best joins; the other (a star) becomes its own object
        _pass([[0, 0, 10, 10], [0, 0, 10, 8]], [1, 1], [0.3, 0.2]),
    ]
    boxes, classes, scores, grids = fuse_passes(passes, nms_threshold=0.3, max_instances=10)
    # A: galaxy (0.9 + 0.6 > 0.3), galaxy scores summed over the 3 passes / 3 = 0.5 (the pass
    # that called it a star counts 0); B: 0.6 / 3; the extra star 0.2 / 3. Boxes are
    # weighted by all three scores.
    np.testing.assert_array_equal(classes, [2, 1, 1])
    np.testing.assert_allclose(scores, [0.5, 0.2, 0.2 / 3], rtol=1e-6)
    # the mean over the passes that found the class: same objects, other scores
    _, old_classes, old_scores, _ = fuse_passes(passes, 0.3, 10, score="finding_passes")
    np.testing.assert_array_equal(old_classes, [2, 1, 1])
    np.testing.assert_allclose(old_scores, [0.75, 0.6, 0.2], rtol=1e-6)
    # every pass's score whatever its class: A (0.9 + 0.6 + 0.3) / 3, still a galaxy
    _, any_classes, any_scores, _ = fuse_passes(passes, 0.3, 10, score="any_class")
    np.testing.assert_array_equal(any_classes, [2, 1, 1])
    np.testing.assert_allclose(any_scores, [0.6, 0.2, 0.2 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match="score must be one of"):
        fuse_passes(passes, 0.3, 10, score="max")
    with pytest.raises(InputError, match="detection_flips_score must be one of"):
        MaskRCNNConfig(detection_flips_score="max")
    weights = np.array([0.9, 0.6, 0.3]) / 1.8
    np.testing.assert_allclose(boxes[0], weights @ np.array([[0, 0, 10, 10], [0, 2, 10, 12],
                                                              [0, 0, 10, 10]]), rtol=1e-6)
    np.testing.assert_allclose(grids[0], np.full((4, 4), weights @ [0.9, 0.6, 0.3]), rtol=1e-6)
    np.testing.assert_allclose(boxes[1], [50, 50, 60, 60])
    # per-class NMS after fusion, and the cap on instances
    _, classes, _, _ = fuse_passes(passes, nms_threshold=0.3, max_instances=2)
    assert len(classes) == 2
    empty = fuse_passes([_pass([], [], [])] * 2, 0.3, 10)
    assert [len(e) for e in empty] == [0, 0, 0, 0] and empty[3].shape == (0, 4, 4)


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    return build_maskrcnn(detection_min_confidence=0.0, detection_max_instances=50, **TINY)


def test_flipped_detection_is_equivariant(tiny_model):
    image = np.random.default_rng(1).normal(size=(1, 64, 64, 3)).astype(np.float32)
    found = detect(tiny_model, image, detection_flips=True)[0]
    assert len(found) > 0 and found.masks.shape == (len(found), 64, 64)
    # the 8 passes over the mirrored image are the same 8 images: same objects, mirrored
    mirrored = detect(tiny_model, image[:, :, ::-1], detection_flips=True)[0]
    order = np.lexsort(found.boxes.T[::-1])
    back = mirrored.boxes.copy()
    back[:, [1, 3]] = 64 - mirrored.boxes[:, [3, 1]]
    order_back = np.lexsort(back.T[::-1])
    np.testing.assert_allclose(back[order_back], found.boxes[order], atol=1e-3)
    np.testing.assert_array_equal(mirrored.class_ids[order_back], found.class_ids[order])
    np.testing.assert_array_equal(mirrored.masks[order_back][:, :, ::-1], found.masks[order])


def test_flips_is_a_setting_and_one_pass_is_unchanged(tiny_model):
    images = np.random.default_rng(2).normal(size=(2, 64, 96, 3)).astype(np.float32)
    assert not tiny_model.config.detection_flips
    once = detect(tiny_model, images)
    fused = detect(tiny_model, images, detection_flips=True)
    assert [len(r) for r in fused] != [0, 0]
    assert all(r.masks.shape[1:] == (64, 96) for r in fused)
    assert any(len(a) != len(b) or not np.allclose(a.boxes, b.boxes) for a, b in zip(once, fused))
    # a batch gives what its images give one by one
    alone = detect(tiny_model, images[1], detection_flips=True)[0]
    np.testing.assert_allclose(alone.boxes, fused[1].boxes, atol=1e-4)


def test_passes_split_over_network_calls_give_the_same_detections(tiny_model, monkeypatch):
    from astrodask.models.maskrcnn import model as model_module

    images = np.random.default_rng(3).normal(size=(2, 64, 64, 3)).astype(np.float32)
    together = detect(tiny_model, images, detection_flips=True)
    monkeypatch.setattr(model_module, "FLIPS_BATCH", 3)  # calls of 3 (pass, image) views
    apart = detect(tiny_model, images, detection_flips=True)
    for a, b in zip(together, apart):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)


def test_flips_only_on_images_where_one_pass_finds_a_large_galaxy(tiny_model):
    images = np.random.default_rng(4).normal(size=(4, 64, 64, 3)).astype(np.float32)
    once = detect(tiny_model, images)
    fused = detect(tiny_model, images, detection_flips=True)
    areas = [int(r.masks[r.class_ids == 2].sum(axis=(1, 2)).max(initial=0)) for r in once]
    threshold = sorted(areas)[2]
    assert sorted(areas)[1] < threshold, f"the images must differ in their largest galaxy: {areas}"
    adaptive = detect(tiny_model, images, detection_flips=True,
                      detection_flips_min_area=threshold)
    for found, alone, all_flips, area in zip(adaptive, once, fused, areas):
        expected = all_flips if area >= threshold else alone
        np.testing.assert_allclose(found.boxes, expected.boxes, atol=1e-4)
        np.testing.assert_array_equal(found.class_ids, expected.class_ids)
        np.testing.assert_allclose(found.scores, expected.scores, atol=1e-5)
    # no image holds a galaxy that large: one pass everywhere; without flips the area is moot
    for found, alone in zip(detect(tiny_model, images, detection_flips=True,
                                   detection_flips_min_area=64 * 64 + 1), once):
        np.testing.assert_allclose(found.boxes, alone.boxes, atol=1e-4)
    for found, alone in zip(detect(tiny_model, images, detection_flips_min_area=1), once):
        np.testing.assert_allclose(found.boxes, alone.boxes, atol=1e-4)


@pytest.mark.parametrize("value", [-1, 2.5, True, "many", None])
def test_flips_min_area_must_be_a_pixel_count(value):
    with pytest.raises(InputError, match="detection_flips_min_area must be a whole number"):
        MaskRCNNConfig(detection_flips_min_area=value)
    assert MaskRCNNConfig(detection_flips_min_area=3000.0).detection_flips_min_area == 3000


def test_evaluate_fuses_the_flips_on_every_field(monkeypatch):
    import astrodask.models.maskrcnn as maskrcnn
    from astrodask import evaluate_maskrcnn

    model = build_maskrcnn(detection_min_confidence=0.0, detection_max_instances=5,
                           detection_flips=True, detection_flips_min_area=10**6, **TINY)
    seen = []
    real = maskrcnn.detect

    def spy(model, images, **settings):
        seen.append(settings)
        return real(model, images, **settings)

    monkeypatch.setattr(maskrcnn, "detect", spy)
    result = evaluate_maskrcnn(model, n_fields=1, size=64, baseline=False, iou_types=("bbox",))
    assert seen == [{"detection_flips_min_area": 0}]
    assert result["settings"]["detection_flips"] is True
    evaluate_maskrcnn(model, n_fields=1, size=64, baseline=False, iou_types=("bbox",),
                      settings={"detection_flips_min_area": 50})
    assert seen[-1] == {"detection_flips_min_area": 50}
