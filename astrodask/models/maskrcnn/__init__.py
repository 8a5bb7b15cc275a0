"""Mask R-CNN (Astro R-CNN, Burke et al. 2019) in Keras 3.

ResNet-FPN backbone, RPN, ROIAlign, box/class head and 28x28 mask head for
star/galaxy detection, classification and deblending. The inference path is
Keras layers and ``keras.ops`` (NMS and mask pasting in NumPy), so it runs on
the TensorFlow and JAX backends alike.
"""

from .config import MaskRCNNConfig
from .model import MaskRCNN, build_maskrcnn, detect, load_maskrcnn
from .normalise import band_statistics, normalise_bands

__all__ = ["MaskRCNNConfig", "MaskRCNN", "build_maskrcnn", "detect", "load_maskrcnn",
           "band_statistics", "normalise_bands"]
