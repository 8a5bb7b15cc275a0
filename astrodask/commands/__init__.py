"""CLI subcommands: one module per stage, each with ``register(subparsers)``.

Modules here are discovered automatically by :mod:`astrodask.cli`. They must
import nothing heavy at module level (no TensorFlow, no dask-cuda) so that
``astrodask --help`` stays instant; import inside the handler instead.
A handler takes the parsed ``argparse.Namespace`` and returns an exit code
(``None`` means 0).

A handler only parses and prints: it imports public names (``from astrodask
import ...``), :mod:`astrodask.errors` and the helpers here, nothing else of
the package (``tests/test_cli_api.py`` checks), so a notebook can do all that
the command line does.
"""

from contextlib import contextmanager


def group(subparsers, name, help):
    """Return the sub-parsers of command group ``name`` (e.g. ``train``).

    Several modules can add subcommands to one group (``train unet`` and
    ``train maskrcnn``); the group parser is created by whichever asks first.
    The groups live on ``subparsers`` itself, so every parser built gets its
    own (a registry keyed by ``id()`` handed a new parser the groups of a
    collected one).
    """
    groups = vars(subparsers).setdefault("astrodask_groups", {})
    if name not in groups:
        parser = subparsers.add_parser(name, help=help, description=help)
        groups[name] = parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND",
                                             required=True)
    return groups[name]


@contextmanager
def progress_bar(label, unit, quiet=False):
    """A ``progress(done, total)`` line on stderr for one stage, ended when the block ends.

    Yields ``None`` when ``quiet`` (the API functions take ``progress=None``
    as "report nothing").
    """
    from astrodask.progress import TextProgress

    bar = None if quiet else TextProgress(label, unit=unit)
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


@contextmanager
def stage_progress(unit="steps", quiet=False):
    """A ``progress(stage, done, total)`` callable: one progress line per stage, in turn."""
    from astrodask.progress import TextProgress

    current = {}

    def progress(stage, done, total):
        if stage not in current:
            close()
            current[stage] = TextProgress(stage, unit=unit)
        current[stage](done, total)

    def close():
        for bar in current.values():
            bar.close()
        current.clear()

    try:
        yield None if quiet else progress
    finally:
        close()
