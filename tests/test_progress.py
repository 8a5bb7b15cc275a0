"""Progress output: redraws on a terminal, plain lines in a log."""

import io

from astrodask.progress import TextProgress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_terminal_redraws_one_line():
    stream = Terminal()
    bar = TextProgress("run", unit="tiles", stream=stream, min_interval=0.0)
    for done in range(4):
        bar(done, 3)
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and text.count("\n") == 1


def test_log_gets_few_whole_lines():
    stream = io.StringIO()                    # a SLURM log or a pipe: not a terminal
    bar = TextProgress("run", unit="tiles", stream=stream)
    for done in range(101):
        bar(done, 100)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 2                   # the first report and the last
    assert lines[-1].startswith("run [") and "100/100 tiles" in lines[-1]
