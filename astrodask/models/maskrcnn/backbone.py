"""ResNet (depth 18, 34, 50 or 101) with a feature pyramid network (P2..P6, optionally P1)."""

from ._keras import keras, layers, ops
from .config import RESNET_BLOCKS


@keras.saving.register_keras_serializable(package="astrodask")
class InputStretch(layers.Layer):
    """``asinh`` of the standardised input.

    After eq. 1 the sky noise is ~1 but bright stars reach 10^4; the stretch
    keeps faint sources and bright cores in one numeric range (no weights).
    """

    def call(self, inputs):
        return ops.arcsinh(inputs)


def _conv_bn(x, filters, kernel, strides=1, name=None, activation=True):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if activation else x


def _basic_block(x, filters, strides, name):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides, name=f"{name}_short", activation=False)
    y = _conv_bn(x, filters, 3, strides, name=f"{name}_a")
    y = _conv_bn(y, filters, 3, 1, name=f"{name}_b", activation=False)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def _bottleneck_block(x, filters, strides, name):
    out_filters = 4 * filters
    shortcut = x
    if strides != 1 or x.shape[-1] != out_filters:
        shortcut = _conv_bn(x, out_filters, 1, strides, name=f"{name}_short", activation=False)
    y = _conv_bn(x, filters, 1, 1, name=f"{name}_a")
    y = _conv_bn(y, filters, 3, strides, name=f"{name}_b")
    y = _conv_bn(y, out_filters, 1, 1, name=f"{name}_c", activation=False)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def build_backbone(config):
    """Functional model: image (B, H, W, bands) -> [P2, P3, P4, P5, P6].

    With ``config.roi_min_level == 1`` the list starts with P1 (stride 2):
    the stem's output before its max-pool (1x1 lateral) plus P2's top-down
    map upsampled, through a 3x3 convolution, as for the other levels.
    H and W must be multiples of 64 (the stride of P6).
    """
    block = _basic_block if config.backbone_depth in (18, 34) else _bottleneck_block
    image = keras.Input((None, None, len(config.bands)), name="image")
    x = InputStretch(name="stretch")(image)
    stem = _conv_bn(x, config.stem_width, 7, 2, name="stem")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(stem)
    stages = []
    for s, (n_blocks, width) in enumerate(zip(RESNET_BLOCKS[config.backbone_depth],
                                              config.stage_widths)):
        for i in range(n_blocks):
            x = block(x, width, 2 if (i == 0 and s > 0) else 1, name=f"c{s + 2}_{i}")
        stages.append(x)

    ch = config.fpn_channels
    laterals = [layers.Conv2D(ch, 1, name=f"fpn_lateral{s + 2}")(c) for s, c in enumerate(stages)]
    top_down = [laterals[-1]]
    for s in range(len(laterals) - 2, -1, -1):
        up = layers.UpSampling2D(2, interpolation="nearest", name=f"fpn_up{s + 3}")(top_down[0])
        top_down.insert(0, layers.Add(name=f"fpn_merge{s + 2}")([laterals[s], up]))
    outputs = [layers.Conv2D(ch, 3, padding="same", name=f"fpn_p{s + 2}")(t)
               for s, t in enumerate(top_down)]
    outputs.append(layers.MaxPooling2D(1, strides=2, name="fpn_p6")(outputs[-1]))
    if config.roi_min_level == 1:
        lateral = layers.Conv2D(ch, 1, name="fpn_lateral1")(stem)
        up = layers.UpSampling2D(2, interpolation="nearest", name="fpn_up2")(top_down[0])
        merged = layers.Add(name="fpn_merge1")([lateral, up])
        outputs.insert(0, layers.Conv2D(ch, 3, padding="same", name="fpn_p1")(merged))
    return keras.Model(image, outputs, name="backbone")
