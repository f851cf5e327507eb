"""End to end: the demo through the real Snakemake workflow, against its bare forward passes.

Runs the demo config (``--shape`` makes the synthetic volume larger) with Snakemake from scratch,
for each ``--block-size`` asked for (one job per block, each streaming its block in pieces), and
times the run (wall clock, Snakemake's start-up and DAG included). Then, in this process, times the bare
batched forward passes of every block's patches (same model, batch size, device, threads).
Prints, per run, the sum of the forward times ÷ the wall time: the share of the run the network
itself is computing (1.0 would be a run that only does forward passes, one job at a time). With
``--cores`` jobs at once the ratio can exceed 1. Beside it, the forward times ÷ the block jobs'
own wall seconds (their done-markers' ``timings_s.wall``): the same share without Snakemake's
start, the model check and each job's start-up (Python, PyTorch, CUDA, the model). Also printed: Mvoxel/s of the run (the
volume's voxels ÷ wall), and on CUDA the peak GPU memory the block jobs recorded
(``ran_on.peak_gpu_memory_mb``) and the GPU's utilisation while Snakemake ran (nvidia-smi,
sampled every 0.2 s: the mean, and the mean over the samples while a block job computed).

    .venv/bin/python benchmarks/end_to_end.py [--block-size 32 256 256 --block-size 64 512 512]
        [--cores 1] [--threads 1] [--shape 64 512 512] [--model demo|unet]
        [--width 16 32 64] [--patch 20 192 192] [--batch-size 1]
        [--device cpu|cuda|auto] [--precision float32|float16|bfloat16]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from common import patch_batches, path_without_slurm, sync
from unet import UNet3D, parameter_count, write_model

from chunkflow import config as config_mod
from chunkflow.app.demo import DEMO_SHAPE, write_demo
from chunkflow.engine.devices import resolve_device
from chunkflow.engine.dtypes import scale_input
from chunkflow.engine.inference import keep_freed_memory
from chunkflow.engine.models import load_model
from chunkflow.job.block_job import read_patch_input
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.markers import DoneMarker
from chunkflow.volumes import open_volume

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def demo_config(run_dir: Path, block_size: list[int], args: argparse.Namespace) -> dict:
    """The demo config on the volume in ``run_dir``, with the demo net or the 3D U-Net."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["block_size"] = block_size
    config["inference"]["threads"] = args.threads
    config["inference"]["device"] = args.device
    config["inference"]["precision"] = args.precision
    config["model"]["path"] = str(run_dir / "resources/demo/boundary_net.pt2")
    config["input"]["path"] = str(run_dir / "resources/demo/raw.zarr")
    if args.model == "unet":
        net, weights = write_model(run_dir / "resources", tuple(args.width))
        config["model"] = {
            "path": str(net),
            "weights": str(weights),
            "input_patch_size": args.patch,
            "output_patch_size": args.patch,
            "output_channels": 3,
        }
        config["inference"]["batch_size"] = args.batch_size
    return config


def workflow_seconds(run_dir: Path, config: dict, cores: int) -> float:
    """Wall time of a snakemake run of ``config`` from scratch in ``run_dir``."""
    for stale in ("results", ".chunkflow", ".snakemake"):
        shutil.rmtree(run_dir / stale, ignore_errors=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    command = [str(BIN / "snakemake"), "-s", str(REPO / "workflow" / "Snakefile")]
    command += ["-d", str(run_dir), "--configfile", str(run_dir / "config.yaml")]
    command += ["--cores", str(cores), "--quiet", "all"]
    env = {**os.environ, "PATH": path_without_slurm(run_dir)}  # a local run needs no SLURM
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        logs = "".join(p.read_text() for p in sorted((run_dir / ".chunkflow/logs").rglob("*.log")))
        sys.exit(f"snakemake failed:\n{result.stderr[-3000:]}\n{logs[-3000:]}")
    return time.perf_counter() - start


def forward_seconds(config: dict) -> float:
    """The bare batched forward passes of every block's patches, summed."""
    settings = config_mod.parse(config)
    plan = make_plan(settings)
    device = resolve_device(settings.inference.device)
    model = load_model(settings.model, device)
    volume = open_volume(settings.input.path)
    geometry, batch = plan.geometry, settings.inference.batch_size
    total = 0.0
    for block in plan.blocks:
        patches = plan.patches(block)
        chunk_box, raw = read_patch_input(plan, volume, patches, block.id)  # as a block job reads
        chunk = scale_input(raw, settings.input.scale)
        batches = patch_batches(chunk, chunk_box, patches, geometry, batch, device)
        autocast = (
            torch.autocast(device.type, dtype=getattr(torch, settings.inference.precision))
            if settings.inference.precision != "float32"
            else contextlib.nullcontext()
        )
        start = time.perf_counter()
        with torch.inference_mode(), autocast:
            for b in batches:
                model(b)
        sync(device)
        total += time.perf_counter() - start
    return total


class GpuUtilisation:
    """nvidia-smi's GPU utilisation (percent), sampled every 0.2 s while in a ``with`` block;
    no samples where nvidia-smi is missing."""

    def __enter__(self) -> GpuUtilisation:
        self.samples: list[int] = []
        self._process = None
        if shutil.which("nvidia-smi"):
            command = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
            self._process = subprocess.Popen(
                [*command, "-lms", "200"], stdout=subprocess.PIPE, text=True
            )
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    def _read(self) -> None:
        for line in self._process.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line))

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait()
            self._reader.join()

    def summary(self) -> str:
        """The mean over the run, and over its busy span (first to last nonzero sample)."""
        busy = [i for i, v in enumerate(self.samples) if v]
        if not busy:
            return "-"
        span = self.samples[busy[0] : busy[-1] + 1]
        return f"{statistics.mean(self.samples):.0f}% ({statistics.mean(span):.0f}% busy span)"


def from_markers(run_dir: Path) -> tuple[float, str]:
    """The block jobs' wall seconds, summed, and the most GPU memory (MB) one recorded, from
    the done-markers of the run in ``run_dir``."""
    markers = [DoneMarker.read(p) for p in (run_dir / ".chunkflow" / "blocks").glob("*/*.json")]
    peaks = [m.ran_on["peak_gpu_memory_mb"] for m in markers if "peak_gpu_memory_mb" in m.ran_on]
    return sum(m.seconds for m in markers), f"{max(peaks):.0f}" if peaks else "-"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--block-size",
        type=int,
        nargs=3,
        action="append",
        metavar=("Z", "Y", "X"),
        help="a block size to run (repeat for several; default 32 256 256 and 64 512 512)",
    )
    parser.add_argument("--cores", type=int, default=1, help="snakemake --cores")
    parser.add_argument(
        "--model",
        choices=["demo", "unet"],
        default="demo",
        help="the demo net, or the 3D U-Net of benchmarks/unet.py (random weights)",
    )
    parser.add_argument("--threads", type=int, default=1, help="inference.threads per job")
    parser.add_argument("--device", default="cpu", help="inference.device: cpu, cuda or auto")
    parser.add_argument(
        "--precision", choices=["float32", "float16", "bfloat16"], default="float32"
    )
    parser.add_argument("--width", type=int, nargs=3, default=[16, 32, 64], help="U-Net widths")
    parser.add_argument("--patch", type=int, nargs=3, default=[20, 192, 192], help="U-Net patch")
    parser.add_argument("--batch-size", type=int, default=1, help="U-Net inference.batch_size")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=list(DEMO_SHAPE), help="the volume's z y x"
    )
    args = parser.parse_args()
    block_sizes = args.block_size or [[32, 256, 256], [64, 512, 512]]
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the block jobs do
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, snakemake --cores {args.cores}, {args.threads} thread(s) per job"
    )
    model = "the demo net"
    if args.model == "unet":
        model = (
            f"U-Net width {tuple(args.width)}, {parameter_count(UNet3D(width=tuple(args.width))):,}"
            f" parameters, patches {'x'.join(map(str, args.patch))}, batch {args.batch_size}"
        )
    print(
        f"volume: {'x'.join(map(str, args.shape))}, {model}, device {args.device}, {args.precision}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        write_demo(run_dir / "resources" / "demo", tuple(args.shape))
        print(
            f"{'block size':>14} {'piece size':>14} {'jobs':>5} {'wall s':>8} {'forward s':>10} "
            f"{'forward/wall':>12} {'forward/jobs':>12} {'Mvoxel/s':>9} {'GPU MB':>7}  "
            "GPU utilisation"
        )
        voxels = int(np.prod(args.shape))
        for block_size in block_sizes:
            config = demo_config(run_dir, block_size, args)
            with GpuUtilisation() as utilisation:
                wall = workflow_seconds(run_dir, config, args.cores)
            jobs, memory = from_markers(run_dir)
            forward = forward_seconds(config)
            plan = make_plan(config_mod.parse(config))
            sizes = ["x".join(map(str, s)) for s in (block_size, plan.piece_size)]
            print(
                f"{sizes[0]:>14} {sizes[1]:>14} {len(plan.grid):>5} {wall:>8.2f} {forward:>10.2f} "
                f"{forward / wall:>12.2f} {forward / jobs:>12.2f} {voxels / wall / 1e6:>9.2f} "
                f"{memory:>7}  "
                f"{utilisation.summary()}"
            )


if __name__ == "__main__":
    main()
