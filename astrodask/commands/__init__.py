"""CLI subcommands: one module per stage, each with ``register(subparsers)``.

Modules here are discovered automatically by :mod:`astrodask.cli`. They must
import nothing heavy at module level (no TensorFlow, no dask-cuda) so that
``astrodask --help`` stays instant; import inside the handler instead.
A handler takes the parsed ``argparse.Namespace`` and returns an exit code
(``None`` means 0).
"""


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
