"""The Morpheus U-Net (Hausen & Robertson 2020, Table 1) as a Keras 3 model.

Each block is batch-norm -> 3x3 convolution -> ReLU (-> dropout while
training). The contraction path has one level per entry of ``down_filters``
(4 blocks each, then 2x2 max-pooling); one ``mid_filters`` block sits at the
bottom; each expansion level upsamples 2x (bicubic, the legacy TensorFlow
``align_corners=True`` kernel the published model was trained with),
concatenates the matching contraction output and applies 2 blocks. A final
3x3 convolution gives one logit per class and a softmax the probabilities.

The published model uses ``up_filters = (8, 16, 32)`` in that order: the
first expansion level (the coarsest) has 8 filters, the last 32.

Inference uses Keras layers and ``keras.ops`` only, so the same ``.keras``
file runs on the TensorFlow, JAX and PyTorch backends.
"""

import weakref
from pathlib import Path

import keras
from keras import layers, ops

from ..classes import MORPHOLOGY_CLASSES
from ..errors import InputError

#: Keys cubic coefficient of TensorFlow's legacy (align_corners) resize_bicubic.
_LEGACY_CUBIC_A = -0.75
#: Size of TensorFlow's legacy cubic coefficient table; offsets are rounded to it.
_LEGACY_TABLE_SIZE = 1024

#: The published Morpheus configuration (morpheus/core/model_config.json).
MORPHEUS_CONFIG = {
    "n_bands": 4,
    "n_classes": len(MORPHOLOGY_CLASSES),
    "down_filters": (8, 16, 32),
    "down_blocks": 4,
    "mid_filters": 16,
    "up_filters": (8, 16, 32),
    "up_blocks": 2,
    "dropout_rate": 0.5,
}


def _cubic_near(x):
    # weight of a tap at distance x in [0, 1]
    a = _LEGACY_CUBIC_A
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0


def _cubic_far(x):
    # weight of a tap at distance x + 1 in [1, 2]
    a = _LEGACY_CUBIC_A
    x = x + 1.0
    return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a


def _legacy_bicubic_axis(x, axis, sampling="align_corners"):
    """Double ``x`` along ``axis`` with TensorFlow's legacy bicubic kernel.

    With ``sampling="align_corners"`` (TF1 ``resize_bicubic(align_corners=True)``,
    the published model) output index i samples input position
    i * (n - 1) / (2n - 1); this mapping depends on n, so a pixel's output
    depends on where it sits in the input. ``"half_pixel"`` samples
    (i + 0.5) / 2 - 0.5 instead: translation-equivariant, and equal to
    align_corners at the centre of a window. Either way the four taps are
    clamped to the image (edge pixels repeat), use Keys' a = -0.75 and the
    fractional offset is rounded to 1/1024 as TensorFlow's coefficient table does.
    """
    n_in = ops.shape(x)[axis]
    n_out = 2 * n_in
    index = ops.cast(ops.arange(n_out), "float32")
    if sampling == "align_corners":
        scale = ops.divide(ops.cast(n_in - 1, "float32"), ops.cast(n_out - 1, "float32"))
        location = ops.multiply(index, scale)
    elif sampling == "half_pixel":
        location = (index + 0.5) * 0.5 - 0.5
    else:
        raise ValueError(f"unknown sampling {sampling!r}")
    base = ops.floor(location)
    offset = ops.round((location - base) * _LEGACY_TABLE_SIZE) / _LEGACY_TABLE_SIZE
    weights = (_cubic_far(offset), _cubic_near(offset),
               _cubic_near(1.0 - offset), _cubic_far(1.0 - offset))
    base = ops.cast(base, "int32")
    shape = [1, 1, 1, 1]
    shape[axis] = -1
    out = None
    for tap, weight in enumerate(weights):
        taps = ops.clip(base + (tap - 1), 0, n_in - 1)
        term = ops.take(x, taps, axis=axis) * ops.reshape(ops.cast(weight, x.dtype), shape)
        out = term if out is None else out + term
    return out


@keras.saving.register_keras_serializable(package="astrodask")
class LegacyBicubicUpsampling2D(layers.Layer):
    """2x bicubic upsampling with TF1's ``resize_images(BICUBIC)`` kernel.

    Input and output are ``(batch, height, width, channels)``. ``sampling``
    is ``"align_corners"`` (what Morpheus was trained with) or
    ``"half_pixel"`` (translation-equivariant; see :func:`with_sampling`).
    """

    def __init__(self, sampling="align_corners", **kwargs):
        super().__init__(**kwargs)
        if sampling not in ("align_corners", "half_pixel"):
            raise ValueError(f"unknown sampling {sampling!r}")
        self.sampling = sampling

    def call(self, inputs):
        return _legacy_bicubic_axis(_legacy_bicubic_axis(inputs, 1, self.sampling), 2,
                                    self.sampling)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, None if height is None else 2 * height,
                None if width is None else 2 * width, channels)

    def get_config(self):
        return {**super().get_config(), "sampling": self.sampling}


def _block(x, filters, name, dropout_rate):
    x = layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=f"{name}_bn")(x)
    x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                      kernel_initializer="variance_scaling", name=f"{name}_conv")(x)
    if dropout_rate:
        x = layers.Dropout(dropout_rate, name=f"{name}_dropout")(x)
    return x


def build_unet(n_bands=4, n_classes=5, down_filters=(8, 16, 32), down_blocks=4,
               mid_filters=16, up_filters=(8, 16, 32), up_blocks=2, dropout_rate=0.0,
               name="morpheus_unet"):
    """Build the Morpheus U-Net.

    Parameters
    ----------
    n_bands : int
        Input channels (bands), last axis of the input.
    n_classes : int
        Output classes; the output is their softmax.
    down_filters : sequence of int
        Filters of each contraction level (one 2x2 max-pool per level).
    down_blocks : int
        Blocks per contraction level.
    mid_filters : int
        Filters of the single block at the bottom.
    up_filters : sequence of int
        Filters of each expansion level, coarsest first; same length as
        ``down_filters``.
    up_blocks : int
        Blocks per expansion level.
    dropout_rate : float
        Dropout after every block while training (0 disables the layers).
    name : str
        Model name.

    Returns
    -------
    keras.Model
        Input ``(batch, height, width, n_bands)`` with height and width
        multiples of ``2 ** len(down_filters)``; output ``(batch, height,
        width, n_classes)`` probabilities. The logits are the output of the
        layer named ``"logits"``.
    """
    if len(up_filters) != len(down_filters):
        raise InputError("up_filters and down_filters must have the same length")
    inputs = keras.Input(shape=(None, None, n_bands), name="image")
    x = inputs
    skips = []
    for level, filters in enumerate(down_filters):
        for block in range(down_blocks):
            x = _block(x, filters, f"down{level}_block{block}", dropout_rate)
        skips.append(x)
        x = layers.MaxPooling2D(2, 2, name=f"down{level}_pool")(x)
    x = _block(x, mid_filters, "mid", dropout_rate)
    for level, filters in enumerate(up_filters):
        x = LegacyBicubicUpsampling2D(name=f"up{level}_resize")(x)
        x = layers.Concatenate(axis=-1, name=f"up{level}_concat")([x, skips[-(level + 1)]])
        for block in range(up_blocks):
            x = _block(x, filters, f"up{level}_block{block}", dropout_rate)
    logits = layers.Conv2D(n_classes, 3, padding="same", kernel_initializer="variance_scaling",
                           name="logits")(x)
    probabilities = layers.Softmax(axis=-1, name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name=name)


def build_morpheus_unet():
    """The published Morpheus architecture (4 bands, 5 classes), untrained."""
    return build_unet(**MORPHEUS_CONFIG, name="morpheus")


def logits_model(model):
    """A model sharing ``model``'s weights that returns the logits."""
    return keras.Model(model.inputs, model.get_layer("logits").output)


_SAMPLING_COPIES = weakref.WeakKeyDictionary()


def with_sampling(model, sampling):
    """A copy of ``model`` (same weights) whose upsampling layers use ``sampling``.

    ``"half_pixel"`` makes the network translation-equivariant, which the
    fast whole-tile mode needs so that overlapping tiles agree; the model was
    trained with ``"align_corners"`` on 40x40 windows. The copy is cached:
    change the weights of ``model`` afterwards and the copy keeps the old ones.
    """
    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, LegacyBicubicUpsampling2D):
            config["sampling"] = sampling
        return layer.__class__.from_config(config)

    if all(getattr(layer, "sampling", sampling) == sampling for layer in model.layers):
        return model
    cached = _SAMPLING_COPIES.setdefault(model, {})
    if sampling not in cached:
        # one copy per model and sampling: a fresh copy would be traced again on every call
        copy = keras.models.clone_model(model, clone_function=clone)
        copy.set_weights(model.get_weights())
        cached[sampling] = copy
    return cached[sampling]


def downsampling_factor(model):
    """Height and width of the model input must be multiples of this."""
    return 2 ** sum(isinstance(layer, layers.MaxPooling2D) for layer in model.layers)


def load_unet(name_or_path="morpheus"):
    """Load a shipped U-Net (``"morpheus"``, ``"morpheus_decam"``) or a ``.keras`` file.

    Returns
    -------
    model : keras.Model
    card : dict
        The model card beside the file.
    """
    from .card import read_model_card, resolve_model_path

    path = resolve_model_path(name_or_path)
    card = read_model_card(path)
    model = keras.saving.load_model(Path(path), compile=False)
    return model, card
