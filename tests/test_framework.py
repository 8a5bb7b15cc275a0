"""Framework set-up: TensorFlow's retracing notices kept out of the logs."""

import logging

from astrodask.framework import quiet_retracing_notices


def _record(message):
    return logging.LogRecord("tensorflow", logging.WARNING, __file__, 1, message, None, None)


def test_retracing_notices_are_dropped_and_other_warnings_kept():
    # the logger's own filters decide (its level and handlers are other tests' business)
    logger = logging.getLogger("tensorflow")
    quiet_retracing_notices()
    quiet_retracing_notices()
    assert sum(type(f).__name__ == "_NoRetracingNotices" for f in logger.filters) == 1
    assert not logger.filter(_record("5 out of the last 9 calls to <function f at 0x1> "
                                     "triggered tf.function retracing. Tracing is expensive"))
    assert logger.filter(_record("a real problem"))
