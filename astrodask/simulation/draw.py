"""Draw one object of a :class:`~.population.Population` into its own stamp.

Each object is drawn alone, in every band, into the part of its stamp box
that lies inside the field. The result depends on the object and the field
shape only, never on the tile being filled, which is what makes a field drawn
tile by tile equal to the same field drawn in one piece.
"""

from dataclasses import dataclass

import numpy as np

from .optics import gsparams
from .population import BULGE_TRUNCATION


@dataclass
class Stamp:
    """Noiseless images of one object: ``images`` (band, y, x) over ``box``.

    ``box`` is ``(y0, x0, y1, x1)`` in field pixels, exclusive ends.
    """

    index: int
    box: tuple
    images: np.ndarray

    def detection(self, weights):
        """Detection image: bands weighted by ``weights`` (inverse noise) and summed."""
        return np.tensordot(weights.astype(np.float32), self.images, axes=1)


def clip_box(box, shape):
    """Clip ``(y0, x0, y1, x1)`` to a field of ``shape``; ``None`` when empty."""
    y0, x0, y1, x1 = (int(v) for v in box)
    y0, x0 = max(y0, 0), max(x0, 0)
    y1, x1 = min(y1, shape[0]), min(x1, shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    return (y0, x0, y1, x1)


def _galaxy_parts(pop, i, pixel_scale):
    """Unit-flux GalSim components ``(bulge, disk, knots)`` of galaxy ``i`` (None if absent)."""
    import galsim

    gsp = gsparams()
    shear = galsim.Shear(q=float(pop.q[i]), beta=float(pop.position_angle[i]) * galsim.degrees)
    bulge = disk = knots = None
    if pop.bulge_flux[i].any():
        hlr = float(pop.bulge_hlr[i])
        bulge = galsim.Sersic(n=float(pop.bulge_n[i]), half_light_radius=hlr,
                              trunc=BULGE_TRUNCATION * hlr, gsparams=gsp).shear(shear)
    if pop.disk_flux[i].any():
        disk = galsim.Exponential(half_light_radius=float(pop.disk_hlr[i]),
                                  gsparams=gsp).shear(shear)
    if pop.knot_flux[i].any() and pop.arms[i]:
        knots = _arm_knots(pop, i, pixel_scale).shear(shear)
    elif pop.knot_flux[i].any():
        hlr = float(pop.disk_hlr[i])
        rng = galsim.BaseDeviate(int(pop.object_seed[i]))
        points = galsim.RandomKnots(npoints=int(pop.n_knots[i]), half_light_radius=hlr,
                                    flux=1.0, rng=rng, gsparams=gsp)
        # knots are points; give the clumps a size of their own
        clump = galsim.Gaussian(sigma=max(0.15 * hlr, 0.5 * pixel_scale), gsparams=gsp)
        dx, dy = (float(v) for v in pop.knot_offset[i])
        knots = galsim.Convolve(points, clump, gsparams=gsp).shear(shear).shift(dx, dy)
    return bulge, disk, knots


def _arm_knots(pop, i, pixel_scale):
    """Unit-flux knots of spiral ``i`` along its logarithmic arms, in the disk's frame.

    Radii follow the exponential disk's light (clipped to 0.25-3 half-light
    radii); each knot lies on one of the ``arms`` equally spaced arms of
    pitch ``arm_pitch``, scattered by 0.12 rad. Half the knots are compact
    star-forming regions (σ 0.04 half-light radius, at least half a pixel),
    half broad patches tracing the arm (σ 0.12); fluxes log-normal.
    """
    import galsim

    gsp = gsparams()
    rng = np.random.default_rng(int(pop.object_seed[i]))
    hlr, n, arms = float(pop.disk_hlr[i]), int(pop.n_knots[i]), int(pop.arms[i])
    radius = np.clip(rng.gamma(2.0, hlr / 1.678, n), 0.25 * hlr, 3.0 * hlr)
    phase = rng.uniform(0.0, 2 * np.pi) + 2 * np.pi * rng.integers(arms, size=n) / arms
    theta = (phase + np.log(radius / (0.3 * hlr)) / np.tan(np.radians(pop.arm_pitch[i]))
             + rng.normal(0.0, 0.12, n))
    flux = rng.lognormal(0.0, 0.8, n)
    flux /= flux.sum()
    x, y = radius * np.cos(theta), radius * np.sin(theta)
    groups = []
    for part, sigma in ((slice(0, n // 2), max(0.04 * hlr, 0.5 * pixel_scale)),
                        (slice(n // 2, n), 0.12 * hlr)):
        points = [galsim.DeltaFunction(flux=float(f), gsparams=gsp).shift(float(a), float(b))
                  for f, a, b in zip(flux[part], x[part], y[part])]
        groups.append(galsim.Convolve(galsim.Add(points, gsparams=gsp),
                                      galsim.Gaussian(sigma=sigma, gsparams=gsp), gsparams=gsp))
    return galsim.Add(groups, gsparams=gsp)


def bleed_columns(image, level):
    """Clip ``image`` at ``level`` and run the excess up and down its columns, in place.

    Charge above the full well spills into the pixels above and below the
    saturated run of each column, half each way, filling them to ``level``
    until it is spent (what reaches the stamp edge is lost).
    """
    over = image > level
    if not over.any():
        return image
    excess = np.where(over, image - level, 0.0).sum(axis=0)
    np.minimum(image, level, out=image)
    h = image.shape[0]
    for col in np.flatnonzero(excess > 0):
        rows = np.flatnonzero(over[:, col])
        for start, step in ((rows[0] - 1, -1), (rows[-1] + 1, 1)):
            left = excess[col] / 2.0
            r = start
            while left > 0 and 0 <= r < h:
                take = min(level - image[r, col], left)
                image[r, col] += take
                left -= take
                r += step
    return image


def draw_object(pop, i, models, pixel_scale):
    """Draw object ``i`` of ``pop`` in every band.

    Parameters
    ----------
    pop : Population
    i : int
        Row of the object (``id - 1``).
    models : sequence of BandModel
    pixel_scale : float
        Arcsec per pixel.

    Returns
    -------
    Stamp or None
        ``None`` when the stamp lies wholly outside the field.
    """
    import galsim

    box = clip_box(pop.stamp[i], pop.shape)
    if box is None:
        return None
    y0, x0, y1, x1 = box
    center = galsim.PositionD(float(pop.x[i]), float(pop.y[i]))
    images = np.zeros((len(models), y1 - y0, x1 - x0), dtype=np.float32)
    gsp = gsparams()
    parts = None if pop.is_star[i] else _galaxy_parts(pop, i, pixel_scale)
    for b, model in enumerate(models):
        if pop.is_star[i]:
            profile = model.psf.withFlux(float(pop.flux[i, b]))
        else:
            fluxes = (pop.bulge_flux[i, b], pop.disk_flux[i, b], pop.knot_flux[i, b])
            pieces = [p.withFlux(float(f)) for p, f in zip(parts, fluxes) if p is not None]
            galaxy = pieces[0] if len(pieces) == 1 else galsim.Add(pieces, gsparams=gsp)
            profile = galsim.Convolve(galaxy, model.psf, gsparams=gsp)
        image = galsim.ImageF(galsim.BoundsI(x0, x1 - 1, y0, y1 - 1), scale=pixel_scale)
        profile.drawImage(image=image, center=center, method="auto")
        images[b] = image.array
    return Stamp(index=int(i), box=box, images=images)
