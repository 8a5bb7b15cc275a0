"""Per-model tile runners: load a model once, run it on tiles, write its outputs.

A runner lives on a worker (created by the
:class:`~astrodask.engine.plugin.ModelPlugin`) and is also usable in a plain
loop, which is how the benchmark measures the bare model.
"""

import threading

import numpy as np

from .. import storage
from ..morphology.windows import classify_tile
from ..sky import band_levels, detection_image, fill_flagged


def filled_data(tile, mosaic):
    """A window's pixels with padding and flagged pixels filled by sky noise.

    The noise is seeded by the window's index, so a window is always filled
    the same way (:func:`astrodask.sky.fill_flagged`).
    """
    mean, std = band_levels(mosaic)
    return fill_flagged(tile.data, tile.mask != 0, mean, std, seed=(tile.iy, tile.ix))


class UnetRunner:
    """Morpheus U-Net on tiles; writes the window cores into ``unet.zarr``.

    Parameters
    ----------
    spec : ModelSpec
    options : UnetOptions
    """

    kind = "unet"

    def __init__(self, spec, options):
        from ..models.unet import load_unet

        self.spec = spec
        self.options = options
        self.model, self.card = load_unet(spec.path)
        self.classes = tuple(self.card["classes"])
        # Dask may run several tasks of one worker in threads; they share the model.
        self._lock = threading.Lock()
        self._group = None

    @staticmethod
    def required_context(spec, options):
        """Pixels of context each side of a window core needed for seamless maps.

        :func:`~astrodask.morphology.windows.context_radius` for the run's mode
        and the network of ``spec``'s card (34 faithful, 106 fast for Morpheus).
        The runner reads what the halo lacks (:meth:`context_margin`).
        """
        from ..morphology.windows import context_radius

        return context_radius(mode=options.mode, stride=options.stride,
                              architecture=spec.card.get("config"))

    def open_outputs(self, results):
        if self._group is None:
            import zarr

            self._group = zarr.open_group(results.unet_store, mode="r+")
        return self._group

    def warm_up(self, grid, batch_size=1):
        """Run once on an empty window of ``grid`` (widened by :meth:`context_margin`) so that
        graph tracing is not paid by the first task (the U-Net takes one window per call
        whatever ``batch_size``)."""
        side = grid.tile + 2 * self.context_margin(self.spec, self.options, grid)
        blank = np.zeros((len(self.spec.band_indices), side, side), np.float32)
        classify_tile(self.model, blank, mode=self.options.mode, stride=self.options.stride,
                      flips=self.options.flips)

    @classmethod
    def context_margin(cls, spec, options, grid):
        """Pixels read around each window beyond the store's halo (0 if the halo suffices).

        The halo plus the margin reaches :meth:`required_context` and is a
        multiple of the lattice the mode's windows lie on (the faithful
        stride; in fast mode the network's pooling, 8 px for Morpheus), so
        that with a core on that lattice each widened window sees the pixels
        as a whole-image run does, whatever halo the mosaic was ingested with.
        """
        from ..morphology.windows import unet_downsampling_factor

        need = cls.required_context(spec, options)
        if need is None:
            return 0
        if options.mode == "faithful":
            step = options.stride
        else:
            step = unet_downsampling_factor(**(spec.card.get("config") or {}))
        reach = -(-max(need, grid.halo) // step) * step
        return reach - grid.halo

    def predict(self, tile, mosaic, margin=0):
        """Class maps of one :class:`~astrodask.mosaic.Tile` read with ``margin`` px
        beyond its window (:meth:`context_margin`), cut back to the window."""
        data = filled_data(tile, mosaic)[list(self.spec.band_indices)]
        with self._lock:
            out = classify_tile(self.model, data, mode=self.options.mode,
                                stride=self.options.stride, flips=self.options.flips)
        if margin:
            window = (Ellipsis, slice(margin, -margin), slice(margin, -margin))
            out = {name: np.ascontiguousarray(value[window]) for name, value in out.items()}
        return out

    def process(self, windows, mosaic, results, shared=None):
        """Run on the :class:`BatchWindows` ``windows`` and write each window's core.

        The network sees each window widened by :meth:`context_margin` (read
        from the mosaic's full arrays). ``shared`` (a dict, optional)
        receives each window's whole class maps under ``("unet", iy, ix)``
        as ``(mean, classes)``, for the runners that follow on the same
        windows. Returns a small summary.
        """
        group = self.open_outputs(results)
        grid = mosaic.tile_grid
        margin = self.context_margin(self.spec, self.options, grid)
        tiles = windows.tiles(margin)
        writes = []
        for tile in tiles:
            out = self.predict(tile, mosaic, margin)
            if shared is not None:
                shared[("unet", tile.iy, tile.ix)] = (out["mean"], self.classes)
            ys, xs = mosaic.core_slices(tile.iy, tile.ix)
            core = (slice(None),) + tuple(grid.core_slices_in_window(tile.iy, tile.ix))
            writes += [(name, ys, xs, np.asarray(out[name][core], dtype=np.float32))
                       for name in self.options.outputs]

        def write(item):
            name, ys, xs, value = item
            group[name][:, ys, xs] = value

        storage.map_requests(results.location, write, writes)  # the batch's cores, together
        return {"tiles": len(tiles)}


class MaskRCNNRunner:
    """Mask R-CNN on batches of tiles; writes one Parquet part of instances per tile.

    Tiles are standardised with eq. 1 using the *mosaic's* band statistics
    (``spec.stats``, computed once on the client), so a tile is normalised as
    the whole mosaic would be. Padding and flagged pixels are filled with sky
    noise first; detection settings are ``spec.settings`` (the model card's,
    with the run's overrides). Where the spec has a centre network
    (``spec.centres``), each of its peaks becomes one detection
    (:mod:`astrodask.centre_segments`).
    """

    kind = "maskrcnn"

    def __init__(self, spec, options):
        from ..models.maskrcnn import load_maskrcnn

        self.spec = spec
        self.model = load_maskrcnn(spec.path)
        self.mean, self.std = (np.asarray(v, dtype=np.float32) for v in spec.stats)
        self.settings = dict(spec.settings or {})
        self.star_galaxy = star_galaxy_model(spec) if spec.star_galaxy else None
        self.centres = None
        if spec.centres:
            from ..models.centres import centres_from_card

            self.centres, _ = centres_from_card(spec.card, spec.path)
        self._lock = threading.Lock()

    def warm_up(self, grid, batch_size=1):
        """Run on empty windows of ``grid`` so that the first task pays no start-up cost.

        Each batch shape the tasks' calls take is traced here: the flips'
        calls of 8 views and, where one pass decides which windows get the
        flips (``detection_flips_min_area``), one pass over ``batch_size``
        windows (an empty window never takes the flips, so both are run).
        """
        from ..models.maskrcnn import detect

        blank = np.zeros((1, grid.tile, grid.tile, len(self.spec.band_indices)), np.float32)
        detect(self.model, blank, **dict(self.settings, detection_flips_min_area=0))
        if self.settings.get("detection_flips") and self.settings.get("detection_flips_min_area"):
            detect(self.model, np.repeat(blank, batch_size, axis=0), **self.settings)
        self.heatmaps(np.repeat(blank, batch_size, axis=0))

    def heatmaps(self, images):
        """The centre network's heatmaps of a standardised batch, binned as it sees them.

        None without a network.
        """
        from ..models.centres import centre_heatmap

        if self.centres is None:
            return None
        return centre_heatmap(self.centres, images, flips=self.spec.centres.get("flips", True),
                              binning=int(self.spec.centres.get("binning", 1)), unbin=False)

    def standardise(self, tiles, mosaic):
        """Eq. 1 on a batch of tiles (B, T, T, band), flagged pixels filled with sky noise."""
        from ..models.maskrcnn import normalise_bands

        bands = list(self.spec.band_indices)
        data = np.stack([filled_data(t, mosaic)[bands] for t in tiles])
        return normalise_bands(data, self.mean, self.std, self.model.config.normalisation_scale)

    def process(self, windows, mosaic, results, shared=None):
        """Detect on the :class:`BatchWindows` ``windows`` and write each window's instances.

        Where the spec folds irregular fragments and ``shared`` holds the
        U-Net's maps of a window (:meth:`UnetRunner.process`), the knots of
        irregular galaxies join their galaxy: the Mask R-CNN's instances on
        them (:func:`astrodask.fragments.fold_irregular_fragments`), or,
        where the card has a centre network, the peaks on them
        (:meth:`centre`).
        """
        from ..instances import tile_instances
        from ..models.maskrcnn import detect
        from ..sky import saturated_pixels
        from ..star_galaxy import reclassify_instances

        tiles = windows.tiles()
        parts = {}
        images = self.standardise(tiles, mosaic)
        with self._lock:
            detections = detect(self.model, images, **self.settings)
            heatmaps = self.heatmaps(images)
        mean, std = band_levels(mosaic)
        levels = [mosaic.saturation[b] for b in mosaic.bands]
        count = 0
        for k, (tile, found) in enumerate(zip(tiles, detections)):
            brightness = detection_image(tile.data, tile.mask != 0, mean, std)
            saturated = saturated_pixels(tile.data, levels)
            unet = (shared or {}).get(("unet", tile.iy, tile.ix))
            # with a centre network the knots are folded as peaks, not as instances:
            # instances grown by their knots' masks would swallow real neighbours' peaks
            masks, class_ids, scores = self.fold(found, brightness, saturated,
                                                 unet if heatmaps is None else None)
            centres = None
            if self.spec.deblend:
                masks, class_ids, scores = self.split(masks, class_ids, scores, brightness, unet)
            if heatmaps is not None:
                masks, class_ids, scores, centres = self.centre(heatmaps[k], masks, class_ids,
                                                                scores, brightness, unet)
            table = tile_instances(tile, mosaic.tile_grid, masks, class_ids, scores, brightness,
                                   centres)
            if self.star_galaxy:
                table = reclassify_instances(table, brightness, tile.origin,
                                             self.spec.star_galaxy, self.star_galaxy,
                                             noise=np.sqrt(len(mean)), saturated=saturated)
            star_snr = (self.spec.centres or {}).get("star_peak_snr")
            if heatmaps is not None and star_snr is not None:
                from ..centre_segments import stars_at_image_peaks

                table = stars_at_image_peaks(table, brightness, tile.origin, float(star_snr))
            parts[results.instances_path(tile.iy, tile.ix)] = storage.parquet_bytes(table)
            count += table.num_rows
        storage.put_many(parts)  # together: on an object store, one wait for the batch
        return {"instances": count}

    def centre(self, heatmap, masks, class_ids, scores, brightness, unet):
        """One detection per peak of ``heatmap`` (:mod:`astrodask.centre_segments`).

        Where the spec folds irregular fragments and ``unet`` (the window's
        ``(mean, classes)``) is given, the peaks on an irregular galaxy's
        knots fold into the galaxy's
        (:func:`~astrodask.centre_segments.fold_knot_centres`).
        """
        from ..centre_segments import (CORE_RADIUS, centre_detections, fold_knot_centres,
                                       merge_low_contrast)
        from ..models.centres import find_centres, unbinned_positions

        cy, cx, peaks = find_centres(heatmap, self.spec.centres["threshold"])
        binning = int(self.spec.centres.get("binning", 1))
        cy, cx = unbinned_positions(cy, binning), unbinned_positions(cx, binning)
        radius = float(self.spec.centres.get("core_radius", CORE_RADIUS))
        segments, classes, peak_scores, centres = centre_detections(
            np.stack([cy, cx], axis=1), peaks, masks, class_ids, scores, brightness,
            keep_instances=self.spec.centres.get("keep_instances"),
            confirm_instances=self.spec.centres.get("confirm_instances"), core_radius=radius,
            reclaim_sigma=self.spec.centres.get("reclaim_sigma"))
        fraction = self.spec.fold_fragments
        if fraction and unet is not None and "irregular" in unet[1]:
            probabilities, names = unet
            keep, segments = fold_knot_centres(segments, peak_scores, centres, masks, scores,
                                               brightness, probabilities,
                                               names.index("irregular"), fraction, radius)
            classes, peak_scores, centres = classes[keep], peak_scores[keep], centres[keep]
        contrast = self.spec.centres.get("deblend_contrast")
        if contrast:
            keep, segments, peak_scores = merge_low_contrast(segments, peak_scores, brightness,
                                                             contrast)
            classes, centres = classes[keep], centres[keep]
        return segments, classes, peak_scores, centres

    def split(self, masks, class_ids, scores, brightness, unet):
        """Instances over several significant peaks split (:mod:`astrodask.instance_deblend`).

        Where ``unet`` (the window's ``(mean, classes)``) is given, instances
        it calls irregular stay whole (their peaks are one galaxy's knots), or,
        with the card's ``irregular_by_class``, lose only the basins it calls
        another class.
        """
        from ..fragments import dominant_classes, light_weight
        from ..instance_deblend import split_instances

        keep_whole = classes = None
        if unet is not None and "irregular" in unet[1]:
            probabilities, names = unet
            classes = (probabilities, names.index("irregular"))
            keep_whole = (dominant_classes(masks, probabilities, light_weight(brightness))
                          == classes[1])
        return split_instances(masks, class_ids, scores, brightness, keep_whole=keep_whole,
                               unet=classes, **self.spec.deblend)

    def fold(self, found, brightness, saturated, unet):
        """``found``'s masks, classes and scores with pieces of one source folded into it.

        Pieces of a saturated star always (where ``saturated``, the window's
        :func:`astrodask.sky.saturated_pixels`, is known); knots of irregular
        galaxies where the spec asks and ``unet`` (the window's ``(mean,
        classes)`` from the U-Net) is given, the galaxy then scored as the
        most confident of its members. See :mod:`astrodask.fragments`.
        """
        from ..fragments import fold_irregular_fragments, fold_saturated_pieces, light_weight

        masks, keep = found.masks, np.arange(len(found.scores))
        if saturated is not None and len(keep) > 1:
            masks, kept, _ = fold_saturated_pieces(masks, saturated)
            keep = keep[kept]
        scores = np.asarray(found.scores)[keep]
        fraction = self.spec.fold_fragments
        if fraction and unet is not None and len(keep) > 1 and "irregular" in unet[1]:
            probabilities, classes = unet
            masks, kept, members = fold_irregular_fragments(
                masks, probabilities, light_weight(brightness), classes.index("irregular"),
                fraction)
            keep = keep[kept]
            # a galaxy is as certain as its most confident knot: a weak proposal over a
            # clumpy galaxy whose core the network found at 0.96 must not take the
            # galaxy under the catalog cut with it (BENCHMARKS.md, session 46)
            scores = np.array([scores[held].max() for held in members], dtype=scores.dtype)
        return masks, found.class_ids[keep], scores


def star_galaxy_model(spec):
    """The PSF-aware star/galaxy model in a Mask R-CNN spec's card, or None."""
    from ..star_galaxy import StarGalaxyModel

    section = spec.card.get("star_galaxy")
    return StarGalaxyModel.from_dict(section) if section else None


RUNNERS = {"unet": UnetRunner, "maskrcnn": MaskRCNNRunner}


def make_runner(spec, config):
    """The runner for ``spec`` with its options from ``config`` (a RunConfig)."""
    return RUNNERS[spec.kind](spec, getattr(config, spec.kind))


class BatchWindows:
    """The windows of one batch, each read from the store at most once per width.

    Parameters
    ----------
    mosaic : Mosaic
    batch : list of (iy, ix)
    """

    def __init__(self, mosaic, batch):
        self.mosaic, self.batch = mosaic, list(batch)
        self._read = {}

    def tiles(self, margin=0):
        """The batch's :class:`~astrodask.mosaic.Tile` s, widened by ``margin`` px each side.

        ``margin=0`` reads each window's chunk of ``tiles``
        (:meth:`~astrodask.mosaic.Mosaic.read_tile`); a wider read takes the
        full-mosaic arrays (:meth:`~astrodask.mosaic.Mosaic.read_window`).
        Only what a runner asks for is read. From an object store the
        windows are read at once, each in a thread of its own, so that the
        batch waits for about one window's requests, not for all of them.
        """
        if margin not in self._read:
            if margin:
                def read(window):
                    return self.mosaic.read_window(*window, margin)
            else:
                def read(window):
                    return self.mosaic.read_tile(*window)
            self._read[margin] = storage.map_requests(self.mosaic.path, read, self.batch)
        return self._read[margin]


def process_tiles(runners, mosaic, results, batch):
    """Run every runner on the windows of ``batch``, then mark each window done.

    Parameters
    ----------
    runners : list
        Loaded runners.
    mosaic : Mosaic
    results : Results
    batch : list of (iy, ix)

    Returns
    -------
    dict
        ``tiles`` processed and per-runner summaries.
    """
    windows = BatchWindows(mosaic, batch)
    summary = {"tiles": len(windows.batch)}
    # U-Nets first: a Mask R-CNN may use their maps of the same windows (``shared``)
    shared = {}
    for runner in sorted(runners, key=lambda r: r.kind != "unet"):
        summary[runner.kind] = runner.process(windows, mosaic, results, shared)
    results.mark_done(batch, {"models": [r.spec.name for r in runners]})
    return summary
