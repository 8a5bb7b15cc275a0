"""Keras for the modules of this package that build or run the network.

Imported through :func:`astrodask.framework.import_keras_quietly`, so that
TensorFlow's C++ start-up notices stay off stderr (where ``astrodask run``
and ``demo`` print their progress) whichever of these modules loads first.
"""

from ...framework import import_keras_quietly

keras = import_keras_quietly()
layers, ops = keras.layers, keras.ops
