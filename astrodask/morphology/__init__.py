"""Pixel morphology with the Morpheus U-Net: large-image classification,
segmentation (Morpheus Algorithm 1), deblending (Algorithm 2), object
morphology (eq. 16) and the Morpheus colour image."""
