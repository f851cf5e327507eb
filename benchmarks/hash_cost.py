"""What the checksums cost a block job: one streamed block, with and without its hashing.

A block job hashes what it reads (``input_digest``: sha256 of each piece's input), what it
writes (sha256 of each piece's output, chained into the marker's ``output_sha256``) and, for a
block of several pieces, the partial sums it carries (sha256 of each file, checked when read).
This computes one block of a synthetic EM volume (the demo volume tiled) with `chunkflow
run-block`, in a fresh process each time, alternately as it is and with those hashes replaced
by a constant (the same job otherwise), and prints the wall times, their ratio and the hashing's
own cost per Gvoxel of output (each hash timed on the block's arrays, one core).

    .venv/bin/python benchmarks/hash_cost.py [--shape 64 1024 1024] [--piece 32 512 512]
        [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from streamed_block import write_volume

from chunkflow.app.demo import write_demo
from chunkflow.job.piece_state import input_digest

REPO = Path(__file__).resolve().parents[1]

# run-block with every checksum of the job replaced by a constant
UNHASHED = """\
import hashlib, sys
from chunkflow.job import block_job, piece_state

class Constant:
    def __init__(self, *args, **kwargs): pass
    def update(self, data): pass
    def hexdigest(self): return "0" * 64

class NoHash:
    sha256 = Constant
    blake2b = Constant

piece_state.hashlib = NoHash  # input_digest, output_digest, the carried sums' and state's sums
block_job.input_digest = lambda raw: "0" * 32
from chunkflow.app import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def run_block(config: Path, hashed: bool) -> float:
    """Seconds of one `chunkflow run-block` of block z0_y0_x0 (its state cleared first)."""
    args = ["run-block", "--config", str(config), "z0_y0_x0"]
    state = yaml.safe_load(config.read_text())["state_dir"]
    subprocess.run(["rm", "-rf", state], check=True)
    command = [str(Path(sys.executable).with_name("chunkflow")), *args]
    if not hashed:
        command = [sys.executable, "-c", UNHASHED, *args]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def hash_seconds(data: np.ndarray, digest) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        digest(data)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 1024, 1024])
    parser.add_argument("--piece", type=int, nargs=3, default=[32, 512, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hash-cost-"))
    write_demo(root / "demo")
    write_volume(root / "raw.zarr", tuple(args.shape))
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["input"]["path"] = str(root / "raw.zarr")
    config["model"]["path"] = str(root / "demo" / "boundary_net.pt2")
    config["output"]["path"] = str(root / "out.zarr")
    config["block_size"] = args.shape
    config["piece_size"] = args.piece
    config["inference"]["threads"] = args.threads
    config["state_dir"] = str(root / "state")
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    subprocess.run(
        [str(Path(sys.executable).with_name("chunkflow")), "create-output", "--config", str(path)],
        check=True,
        capture_output=True,
    )
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):
        for hashed in (True, False):
            times[hashed].append(run_block(path, hashed))
    with_hash, without = statistics.median(times[True]), statistics.median(times[False])
    voxels = int(np.prod(args.shape))
    gvox = voxels / 1e9

    # each hash on arrays of the block's sizes: input uint8 (context ignored), output 3 x uint8,
    # carried float32 sums (at most the output's size: an upper bound)
    raw = np.random.default_rng(0).integers(0, 255, args.shape, dtype=np.uint8)
    out = np.random.default_rng(1).integers(0, 255, (3, *args.shape), dtype=np.uint8)
    carry = np.random.default_rng(2).random((3, *args.shape), dtype=np.float32)
    sha = lambda a: hashlib.sha256(a.tobytes()).hexdigest()  # noqa: E731
    parts = {
        "input sha256": hash_seconds(raw, input_digest),
        "output sha256": hash_seconds(out, sha),
        "carried sums sha256 (bound)": hash_seconds(carry, sha),
    }
    print(f"block {args.shape} ({voxels / 1e6:.1f} Mvoxel) in pieces {args.piece}, demo net, ")
    print(f"{args.threads} threads, {args.repeats} runs each, alternating; median wall time:")
    print(f"  with its checksums:    {with_hash:7.2f} s  {times[True]}")
    print(f"  checksums a constant:  {without:7.2f} s  {times[False]}")
    print(f"  ratio: {with_hash / without:.3f}")
    print("each hash alone, one core, seconds per Gvoxel of output:")
    for name, seconds in parts.items():
        print(f"  {name:30s} {seconds / gvox:6.2f}")
    total = sum(parts.values()) / gvox
    print(f"  {'total':30s} {total:6.2f}  (the block job: {with_hash / gvox:.1f} s per Gvoxel)")
    subprocess.run(["rm", "-rf", str(root)], check=False)


if __name__ == "__main__":
    main()
