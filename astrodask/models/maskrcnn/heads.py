"""Second-stage heads: class + box on 7x7 RoIs, 28x28 masks on 14x14 RoIs."""

from ._keras import keras, layers


def build_box_head(config):
    """RoI features (N, 7, 7, C) -> class logits (N, K), box deltas (N, K, 4)."""
    rois = keras.Input((config.pool_size, config.pool_size, config.fpn_channels), name="rois")
    x = layers.Flatten(name="box_flatten")(rois)
    x = layers.Dense(config.head_units, activation="relu", name="box_fc1")(x)
    x = layers.Dense(config.head_units, activation="relu", name="box_fc2")(x)
    logits = layers.Dense(config.n_classes, name="box_class")(x)
    deltas = layers.Dense(4 * config.n_classes, name="box_deltas")(x)
    deltas = layers.Reshape((config.n_classes, 4), name="box_deltas_reshape")(deltas)
    return keras.Model(rois, [logits, deltas], name="box_head")


def build_mask_head(config):
    """RoI features (N, 14, 14, C) -> mask logits (N, 28, 28, K)."""
    size = config.mask_pool_size
    rois = keras.Input((size, size, config.fpn_channels), name="mask_rois")
    x = rois
    for i in range(4):
        x = layers.Conv2D(config.mask_channels, 3, padding="same", activation="relu",
                          name=f"mask_conv{i + 1}")(x)
    x = layers.Conv2DTranspose(config.mask_channels, 2, strides=2, activation="relu",
                               name="mask_deconv")(x)
    logits = layers.Conv2D(config.n_classes, 1, name="mask_logits")(x)
    return keras.Model(rois, logits, name="mask_head")
