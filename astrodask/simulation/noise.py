"""Sky, Poisson and read noise (and optional cosmic rays), block by block.

Each pixel gets the Poisson noise of its source electrons (white) plus sky
and read noise of the band's per-pixel ``sigma``, correlated between
neighbouring pixels by the band's ``[a, 1, a]`` kernel as in a resampled
coadd (the sky holds hundreds to thousands of electrons per pixel, so its
Poisson noise is drawn as Gaussian).

Noise is drawn on a fixed grid of :data:`NOISE_BLOCK`-pixel blocks, each
with its own generator seeded from ``(seed, band, block row, block column)``;
a block draws its own one-pixel margin of white noise for the kernel, so the
correlation does not reach across block edges. Whatever the region being
filled, a pixel gets the same noise, so a field drawn tile by tile equals the
field drawn in one piece. Regions passed here must therefore start on the
block grid.
"""

import numpy as np
from scipy.ndimage import correlate1d

#: Side of the fixed noise blocks (pixels). Drawing tiles are multiples of it.
NOISE_BLOCK = 256
_NOISE_TAG = 2


def _block_rng(seed, band, by, bx):
    return np.random.default_rng(np.random.SeedSequence([int(seed), _NOISE_TAG, band, by, bx]))


def _cosmic_rays(rng, shape, rate_per_mpx, amplitude):
    """Image of cosmic-ray tracks in one block (lines of 1 to 40 pixels)."""
    hits = np.zeros(shape, dtype=np.float64)
    n = rng.poisson(rate_per_mpx * shape[0] * shape[1] / 1e6)
    for _ in range(n):
        y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        length = rng.uniform(1.0, 40.0)
        angle = rng.uniform(0.0, np.pi)
        energy = amplitude * rng.uniform(5.0, 50.0)
        steps = int(np.ceil(length)) + 1
        t = np.linspace(0.0, length, steps)
        yy = np.floor(y + t * np.sin(angle)).astype(int)
        xx = np.floor(x + t * np.cos(angle)).astype(int)
        keep = (yy >= 0) & (yy < shape[0]) & (xx >= 0) & (xx < shape[1])
        hits[yy[keep], xx[keep]] = energy
    return hits


def _correlated_normal(rng, shape, kernel):
    """Unit-variance Gaussian noise correlated by the separable ``kernel`` (unit norm)."""
    m = len(kernel) // 2
    white = rng.standard_normal((shape[0] + 2 * m, shape[1] + 2 * m))
    smooth = correlate1d(correlate1d(white, kernel, axis=0), kernel, axis=1)
    return smooth[m:m + shape[0], m:m + shape[1]]


def add_noise(noiseless, origin, models, seed, cosmic_rays=0.0, saturate=False):
    """Return a noisy, sky-subtracted float32 copy of a noiseless region.

    Parameters
    ----------
    noiseless : ndarray, shape (band, h, w)
        Noiseless flux of the region, image units.
    origin : tuple of int
        ``(y0, x0)`` of the region in the field; both multiples of
        :data:`NOISE_BLOCK`.
    models : sequence of BandModel
        Sky level, gain and read noise per band.
    seed : int
        Field seed.
    cosmic_rays : float
        Mean number of cosmic-ray tracks per megapixel per band (0: none).
    saturate : bool
        Clip the result at each band's saturation level.

    Returns
    -------
    ndarray, float32, same shape as ``noiseless``
    """
    y0, x0 = origin
    if y0 % NOISE_BLOCK or x0 % NOISE_BLOCK:
        raise ValueError(f"region origin {origin} is not on the {NOISE_BLOCK}-pixel noise grid")
    nb, h, w = noiseless.shape
    out = np.empty(noiseless.shape, dtype=np.float32)
    for b, model in enumerate(models):
        for ly in range(0, h, NOISE_BLOCK):
            for lx in range(0, w, NOISE_BLOCK):
                block = (slice(ly, min(ly + NOISE_BLOCK, h)), slice(lx, min(lx + NOISE_BLOCK, w)))
                rng = _block_rng(seed, b, (y0 + ly) // NOISE_BLOCK, (x0 + lx) // NOISE_BLOCK)
                flux = np.clip(noiseless[b][block].astype(np.float64), 0.0, None)
                value = rng.poisson(model.gain * flux) / model.gain
                value += model.sigma * _correlated_normal(rng, value.shape, model.noise_kernel)
                if cosmic_rays > 0:
                    value += _cosmic_rays(rng, value.shape, cosmic_rays, model.sigma * 10)
                if saturate:
                    np.minimum(value, model.saturation, out=value)
                out[b][block] = value
    return out
