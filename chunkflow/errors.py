"""Named errors. Their messages are one line, say what is wrong and how to fix it."""

import errno

# What to do about the OS errors a run meets most on a cluster's file systems.
OS_ERROR_HINTS = {
    errno.ENOSPC: "free space on that file system (or choose another path), then rerun",
    errno.EDQUOT: "your disk quota is used up: free space or ask for more, then rerun",
    errno.EROFS: "that file system is read-only: remount it writable or choose another path",
}


def os_error_hint(err: OSError) -> str:
    """What to do about ``err``, in a few words."""
    return OS_ERROR_HINTS.get(err.errno, "check the path and its permissions")


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
