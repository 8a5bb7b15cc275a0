"""CLI subcommands: one module per stage, each with ``register(subparsers)``.

Modules here are discovered automatically by :mod:`astrodask.cli`. They must
import nothing heavy at module level (no TensorFlow, no dask-cuda) so that
``astrodask --help`` stays instant; import inside the handler instead.
A handler takes the parsed ``argparse.Namespace`` and returns an exit code
(``None`` means 0).
"""

_GROUPS = {}


def group(subparsers, name, help):
    """Return the sub-parsers of command group ``name`` (e.g. ``train``).

    Several modules can add subcommands to one group (``train unet`` and
    ``train maskrcnn``); the group parser is created by whichever asks first.
    """
    key = (id(subparsers), name)
    if key not in _GROUPS:
        parser = subparsers.add_parser(name, help=help, description=help)
        _GROUPS[key] = parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND",
                                             required=True)
    return _GROUPS[key]
