"""Mask R-CNN model: construction, ROIAlign, anchors, NMS, pasting, detect, save/load."""

import keras
import numpy as np
import pytest

from astrodask.models.maskrcnn import (
    MaskRCNNConfig, band_statistics, build_maskrcnn, detect, load_maskrcnn, normalise_bands,
)
from astrodask.models.maskrcnn.anchors import decode_boxes, encode_boxes, generate_anchors
from astrodask.models.maskrcnn.detection import nms, paste_masks, select_detections
from astrodask.models.maskrcnn.roi_align import roi_align, roi_levels

TINY = dict(stem_width=8, stage_widths=(8, 8, 16, 16), fpn_channels=8, head_units=16,
            mask_channels=8)


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_every_depth_builds_and_runs(depth):
    model = build_maskrcnn(backbone_depth=depth, **TINY)
    images = np.zeros((2, 64, 128, 3), dtype=np.float32)
    pyramid, logits, deltas = model(images)
    assert [tuple(p.shape) for p in pyramid] == [
        (2, 16, 32, 8), (2, 8, 16, 8), (2, 4, 8, 8), (2, 2, 4, 8), (2, 1, 2, 8)]
    n_anchors = len(generate_anchors((64, 128), model.config.anchor_scales,
                                     model.config.anchor_ratios))
    assert tuple(logits.shape) == (2, n_anchors)
    assert tuple(deltas.shape) == (2, n_anchors, 4)


def test_config_rejects_bad_depth_and_round_trips():
    with pytest.raises(ValueError, match="backbone_depth"):
        MaskRCNNConfig(backbone_depth=42)
    config = MaskRCNNConfig(backbone_depth=34, detection_nms_threshold=0.2)
    assert MaskRCNNConfig.from_dict(config.to_dict()) == config


def test_anchor_scales_and_centres():
    anchors = generate_anchors((64, 64), (8, 16, 32, 64, 128), (1.0,))
    # P2 (stride 4) holds 16x16 anchors of side 8 centred on (i + 0.5) * 4
    np.testing.assert_allclose(anchors[0], [-2, -2, 6, 6])
    np.testing.assert_allclose(anchors[1], [-2, 2, 6, 10])
    assert len(anchors) == 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1
    np.testing.assert_allclose(anchors[-1], [-32, -32, 96, 96])  # P6, side 128


def test_box_encoding_round_trip():
    rng = np.random.default_rng(1)
    reference = np.array([[10, 10, 20, 30], [0, 0, 8, 8]], dtype=np.float32)
    boxes = reference + rng.uniform(-2, 2, size=reference.shape).astype(np.float32)
    deltas = encode_boxes(boxes, reference, (0.1, 0.1, 0.2, 0.2))
    np.testing.assert_allclose(decode_boxes(np, deltas, reference, (0.1, 0.1, 0.2, 0.2)),
                               boxes, atol=1e-4)


def test_roi_align_reproduces_a_linear_ramp():
    # bilinear sampling and bin averaging are exact on a linear function
    height, width = 32, 32
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    ramp = (2.0 * yy + 0.5 * xx)[None, :, :, None]
    features = [np.concatenate([ramp, -ramp], axis=-1)] + \
        [np.zeros((1, height // 2 ** k, width // 2 ** k, 2), np.float32) for k in (1, 2, 3)]
    box = np.array([[20.0, 12.0, 36.0, 28.0]])  # image pixels, size 16 -> P2 (stride 4)
    assert roi_levels(box)[0] == 0
    assert list(roi_levels([[0, 0, 32, 32], [0, 0, 64, 64], [0, 0, 500, 500]])) == [1, 2, 3]
    out = np.asarray(roi_align(features, box, [0], output_size=4, sampling_ratio=2))
    # bin centres in feature coordinates (pixel centre at i + 0.5)
    fy = (20.0 + (np.arange(4) + 0.5) * 4.0) / 4.0 - 0.5
    fx = (12.0 + (np.arange(4) + 0.5) * 4.0) / 4.0 - 0.5
    expected = 2.0 * fy[:, None] + 0.5 * fx[None, :]
    np.testing.assert_allclose(out[0, :, :, 0], expected, atol=1e-5)
    np.testing.assert_allclose(out[0, :, :, 1], -expected, atol=1e-5)


def _bilinear_roi_align(feature, box, output_size, ratio, stride):
    """ROIAlign of one box on one (h, w, C) level, sample by sample (the definition)."""
    height, width, _ = feature.shape
    y1, x1, y2, x2 = np.asarray(box, np.float64) / stride
    out = np.zeros((output_size, output_size, feature.shape[2]))
    n = output_size * ratio
    ys = np.clip(y1 + (np.arange(n) + 0.5) / n * (y2 - y1) - 0.5, 0, height - 1)
    xs = np.clip(x1 + (np.arange(n) + 0.5) / n * (x2 - x1) - 0.5, 0, width - 1)
    for a, y in enumerate(ys):
        for b, x in enumerate(xs):
            r, c = int(np.floor(y)), int(np.floor(x))
            r2, c2 = min(r + 1, height - 1), min(c + 1, width - 1)
            fy, fx = y - r, x - c
            value = ((1 - fy) * (1 - fx) * feature[r, c] + (1 - fy) * fx * feature[r, c2]
                     + fy * (1 - fx) * feature[r2, c] + fy * fx * feature[r2, c2])
            out[a // ratio, b // ratio] += value / ratio ** 2
    return out


def test_roi_align_matches_per_sample_bilinear_on_random_boxes():
    # boxes of every level, thin, large, and over the image edges (clamped samples)
    rng = np.random.default_rng(3)
    features = [rng.normal(size=(2, 64 // 2 ** k, 48 // 2 ** k, 3)).astype(np.float32)
                for k in range(4)]
    side = np.exp(rng.uniform(np.log(1.5), np.log(90), 40))
    y1, x1 = rng.uniform(-8, 60, 40), rng.uniform(-8, 44, 40)
    boxes = np.stack([y1, x1, y1 + side, x1 + side * rng.choice([0.3, 1, 3], 40)], 1)
    boxes = np.clip(boxes, [0, 0, 0, 0], [64, 48, 64, 48]).astype(np.float32)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    batch = rng.integers(0, 2, 40)
    for size, ratio in ((7, 2), (4, 1), (3, 3)):
        out = np.asarray(roi_align(features, boxes, batch, output_size=size,
                                   sampling_ratio=ratio))
        levels = roi_levels(boxes)
        for i, (box, image, level) in enumerate(zip(boxes, batch, levels)):
            expected = _bilinear_roi_align(features[level][image], box, size, ratio,
                                           2 ** (2 + level))
            np.testing.assert_allclose(out[i], expected, atol=2e-5)


def test_roi_align_keeps_box_order_across_levels():
    features = [np.full((2, 64 // 2 ** k, 64 // 2 ** k, 1), float(k + 1), np.float32)
                for k in range(4)]
    features[0][1] = 10.0  # second image of P2
    boxes = np.array([[0, 0, 64, 64], [0, 0, 8, 8], [0, 0, 8, 8], [0, 0, 32, 32]], np.float32)
    out = np.asarray(roi_align(features, boxes, [0, 0, 1, 0], output_size=2))
    np.testing.assert_allclose(out[:, 0, 0, 0], [3.0, 1.0, 10.0, 2.0])


def _greedy_nms(boxes, scores, threshold, max_output):
    """Greedy NMS by its definition: keep the best, drop what overlaps it by more, repeat."""
    order, keep = list(np.argsort(-scores, kind="stable")), []
    while order and len(keep) < max_output:
        best = order.pop(0)
        keep.append(best)
        b = boxes[best]
        order = [i for i in order
                 if (max(min(b[2], boxes[i, 2]) - max(b[0], boxes[i, 0]), 0)
                     * max(min(b[3], boxes[i, 3]) - max(b[1], boxes[i, 1]), 0))
                 / max((b[2] - b[0]) * (b[3] - b[1]) + (boxes[i, 2] - boxes[i, 0])
                       * (boxes[i, 3] - boxes[i, 1])
                       - max(min(b[2], boxes[i, 2]) - max(b[0], boxes[i, 0]), 0)
                       * max(min(b[3], boxes[i, 3]) - max(b[1], boxes[i, 1]), 0), 1e-9)
                 <= threshold]
    return keep


@pytest.mark.parametrize("dense", [False, True])
def test_nms_keeps_what_the_greedy_definition_keeps(dense, monkeypatch):
    # random boxes with ties in score and in coordinates, empty boxes, and both of
    # nms' paths (pairs overlapping in x, and the plain loop for crowded boxes)
    import astrodask.models.maskrcnn.detection as detection

    monkeypatch.setattr(detection, "NMS_DENSE_PAIRS", 0 if dense else 10 ** 9)
    monkeypatch.setattr(detection, "NMS_PAIRS_PER_STEP", 7)  # several steps of pairs
    rng = np.random.default_rng(5)
    for _ in range(150):
        n = int(rng.integers(0, 40))
        corner = rng.uniform(0, 30, (n, 2))
        size = rng.uniform(0, 15, (n, 2)) * (rng.random((n, 1)) > 0.1)
        boxes = np.concatenate([corner, corner + size], axis=1).round(int(rng.integers(0, 3)))
        scores = rng.random(n).round(1)
        threshold, max_output = float(rng.choice([0.0, 0.3, 0.7])), int(rng.integers(1, 45))
        np.testing.assert_array_equal(nms(boxes, scores, threshold, max_output),
                                      _greedy_nms(boxes, scores, threshold, max_output))


def test_nms_known_case():
    boxes = np.array([[0, 0, 10, 10], [0, 1, 10, 11], [20, 20, 30, 30], [0, 5, 10, 15]])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # box 1 overlaps box 0 at IoU 0.82 (dropped); box 3 overlaps box 0 at 0.33
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, 10), [0, 2, 3])
    np.testing.assert_array_equal(nms(boxes, scores, 0.3, 10), [0, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, 2), [0, 2])


def test_select_detections_per_class_nms_and_confidence():
    config = MaskRCNNConfig(detection_nms_threshold=0.3, detection_min_confidence=0.5)
    proposals = np.zeros((4, 4), np.float32)
    probs = np.array([[0.1, 0.8, 0.1],    # star
                      [0.1, 0.1, 0.8],    # galaxy on the same box: kept (other class)
                      [0.1, 0.7, 0.2],    # star overlapping the first: suppressed
                      [0.6, 0.2, 0.2]])   # background
    boxes = np.zeros((4, 3, 4), np.float32)
    boxes[:, :] = [0, 0, 10, 10]
    boxes[2, 1] = [0, 1, 10, 11]
    out_boxes, classes, scores = select_detections(proposals, probs, boxes, config, (32, 32))
    np.testing.assert_array_equal(classes, [1, 2])
    np.testing.assert_allclose(scores, [0.8, 0.8])


def test_paste_masks_fills_the_box():
    probs = np.ones((2, 28, 28), np.float32)
    probs[1, :, 14:] = 0.0  # right half off
    boxes = np.array([[2.0, 3.0, 6.0, 9.0], [0.0, 0.0, 8.0, 8.0]])
    masks = paste_masks(probs, boxes, (10, 12))
    expected = np.zeros((10, 12), bool)
    expected[2:6, 3:9] = True
    np.testing.assert_array_equal(masks[0], expected)
    assert masks[1, :8, :4].all() and not masks[1, :, 4:].any()


def test_paste_masks_interpolates_as_scipy_does():
    # bilinear, edge values extended (map_coordinates order 1, mode nearest), on random
    # grids and boxes of every shape, part of them past the image's edge
    from scipy import ndimage

    rng = np.random.default_rng(8)
    probs = rng.random((30, 28, 28))
    corner = rng.uniform(-6, 40, (30, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.5, 30, (30, 2))], axis=1)
    masks = paste_masks(probs, boxes, (48, 40))
    for prob, mask, (y1, x1, y2, x2) in zip(probs, masks, boxes):
        rows = np.arange(48)[(np.arange(48) + 0.5 > y1) & (np.arange(48) + 0.5 < y2)]
        cols = np.arange(40)[(np.arange(40) + 0.5 > x1) & (np.arange(40) + 0.5 < x2)]
        expected = np.zeros((48, 40), bool)
        if len(rows) and len(cols):
            uu, vv = np.meshgrid((rows + 0.5 - y1) / (y2 - y1) * 28 - 0.5,
                                 (cols + 0.5 - x1) / (x2 - x1) * 28 - 0.5, indexing="ij")
            values = ndimage.map_coordinates(prob, [uu, vv], order=1, mode="nearest")
            expected[np.ix_(rows, cols)] = values >= 0.5
        np.testing.assert_array_equal(mask, expected)


def test_normalising_a_tile_matches_the_mosaic():
    rng = np.random.default_rng(3)
    mosaic = rng.normal([[[1.0]], [[5.0]], [[-2.0]]], [[[2.0]], [[0.5]], [[1.0]]],
                        size=(3, 200, 300)).astype(np.float32)
    mosaic[:, 50:53, 60:63] += 1000.0  # a bright star must not move the statistics
    mean, std = band_statistics(mosaic)
    np.testing.assert_allclose(mean, [1.0, 5.0, -2.0], atol=0.05)
    np.testing.assert_allclose(std, [2.0, 0.5, 1.0], rtol=0.05)
    whole = normalise_bands(mosaic, mean, std, scale=2.0)
    tile = normalise_bands(mosaic[:, 64:128, 128:192], mean, std, scale=2.0)
    assert whole.shape == (200, 300, 3)
    np.testing.assert_array_equal(tile, whole[64:128, 128:192])


def test_detect_returns_pasted_masks_and_survives_save_load(tmp_path):
    # seeded: an unseeded untrained model may call every RoI background (seen once in CI)
    keras.utils.set_random_seed(0)
    model = build_maskrcnn(detection_min_confidence=0.0, detection_max_instances=20, **TINY)
    images = np.random.default_rng(0).normal(size=(2, 70, 90, 3)).astype(np.float32)
    results = detect(model, images)
    assert len(results) == 2
    for res in results:
        assert 0 < len(res) <= 20
        assert res.masks.shape == (len(res), 70, 90)
        assert set(np.unique(res.class_ids)) <= {1, 2}
        assert (res.boxes[:, 2] <= 70).all() and (res.boxes[:, 3] <= 90).all()
        # masks stay within their boxes
        for box, mask in zip(res.boxes, res.masks):
            rows = np.flatnonzero(mask.any(axis=1))
            if len(rows):
                assert rows[0] >= np.floor(box[0]) and rows[-1] < np.ceil(box[2])
    path = tmp_path / "tiny.keras"
    model.save(path)
    again = detect(load_maskrcnn(path), images)
    for a, b in zip(results, again):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
    # a per-call setting overrides the model's; no detection at all is fine too
    assert all(len(r) <= 5 for r in detect(model, images, detection_max_instances=5))
    none = detect(model, images, detection_min_confidence=1.01)
    assert [len(r) for r in none] == [0, 0] and none[0].masks.shape == (0, 70, 90)


def test_p1_level_shapes_and_rpn_anchors_unchanged():
    model = build_maskrcnn(roi_min_level=1, **TINY)
    images = np.zeros((1, 64, 128, 3), dtype=np.float32)
    pyramid, logits, _ = model(images)
    assert [tuple(p.shape) for p in pyramid] == [
        (1, 32, 64, 8), (1, 16, 32, 8), (1, 8, 16, 8), (1, 4, 8, 8), (1, 2, 4, 8), (1, 1, 2, 8)]
    # the RPN still runs on P2..P6 only: same anchors as without P1
    assert logits.shape[1] == len(generate_anchors((64, 128), model.config.anchor_scales,
                                                   model.config.anchor_ratios))
    with pytest.raises(ValueError, match="roi_min_level"):
        MaskRCNNConfig(roi_min_level=0)


def test_small_rois_go_to_p1_when_the_model_has_it():
    boxes = [[0, 0, 5, 6], [0, 0, 11, 11], [0, 0, 12, 12], [0, 0, 16, 16], [0, 0, 64, 64]]
    # sizes 5.5, 11, 12, 16, 64 -> P1, P1, P2, P2, P4 (index from the first level given)
    assert list(roi_levels(boxes, min_level=1)) == [0, 0, 1, 1, 3]
    assert list(roi_levels(boxes)) == [0, 0, 0, 0, 2]
    features = [np.full((1, 64 // 2 ** k, 64 // 2 ** k, 1), float(k), np.float32)
                for k in range(1, 6)]
    out = np.asarray(roi_align(features, np.array(boxes, np.float32), [0] * 5, output_size=2,
                               min_level=1))
    np.testing.assert_allclose(out[:, 0, 0, 0], [1, 1, 2, 2, 4])
    with pytest.raises(ValueError, match="feature levels"):
        roi_align(features[1:], np.array(boxes, np.float32), [0] * 5, output_size=2, min_level=1)


def test_p1_roi_align_samples_at_stride_2():
    height = width = 32
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    features = [(yy + 3.0 * xx)[None, :, :, None]] + \
        [np.zeros((1, height // 2 ** k, width // 2 ** k, 1), np.float32) for k in (1, 2, 3, 4)]
    box = np.array([[10.0, 6.0, 18.0, 14.0]])  # 8x8 px -> P1, stride 2
    out = np.asarray(roi_align(features, box, [0], output_size=2, sampling_ratio=2,
                               min_level=1))
    centres = (np.array([10.0, 14.0]) + 2.0) / 2.0 - 0.5, (np.array([6.0, 10.0]) + 2.0) / 2.0 - 0.5
    expected = centres[0][:, None] + 3.0 * centres[1][None, :]
    np.testing.assert_allclose(out[0, :, :, 0], expected, atol=1e-5)


def test_old_configs_without_p1_load_and_keep_their_layers(tmp_path):
    # a card written before roi_min_level existed has no such key: it means P2
    values = MaskRCNNConfig(**TINY).to_dict()
    del values["roi_min_level"]
    config = MaskRCNNConfig.from_dict(values)
    assert config.roi_min_level == 2
    model = build_maskrcnn(config)
    path = tmp_path / "old.keras"
    model.save(path)
    again = load_maskrcnn(path)
    assert again.config.roi_min_level == 2
    assert "fpn_p1" not in [layer.name for layer in again.backbone.layers]
    images = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype(np.float32)
    for a, b in zip(model(images)[0], again(images)[0]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
