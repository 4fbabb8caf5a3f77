"""The exceptions pyro_vae raises for expected failures.

Each is also the builtin exception that code caught before (``ValueError``, ``TypeError``,
``KeyError`` or ``RuntimeError``), so that code keeps working. The command line turns every
:class:`PyroVAEError` (and ``OSError``) into one line ``pyro-vae: error: ...`` and exit 2 (1 for
a diverged or interrupted run); any other exception is a bug of pyro_vae and says so, exit 3.
"""

from __future__ import annotations


class PyroVAEError(Exception):
    """Base class: an expected failure with a message meant for the user."""


class ConfigError(PyroVAEError, ValueError):
    """A setting has the wrong type or value, or is unknown."""


class ConfigTypeError(ConfigError, TypeError):
    """A setting or argument is of a type that cannot be used (a ``TypeError`` too)."""


class ResumeError(ConfigError):
    """A resumed run was given settings other than those it was trained with."""


class DataError(PyroVAEError, ValueError):
    """The data cannot be used as given (shape, values, support, file contents)."""


class DataTypeError(DataError, TypeError):
    """The data are of a type that cannot be used as data (a ``TypeError`` too)."""


class SchemaError(DataError):
    """A table's columns differ from those a saved run was trained on (names, order, kinds, levels)."""


class NonFiniteError(PyroVAEError, ValueError):
    """A model holds NaN or infinite weights, or a result came out NaN or infinite."""


class CheckpointError(PyroVAEError, ValueError):
    """A saved model or training state is missing, damaged, or does not fit the model."""


class RunDirectoryError(PyroVAEError, RuntimeError):
    """The output directory cannot be used (exists, locked, not writable, full)."""


class UsageError(PyroVAEError, RuntimeError):
    """A call made where it cannot run: a model not ready for it, a launch outside its launcher."""


class UnknownKeyError(PyroVAEError, KeyError):
    """A name that is not among those a lookup knows (a ``KeyError`` too)."""

    def __str__(self) -> str:
        # KeyError shows its argument's repr (quotes and escapes); the message is meant to be read
        return str(self.args[0]) if self.args else ""
