"""Weak detections kept when their own S/N vouches for them (astrodask.merging.weak).

Model-free, as tests/test_merge.py: each window "detects" the simulator's
truth masks, here on a field with sky noise, some of them with a score under
the catalog cut.
"""

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

import astrodask
from astrodask.merging.pieces import fold_faint_pieces
from astrodask.merging.products import MergeOptions, weak_detection_rule
from astrodask.merging.run import merge
from astrodask.merging.single import merge_in_process
from astrodask.merging.weak import mask_snr, vouched_pieces
from astrodask.simulation import read_object_masks

from test_merge import _pieces_table, catalog, fake_detections

SIZE = (300, 320)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weak-field")
    astrodask.simulate(folder / "sim", size=SIZE, preset="decam", seed=12)
    truth = pq.read_table(folder / "sim" / "truth.parquet").to_pydict()
    masks = {m.id: m for m in read_object_masks(folder / "sim" / "masks.parquet")}
    mosaic = astrodask.ingest([folder / "sim" / f"{b}.fits" for b in "grz"],
                              folder / "mosaic.zarr", bands=list("grz"), tile=128, halo=24)
    return folder, truth, masks, mosaic


def test_mask_snr_is_the_catalogs_snr_of_the_same_pixels(noisy, tmp_path):
    """Over an object's exclusive segment, mask_snr gives the catalog's S/N."""
    folder, truth, masks, mosaic = noisy
    out = fake_detections(mosaic, masks, truth, tmp_path / "run", centres=True)
    merge_in_process(out, options=MergeOptions(pictures=False))
    cat = catalog(out)
    segmap = fits.getdata(out / "segmap.fits")
    flux = sum(np.array(cat[f"flux_{b}"]) for b in "grz")
    error = np.sqrt(sum(np.array(cat[f"flux_err_{b}"]) ** 2 for b in "grz"))
    objects = [k for k in np.argsort(-flux / error)[:5]]
    boxes, seg_masks = [], []
    for k in objects:
        ys, xs = np.nonzero(segmap == cat["id"][k])
        y0, x0, y1, x1 = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
        boxes.append((y0, x0, y1, x1))
        seg_masks.append(segmap[y0:y1, x0:x1] == cat["id"][k])
    # the catalog counts the pixel pairs of correlated noise chunk by chunk, so a segment
    # across a chunk edge has a few pairs fewer there; within one chunk they are the same
    np.testing.assert_allclose(mask_snr(mosaic, boxes, seg_masks), (flux / error)[objects],
                               rtol=0.02)
    blank = np.ones((12, 12), bool)  # a corner of sky: no source
    sky = mask_snr(mosaic, [(0, 0, 12, 12)], [blank & (segmap[:12, :12] == 0)])
    assert abs(sky[0]) < 5


def test_a_vouched_piece_is_not_folded_and_collects_the_pieces_it_holds():
    block = np.ones((4, 4), bool)
    rows = [(0.9, 10, 10, block),    # 0: confident
            (0.35, 10, 14, block),   # 1: weak, touches 0, vouched for
            (0.3, 10, 18, block),    # 2: weak, touches 1 only
            (0.35, 30, 30, block)]   # 3: weak, alone, not vouched
    table = _pieces_table(rows)
    import pyarrow as pa

    table = table.append_column("vouched", pa.array([False, True, False, False]))
    folded = fold_faint_pieces(table, 0.5).to_pydict()
    assert folded["det"] == [0, 1, 3]
    assert folded["vouched"] == [False, True, False]
    assert (folded["x0"][1], folded["x1"][1], folded["area"][1]) == (14, 22, 32)
    assert folded["area"][0] == 16


def test_vouched_pieces_take_only_the_weak_ones_above_the_floor(noisy):
    folder, truth, masks, mosaic = noisy
    bright = max(truth["id"], key=lambda i: truth["snr"][truth["id"].index(i)])
    m = masks[bright]
    rows = [(0.9, 0, 0, np.ones((5, 5), bool))]  # a confident piece elsewhere
    rows += [(s, m.box[0], m.box[1], m.mask) for s in (0.4, 0.2)]
    rows.append((0.4, 0, 10, np.ones((10, 10), bool)))  # sky
    table = _pieces_table(rows)
    assert vouched_pieces(table, mosaic, 0.5, 0.3, 10.0).tolist() == [False, True, False, False]
    assert not vouched_pieces(table, mosaic, 0.5, 0.3, None).any()
    assert not vouched_pieces(table, mosaic, None, 0.3, 10.0).any()


def test_weak_objects_with_high_snr_stay_the_same_on_dask_and_in_one_process(noisy, tmp_path):
    from distributed import Client

    folder, truth, masks, mosaic = noisy
    snr = dict(zip(truth["id"], truth["snr"]))
    weak = {i for i in truth["id"] if i % 2}
    out = fake_detections(mosaic, masks, truth, tmp_path / "dask", centres=True,
                          score_of=lambda i: 0.35 if i in weak else 0.9)
    reference = shutil.copytree(out, tmp_path / "single")
    plain = shutil.copytree(out, tmp_path / "plain")
    rule = MergeOptions(min_score=0.5, weak_min_score=0.3, weak_min_snr=10.0, pictures=False)
    with Client(processes=False, n_workers=1, dashboard_address=":0") as client:
        merge(out, client=client, options=rule)
    merge_in_process(reference, options=rule)
    merge_in_process(plain, options=MergeOptions(min_score=0.5, pictures=False))
    assert (out / "segmap.fits").read_bytes() == (reference / "segmap.fits").read_bytes()
    assert catalog(out)["flux_r"] == catalog(reference)["flux_r"]

    def found(out):
        cat = catalog(out)
        near = {}
        for i, x, y in zip(truth["id"], truth["x"], truth["y"]):
            d = np.hypot(np.array(cat["x"]) - x, np.array(cat["y"]) - y)
            near[i] = d.size and d.min() < 1.0
        return near, cat

    kept, cat = found(reference)
    dropped, _ = found(plain)
    bright_weak = [i for i in weak if snr[i] >= 30]
    faint_weak = [i for i in weak if snr[i] < 7]
    assert bright_weak and faint_weak
    assert all(kept[i] for i in bright_weak) and not any(dropped[i] for i in bright_weak)
    assert not any(kept[i] for i in faint_weak)
    # what stays under the cut says so: its score is the detector's
    assert min(s for s in cat["class_score"] if s == s) == pytest.approx(0.35)
    assert len(cat["id"]) > len(catalog(plain)["id"])


def test_the_rule_comes_from_the_card_unless_the_options_say(noisy):
    from astrodask.errors import InputError

    card = {"catalog_weak_min_score": 0.3, "catalog_weak_min_snr": 10}
    record = {"models": [{"kind": "maskrcnn", "card": card}]}
    assert weak_detection_rule(record, MergeOptions()) == (0.3, 10.0, None, None, None, None)
    assert weak_detection_rule(record, MergeOptions(weak_min_snr=20)) == \
        (0.3, 20.0, None, None, None, None)
    assert weak_detection_rule({"models": [{"kind": "maskrcnn", "card": {}}]},
                               MergeOptions()) == (None, None, None, None, None, None)
    gated = {"models": [{"kind": "maskrcnn", "card": dict(
        card, catalog_weak_max_host_area=400, catalog_weak_core_fraction=0.3)}]}
    assert weak_detection_rule(gated, MergeOptions())[4:] == (0.3, 400.0)
    assert weak_detection_rule(gated, MergeOptions(weak_max_host_area=50))[5] == 50.0
    with pytest.raises(InputError, match="core fraction"):
        weak_detection_rule(record, MergeOptions(weak_core_fraction=-1))
    with pytest.raises(InputError, match="host area"):
        weak_detection_rule(record, MergeOptions(weak_max_host_area=0))
    with pytest.raises(InputError, match="weak-detection S/N"):
        weak_detection_rule(record, MergeOptions(weak_min_snr=-1))
    with pytest.raises(InputError, match="weak-detection score"):
        weak_detection_rule(record, MergeOptions(weak_min_score=1.5))


def test_a_weak_piece_of_a_much_brighter_neighbour_is_not_vouched_for(noisy):
    """The contrast condition: S/N 10 on its own, but a small part of the source it touches."""
    folder, truth, masks, mosaic = noisy
    galaxies = [i for i, c in zip(truth["id"], truth["class_code"]) if c == 2]
    bright = max(galaxies, key=lambda i: truth["snr"][truth["id"].index(i)])
    m = masks[bright]
    y0, x0 = m.box[0], m.box[1]
    pixels = np.argwhere(m.mask)
    centre = pixels.mean(axis=0)
    # a 3x3 "knot" halfway out from the centre, inside the mask
    distance = np.hypot(*(pixels - centre).T)
    ky, kx = pixels[np.argmin(abs(distance - distance.max() / 3))]
    knot = np.zeros_like(m.mask)
    knot[ky - 1:ky + 2, kx - 1:kx + 2] = True
    rest = m.mask & ~knot
    table = _pieces_table([(0.9, y0, x0, rest), (0.4, y0, x0, knot)])
    snr = mask_snr(mosaic, [m.box[:4]] * 2, [rest, knot])
    assert snr[1] >= 10 and snr[1] < 0.5 * snr[0]
    assert vouched_pieces(table, mosaic, 0.5, 0.3, 10.0).tolist() == [False, True]
    assert vouched_pieces(table, mosaic, 0.5, 0.3, 10.0, 0.5).tolist() == [False, False]
    ratio = snr[1] / snr[0]
    assert vouched_pieces(table, mosaic, 0.5, 0.3, 10.0, ratio * 0.9).tolist() == [False, True]
    alone = _pieces_table([(0.4, y0, x0, knot)])  # touches no confident piece: S/N alone decides
    assert vouched_pieces(alone, mosaic, 0.5, 0.3, 10.0, 0.5).tolist() == [True]


def test_a_weak_piece_lying_mostly_on_a_confident_one_is_not_vouched_for(noisy):
    """Another proposal for the same source (a second, weaker detection of it) stays out."""
    folder, truth, masks, mosaic = noisy
    bright = max(truth["id"], key=lambda i: truth["snr"][truth["id"].index(i)])
    m = masks[bright]
    y0, x0 = m.box[0], m.box[1]
    table = _pieces_table([(0.9, y0, x0, m.mask), (0.4, y0, x0, m.mask)])
    assert vouched_pieces(table, mosaic, 0.5, 0.3, 10.0).tolist() == [False, False]
    apart = _pieces_table([(0.9, 0, 0, np.ones((5, 5), bool)), (0.4, y0, x0, m.mask)])
    assert vouched_pieces(apart, mosaic, 0.5, 0.3, 10.0).tolist() == [False, True]


def test_a_weak_peak_beside_a_confident_one_is_not_vouched_for(noisy):
    """The separation condition, on the detector's centres (else the anchors)."""
    folder, truth, masks, mosaic = noisy
    bright = max(truth["id"], key=lambda i: truth["snr"][truth["id"].index(i)])
    m = masks[bright]
    y0, x0 = m.box[0], m.box[1]
    # _pieces_table puts centres and anchors on each mask's first pixel: 3 px apart here
    table = _pieces_table([(0.9, y0 - 3, x0 - 3, np.ones((2, 2), bool)), (0.4, y0, x0, m.mask)])
    first = np.argwhere(m.mask)[0]
    separation = np.hypot(*(first + (y0, x0) - (y0 - 3, x0 - 3)))
    assert vouched_pieces(table, mosaic, 0.5, 0.3, 10.0).tolist() == [False, True]
    assert vouched_pieces(table, mosaic, 0.5, 0.3, 10.0, None, separation + 0.5).tolist() == \
        [False, False]
    assert vouched_pieces(table, mosaic, 0.5, 0.3, 10.0, None, separation - 0.5).tolist() == \
        [False, True]


def test_a_weak_piece_on_a_large_galaxy_is_not_vouched_for(noisy):
    """The host-area condition: a knot that passes the S/N test on a galaxy too large to be
    anything but resolved (its area in arcsec² through the mosaic's pixel scale)."""
    folder, truth, masks, mosaic = noisy
    bright = max(truth["id"], key=lambda i: truth["snr"][truth["id"].index(i)])
    m = masks[bright]
    y0, x0 = m.box[0], m.box[1]
    pixels = np.argwhere(m.mask)
    ky, kx = pixels[len(pixels) // 2]
    knot = np.zeros_like(m.mask)
    knot[ky - 1:ky + 2, kx - 1:kx + 2] = True
    host = m.mask & ~knot
    table = _pieces_table([(0.9, y0, x0, host), (0.4, y0, x0, knot)])
    assert vouched_pieces(table, mosaic, 0.5, 0.3, 10.0).tolist() == [False, True]
    host_arcsec2 = host.sum() * mosaic.pixel_scale ** 2
    gate = {"weak_min_contrast": None, "weak_min_separation": None}
    assert vouched_pieces(table, mosaic, 0.5, 0.3, 10.0, **gate,
                          weak_max_host_area=1.01 * host_arcsec2).tolist() == [False, True]
    assert vouched_pieces(table, mosaic, 0.5, 0.3, 10.0, **gate,
                          weak_max_host_area=0.99 * host_arcsec2).tolist() == [False, False]
    alone = _pieces_table([(0.4, y0, x0, knot)])  # touches no confident piece: no host
    assert vouched_pieces(alone, mosaic, 0.5, 0.3, 10.0, **gate,
                          weak_max_host_area=1e-6).tolist() == [True]


def test_a_weak_piece_in_a_confident_ones_core_is_not_vouched_for(noisy):
    """The core condition: the least distance from a confident piece grows with its radius."""
    folder, truth, masks, mosaic = noisy
    bright = max(truth["id"], key=lambda i: truth["snr"][truth["id"].index(i)])
    m = masks[bright]
    y0, x0 = m.box[0], m.box[1]
    wy, wx = np.argwhere(m.mask)[0] + (y0, x0)   # _pieces_table's centre: the first pixel
    # a confident 6 x 60 block whose centre (first pixel) lies 6 px above, clear of the mask
    table = _pieces_table([(0.9, wy - 6, wx, np.ones((6, 60), bool)), (0.4, y0, x0, m.mask)])
    radius = np.sqrt(360 / np.pi)
    rule = (0.5, 0.3, 10.0, None, None, None)
    assert vouched_pieces(table, mosaic, *rule).tolist() == [False, True]
    assert vouched_pieces(table, mosaic, *rule, weak_core_fraction=5.5 / radius).tolist() == \
        [False, True]
    assert vouched_pieces(table, mosaic, *rule, weak_core_fraction=6.5 / radius).tolist() == \
        [False, False]
    # with a fixed separation too, the larger of the two decides
    assert vouched_pieces(table, mosaic, 0.5, 0.3, 10.0, None, 7.0,
                          weak_core_fraction=5.5 / radius).tolist() == [False, False]


def test_each_shipped_card_keeps_detections_its_own_snr_vouches_for():
    from astrodask.engine.specs import resolve_models

    def rule(name, bands):
        (spec,) = resolve_models([name], bands)
        return weak_detection_rule({"models": [{"kind": "maskrcnn", "card": spec.card}]},
                                   MergeOptions())

    assert rule("maskrcnn_decam", ("g", "r", "z")) == (0.3, 10.0, None, 4.0, 0.4, 400.0)
    # maskrcnn_hst: only sources far brighter than any noise peak (S/N 100)
    assert rule("maskrcnn_hst", ("v", "z", "j", "h")) == (0.1, 100.0, None, 4.0, 0.4, None)
