"""Pixel morphology of large images: Morpheus-faithful windows and fast tiles.

Two ways to run a U-Net over an image larger than its training windows:

* ``mode="faithful"`` reproduces Morpheus: 40x40 windows at stride ``s``
  (``s = 1`` is what Morpheus does), each standardised on its own, only the
  inner 30x30 of each output counted; per pixel the mean and variance of
  every class probability over the windows that counted it, and the rank
  vote (fraction of those windows in which the class came first). Windows
  are classified in batches and accumulated with vectorised adds (one NumPy
  operation per window row and inner column), never per pixel.
* ``mode="fast"`` runs the network once over the whole tile (it is fully
  convolutional), after a sliding 40x40 standardisation; optionally over the
  8 flips/rotations, giving mean, variance and votes over those 8.

Both return a dict of ``(classes, H, W)`` float32 arrays ``mean``, ``var``,
``votes`` and the ``(H, W)`` int32 count ``n`` (0 where no window counted
the pixel; mean, var and votes are 0 there, as Morpheus writes them).

:func:`classify_tile` is the per-tile function for the distributed engine;
:func:`context_radius` says how wide the unreliable border of its output is.
"""

import numpy as np
from scipy import ndimage

from ..dihedral import DIHEDRAL, transform, untransform
from ..errors import InputError

#: Morpheus window and the margin of it that is not counted.
WINDOW = 40
MARGIN = 5


def standardise_windows(windows):
    """Morpheus per-window standardisation of ``(n, h, w, bands)`` windows.

    Each window becomes (x - mean) / max(std, 1/sqrt(N)), with mean and std
    taken over all its pixels and bands jointly and N their number.
    """
    windows = np.asarray(windows, dtype=np.float32)
    axes = tuple(range(1, windows.ndim))
    size = np.prod(windows.shape[1:])
    mean = windows.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = windows.std(axis=axes, keepdims=True, dtype=np.float64)
    return ((windows - mean) / np.maximum(std, 1.0 / np.sqrt(size))).astype(np.float32)


def normalisation_card(window=WINDOW):
    """The model-card entry describing :func:`standardise_windows` on ``window``-pixel windows."""
    return {
        "kind": "per_window_standardisation",
        "window": window,
        "formula": "(x - mean) / max(std, 1/sqrt(N)), mean and std over all bands and "
                   f"pixels of the {window}x{window} window, N = {window}*{window}*bands",
    }


def standardise_local(image, window=WINDOW):
    """Sliding-window version of :func:`standardise_windows` for a whole tile.

    Every pixel is standardised with the mean and standard deviation of the
    ``window`` x ``window`` box around it (all bands jointly), so the
    network sees each region scaled roughly as a window centred on it would be.

    Parameters
    ----------
    image : ndarray, shape (bands, H, W)

    Returns
    -------
    ndarray, shape (H, W, bands), float32
    """
    image = np.asarray(image, dtype=np.float64)
    mean = ndimage.uniform_filter(image.mean(axis=0), window, mode="reflect")
    mean_sq = ndimage.uniform_filter((image ** 2).mean(axis=0), window, mode="reflect")
    std = np.sqrt(np.maximum(mean_sq - mean ** 2, 0.0))
    scale = np.maximum(std, 1.0 / np.sqrt(window * window * image.shape[0]))
    return ((image - mean) / scale).transpose(1, 2, 0).astype(np.float32)


def standardise_tile(image):
    """Standardise a whole tile with one mean and standard deviation."""
    return standardise_windows(np.asarray(image).transpose(1, 2, 0)[None])[0]


def window_positions(size, stride, window=WINDOW):
    """Window origins along one axis, as Morpheus lays them: 0, s, 2s, ... <= size - window."""
    if size < window:
        raise InputError(f"image side {size} is smaller than the {window}-pixel window")
    if stride < 1:
        raise InputError(f"stride must be at least 1, got {stride}")
    return np.arange(0, size - window + 1, stride)


def _as_image(image):
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise InputError(f"image must be (bands, height, width), got shape {image.shape}")
    return image


def _predict(model, batch):
    return np.asarray(model.predict_on_batch(batch), dtype=np.float32)


class _Accumulator:
    """Running sums of p, p**2, votes and counts per class and pixel."""

    def __init__(self, n_classes, shape):
        self.sum = np.zeros((n_classes, *shape), np.float64)
        self.sum_sq = np.zeros((n_classes, *shape), np.float64)
        self.votes = np.zeros((n_classes, *shape), np.float64)
        self.n = np.zeros(shape, np.int32)

    def finish(self):
        n = np.maximum(self.n, 1)
        mean = self.sum / n
        var = np.maximum(self.sum_sq / n - mean ** 2, 0.0)
        return {"mean": mean.astype(np.float32), "var": var.astype(np.float32),
                "votes": (self.votes / n).astype(np.float32), "n": self.n}


def _one_hot_top(probabilities, axis=-1, dtype=np.float64):
    """One-hot of the most probable class, its class axis at ``axis`` as in the input."""
    top = np.argmax(probabilities, axis=axis)
    one_hot = np.arange(probabilities.shape[axis]) == top[..., None]
    return np.moveaxis(one_hot, -1, axis).astype(dtype)


def classify_faithful(model, image, stride=1, batch_size=2048, window=WINDOW, margin=MARGIN):
    """Morpheus-faithful sliding-window classification.

    Parameters
    ----------
    model : keras.Model
        Input ``(n, window, window, bands)``, output class probabilities.
    image : ndarray, shape (bands, H, W)
        Raw fluxes in the model's band order.
    stride : int
        Distance between window origins; 1 reproduces Morpheus.
    batch_size : int
        Windows per model call (rounded to whole rows of windows).
    window, margin : int
        Window side and the border of each output that is not counted.

    Returns
    -------
    dict
        ``mean``, ``var``, ``votes`` (classes, H, W) float32 and ``n`` (H, W).
    """
    image = _as_image(image)
    _, height, width = image.shape
    ys = window_positions(height, stride, window)
    xs = window_positions(width, stride, window)
    inner = window - 2 * margin
    views = np.lib.stride_tricks.sliding_window_view(image, (window, window), axis=(1, 2))
    rows_per_batch = max(1, batch_size // len(xs))
    acc = None
    for start in range(0, len(ys), rows_per_batch):
        rows = ys[start:start + rows_per_batch]
        # (bands, rows, cols, window, window) -> (rows * cols, window, window, bands)
        batch = views[:, rows][:, :, xs].transpose(1, 2, 3, 4, 0).reshape(-1, window, window,
                                                                          image.shape[0])
        probs = _predict(model, standardise_windows(batch))
        if acc is None:
            acc = _Accumulator(probs.shape[-1], (height, width))
        counted = probs[:, margin:margin + inner, margin:margin + inner, :].astype(np.float64)
        counted = counted.reshape(len(rows), len(xs), inner, inner, -1)
        top = _one_hot_top(counted)
        for r, y0 in enumerate(rows):
            y_slice = slice(y0 + margin, y0 + margin + inner)
            for u in range(inner):
                # column u of every window in the row lands on distinct image columns
                cols = xs + margin + u
                p = counted[r, :, :, u, :].transpose(2, 1, 0)
                acc.sum[:, y_slice, cols] += p
                acc.sum_sq[:, y_slice, cols] += p * p
                acc.votes[:, y_slice, cols] += top[r, :, :, u, :].transpose(2, 1, 0)
                acc.n[y_slice, cols] += 1
    return acc.finish()


def _pad_to_multiple(image, multiple):
    _, height, width = image.shape
    pad_y = (-height) % multiple
    pad_x = (-width) % multiple
    if pad_y or pad_x:
        image = np.pad(image, ((0, 0), (0, pad_y), (0, pad_x)), mode="reflect")
    return image


def classify_fast(model, image, flips=False, normalisation="local", sampling="half_pixel"):
    """Fully convolutional classification of a whole tile.

    Parameters
    ----------
    model : keras.Model
        A U-Net built by :func:`astrodask.models.unet.build_unet`.
    image : ndarray, shape (bands, H, W)
        Raw fluxes in the model's band order. Sides that are not a multiple
        of the model's downsampling factor are reflect-padded.
    flips : bool
        Average over the 8 flips/rotations (mean, variance and votes over 8);
        otherwise one pass (variance 0, votes one-hot).
    normalisation : {"local", "tile"}
        ``"local"``: sliding 40x40 standardisation (:func:`standardise_local`);
        ``"tile"``: one mean and standard deviation for the whole tile.
    sampling : {"half_pixel", "align_corners"}
        Upsampling positions (see :func:`astrodask.models.unet.with_sampling`);
        ``"half_pixel"`` keeps the output independent of where a pixel sits
        in the tile, so overlapping tiles agree.

    Returns
    -------
    dict
        ``mean``, ``var``, ``votes`` (classes, H, W) float32 and ``n`` (H, W).
    """
    from ..models.unet import downsampling_factor, with_sampling

    image = _as_image(image)
    _, height, width = image.shape
    net = with_sampling(model, sampling)
    padded = _pad_to_multiple(image, downsampling_factor(net))
    if normalisation == "local":
        x = standardise_local(padded)
    elif normalisation == "tile":
        x = standardise_tile(padded)
    else:
        raise InputError(f"unknown normalisation {normalisation!r} (local or tile)")
    if not flips:
        # One pass: the accumulator's float64 sums would give exactly these values.
        probs = _predict(net, x[None])[0][:height, :width].transpose(2, 0, 1)
        return {"mean": np.ascontiguousarray(probs), "var": np.zeros_like(probs),
                "votes": _one_hot_top(probs, axis=0, dtype=np.float32),
                "n": np.ones((height, width), np.int32)}
    acc = None
    for k, flip in DIHEDRAL:
        probs = _predict(net, transform(x, k, flip)[None])[0]
        probs = untransform(probs, k, flip)[:height, :width].transpose(2, 0, 1)
        if acc is None:
            acc = _Accumulator(probs.shape[0], (height, width))
        p = probs.astype(np.float64)
        acc.sum += p
        acc.sum_sq += p * p
        acc.votes += _one_hot_top(p, axis=0)
        acc.n += 1
    return acc.finish()


def receptive_field_radius(model):
    """Radius in pixels of the U-Net's receptive field (how far an output can look).

    Counted layer by layer: a 3x3 convolution adds one step, a 2x2 pooling
    one step and doubles the step, a bicubic 2x upsampling two coarse steps
    (its four taps) and halves the step.
    """
    from ..models.unet import LegacyBicubicUpsampling2D
    from keras import layers

    radius, step = 0, 1
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            radius += step * (layer.kernel_size[0] // 2)
        elif isinstance(layer, layers.MaxPooling2D):
            radius += step
            step *= 2
        elif isinstance(layer, LegacyBicubicUpsampling2D):
            radius += 2 * step
            step //= 2
    return radius


def unet_downsampling_factor(down_filters=(8, 16, 32), **_):
    """:func:`astrodask.models.unet.downsampling_factor` from the build settings, without Keras.

    One 2x2 pooling per level of the contraction path: the output of a fast-mode
    run depends on where the input starts modulo this, so tiles whose origins
    differ by a multiple of it see the same pooling lattice.
    """
    return 2 ** len(down_filters)


def unet_receptive_field(down_filters=(8, 16, 32), down_blocks=4, up_blocks=2, **_):
    """:func:`receptive_field_radius` of a U-Net from its build settings, without Keras.

    Takes the keyword arguments of :func:`astrodask.models.unet.build_unet`
    (a model card's ``config``; others are ignored, missing ones take
    ``build_unet``'s defaults), so the client can check a run's geometry
    without loading the model. Counted as :func:`receptive_field_radius`
    counts the layers: down the contraction path, one bottom block, back up
    the expansion path, and the final 3x3 logits convolution.
    """
    radius, step = 0, 1
    for _level in down_filters:
        radius += down_blocks * step + step  # 3x3 convolutions, then the 2x2 pooling
        step *= 2
    radius += step  # the bottom block
    for _level in down_filters:
        radius += 2 * step  # bicubic upsampling: two taps of the coarse grid
        step //= 2
        radius += up_blocks * step
    return radius + step  # logits


def context_radius(model=None, mode="fast", stride=1, normalisation="local",
                   window=WINDOW, margin=MARGIN, architecture=None):
    """Width of the border of a :func:`classify_tile` output that is not final.

    A pixel closer than this to a tile edge whose far side is image data
    (not the mosaic edge) may come out different from a whole-image run;
    the engine's halo must be at least this wide and keep only the core.

    * faithful: ``window - margin - 1`` (the farthest window that counts a
      pixel starts that far before it); the tile origin must also be a
      multiple of ``stride`` in mosaic coordinates so that the window grids
      of neighbouring tiles coincide.
    * fast: the network's receptive field (:func:`receptive_field_radius` of
      ``model``, or :func:`unet_receptive_field` of ``architecture``, the
      ``build_unet`` settings; the published Morpheus network when neither
      is given) plus half the standardisation window for
      ``normalisation="local"``. ``"tile"`` normalisation depends on the
      whole tile: no finite radius (returns None). The 8 flips/rotations
      do not widen it.

    For the published network: 34 px faithful, 106 px fast.
    """
    if mode == "faithful":
        return window - margin - 1
    if mode != "fast":
        raise InputError(f"unknown mode {mode!r} (fast or faithful)")
    if normalisation == "tile":
        return None
    if model is not None:
        field = receptive_field_radius(model)
    else:
        field = unet_receptive_field(**(architecture or {}))
    return field + window // 2


def classify_tile(model, tile, mode="fast", stride=1, flips=False, normalisation="local",
                  sampling="half_pixel", batch_size=2048):
    """Classify one tile: the per-tile function of the distributed engine.

    Parameters
    ----------
    model : keras.Model
        U-Net with class-probability output (e.g. from
        :func:`astrodask.models.unet.load_unet`).
    tile : ndarray, shape (bands, H, W), float32
        One halo'd tile in the model's band order (e.g. 512x512).
    mode : {"fast", "faithful"}
        See the module docstring.
    stride : int
        Faithful mode: window stride (1 = Morpheus).
    flips : bool
        Fast mode: average over the 8 flips/rotations.
    normalisation, sampling : str
        Fast mode options, see :func:`classify_fast`.
    batch_size : int
        Faithful mode: windows per model call.

    Returns
    -------
    dict
        ``mean``, ``var``, ``votes``: (classes, H, W) float32 and ``n``: (H, W)
        int32. Only the part farther than :func:`context_radius` from a cut
        edge is final; keep the core.
    """
    tile = np.asarray(tile, dtype=np.float32)
    if mode == "faithful":
        return classify_faithful(model, tile, stride=stride, batch_size=batch_size)
    if mode == "fast":
        return classify_fast(model, tile, flips=flips, normalisation=normalisation,
                             sampling=sampling)
    raise InputError(f"unknown mode {mode!r} (fast or faithful)")


def classify_image(model, image, mode="fast", stride=1, flips=False, normalisation="local",
                   sampling="half_pixel", tile_size=1024, batch_size=2048):
    """Classify a NumPy image of any size in bounded memory.

    The faithful mode streams windows in batches over the whole image. The
    fast mode cuts the image into ``tile_size`` tiles overlapping by twice
    the :func:`context_radius` and keeps each tile's core, so the result does
    not depend on ``tile_size`` beyond floating-point noise.

    Parameters and return value as in :func:`classify_tile`.
    """
    image = _as_image(image)
    if mode == "faithful" or normalisation == "tile":
        return classify_tile(model, image, mode=mode, stride=stride, flips=flips,
                             normalisation=normalisation, sampling=sampling,
                             batch_size=batch_size)
    halo = context_radius(model, "fast", normalisation=normalisation)
    _, height, width = image.shape
    core = tile_size - 2 * halo
    if core <= 0:
        raise InputError(f"tile_size {tile_size} leaves no core with a {halo}-pixel halo")
    if height <= tile_size and width <= tile_size:
        return classify_tile(model, image, mode="fast", flips=flips,
                             normalisation=normalisation, sampling=sampling)
    out = None
    for y0 in range(0, height, core):
        for x0 in range(0, width, core):
            ya, xa = max(0, y0 - halo), max(0, x0 - halo)
            yb, xb = min(height, y0 + core + halo), min(width, x0 + core + halo)
            part = classify_tile(model, image[:, ya:yb, xa:xb], mode="fast", flips=flips,
                                 normalisation=normalisation, sampling=sampling)
            if out is None:
                out = {key: np.zeros(value.shape[:-2] + (height, width), value.dtype)
                       for key, value in part.items()}
            ye, xe = min(height, y0 + core), min(width, x0 + core)
            for key, value in part.items():
                out[key][..., y0:ye, x0:xe] = value[..., y0 - ya:ye - ya, x0 - xa:xe - xa]
    return out
