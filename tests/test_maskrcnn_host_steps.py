"""benchmarks/maskrcnn_host_steps.py: its former ROIAlign, NMS and pasting give what the
shipped ones give, and patching them in leaves the shipped ones in place afterwards."""

import numpy as np

from astrodask.models.maskrcnn import detection, model, roi_align, rpn
from benchmark_scripts import load_benchmark


def test_former_steps_agree_with_the_shipped_ones_and_are_restored():
    bench = load_benchmark("maskrcnn_host_steps")
    rng = np.random.default_rng(2)
    boxes = bench.random_boxes(rng, 60, image=64)
    features = [rng.normal(size=(1, 64 // 2 ** k, 64 // 2 ** k, 4)).astype(np.float32)
                for k in (2, 3, 4, 5)]
    batch = np.zeros(len(boxes), np.int64)
    shipped = np.asarray(roi_align.roi_align(features, boxes, batch, 7))
    with bench.former_steps():
        assert roi_align._crop_level is bench.gather_crop_level
        assert rpn.nms is detection.nms is model.nms is bench.greedy_nms
        former = np.asarray(roi_align.roi_align(features, boxes, batch, 7))
    np.testing.assert_allclose(former, shipped, atol=1e-5)
    assert roi_align._crop_level is not bench.gather_crop_level
    assert model.paste_masks is detection.paste_masks and rpn.nms is detection.nms

    scores = rng.random(len(boxes))
    for threshold in (0.0, 0.3, 0.7):
        np.testing.assert_array_equal(bench.greedy_nms(boxes, scores, threshold, 40),
                                      detection.nms(boxes, scores, threshold, 40))
    probs = rng.random((len(boxes), 28, 28))
    np.testing.assert_array_equal(bench.map_coordinates_paste(probs, boxes, (64, 64)),
                                  detection.paste_masks(probs, boxes, (64, 64)))
