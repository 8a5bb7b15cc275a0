"""Mask R-CNN (Astro R-CNN, Burke et al. 2019) in Keras 3.

ResNet-FPN backbone, RPN, ROIAlign, box/class head and 28x28 mask head for
star/galaxy detection, classification and deblending. The inference path is
Keras layers and ``keras.ops`` (NMS and mask pasting in NumPy), so it runs on
the TensorFlow and JAX backends alike.
"""

from ...framework import import_keras_quietly

# Keras (and TensorFlow) load here wherever the package is first imported, a
# client reading detection settings included: their C++ start-up notices stay
# off stderr, where ``astrodask run`` and ``demo`` print their progress
import_keras_quietly()

from .config import MaskRCNNConfig
from .model import MaskRCNN, build_maskrcnn, detect, load_maskrcnn
from .normalise import band_statistics, normalise_bands

__all__ = ["MaskRCNNConfig", "MaskRCNN", "build_maskrcnn", "detect", "load_maskrcnn",
           "band_statistics", "normalise_bands"]
