"""Files of the run's state written so that no reader ever sees half of one: a temporary file,
fsynced, then renamed over the target; and files set aside (renamed) instead of deleted."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp makes its files private (0600); markers get the mode of any other file the user writes.
_FILE_MODE = 0o666 & ~_umask()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (see ``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def set_aside(path: Path, suffix: str = ".invalid") -> Path:
    """Rename ``path`` to ``<name><suffix>``, replacing an earlier file of that name: out of
    the readers' and Snakemake's sight (the block counts as missing), kept for a post-mortem."""
    aside = path.with_name(path.name + suffix)
    os.replace(path, aside)
    return aside


def undate_future(paths: Iterable[Path]) -> list[Path]:
    """Date now each of ``paths`` that is dated later (a clock ahead: another host's, or this
    one's before it was set back), and return those: Snakemake fails every job whose input is
    newer than the output it has just made, so a future-dated record would fail every rerun."""
    now, moved = time.time(), []
    for path in paths:
        try:
            if path.stat().st_mtime > now:
                os.utime(path, (now, now))
                moved.append(path)
        except FileNotFoundError:
            continue
    return moved
