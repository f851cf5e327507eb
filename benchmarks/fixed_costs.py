"""Fixed costs: one 64×256×256 block from fresh processes, ours against chunkflow 1.2.0.

Ours: the whole workflow from scratch in a fresh run directory, `snakemake --cores 2` (rules
create_output, infer_block, summary), wall clock from start to exit. Theirs: the original
chunkflow (seung-lab, PyPI 1.2.0) in a virtualenv of its own (not a dependency of this project),
one process: `chunkflow load-h5 … inference … save-h5 …`. The same work: the same input chunk (the
demo volume's first 64×256×256, in HDF5), the demo network (its `.pt2`; for chunkflow 1.2.0, which
expects 'same' networks, wrapped to pad each input patch by its context), the same 45 patches
(output 16×128×128, overlap 4×32×32), batch 1, 2 torch threads, CPU, float32 output (ours a zarr
array, zstd-compressed by zarr's default; theirs an uncompressed HDF5 dataset). Rounds interleave
the two; prints the medians and ours ÷ theirs, then the steps of ours, each a process of its own.

A stub `scontrol` goes first on PATH: where a SLURM client is installed but no controller answers,
Snakemake's SLURM plugin waits 10 s at start-up (a workstation has no SLURM; a cluster answers).

    python3 -m venv /tmp/cf12
    /tmp/cf12/bin/pip install chunkflow==1.2.0 opencv-python-headless torch
    .venv/bin/python benchmarks/fixed_costs.py --theirs /tmp/cf12/bin/chunkflow [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import yaml
import zarr
from common import path_without_slurm

from chunkflow.app.demo import write_demo

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHAPE = (64, 256, 256)
PATCH_IN, PATCH_OUT, OVERLAP = [20, 134, 134], [16, 128, 128], [4, 32, 32]

THEIR_NET = '''
import torch
from torch.nn import functional as F


class Padded(torch.nn.Module):
    """The demo net (valid convolutions) made 'same', as chunkflow 1.2.0 expects."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(F.pad(x, (3, 3, 3, 3, 2, 2), mode="reflect"))


def load_model(path):
    return Padded(torch.export.load(path).module())


if not torch.cuda.is_available():  # chunkflow 1.2.0 logs torch.cuda.get_device_name(0) after
    torch.cuda.get_device_name = lambda *args: "cpu"  # inferring, which fails without CUDA
'''


def prepare(root: Path) -> dict[str, str]:
    """The input chunk, the models and our config in ``root``; the environment to run in."""
    raw, model = write_demo(root / "demo")
    with h5py.File(root / "chunk.h5", "w") as f:
        f["main"] = zarr.open_array(str(raw), mode="r")[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    (root / "their_net.py").write_text(THEIR_NET)
    config = {
        "input": {"path": "chunk.h5:/main"},
        "output": {"path": "out.zarr", "dtype": "float32", "chunk_size": [16, 128, 128]},
        "block_size": list(SHAPE),
        "model": {
            "path": str(model),
            "input_patch_size": PATCH_IN,
            "output_patch_size": PATCH_OUT,
            "output_channels": 3,
        },
        "inference": {"overlap": OVERLAP, "batch_size": 1, "threads": 2, "device": "cpu"},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": path_without_slurm(root)}
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(
            f"{' '.join(command[:3])}… failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return seconds


def fresh(root: Path) -> None:
    for stale in ("out.zarr", ".chunkflow", ".snakemake", "out_theirs.h5"):
        path = root / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def snakemake(*args: str) -> list[str]:
    workflow = ["-s", str(REPO / "workflow/Snakefile"), "--configfile", "config.yaml"]
    return [str(BIN / "snakemake"), *workflow, "--cores", "2", *args]


def theirs(chunkflow: str) -> list[str]:
    inference = ["-s", *map(str, PATCH_OUT), "-z", *map(str, PATCH_OUT), "-v", *map(str, OVERLAP)]
    return [
        chunkflow,
        *("load-h5", "-f", "chunk.h5", "-d", "main"),
        *("inference", "-m", "their_net.py", "-w", "demo/boundary_net.pt2", *inference),
        *("-c", "3", "-f", "pytorch", "-b", "1", "--mask-output-chunk", "--no-augment"),
        *("save-h5", "-f", "out_theirs.h5"),
    ]


def parts(root: Path, env: dict[str, str], repeats: int) -> dict[str, float]:
    """Median seconds of each step of our run as a process of its own (the run finished): the
    `chunkflow` commands call what the workflow's rule scripts call."""
    chunkflow = [str(BIN / "chunkflow")]
    commands = {
        "snakemake -n (start-up, plan, DAG)": snakemake("-n"),
        "create-output": [*chunkflow, "create-output", "-c", "config.yaml"],
        "run-block": [*chunkflow, "run-block", "-c", "config.yaml", "z0_y0_x0"],
        "summary": [*chunkflow, "summary", "-c", "config.yaml"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    }
    return {
        name: statistics.median(timed(command, root, env) for _ in range(repeats))
        for name, command in commands.items()
    }


def compare(root: Path, their_chunkflow: str, repeats: int) -> None:
    """Interleaved rounds of both, their medians and ratio, then the steps of ours."""
    env = prepare(root)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    ours, their = [], []
    for round_ in range(repeats):
        fresh(root)
        ours.append(timed(snakemake(), root, env))
        their.append(timed(theirs(their_chunkflow), root, env))
        print(f"round {round_ + 1}: ours {ours[-1]:.2f} s, theirs {their[-1]:.2f} s", flush=True)
    ratios = [o / t for o, t in zip(ours, their, strict=True)]
    mine, others = statistics.median(ours), statistics.median(their)
    print(
        f"median wall: ours {mine:.2f} s, theirs {others:.2f} s, ours ÷ theirs "
        f"{mine / others:.2f} (within rounds {statistics.median(ratios):.2f})"
    )
    for name, seconds in parts(root, env, repeats).items():
        print(f"  {name}: {seconds:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--theirs", required=True, help="chunkflow 1.2.0's `chunkflow` command")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="chunkflow-fixed-costs-"))
    try:
        compare(root, args.theirs, args.repeats)
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
