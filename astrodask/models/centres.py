"""The centre network: a small U-Net that marks where sources are.

It maps a standardised image (eq. 1 of Burke et al. 2019, the Mask R-CNN's
input) to a heatmap in [0, 1] whose local maxima are source centres, in the
manner of CenterNet (Zhou et al. 2019, "Objects as Points"): the training
target is a Gaussian of ``sigma`` px at each true centre with its peak,
exactly 1, on the nearest pixel, and the loss is CenterNet's focal loss.
Blended sources a few pixels apart, which a box detector merges into one
instance, stay separate peaks.

The network is fully convolutional (input height and width: multiples of
:data:`DOWNSAMPLING`). Its pixels go through ``asinh`` first, so that bright
stars thousands of σ above the sky do not saturate the first layers.

A Mask R-CNN card holds its centre network in a ``centres`` section
(:func:`centres_from_card`): the weight file beside the card, the widths,
the threshold of a peak, whether the 8 flips are averaged, and ``binning``:
a network trained on images binned ``b`` x ``b`` (the mean of each block of
standardised pixels) sees them binned the same way, and its heatmap is
interpolated back to the image's pixels. Binning lets a network of the same
size and receptive field serve a finer pixel scale (``hst``'s 0.06"/px,
where galaxies are tens of pixels across).
"""

from pathlib import Path

import numpy as np

#: Filters of each contraction level (the expansion mirrors them).
WIDTHS = (16, 32, 64, 96)
#: Height and width of an input must be multiples of this (three 2x2 poolings).
DOWNSAMPLING = 8
#: σ in pixels of the Gaussian around each centre in the training target.
TARGET_SIGMA = 1.0


def build_centre_net(n_bands, widths=WIDTHS):
    """The centre network for ``n_bands`` standardised bands; output: logits (B, H, W, 1).

    Parameters
    ----------
    n_bands : int
    widths : sequence of int
        Filters per level, finest first; ``len(widths) - 1`` poolings.

    Returns
    -------
    keras.Model
    """
    import keras
    from keras import layers

    inputs = keras.Input((None, None, n_bands))
    x = layers.Lambda(keras.ops.arcsinh, name="asinh")(inputs)
    skips = []
    for level, width in enumerate(widths):
        if level:
            x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        skips.append(x)
    for width, skip in zip(widths[-2::-1], skips[-2::-1]):
        x = layers.UpSampling2D(2, interpolation="bilinear")(x)
        x = layers.Concatenate()([x, skip])
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    # A prior of ~1% centres, so that the focal loss starts from a sensible place.
    outputs = layers.Conv2D(1, 1, bias_initializer=keras.initializers.Constant(-4.6))(x)
    return keras.Model(inputs, outputs, name="centre_net")


def load_centre_net(weights, n_bands, widths=WIDTHS):
    """Build the network and load ``weights`` (a ``.weights.h5`` file)."""
    model = build_centre_net(n_bands, widths)
    model.load_weights(str(weights))
    return model


def _widened_channels(old, new, rng):
    """Which of ``old`` channels each of ``new`` >= ``old`` channels copies: all, then random ones."""
    if new < old:
        raise ValueError(f"cannot narrow a layer of {old} filters to {new}")
    return np.concatenate([np.arange(old), rng.integers(0, old, new - old)])


def widen_centre_net(narrow, wide, seed=0, noise=0.01):
    """Copy a centre network into a wider one that computes (almost) the same heatmap.

    Net2WiderNet (Chen, Goodfellow & Shlens 2016): each new filter of a
    layer copies a filter of the narrow layer; the layer after it divides the
    weights it gives each copy by the number of copies, so the sum it
    forms is unchanged. ReLU, pooling, upsampling and concatenation act
    channel by channel, so with ``noise`` 0 the wide network's output equals
    the narrow one's. Copies would stay identical under training; ``noise``
    (relative to each layer's weight spread) tells them apart.

    Parameters
    ----------
    narrow, wide : keras.Model
        Networks of :func:`build_centre_net` with the same bands and number
        of levels, ``wide``'s widths no smaller than ``narrow``'s; ``wide``'s
        weights are overwritten.
    seed : int
        Seeds which filters are copied and the noise.
    noise : float
    """
    from keras import layers

    rng = np.random.default_rng(seed)
    narrow_convs = [layer for layer in narrow.layers if isinstance(layer, layers.Conv2D)]
    wide_convs = [layer for layer in wide.layers if isinstance(layer, layers.Conv2D)]
    if len(narrow_convs) != len(wide_convs):
        raise ValueError("the two centre networks differ in depth")
    levels = (len(narrow_convs) + 1) // 4
    # Inputs of each convolution, in build order: the layer whose output it
    # reads, or two (the upsampled path and the skip) for the expansion's first.
    sources = [None]
    for index in range(1, 2 * levels):
        sources.append((index - 1,))
    for level in range(levels - 2, -1, -1):
        sources.append((len(sources) - 1, 2 * level + 1))
        sources.append((len(sources) - 1,))
    sources.append((len(sources) - 1,))
    copies = []
    for index, (small, large) in enumerate(zip(narrow_convs, wide_convs)):
        kernel, bias = small.get_weights()
        if sources[index] is None:
            inputs = np.arange(kernel.shape[2])
        else:
            offsets = np.cumsum([0] + [narrow_convs[s].filters for s in sources[index]])
            inputs = np.concatenate([copies[s] + offset
                                     for s, offset in zip(sources[index], offsets)])
        last = index == len(narrow_convs) - 1
        outputs = np.arange(1) if last else _widened_channels(small.filters, large.filters, rng)
        copies.append(outputs)
        shares = np.bincount(inputs, minlength=kernel.shape[2])[inputs]
        widened = kernel[:, :, inputs][..., outputs] / shares[None, None, :, None]
        widened = widened + rng.normal(0.0, noise * kernel.std(), widened.shape)
        large.set_weights([widened.astype(np.float32), bias[outputs]])


def centres_from_card(card, card_file):
    """The centre network of a Mask R-CNN card, or None where it has none.

    Parameters
    ----------
    card : dict
        The Mask R-CNN's model card.
    card_file : str or Path
        The card's ``.keras`` file (the weights lie beside it).

    Returns
    -------
    (keras.Model, dict) or None
        The network and the card's ``centres`` section.
    """
    section = card.get("centres")
    if not section:
        return None
    weights = Path(card_file).with_name(section["weights"])
    model = load_centre_net(weights, len(card["bands"]), tuple(section["widths"]))
    return model, section


def _padded(images, multiple=DOWNSAMPLING):
    height, width = images.shape[1:3]
    pad_y, pad_x = (-height) % multiple, (-width) % multiple
    if pad_y or pad_x:
        images = np.pad(images, ((0, 0), (0, pad_y), (0, pad_x), (0, 0)))
    return images, height, width


def bin_images(images, factor):
    """Images (B, H, W, band) binned ``factor`` x ``factor``: the mean of each block.

    ``H`` and ``W`` must be multiples of ``factor``. Binned pixel ``i`` is
    centred on pixel ``factor * i + (factor - 1) / 2`` of the input
    (:func:`binned_positions`).
    """
    from skimage.measure import block_reduce

    if factor == 1:
        return np.asarray(images, dtype=np.float32)
    return block_reduce(np.asarray(images, dtype=np.float32), (1, factor, factor, 1),
                        np.mean).astype(np.float32)


def binned_positions(positions, factor):
    """0-based pixel positions in an image binned ``factor`` x ``factor`` (:func:`bin_images`)."""
    return (np.asarray(positions, dtype=np.float64) - (factor - 1) / 2.0) / factor


def unbinned_positions(positions, factor):
    """Positions in an image binned ``factor`` x ``factor`` back in the input's pixels."""
    return np.asarray(positions, dtype=np.float64) * factor + (factor - 1) / 2.0


def unbin_maps(maps, factor):
    """Maps (B, h, w) of a binned image interpolated (bilinear) back to (B, h*factor, w*factor).

    The inverse of :func:`binned_positions`: the value of binned pixel ``i``
    lies at pixel ``factor * i + (factor - 1) / 2``; beyond the outermost
    binned centres the map is held constant.
    """
    from scipy import ndimage

    if factor == 1:
        return maps
    return ndimage.zoom(maps, (1, factor, factor), order=1, grid_mode=True, mode="nearest")


def centre_heatmap(model, images, flips=True, binning=1, unbin=True):
    """Heatmaps (B, H, W) in [0, 1] of a batch of standardised images (B, H, W, band).

    ``flips``: the mean over the 8 rotations and mirrors of the image (each
    mapped back), which makes the map invariant to them. ``binning``: the
    network sees the images binned ``binning`` x ``binning``
    (:func:`bin_images`, after zero padding to a multiple) and its map is
    interpolated back (:func:`unbin_maps`); with ``unbin`` False it is
    returned as the network made it, ``ceil(H / binning)`` x ``ceil(W /
    binning)``: search that one for peaks (:func:`find_centres`, then
    :func:`unbinned_positions`), since interpolation turns a peak between
    two pixels into a plateau.
    """
    from ..dihedral import DIHEDRAL, transform, untransform
    from ..framework import inference_call

    images = np.asarray(images, dtype=np.float32)
    padded, height, width = _padded(images, DOWNSAMPLING * binning)
    padded = bin_images(padded, binning)
    views = DIHEDRAL if flips else ((0, False),)
    network = inference_call(model)  # compiled: 1.6x faster than eager calls on TensorFlow
    total = np.zeros(padded.shape[:3], dtype=np.float64)
    for k, flip in views:
        view = transform(padded, k, flip, axes=(1, 2))
        logits = np.asarray(network(view))[..., 0]
        total += 1.0 / (1.0 + np.exp(-np.clip(untransform(logits, k, flip, axes=(1, 2)),
                                              -50.0, 50.0)))
    heatmap = total / len(views)
    if unbin:
        heatmap = unbin_maps(heatmap, binning)[:, :height, :width]
    else:
        heatmap = heatmap[:, :-(-height // binning), :-(-width // binning)]
    return heatmap.astype(np.float32)


def find_centres(heatmap, threshold):
    """Source centres: the local maxima of a heatmap at or above ``threshold``.

    A maximum is a pixel no lower than its 8 neighbours; of two equal
    neighbouring maxima the first in row-major order is kept. Its position is
    refined to the vertex of a Gaussian through its 3x3 neighbourhood
    (:func:`refine_peaks`).

    Parameters
    ----------
    heatmap : ndarray, shape (H, W)
    threshold : float

    Returns
    -------
    y, x : ndarray of float64
        0-based pixel coordinates (pixel centres on integers), row-major order.
    value : ndarray of float32
        The heatmap at each maximum.
    """
    from scipy import ndimage

    heatmap = np.asarray(heatmap, dtype=np.float32)
    peak = (heatmap == ndimage.maximum_filter(heatmap, size=3, mode="constant",
                                              cval=-np.inf)) & (heatmap >= threshold)
    ys, xs = np.nonzero(peak)
    taken = np.zeros(heatmap.shape, dtype=bool)
    keep = []
    for k, (y, x) in enumerate(zip(ys, xs)):
        if not taken[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].any():
            keep.append(k)
        taken[y, x] = True
    ys, xs = ys[keep], xs[keep]
    y, x = refine_peaks(heatmap, ys, xs)
    return y, x, heatmap[ys, xs]


def refine_peaks(weights, ys, xs):
    """Pixels ``(ys, xs)`` moved to the top of a Gaussian through their 3x3 neighbourhood.

    Along each axis a parabola goes through the logarithms of the 3x3 block's
    three row (or column) sums; its vertex is the sub-pixel peak, exact for a
    Gaussian of any width and clipped to half a pixel (a weighted mean of
    the 3x3 pixels would pull a Gaussian of σ 1 px about halfway back to the
    pixel centre: an offset of 0.4 px comes out as 0.22).

    Parameters
    ----------
    weights : ndarray, shape (H, W)
        A map >= 0.
    ys, xs : array_like of int
        0-based pixels, each a local maximum of ``weights``.

    Returns
    -------
    y, x : ndarray of float64
        A pixel on the map's edge, or whose neighbourhood is flat or not
        peaked along an axis, stays where it is along that axis.
    """
    ys, xs = np.asarray(ys, dtype=np.int64), np.asarray(xs, dtype=np.int64)
    padded = np.pad(np.asarray(weights, dtype=np.float64), 1, constant_values=np.nan)
    block = np.stack([padded[ys + a, xs + b] for a in range(3) for b in range(3)],
                     axis=-1).reshape(-1, 3, 3)

    def vertex(sums):
        # a floor keeps the logarithm finite where the map is 0
        low, mid, high = np.log(np.clip(sums, 1e-12, None)).T
        curvature = 2.0 * mid - low - high
        peaked = curvature > 0  # False beyond the map's edge (NaN)
        safe = np.where(peaked, curvature, 1.0)
        return np.where(peaked, np.clip((high - low) / (2.0 * safe), -0.5, 0.5), 0.0)

    def profile(axis):
        # along an edge the three sums leave out the same outside pixels; across it the
        # outside sum is NaN
        sums = np.nansum(block, axis=axis)
        return np.where(np.isnan(block).all(axis=axis), np.nan, sums)

    return ys + vertex(profile(2)), xs + vertex(profile(1))


def render_target(centres, shape, sigma=TARGET_SIGMA):
    """The training target of a field: a Gaussian at each centre, peak 1 at its nearest pixel.

    Parameters
    ----------
    centres : ndarray, shape (N, 2)
        ``(y, x)`` of the sources, 0-based pixels; those outside ``shape`` are ignored.
    shape : tuple of int
    sigma : float

    Returns
    -------
    ndarray of float32, shape ``shape``
        The maximum over the sources' Gaussians.
    """
    height, width = shape
    target = np.zeros(shape, dtype=np.float32)
    radius = int(np.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    profile = np.exp(-offsets ** 2 / (2.0 * sigma ** 2))
    patch = (profile[:, None] * profile[None, :]).astype(np.float32)
    for y, x in np.asarray(centres, dtype=np.float64).reshape(-1, 2):
        cy, cx = int(np.round(y)), int(np.round(x))
        if not (0 <= cy < height and 0 <= cx < width):
            continue
        ys, xs = cy + offsets, cx + offsets
        vy, vx = (ys >= 0) & (ys < height), (xs >= 0) & (xs < width)
        window = np.ix_(ys[vy], xs[vx])
        target[window] = np.maximum(target[window], patch[np.ix_(vy, vx)])
    return target
