"""Done-markers: one small JSON per finished block, written last and atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp makes its files private (0600); markers get the mode of any other file the user writes.
_FILE_MODE = 0o666 & ~_umask()


def marker_dir(state_dir: str) -> Path:
    return Path(state_dir) / "blocks"


def marker_path(state_dir: str, block_id: str) -> Path:
    return marker_dir(state_dir) / f"{block_id}.json"


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


def read_markers(
    state_dir: str, block_ids: list[str], fingerprint: str
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """The done-markers of ``block_ids`` written with ``fingerprint``, then the ids whose marker
    is stale (another fingerprint: Snakemake will rerun them), then the ids without a marker."""
    done, stale, missing = [], [], []
    for block_id in block_ids:
        path = marker_path(state_dir, block_id)
        if not path.exists():
            missing.append(block_id)
            continue
        marker = json.loads(path.read_text())
        if marker.get("fingerprint") == fingerprint:
            done.append(marker)
        else:
            stale.append(block_id)
    return done, stale, missing
