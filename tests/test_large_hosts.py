"""Parts of large, resolved galaxies folded into their galaxy (astrodask.merging.hosts).

Model-free, as tests/test_merge.py: pieces tables written by hand, and a
simulated field whose windows "detect" the truth masks plus knots on its
largest galaxy.
"""

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import astrodask
from astrodask.errors import InputError
from astrodask.engine.results import Results, write_parquet
from astrodask.instances import decode_mask, encode_mask
from astrodask.merging.hosts import host_parts, host_rule, large_host_rule
from astrodask.merging.pieces import fold_faint_pieces
from astrodask.merging.products import MergeOptions
from astrodask.merging.run import merge
from astrodask.merging.single import merge_in_process
from astrodask.simulation import read_object_masks

from test_merge import _pieces_table, catalog, fake_detections

HOST = np.ones((20, 20), bool)   # 400 px: radius sqrt(400 / pi) = 11.3 px
KNOT = np.ones((3, 3), bool)


def _with_classes(table, classes):
    index = table.schema.get_field_index("class")
    return table.set_column(index, "class", pa.array(classes, type=pa.string()))


def _galaxy_with_knots():
    # a piece's centre (see _pieces_table) is its first mask pixel; the host's is its middle
    rows = [(0.9, 40, 40, HOST),     # 0: the host, centre (49.5, 49.5)
            (0.95, 50, 50, KNOT),    # 1: a confident knot on it: a part
            (0.9, 40, 60, KNOT),     # 2: touching its right edge, 14.2 px away: a part
            (0.9, 40, 100, KNOT),    # 3: 50 px away, beyond 1.5 radii: a source
            (0.99, 45, 45, KNOT),    # 4: a star on the galaxy: a source
            (0.3, 46, 46, KNOT)]     # 5: weak, on the host: a part
    table = _with_classes(_pieces_table(rows),
                          ["galaxy", "galaxy", "galaxy", "galaxy", "star", "galaxy"])
    for name in ("centre_y", "centre_x"):
        values = table.column(name).to_pylist()
        values[0] = 49.5
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
    return table


def test_parts_are_the_smaller_galaxies_near_a_large_confident_one():
    table = _galaxy_with_knots()
    assert host_parts(table, 0.5, 400, 1.5).tolist() == [False, True, True, False, False, True]
    # a host must be large, confident and a galaxy
    assert not host_parts(table, 0.5, 401, 1.5).any()
    assert not host_parts(table, 0.95, 400, 1.5).any()
    assert not host_parts(_with_classes(table, ["star"] * 6), 0.5, 400, 1.5).any()
    # the reach is in host radii: just short of the knot at the edge, it is a source
    edge = np.hypot(49.5 - 40, 49.5 - 60) / np.sqrt(400 / np.pi)
    assert host_parts(table, 0.5, 400, edge + 0.01)[2]
    assert not host_parts(table, 0.5, 400, edge - 0.01)[2]


def test_parts_fold_into_their_host_or_leave_the_catalog():
    table = _galaxy_with_knots()
    table = table.append_column("vouched", pa.array([False] * table.num_rows))
    folded = fold_faint_pieces(table, 0.5, host_parts(table, 0.5, 400, 1.5)).to_pydict()
    # the knot lying on the host is another proposal for it (gone), the one touching it
    # joins it; the star and the far galaxy stay; the weak piece stays for the cut to drop
    assert folded["det"] == [0, 3, 4]
    assert folded["area"][0] == 400 + 9
    assert (folded["x0"][0], folded["x1"][0]) == (40, 63)
    host = decode_mask(folded["mask"][0], folded["y1"][0] - folded["y0"][0],
                       folded["x1"][0] - folded["x0"][0])
    assert host[0:3, 20:23].all() and not host[3:, 20:].any()
    # without parts, nothing changes for the confident pieces
    plain = fold_faint_pieces(table, 0.5).to_pydict()
    assert plain["det"] == [0, 1, 2, 3, 4, 5]


def test_a_part_touching_nothing_that_stays_is_gone_and_the_rule_works_without_a_cut():
    rows = [(0.9, 40, 40, HOST), (0.9, 41, 61, KNOT), (0.2, 70, 70, KNOT)]
    table = _pieces_table(rows)
    # 1 is a part one pixel right of the host: no contact, so it leaves
    assert fold_faint_pieces(table, None, np.array([False, True, False])).to_pydict()["det"] \
        == [0, 2]
    assert fold_faint_pieces(table, None).to_pydict()["det"] == [0, 1, 2]


def test_the_rule_comes_from_the_card_unless_the_options_say():
    card = {"catalog_large_host_area": 1000}
    assert large_host_rule(card, MergeOptions()) == (1000.0, 1.5)
    assert large_host_rule(dict(card, catalog_large_host_reach=2), MergeOptions()) == (1000.0, 2.0)
    assert large_host_rule(card, MergeOptions(large_host_area=50, large_host_reach=1)) == \
        (50.0, 1.0)
    assert large_host_rule({}, MergeOptions()) == (None, 1.5)
    assert large_host_rule(None, MergeOptions()) == (None, 1.5)
    with pytest.raises(InputError, match="large-host area must be > 0"):
        large_host_rule(card, MergeOptions(large_host_area=0))
    with pytest.raises(InputError, match="large-host reach must be > 0"):
        large_host_rule(card, MergeOptions(large_host_reach=-1))
    # arcsec² to pixels by the mosaic's scale; off without an area or a scale
    rule = host_rule({"large_host_area": 400 * 0.25 ** 2, "large_host_reach": 1.5,
                      "min_score": 0.5}, 0.25)
    assert rule(_galaxy_with_knots()).tolist() == [False, True, True, False, False, True]
    assert host_rule({"large_host_area": None, "large_host_reach": 1.5}, 0.25) is None
    assert host_rule({"large_host_area": 100.0, "large_host_reach": 1.5}, None) is None




@pytest.fixture(scope="module")
def knotty(tmp_path_factory):
    """A simulated field whose windows detect the truth, plus knots on its largest galaxy."""
    folder = tmp_path_factory.mktemp("hosts-field")
    astrodask.simulate(folder / "sim", size=(300, 320), preset="decam", seed=12)
    truth = pq.read_table(folder / "sim" / "truth.parquet").to_pydict()
    masks = {m.id: m for m in read_object_masks(folder / "sim" / "masks.parquet")}
    mosaic = astrodask.ingest([folder / "sim" / f"{b}.fits" for b in "grz"],
                              folder / "mosaic.zarr", bands=list("grz"), tile=128, halo=24)
    out = fake_detections(mosaic, masks, truth, folder / "run", centres=True)
    galaxies = [i for i, c in zip(truth["id"], truth["class_code"]) if c == 2]
    host = max(galaxies, key=lambda i: masks[i].mask.sum())
    return folder, truth, masks, mosaic, out, host


def _add_knots(out, mosaic, masks, host):
    """Each window holding the host's centre gets three confident 5x5 knots on it.

    They lie at 0.8 of the host's radius from its centre (its outskirts, as HII
    regions), in its mask's box.
    """
    m = masks[host]
    ys, xs = np.nonzero(m.mask)
    cy, cx = m.box[0] + ys.mean(), m.box[1] + xs.mean()
    r = 0.8 * np.sqrt(m.mask.sum() / np.pi)
    offsets = [(int(r * np.sin(a)), int(r * np.cos(a))) for a in (0.3, 2.4, 4.5)]
    results = Results(out)
    added = []
    for iy, ix in mosaic.tile_grid.indices():
        table = pq.read_table(results.instances_path(iy, ix))
        y0w, x0w = mosaic.read_tile(iy, ix).origin
        t = mosaic.tile_grid.tile
        rows = table.to_pylist()
        core_y, core_x = mosaic.tile_grid.core_slices(iy, ix)
        for dy, dx in offsets:
            y, x = int(cy) + dy, int(cx) + dx
            if not (y0w + 2 <= y < y0w + t - 2 and x0w + 2 <= x < x0w + t - 2):
                continue
            knot = dict(rows[0], det=len(rows), score=0.95, y0=y - 2, x0=x - 2, y1=y + 3,
                        x1=x + 3, area=25, anchor_y=y, anchor_x=x, centre_y=float(y),
                        centre_x=float(x), cut=False, class_id=2,
                        in_core=bool(core_y.start <= y < core_y.stop
                                     and core_x.start <= x < core_x.stop),
                        mask=encode_mask(np.ones((5, 5), bool)))
            knot["class"] = "galaxy"
            rows.append(knot)
            added.append((y, x))
        write_parquet(pa.Table.from_pylist(rows, schema=table.schema),
                      results.instances_path(iy, ix))
    assert added
    return sorted(set(added))


def test_knots_of_a_large_galaxy_leave_the_catalog_the_same_on_dask_and_in_one_process(
        knotty, tmp_path):
    from distributed import Client

    folder, truth, masks, mosaic, out, host = knotty
    knots = shutil.copytree(out, tmp_path / "knots")
    added = _add_knots(knots, mosaic, masks, host)
    plain = shutil.copytree(knots, tmp_path / "plain")
    single = shutil.copytree(knots, tmp_path / "single")
    # the host is the only galaxy this large (as seen whole or by the windows of its knots)
    areas = sorted(masks[i].mask.sum() for i in masks if i != host)
    least = max(areas[-1] + 1, 0.5 * masks[host].mask.sum())
    assert least < masks[host].mask.sum()
    rule = MergeOptions(large_host_area=least * mosaic.pixel_scale ** 2, pictures=False)
    with Client(processes=False, n_workers=1, dashboard_address=":0") as client:
        merge(knots, client=client, options=rule)
    merge_in_process(single, options=rule)
    merge_in_process(plain, options=MergeOptions(pictures=False))
    assert (knots / "segmap.fits").read_bytes() == (single / "segmap.fits").read_bytes()
    with_rule, without = catalog(knots), catalog(plain)
    m = masks[host]
    ys, xs = np.nonzero(m.mask)
    cy, cx = m.box[0] + ys.mean(), m.box[1] + xs.mean()

    def knots_found(cat):
        return sum(np.hypot(np.array(cat["y"]) - y, np.array(cat["x"]) - x).min() < 3
                   for y, x in added)

    # the knots are objects of their own without the rule, and gone with it
    assert len(added) == 3 and knots_found(without) == 3 and knots_found(with_rule) == 0
    assert len(without["id"]) - len(with_rule["id"]) >= 3
    # every true source beyond the host's reach is still there
    reach = 1.5 * np.sqrt(m.mask.sum() / np.pi)
    for y, x in zip(truth["y"], truth["x"]):
        if np.hypot(y - cy, x - cx) > reach + 2:
            assert np.hypot(np.array(with_rule["y"]) - y, np.array(with_rule["x"]) - x).min() < 1.5


def test_cli_bad_large_host_area_is_one_line(knotty, tmp_path, capsys):
    from astrodask.cli import main

    folder, truth, masks, mosaic, out, host = knotty
    results = shutil.copytree(out, tmp_path / "results")
    assert main(["merge", str(results), "--large-host-area", "-5", "--no-pictures"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "large-host area must be > 0 arcsec²" in err
    assert not (results / "catalog.parquet").exists()
