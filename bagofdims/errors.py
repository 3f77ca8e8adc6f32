"""The project's errors: one base class, each also the built-in a caller would expect.

The command line turns a :class:`BagOfDimsError` into one line on stderr and a non-zero exit;
anything else is a bug and keeps its traceback. Messages name the problem and the fix.
"""

from __future__ import annotations


class BagOfDimsError(Exception):
    """Base of every error raised on purpose by bagofdims (and probes, superposition)."""


class InvalidArgument(BagOfDimsError, ValueError):
    """A value given to a function or flag is out of its allowed set."""


class InvalidType(BagOfDimsError, TypeError):
    """A value of the wrong type was given."""


class NotFound(BagOfDimsError, KeyError):
    """A named thing (site, feature, token) does not exist where it was looked up."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OutOfRange(BagOfDimsError, IndexError):
    """An index (token id, dim, position) lies outside what exists."""


class NothingFound(BagOfDimsError, ValueError):
    """A search ran correctly and found nothing to return (a result, not a bad argument)."""


class MissingFile(BagOfDimsError, FileNotFoundError):
    """A file or directory that should exist does not."""


class AlreadyExists(BagOfDimsError, FileExistsError):
    """A target exists and would be replaced without ``overwrite``."""


class NotComputed(BagOfDimsError, RuntimeError):
    """Something was asked for before the step that makes it has run."""


class StorageError(BagOfDimsError, ValueError):
    """A file on disk is corrupt, truncated, edited, or of another format."""


class SafetensorsError(StorageError):
    """A safetensors file is not complete or not readable."""


class CacheError(StorageError):
    """A sign cache is missing, corrupt, or does not match the model it is used with."""


class CatalogError(StorageError):
    """A catalog is corrupt or does not match the cache / model it is used with."""


class StoreError(StorageError):
    """An activation store is corrupt, incomplete, or was written with other settings."""


class ResumeError(BagOfDimsError, ValueError):
    """A resumed run was started with settings that differ from the interrupted one."""


class UnknownSite(BagOfDimsError, ValueError):
    """A site name or pattern matches nothing in the model."""


class ModelNotAvailable(BagOfDimsError, RuntimeError):
    """The requested model cannot be found locally and cannot be downloaded."""


class TextNotAvailable(BagOfDimsError, ImportError):
    """A packaged text corpus is not installed."""


class HookError(BagOfDimsError, RuntimeError):
    """Hooks cannot be attached (already active, or a model whose forward ignores them)."""


class NumericalError(BagOfDimsError, FloatingPointError):
    """A computation produced NaN or infinity."""


class OutOfMemory(BagOfDimsError, MemoryError):
    """A device ran out of memory even at the smallest batch."""


class ProcessGroupError(BagOfDimsError, RuntimeError):
    """Another process of a multi-process run failed, died or stopped answering."""

    def __init__(self, message: str, relayed: bool = False):
        super().__init__(message)
        self.relayed = relayed  # raised because another process failed (it reports why)
