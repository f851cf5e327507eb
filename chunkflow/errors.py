"""Named errors. Their messages are one line, say what is wrong and how to fix it."""


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type's name."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


class ChunkflowError(Exception):
    """Base of the errors shown to the user as a single line (no traceback)."""


class ConfigError(ChunkflowError):
    """The configuration is invalid or does not fit the data."""


class ModelError(ChunkflowError):
    """The model cannot be loaded or gives output of the wrong shape."""


class VolumeError(ChunkflowError):
    """A volume is missing, unreadable, or does not match what the run expects."""
