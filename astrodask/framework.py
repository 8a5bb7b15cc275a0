"""Keras and TensorFlow set-up shared by workers, trainers and the CLI."""

import os


def import_keras_quietly():
    """Import Keras (and its backend) with the C++ start-up notices kept off stderr.

    TensorFlow's native code prints oneDNN/CUDA notices straight to file
    descriptor 2 on import, whatever ``TF_CPP_MIN_LOG_LEVEL`` says; from many
    workers that buries the progress bar. The notices are dropped unless the
    import fails, in which case they are printed.
    """
    import sys
    import tempfile

    if "keras" in sys.modules:
        return sys.modules["keras"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    keras.backend.backend()  # the backend module is imported by now
    return keras


def configure_framework(threads):
    """Size TensorFlow's pools if TensorFlow is the Keras backend (before first use)."""
    keras = import_keras_quietly()

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process: keep its pools
        pass
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass
