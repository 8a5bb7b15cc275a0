"""Deep-learning models: the Morpheus U-Net and Mask R-CNN, with their cards."""
