"""Planning at petabyte scale: `chunkflow plan` over a 16384 × 262144 × 262144 volume (1.1e15
voxels), for block sizes giving 10^3 to 8.4 × 10^6 blocks.

Makes an empty zarr v3 uint8 array of that shape (metadata only: no chunk is written) and the
demo model, then runs each measured command (``MEASURES``) in a fresh process per block size,
timing it and reading its peak RSS (``os.wait4``): `chunkflow plan`, and `snakemake -n` of the
whole workflow up to ``DRY_RUN_MAX_BLOCKS``. Prints a table: blocks, then seconds and peak MB
per measured command. Goals on a 2-core machine: `chunkflow plan` ≤ 10 s at every size;
`snakemake -n` ≤ 60 s and ≤ 2 GB for 16k blocks.

    .venv/bin/python benchmarks/plan_scale.py [--block-sizes 1024 8192 8192 128 1024 1024 ...]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml
import zarr
from common import path_without_slurm

from chunkflow.geometry.boxes import Vec, vec
from chunkflow.plan.costs import block_count

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
SHAPE = (16384, 262144, 262144)
CHUNKS = (128, 1024, 1024)
BLOCK_SIZES = [  # about 1e3, 1e4, 1e5, 1e6 and 8.4e6 blocks
    (4096, 16384, 16384),
    (1024, 8192, 8192),
    (512, 4096, 4096),
    (256, 2048, 2048),
    (128, 1024, 1024),
]


def measured(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``command``, which must succeed."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            out.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed:\n{out.read().decode()}")
    return seconds, usage.ru_maxrss / 1024  # KB on Linux


def chunkflow_plan(run_dir: Path, config: Path) -> tuple[float, float]:
    return measured([str(BIN / "chunkflow"), "plan", "--config", str(config)], run_dir)


DRY_RUN_MAX_BLOCKS = 150_000  # beyond, `snakemake -n` takes many minutes and GBs: not run


def snakemake_dry_run(run_dir: Path, config: Path) -> tuple[float, float] | None:
    """`snakemake -n` of the whole workflow (one job per block), None above DRY_RUN_MAX_BLOCKS."""
    block_size = yaml.safe_load(config.read_text())["block_size"]
    if block_count(SHAPE, block_size) > DRY_RUN_MAX_BLOCKS:
        return None
    os.environ["PATH"] = path_without_slurm(run_dir)  # a dry run needs no SLURM
    command = [str(BIN / "snakemake"), "-s", str(REPO / "workflow" / "Snakefile")]
    command += ["-d", str(run_dir), "--configfile", str(config), "-n", "--quiet", "all"]
    return measured(command, run_dir)


# the commands timed per block size: (column name, run it on a run directory and config file;
# None where it is not run)
MEASURES: list[tuple[str, Callable[[Path, Path], tuple[float, float] | None]]] = [
    ("chunkflow plan", chunkflow_plan),
    ("snakemake -n", snakemake_dry_run),
]


def write_config(run_dir: Path, block_size: Vec) -> Path:
    config = {
        "input": {"path": str(run_dir / "huge.zarr")},
        "output": {"path": str(run_dir / "out.zarr"), "dtype": "uint8", "chunk_size": CHUNKS},
        "block_size": list(block_size),
        "model": {
            "path": str(run_dir / "demo" / "boundary_net.pt2"),
            "input_patch_size": [20, 134, 134],
            "output_patch_size": [16, 128, 128],
            "output_channels": 3,
        },
        "inference": {"overlap": [4, 32, 32]},
    }
    path = run_dir / f"config_{'x'.join(map(str, block_size))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--block-sizes", type=int, nargs="+", help="z y x triples (default: the five above)"
    )
    args = parser.parse_args()
    sizes: list[Vec] = BLOCK_SIZES
    if args.block_sizes:
        sizes = [vec(args.block_sizes[i : i + 3]) for i in range(0, len(args.block_sizes), 3)]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"volume {' x '.join(map(str, SHAPE))} uint8 ({math.prod(SHAPE):.2e} voxels)\n")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        zarr.create_array(run_dir / "huge.zarr", shape=SHAPE, chunks=CHUNKS, dtype="uint8")
        subprocess.run(
            [str(BIN / "chunkflow"), "demo-data", "--dir", str(run_dir / "demo")],
            check=True,
            capture_output=True,
        )
        header = ["block size", "blocks"]
        for name, _ in MEASURES:
            header += [f"{name} s", f"{name} peak MB"]
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for size in sizes:
            config = write_config(run_dir, size)
            row = ["×".join(map(str, size)), f"{block_count(SHAPE, size):,}"]
            for _, measure in MEASURES:
                result = measure(run_dir, config)
                row += (
                    ["not run"] * 2 if result is None else [f"{result[0]:.2f}", f"{result[1]:.0f}"]
                )
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
