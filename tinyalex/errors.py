"""Errors that are two exception types at once.

Where torch raises RuntimeError and tinyalex raised something more specific before
(KeyError, ValueError), tinyalex raises a class that is both: code written for torch
(`except RuntimeError`) and code written for tinyalex (`except KeyError`) catch it alike.
"""
import pickle


class KeyRuntimeError(KeyError, RuntimeError):
    """A KeyError that torch would raise as RuntimeError (e.g. load_state_dict's missing keys)."""

    def __str__(self):                                             # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ValueRuntimeError(ValueError, RuntimeError):
    """A ValueError that torch would raise as RuntimeError (e.g. a size mismatch)."""


class TrainingError(ValueRuntimeError):
    """A problem the user can fix: a bad setting, missing or bad data, an unwritable or full
    --out, divergence. The CLI prints it as one line, without a traceback. It is a ValueError
    (a bad setting passed to train()) and a RuntimeError (a run that cannot go on), so code
    that catches either, as it would around a torch call, catches it."""


class TypeRuntimeError(TypeError, RuntimeError):
    """A TypeError that torch would raise as RuntimeError (e.g. a weight of another dtype than
    the input's, or class indices of a float dtype)."""


class TypeNotImplementedError(TypeRuntimeError, NotImplementedError):
    """A dtype tinyalex has no kernel for (an int64 input to a float op): a TypeError, and the
    NotImplementedError (a RuntimeError) that torch raises for dtypes it has no kernel for."""


class ValueIndexError(ValueError, IndexError):
    """A ValueError that torch would raise as IndexError (a class index out of range)."""


class TypeAssertionError(TypeError, AssertionError):
    """A TypeError that torch raises as AssertionError (Sequential.insert of a non-Module;
    the other container methods raise TypeError for the same mistake)."""


class UnpicklingValueError(pickle.UnpicklingError, ValueError):
    """A file tinyalex.load refuses to unpickle (a global that is not a tensor's, a legacy or
    junk file): the pickle.UnpicklingError that torch.load(weights_only=True) raises, and the
    ValueError that tinyalex raised for files it could not read."""
