"""What every entry point shares, the `chunkflow` command and the workflow's scripts alike:
logging, and errors reported in one line on stderr instead of a traceback."""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import sys
from collections.abc import Callable

from chunkflow.errors import ChunkflowError, first_line, os_error_hint


def run_main(main: Callable[[], object], verbose: bool = False) -> int:
    """Call ``main()`` and return the process's exit status.

    0 when it returns; 2 after a ChunkflowError and 1 after an OSError (a path that cannot be
    read or written), each reported as one line on stderr: ``chunkflow: error: ...``. When the
    reader of stdout goes away (``chunkflow status | head -1``) it stops quietly with 141, the
    status of a process ended by SIGPIPE.
    """
    # a crash (e.g. SIGSEGV under a memory limit) leaves its cause and its thread's stack in
    # the log, short enough for the tail that `status` reads
    with contextlib.suppress(OSError, ValueError):  # no file behind stderr: called in-process
        faulthandler.enable(all_threads=False)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    try:
        main()
        sys.stdout.flush()  # a closed pipe shows here at the latest, not at the interpreter's exit
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # drop what is unwritten
        return 141
    except ChunkflowError as err:
        print(f"chunkflow: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path that cannot be written or read: no traceback for that
        print(f"chunkflow: error: {err}; {os_error_hint(err)}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as err:
        if not out_of_memory(err):
            raise
        print(
            f"chunkflow: error: out of memory ({first_line(err)}); {OOM_HINT}",
            file=sys.stderr,
        )
        return 1
    return 0


OOM_HINT = (
    "lower inference.batch_size or piece_size (`chunkflow plan` prints a job's memory), or "
    "give the job more memory (SLURM: mem_mb)"
)


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` says an allocation failed: Python's MemoryError, or PyTorch's (a
    RuntimeError: "can't allocate memory" on the CPU, ``torch.OutOfMemoryError`` on a GPU)."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    return "can't allocate memory" in str(err) or "out of memory" in str(err)
