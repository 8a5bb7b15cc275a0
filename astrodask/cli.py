"""The ``astrodask`` command: a thin layer over the public Python API.

Every subcommand lives in :mod:`astrodask.commands` and calls functions that
are also importable from :mod:`astrodask`. Errors meant for the user
(:class:`astrodask.errors.AstrodaskError`) are printed as one line; other
exceptions are reported as one line too unless ``--debug`` is given.
"""

import argparse
from contextlib import nullcontext
import difflib
import importlib
import os
import pkgutil
import sys
import warnings

from . import __version__, commands
from .errors import DEBUG_ENV, AstrodaskError, first_line


class _Parser(argparse.ArgumentParser):
    """An argument parser that answers a mistyped (sub)command with "did you mean"."""

    def _check_value(self, action, value):
        if (isinstance(action, argparse._SubParsersAction) and action.choices is not None
                and value not in action.choices):
            close = difflib.get_close_matches(value, list(action.choices), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise argparse.ArgumentError(
                action, f"unknown command {value!r}{hint} (commands: "
                        f"{', '.join(sorted(action.choices))})")
        super()._check_value(action, value)


def build_parser():
    """Build the top-level argument parser with every discovered subcommand."""
    parser = _Parser(
        prog="astrodask",
        description="Survey mosaics to source catalogs with deep learning on Dask.",
    )
    parser.add_argument("--version", action="version", version=f"astrodask {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"astrodask: warning: {message}", file=sys.stderr)


def _native_logs(args):
    """Commands that set ``quiet_native_logs=True`` run with TensorFlow's C++ log lines dropped."""
    if not getattr(args, "quiet_native_logs", False) or args.debug:
        return nullcontext()
    from .framework import quiet_native_logs

    return quiet_native_logs()


def main(argv=None):
    """Entry point of the ``astrodask`` console script; returns the exit code."""
    warnings.showwarning = _one_line_warning
    # TensorFlow's C++ start-up chatter is not for users; errors still surface as exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:  # the clusters started for the command keep their workers' tracebacks
        os.environ[DEBUG_ENV] = "1"
    try:
        with _native_logs(args):
            code = args.func(args)
    except AstrodaskError as exc:
        if args.debug:
            raise
        print(f"astrodask: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("astrodask: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything unexpected still gets one line
        if args.debug:
            raise
        print(f"astrodask: internal error: {type(exc).__name__}: {first_line(exc)} "
              "(re-run with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0 if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
