"""Class vocabularies shared by the simulator, the models and the catalogs.

The order matters: it is the channel order of the U-Net output and the
integer codes in label images.
"""

#: Morpheus pixel classes, in the channel order of the published model.
MORPHOLOGY_CLASSES = ("spheroid", "disk", "irregular", "point_source", "background")

#: The morphology classes of sources: all but the background.
SOURCE_CLASSES = tuple(c for c in MORPHOLOGY_CLASSES if c != "background")

#: Integer code of each morphology class in label images.
MORPHOLOGY_CODE = {name: code for code, name in enumerate(MORPHOLOGY_CLASSES)}

#: Mask R-CNN classes; index 0 is the background of the detector.
OBJECT_CLASSES = ("background", "star", "galaxy")

#: Integer code of each detector class.
OBJECT_CODE = {name: code for code, name in enumerate(OBJECT_CLASSES)}
