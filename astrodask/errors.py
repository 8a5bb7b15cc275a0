"""Exceptions that carry a one-line message meant for the user.

The CLI prints ``astrodask: error: <message>`` for any :class:`AstrodaskError`
and exits non-zero; everything else is an internal error. Warnings print as
``astrodask: warning: <message>``.
"""


class AstrodaskError(Exception):
    """Base class for errors whose message is shown to the user as is."""

    exit_code = 2


class InputError(AstrodaskError, ValueError):
    """Bad user input: a file, an option, or data that cannot be used.

    A :class:`ValueError` too, as input errors are in NumPy, astropy and
    scikit-image, so ``except ValueError`` catches it.
    """


class StoreError(AstrodaskError):
    """A store (Zarr mosaic, results folder) is missing, incomplete or invalid."""


class DependencyError(AstrodaskError):
    """An optional dependency needed for the requested feature is missing."""


#: Set (to anything but empty) by ``astrodask --debug``, or by hand in a notebook: the
#: clusters started here then keep their workers' tracebacks of failed tasks on stderr.
DEBUG_ENV = "ASTRODASK_DEBUG"


def first_line(exc):
    """The first line of an exception's message (empty if it has none).

    Messages of other libraries can span many lines; a user-facing error
    quotes only the first.
    """
    text = str(exc)
    return text.splitlines()[0] if text else ""
