"""Running the real Snakemake workflow (workflow/Snakefile) on a tiny volume in a run directory.

A run directory outside the repository holds its data and a config.yaml with relative paths; it
is run as ``snakemake -s <repo>/workflow/Snakefile -d <run dir> --configfile <run dir>/config.yaml``
from a third, empty working directory. Its fixtures (``run_env``, ``elsewhere``, ``finished``) are
in conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
import zarr
from helpers import (
    ValidConvNet,
    config_with,
    save_torchscript,
    smooth_volume,
    write_volume,
)
from run_helpers import run_all_blocks

from chunkflow import config as config_mod
from chunkflow.plan.run_plan import make_plan

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"


# The tiny run: 16 x 28 x 32 voxels at an offset, blocks of 8 x 16 x 32 -> 2 x 2 x 1 = 4 blocks,
# the last block along y only 12 voxels thick (ragged edge, partial storage chunks).
SHAPE = (16, 28, 32)
OFFSET = (3, 5, 7)
RESOLUTION = (40.0, 8.0, 8.0)
N_BLOCKS = 4
CHANNELS = 2
BASE_CONFIG: dict[str, Any] = {
    "input": {"path": "data/raw.zarr"},
    "output": {"path": "results/out.zarr", "dtype": "float32", "chunk_size": [4, 8, 16]},
    "block_size": [8, 16, 32],
    "model": {
        "path": "models/net.pt",
        "input_patch_size": [6, 14, 14],
        "output_patch_size": [4, 12, 12],
    },
    # cpu, not auto: the in-process reference must be bit-identical on a machine with a GPU too.
    "inference": {"overlap": [2, 4, 4], "batch_size": 3, "device": "cpu", "threads": 1},
}
RUN_TIMEOUT = 180  # seconds for one snakemake run of this size (a few seconds normally)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


def snakemake_cmd(run_dir: Path, *args: str, snakefile: Path = SNAKEFILE) -> list[str]:
    return [
        str(SNAKEMAKE),
        "-s",
        str(snakefile),
        "-d",
        str(run_dir),
        "--configfile",
        str(run_dir / "config.yaml"),
        "--cores",
        "2",
        *args,
    ]


def snakemake(
    run_dir: Path,
    env: dict[str, str],
    cwd: Path,
    *args: str,
    ok: bool = True,
    snakefile: Path = SNAKEFILE,
) -> Result:
    proc = subprocess.run(
        snakemake_cmd(run_dir, *args, snakefile=snakefile),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if ok:
        assert result.returncode == 0, f"snakemake {' '.join(args)} failed:\n{result.text}"
    return result


def job_counts(text: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake run or dry-run as {rule: count}; {} for none."""
    if "Nothing to be done" in text:
        assert "Job stats:" not in text
        return {}
    table = text.split("Job stats:", 1)[1].splitlines()
    counts = {}
    for line in table[3:]:  # skip the header, its underline
        match = re.fullmatch(r"\s*(\w+)\s+(\d+)\s*", line)
        if not match:
            break
        counts[match[1]] = int(match[2])
    assert counts.pop("total") == sum(counts.values()), text
    return counts


def reasons(text: str, rule: str) -> list[str]:
    """The `reason:` lines of the jobs of ``rule`` in snakemake's output."""
    found = []
    for job in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        name = re.match(r"(?:local)?rule (\w+):", job.strip())
        if name and name[1] == rule:
            found += re.findall(r"^\s*reason: (.*)$", job, flags=re.M)
    return found


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def read_config(run_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def make_run_dir(run_dir: Path, config: dict[str, Any] = BASE_CONFIG) -> Path:
    """A run directory with the raw volume, the TorchScript net and config.yaml (relative paths)."""
    (run_dir / "data").mkdir(parents=True)
    (run_dir / "models").mkdir()
    write_volume(
        run_dir / "data" / "raw.zarr",
        smooth_volume(SHAPE),
        offset=OFFSET,
        resolution=RESOLUTION,
        chunks=(4, 8, 8),
    )
    save_torchscript(ValidConvNet(channels_out=CHANNELS), run_dir / "models" / "net.pt")
    write_config(run_dir, config)
    return run_dir


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a run directory, Snakemake's records and file times included."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def absolute(config: dict[str, Any], run_dir: Path, ref_dir: Path) -> dict[str, Any]:
    """``config`` with its inputs resolved in ``run_dir`` and its outputs moved to ``ref_dir``."""
    changes = {
        "input.path": str(run_dir / config["input"]["path"]),
        "model.path": str(run_dir / config["model"]["path"]),
        "output.path": str(ref_dir / "out.zarr"),
        "state_dir": str(ref_dir / "state"),
    }
    if config["model"].get("weights"):
        changes["model.weights"] = str(run_dir / config["model"]["weights"])
    return config_with(config, **changes)


def reference(run_dir: Path, ref_dir: Path) -> np.ndarray:
    """The output of an in-process run (no Snakemake) of the run directory's current config."""
    return run_all_blocks(absolute(read_config(run_dir), run_dir, ref_dir))


def output(run_dir: Path) -> zarr.Array:
    return zarr.open(str(run_dir / read_config(run_dir)["output"]["path"]), mode="r")


def marker_dir(run_dir: Path) -> Path:
    """The done-markers' folder of the run's current fingerprint."""
    return (
        run_dir
        / read_config(run_dir).get("state_dir", ".chunkflow")
        / "blocks"
        / fingerprint(run_dir)
    )


def markers(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(marker_dir(run_dir).glob("*.json"))}


def fingerprint(run_dir: Path) -> str:
    """The fingerprint of the run in ``run_dir``: planned there (paths relative to it)."""
    with contextlib.chdir(run_dir):
        return make_plan(config_mod.parse(read_config(run_dir))).fingerprint


def wait_for(condition, timeout: float, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
