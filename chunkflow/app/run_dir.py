"""One way to name a run: its run directory, as Snakemake's ``-d``.

Like Snakemake, the command line's own paths (``--config``, ``--json``, …) are taken from where
the command runs, and then the process works in the run directory: the relative paths inside
the config (state_dir, input, output, model, mask) are taken from there.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chunkflow
from chunkflow.config import default
from chunkflow.errors import ChunkflowError
from chunkflow.state.processes import process_gone, record_process
from chunkflow.state.run_state import RunState

# Where a run directory keeps its config when --config is not given, in this order: a run
# directory's own config.yaml, or the checkout's demo config (a checkout is a run directory).
DEFAULT_CONFIGS = ("config.yaml", "config/config.yaml")


def config_file(run_dir: str, config: str | None) -> Path:
    """The config file's absolute path: ``config`` (taken from the current directory, as
    Snakemake takes ``--configfile``), or the first of ``DEFAULT_CONFIGS`` in ``run_dir``; a
    one-line error if ``run_dir`` does not exist."""
    directory = Path(run_dir)
    if not directory.is_dir():
        raise ChunkflowError(
            f"run directory '{run_dir}' does not exist; name an existing one with -d"
        )
    return Path(config).absolute() if config else default_config(directory)


@contextlib.contextmanager
def inside(run_dir: str, config: str | None) -> Iterator[Path]:
    """Work in ``run_dir`` (``os.chdir``, and back after), with the ``config_file``."""
    path = config_file(run_dir, config)
    previous = os.getcwd()
    os.chdir(run_dir)
    try:
        yield path
    finally:
        os.chdir(previous)


def default_config(directory: Path) -> Path:
    """The first of ``DEFAULT_CONFIGS`` in ``directory``, absolute; a one-line error if none."""
    found = next((directory / n for n in DEFAULT_CONFIGS if (directory / n).is_file()), None)
    if found is None:
        raise ChunkflowError(
            f"no {' or '.join(DEFAULT_CONFIGS)} in run directory '{directory}'; pass "
            "--config FILE, or name the run directory with -d"
        )
    return found.absolute()


def snakefile() -> Path:
    """This checkout's ``workflow/Snakefile`` (beside the ``chunkflow`` package)."""
    path = Path(chunkflow.__file__).resolve().parents[1] / "workflow" / "Snakefile"
    if not path.is_file():
        raise ChunkflowError(
            f"no workflow Snakefile at '{path}': `chunkflow run` needs chunkflow installed from "
            "a checkout (pip install -e <checkout>); or run snakemake -s "
            "<checkout>/workflow/Snakefile -d <run dir> --configfile <config>"
        )
    return path


def snakemake_command(run_dir: str, path: Path, profile: str | None, rest: list[str]) -> list[str]:
    """The Snakemake command line (this Python's Snakemake) that runs the workflow in
    ``run_dir`` with its config file ``path``, ``profile`` if given, and ``rest`` passed
    through. It reruns the jobs that were running when an earlier Snakemake died
    (``--rerun-incomplete``): their blocks resume at their first unwritten piece."""
    command = [sys.executable, "-m", "snakemake", "-s", str(snakefile())]
    command += ["-d", run_dir, "--configfile", str(path), "--rerun-incomplete"]
    return command + (["--profile", profile] if profile else []) + rest


def snakemake_record(run_dir: str, config: dict[str, Any]) -> Path:
    """``RunState.snakemake_record`` of the state dir that the run's ``config`` names."""
    return RunState.snakemake_record(Path(run_dir, config.get("state_dir") or default("state_dir")))


def unlock_if_stale(run_dir: str, record: Path, command: list[str]) -> str | None:
    """Remove Snakemake's lock on ``run_dir`` when the `chunkflow run` that took it, as
    ``record`` names it, is gone (this host, its process ended without unlocking: killed with
    SIGKILL, a lost node), by running ``command`` with ``--unlock``; return a line saying so
    (None: no stale lock). A lock held by a Snakemake on another host, or not started by
    `chunkflow run`, is left: Snakemake then says how to remove it."""
    locks = Path(run_dir, ".snakemake", "locks")
    if not (locks.is_dir() and any(locks.iterdir())) or not process_gone(record):
        return None
    if subprocess.run([*command, "--unlock"], capture_output=True).returncode:
        return None  # Snakemake then says why it cannot lock
    return f"the Snakemake that locked '{run_dir}' is gone ({record}); its lock is removed"


def record_snakemake(record: Path) -> None:
    """Record this process, which becomes the run's Snakemake, in ``record`` as the holder of
    its lock (where the state dir cannot be written, nothing: Snakemake then says so)."""
    with contextlib.suppress(OSError):
        record_process(record)
