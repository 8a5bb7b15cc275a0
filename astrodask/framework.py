"""Keras and TensorFlow set-up shared by workers, trainers and the CLI."""

from contextlib import contextmanager
import os
import re
import sys


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


class _NoRetracingNotices:
    """Drops TensorFlow's "triggered tf.function retracing" warnings.

    The Mask R-CNN's calls take a few batch shapes by design (windows per
    task, the flips' 8 views, heads padded to buckets of RoIs), each traced
    once; several traced in a row read as a performance warning with a
    traceback-like hint that is no fault of the user's.
    """

    @staticmethod
    def filter(record):
        return "triggered tf.function retracing" not in record.getMessage()


def quiet_retracing_notices():
    """Keep TensorFlow's retracing warnings out of the logs (idempotent)."""
    import logging

    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _NoRetracingNotices) for f in logger.filters):
        logger.addFilter(_NoRetracingNotices())


def configure_framework(threads):
    """Import Keras quietly and size TensorFlow's thread pools (call before first use).

    Does nothing more when the Keras backend is not TensorFlow. GPUs, if
    any, get memory growth instead of grabbing all memory at once.

    Parameters
    ----------
    threads : int
        TensorFlow intra-op threads (inter-op: 1).
    """
    keras = import_keras_quietly()

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    quiet_retracing_notices()
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


#: Lines of native (C++) start-up chatter that TensorFlow, XLA and CUDA write
#: straight to file descriptor 2, whatever ``TF_CPP_MIN_LOG_LEVEL`` says: absl
#: log lines (``I0000 00:00:...``, ``W0000``, ``E0000``) and their preambles.
NATIVE_NOISE = re.compile(
    r"^([IWE]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|oneDNN custom operations are on)")


@contextmanager
def quiet_native_logs(stream_fd=2):
    """Drop TensorFlow's/CUDA's native log lines from stderr while the block runs.

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` (if unset) for TensorFlow's own logger,
    quietens the ``tensorflow`` and absl Python loggers to errors, and
    routes file descriptor ``stream_fd`` through a pipe whose reader
    forwards every line except those matching :data:`NATIVE_NOISE` (absl
    writes those before any log level applies). Python's ``sys.stderr``, which
    writes to the same descriptor, is forwarded unchanged.
    """
    import logging
    import threading

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TensorFlow's Python-side notices (deprecations of the TF1 API, retracing)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging
    except ImportError:
        pass
    else:
        absl_logging.set_verbosity(absl_logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(stream_fd)
    read_end, write_end = os.pipe()
    os.dup2(write_end, stream_fd)
    os.close(write_end)

    def forward():
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if not NATIVE_NOISE.match(line.decode(errors="replace")):
                    os.write(saved, line)

    reader = threading.Thread(target=forward, name="astrodask-stderr", daemon=True)
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, stream_fd)  # closes the pipe's last write end: the reader sees EOF
        reader.join(timeout=5)
        os.close(saved)


def inference_call(model):
    """``model`` in inference mode as a function of a NumPy batch, compiled once per shape.

    Keras' own ``predict_on_batch`` relaxes the input shape on TensorFlow after
    a few different shapes, which a bilinear ``UpSampling2D`` cannot trace;
    this traces each shape on its own instead (TensorFlow) or uses Keras'
    jitted predict step (JAX). Cached on the model.
    """
    cached = getattr(model, "_astrodask_inference_call", None)
    if cached is not None:
        return cached
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        traced = tf.function(lambda x: model(x, training=False), reduce_retracing=False)

        def call(batch):
            return traced(tf.convert_to_tensor(batch))
    elif backend == "jax":
        call = model.predict_on_batch
    else:
        def call(batch):
            return model(batch, training=False)
    model._astrodask_inference_call = call
    return call
