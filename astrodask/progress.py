"""A small terminal progress line for long-running stages."""

import sys
import time


class TextProgress:
    """Callable ``progress(done, total)`` that shows progress on stderr.

    Shows done/total, rate and ETA. On a terminal one line is redrawn at most
    a few times a second; elsewhere (a SLURM log, a pipe) a new line is
    written at most every ``log_interval`` seconds, and at the end.
    """

    def __init__(self, label, unit="items", stream=None, min_interval=0.25, log_interval=30.0):
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.interactive = bool(isatty and isatty())
        self.min_interval = min_interval if self.interactive else log_interval
        self._first = None  # (time, done) of the first report: rates count from there
        self._last = 0.0
        self._drawn = False

    def __call__(self, done, total):
        now = time.monotonic()
        if self._first is None:
            self._first = (now, done)
        elif done < total and now - self._last < self.min_interval:
            return
        self._last = now
        elapsed = now - self._first[0]
        rate = (done - self._first[1]) / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else None
        eta_text = f"{eta:5.0f}s" if eta is not None else "    ?"
        width = 30
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        line = f"{self.label} [{bar}] {done}/{total} {self.unit} {rate:6.2f}/s ETA {eta_text}"
        self.stream.write(f"\r{line}" if self.interactive else f"{line}\n")
        self.stream.flush()
        self._drawn = self.interactive

    def close(self):
        """End the progress line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
