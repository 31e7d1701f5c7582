"""One exception root. Subclasses also inherit the matching built-in error, so callers
that catch ValueError / FileNotFoundError keep working (the HF datasets habit)."""


class LaionFaceError(Exception):
    """Root of every error laionface raises on purpose."""


class ConfigError(LaionFaceError, ValueError):
    """A pipeline file, flag or setting is wrong; the message says what to write instead."""


class InputError(LaionFaceError, ValueError):
    """An input file is unusable (missing column, unreadable parquet); the message names the file."""


class MissingInputError(LaionFaceError, FileNotFoundError):
    """A path the user named does not exist."""


class ModelNotFoundError(LaionFaceError, FileNotFoundError):
    """Model weights are not installed; the message names the package or path to provide."""


class PartFailedError(LaionFaceError, RuntimeError):
    """A part could not be finished; the others go on and the run exits non-zero."""
