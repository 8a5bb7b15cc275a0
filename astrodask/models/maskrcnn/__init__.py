"""Mask R-CNN (Astro R-CNN, Burke et al. 2019) in Keras 3.

ResNet-FPN backbone, RPN, ROIAlign, box/class head and 28x28 mask head for
star/galaxy detection, classification and deblending. The inference path is
Keras layers and ``keras.ops`` (NMS and mask pasting in NumPy), so it runs on
the TensorFlow and JAX backends alike.

The configuration (:class:`MaskRCNNConfig`, the detection settings) loads
without Keras: a client that only reads a card's settings never starts
TensorFlow. The network's names load Keras on first use.
"""

from importlib import import_module

from .config import MaskRCNNConfig

#: Names served on first use, and the module of this package that holds each.
_NETWORK = {"MaskRCNN": "model", "build_maskrcnn": "model", "detect": "model",
            "load_maskrcnn": "model", "band_statistics": "normalise",
            "normalise_bands": "normalise"}

__all__ = ["MaskRCNNConfig", *_NETWORK]


def __getattr__(name):
    if name not in _NETWORK:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_NETWORK[name]}", __name__), name)


def __dir__():
    return sorted(set(globals()) | set(_NETWORK))
