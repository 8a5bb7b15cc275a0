"""SEP (SExtractor's algorithms) as a detection + star/galaxy + mask baseline.

Per band: SEP background map subtracted, divided by its global rms; the bands
are summed into one detection image with unit noise. ``sep.extract`` finds
and deblends the sources; its segmentation map gives each one a mask. The
star/galaxy rule is a size cut: a source whose half-light radius is within
``star_factor`` of the PSF's is a star. Detections are ranked by S/N.
"""

import numpy as np

from ..errors import DependencyError
from ..models.detections import Instances, boxes_from_masks


def moffat_half_light_radius(fwhm, beta):
    """Half-light radius of a Moffat profile of given FWHM (same units) and β."""
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return alpha * np.sqrt(2.0 ** (1.0 / (beta - 1.0)) - 1.0)


def sep_detect(images, psf_half_light_radius, threshold=1.2, min_area=5,
               deblend_nthresh=32, deblend_cont=0.005, star_factor=1.05):
    """Detect, deblend, mask and classify sources with SEP.

    Parameters
    ----------
    images : ndarray, shape (band, y, x)
        Raw band images.
    psf_half_light_radius : float
        Half-light radius of the PSF in pixels (see
        :func:`moffat_half_light_radius`).
    threshold : float
        Detection threshold in units of the detection image's noise.
    min_area : int
        Minimum pixels above threshold.
    deblend_nthresh, deblend_cont : int, float
        SExtractor's DEBLEND_NTHRESH and DEBLEND_MINCONT.
    star_factor : float
        A source is a star when its half-light radius is below
        ``star_factor * psf_half_light_radius``.

    Returns
    -------
    Instances
        Boxes, classes (1 star, 2 galaxy), scores (S/N) and masks.
    """
    objects, segmap, detection, _ = _extract(images, None, threshold, min_area,
                                             deblend_nthresh, deblend_cont,
                                             segmentation_map=True)
    n = len(objects)
    if n == 0:
        return Instances(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0),
                         np.zeros((0,) + detection.shape, bool))
    masks = segmap[None, :, :] == np.arange(1, n + 1)[:, None, None]
    classes, scores = _classify(objects, detection, psf_half_light_radius, star_factor)
    return Instances(boxes_from_masks(masks), classes, scores, masks)


def sep_catalog(images, psf_half_light_radius, mask=None, threshold=1.2, min_area=5,
                deblend_nthresh=32, deblend_cont=0.005, star_factor=1.05, auto=False):
    """A SEP source catalog of a whole image: positions, class and S/N, no masks.

    The same detection and classification as :func:`sep_detect`, for images
    too large to hold one full-size mask per source.

    Parameters
    ----------
    images : ndarray, shape (band, y, x)
        Raw band images; NaNs are allowed where ``mask`` is set.
    psf_half_light_radius : float
        Of the PSF, in pixels.
    mask : ndarray of bool, shape (y, x), optional
        Pixels to ignore (no data).
    threshold, min_area, deblend_nthresh, deblend_cont, star_factor
        As :func:`sep_detect`.
    auto : bool
        Also measure each band's Kron (AUTO) flux as SExtractor does by default:
        the Kron aperture of :func:`astrodask.kron.kron_photometry` on SEP's own
        ellipses and segmentation map, on each band less SEP's background map,
        without a local annulus: ``kron_radius``, ``flux_auto`` (object, band) and
        ``flux_radius`` (px).

    Returns
    -------
    dict of ndarray
        ``x``, ``y`` (0-based pixels), ``source_class`` (``star``/``galaxy``, the
        catalog's column name), ``snr``, and SEP's second-moment shape as the
        catalog's ``a_image``, ``b_image`` (px) and ``theta_image`` (degrees
        counter-clockwise from +x).
    """
    objects, segmap, detection, subtracted = _extract(images, mask, threshold, min_area,
                                                      deblend_nthresh, deblend_cont,
                                                      segmentation_map=auto)
    classes, scores = _classify(objects, detection, psf_half_light_radius, star_factor)
    names = np.array(["", "star", "galaxy"], dtype=object)
    catalog = {"x": np.asarray(objects["x"], float), "y": np.asarray(objects["y"], float),
               "source_class": names[classes], "snr": scores,
               "a_image": np.asarray(objects["a"], float),
               "b_image": np.asarray(objects["b"], float),
               "theta_image": np.degrees(np.asarray(objects["theta"], float))}
    if auto:
        from ..kron import kron_photometry

        bad = ~np.isfinite(np.asarray(images, dtype=np.float64)).all(axis=0)
        if mask is not None:
            bad |= np.asarray(mask, dtype=bool)
        flags = np.broadcast_to(bad.astype(np.uint8), subtracted.shape)
        # as SExtractor measures: on each band less its background map
        measured = kron_photometry(subtracted, flags, segmap.astype(np.int32),
                                   np.arange(1, len(objects) + 1), catalog["x"], catalog["y"],
                                   catalog["a_image"], catalog["b_image"],
                                   catalog["theta_image"], annulus=None)
        catalog["kron_radius"] = measured["kron_radius"]
        catalog["flux_radius"] = measured["flux_radius"]
        catalog["flux_auto"] = measured["flux_auto"]
    return catalog


def _extract(images, mask, threshold, min_area, deblend_nthresh, deblend_cont,
             segmentation_map=False):
    """SEP extraction on the bands summed in noise units: ``(objects, segmap, detection,
    subtracted)``, the last each band less its SEP background map."""
    try:
        import sep
    except ImportError:
        raise DependencyError("the SEP baseline needs the 'sep' package, a dependency of "
                              "astrodask: install astrodask again (pip install sep)") from None
    images = np.asarray(images, dtype=np.float64)
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=bool) | ~np.isfinite(images).all(axis=0)
        images = np.where(mask, 0.0, images)
    detection = np.zeros(images.shape[1:])
    subtracted = np.empty_like(images)
    for k, band in enumerate(images):
        band = np.ascontiguousarray(band)
        background = sep.Background(band, mask=mask)
        subtracted[k] = band - background.back()
        detection += subtracted[k] / background.globalrms
    detection = np.ascontiguousarray(detection / np.sqrt(len(images)))
    if mask is not None:
        detection[mask] = 0.0
    found = sep.extract(detection, threshold, err=1.0, mask=mask, minarea=min_area,
                        deblend_nthresh=deblend_nthresh, deblend_cont=deblend_cont,
                        segmentation_map=segmentation_map)
    objects, segmap = found if segmentation_map else (found, None)
    return objects, segmap, detection, subtracted


def _classify(objects, detection, psf_half_light_radius, star_factor):
    """SEP's size rule (1 star, 2 galaxy) and S/N score of each object."""
    import sep

    if not len(objects):
        return np.zeros(0, int), np.zeros(0)
    radius, _ = sep.flux_radius(detection, objects["x"], objects["y"],
                                6.0 * np.maximum(objects["a"], 1.0), 0.5,
                                normflux=np.maximum(objects["flux"], 1e-9), subpix=5)
    classes = np.where(radius < star_factor * psf_half_light_radius, 1, 2)
    scores = objects["flux"] / np.sqrt(np.maximum(objects["npix"], 1))
    return classes, scores
