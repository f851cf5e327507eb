"""Records naming a process (a block job, a `chunkflow run`), so that another process can tell
whether it is still there: on the same host, a pid that is gone, or that now belongs to a
process started at another time, is gone."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from chunkflow.state.files import write_json_atomic


def _started(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (None: not known here)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[19])  # field 22 of proc(5), counted after the command's name
    except (OSError, ValueError, IndexError):
        return None


def record_process(path: Path) -> None:
    """Record this process (host, pid and start time) in ``path``."""
    pid = os.getpid()
    write_json_atomic(path, {"host": socket.gethostname(), "pid": pid, "started": _started(pid)})


def process_gone(path: Path) -> bool:
    """Whether the process recorded in ``path`` ran on this host and is gone (a process on
    another host, or no record: not known)."""
    try:
        record: dict[str, Any] = json.loads(path.read_text())
        if record["host"] != socket.gethostname():
            return False
        pid = int(record["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False
    started = record.get("started")
    return started is not None and _started(pid) not in (None, started)  # the pid reused
