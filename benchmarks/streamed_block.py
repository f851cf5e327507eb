"""One large block streamed through memory in pieces, against the same block in one piece.

Writes a synthetic EM volume of ``--shape`` (the demo volume tiled), and computes it as one
block with the demo net through `chunkflow run-block` (a process of its own per run), once with
the default piece size (the largest within the memory budget) and once with the whole block as
one piece (float32 sums for the whole block). Prints, per run, the pieces, the wall time, the
peak RSS (measured) and the estimate the workflow asks SLURM for, and the max |difference| of
the two outputs.

    .venv/bin/python benchmarks/streamed_block.py [--shape 128 2048 2048] [--threads 2]
        [--no-whole] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
import zarr

from chunkflow import config as config_mod
from chunkflow.app.demo import DEMO_SHAPE, synthetic_em, write_demo
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.run_state import RunState

BIN = Path(sys.executable).parent
PROBE = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def write_volume(path: Path, shape: tuple[int, int, int]) -> None:
    tile = synthetic_em(DEMO_SHAPE)
    reps = [-(-s // t) for s, t in zip(shape, DEMO_SHAPE, strict=True)]
    data = np.tile(tile, reps)[: shape[0], : shape[1], : shape[2]]
    array = zarr.create_array(str(path), shape=shape, chunks=(32, 256, 256), dtype="uint8")
    array[...] = data
    array.attrs.update({"resolution": [40.0, 8.0, 8.0], "voxel_offset": [0, 0, 0]})


def run(run_dir: Path, shape, piece, threads: int, dtype: str) -> dict:
    """`chunkflow run-block` of the one block, in a fresh parent that measures its peak RSS."""
    name = "whole" if piece else "pieces"
    config = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "config/config.yaml").read_text()
    )
    config["input"]["path"] = str(run_dir / "raw.zarr")
    config["model"]["path"] = str(run_dir / "demo/boundary_net.pt2")
    config["output"] = {**config["output"], "path": str(run_dir / f"{name}.zarr"), "dtype": dtype}
    config["block_size"] = list(shape)
    config["inference"]["threads"] = threads
    config["state_dir"] = str(run_dir / f"state_{name}")
    if piece:
        config["piece_size"] = list(piece)
    path = run_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    chunkflow = str(BIN / "chunkflow")
    subprocess.run(
        [chunkflow, "create-output", "--config", str(path)], check=True, capture_output=True
    )
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PROBE, chunkflow, "run-block", "--config", str(path), "z0_y0_x0"],
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    plan = make_plan(config_mod.parse(config))
    marker = json.loads(RunState.of(plan).marker("z0_y0_x0").read_text())
    return {
        "name": name,
        "pieces": marker["pieces"],
        "piece_size": marker["piece_size"],
        "wall": wall,
        "peak_gb": int(out.stdout.split()[-1]) * 1024 / 1e9,
        "estimate_gb": plan.job_memory_bytes() / 1e9,
        "output": config["output"]["path"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 2048, 2048])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-whole", action="store_true", help="skip the one-piece run")
    parser.add_argument("--dtype", default="uint8", help="output.dtype (float32: compare sums)")
    args = parser.parse_args()
    shape = tuple(args.shape)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"block {'x'.join(map(str, shape))} ({np.prod(shape) / 1e6:.0f} Mvoxels), demo net, "
        f"{args.threads} threads; float32 sums of the whole block: "
        f"{np.prod(shape) * 3 * 4 / 1e9:.1f} GB"
    )
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        run_dir = Path(tmp)
        write_demo(run_dir / "demo")
        write_volume(run_dir / "raw.zarr", shape)
        runs = [run(run_dir, shape, None, args.threads, args.dtype)]
        if not args.no_whole:
            runs.append(run(run_dir, shape, shape, args.threads, args.dtype))
        print(
            f"{'run':>7} {'pieces':>6} {'piece size':>16} {'wall s':>7} {'peak RSS GB':>11} {'estimate GB':>11}"
        )
        for r in runs:
            size = "x".join(map(str, r["piece_size"]))
            print(
                f"{r['name']:>7} {r['pieces']:>6} {size:>16} {r['wall']:>7.1f} "
                f"{r['peak_gb']:>11.2f} {r['estimate_gb']:>11.2f}"
            )
        if len(runs) == 2:
            a, b = (zarr.open_array(r["output"], mode="r") for r in runs)
            diff = max(
                float(np.abs(a[:, z : z + 16].astype(np.float64) - b[:, z : z + 16]).max())
                for z in range(0, shape[0], 16)
            )
            print(f"max |difference| between the two outputs ({args.dtype}): {diff:.3g}")


if __name__ == "__main__":
    main()
