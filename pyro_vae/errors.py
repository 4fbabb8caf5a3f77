"""The exceptions pyro_vae raises for expected failures.

Each is a ``ValueError`` (or ``RuntimeError``) as well, so code that caught those keeps
working; the command line turns every :class:`PyroVAEError` into one line
``pyro-vae: error: ...`` and a non-zero exit.
"""

from __future__ import annotations


class PyroVAEError(Exception):
    """Base class: an expected failure with a message meant for the user."""


class ConfigError(PyroVAEError, ValueError):
    """A setting has the wrong type or value, or is unknown."""


class DataError(PyroVAEError, ValueError):
    """The data cannot be used as given (shape, values, support, file contents)."""


class NonFiniteError(PyroVAEError, ValueError):
    """A model holds NaN or infinite weights, or a result came out NaN or infinite."""


class CheckpointError(PyroVAEError, ValueError):
    """A saved model or training state is missing, damaged, or does not fit the model."""


class RunDirectoryError(PyroVAEError, RuntimeError):
    """The output directory cannot be used (exists, locked, not writable, full)."""
