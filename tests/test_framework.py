"""Framework set-up: TensorFlow's retracing notices kept out of the logs."""

import logging

from astrodask.framework import quiet_retracing_notices


def test_retracing_notices_are_dropped_and_other_warnings_kept():
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger = logging.getLogger("tensorflow")
    handler = Keep()
    logger.addHandler(handler)
    try:
        quiet_retracing_notices()
        quiet_retracing_notices()
        assert sum(type(f).__name__ == "_NoRetracingNotices" for f in logger.filters) == 1
        logger.warning("5 out of the last 9 calls to <function f at 0x1> triggered "
                       "tf.function retracing. Tracing is expensive")
        logger.warning("a real problem")
    finally:
        logger.removeHandler(handler)
    assert seen == ["a real problem"]
