"""What the benchmarks share: the command line, the machine line, the bare batches, and a PATH
for Snakemake runs without SLURM."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from chunkflow.engine.inference import keep_freed_memory, patch_inputs
from chunkflow.geometry.boxes import Box
from chunkflow.geometry.placement import PatchGeometry


def parse_args(
    doc: str, flags: dict[str, str] | None = None, choices: dict[str, list[str]] | None = None
) -> tuple[argparse.Namespace, torch.device]:
    """``--device``, ``--repeats``, ``--threads`` (torch CPU threads, applied here), the script's
    own on/off ``flags`` (name: help text) and ``choices`` (name: the values; any of them may be
    given, all by default)."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    for name, help_text in (flags or {}).items():
        parser.add_argument(name, action="store_true", help=help_text)
    for name, values in (choices or {}).items():
        parser.add_argument(
            name, nargs="+", choices=values, default=values, help=f"any of {values} (default: all)"
        )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as a block job does
    return args, torch.device(args.device)


def machine(device: torch.device) -> str:
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "none"
    return (
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, GPU {gpu}, torch {torch.__version__}"
    )


def patch_batches(
    chunk: np.ndarray,
    chunk_box: Box,
    patches: list[Box],
    geometry: PatchGeometry,
    batch: int,
    device: torch.device,
) -> list[torch.Tensor]:
    """The network inputs of ``patches``, cut out of ``chunk`` ((c,) z, y, x) and batched, on
    ``device``: what the bare forward passes run, prepared before they are timed."""
    source = torch.from_numpy(chunk if chunk.ndim == 4 else chunk[None])
    return [
        torch.stack(patch_inputs(source, chunk_box, patches[i : i + batch], geometry)).to(device)
        for i in range(0, len(patches), batch)
    ]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved_rounds(
    runs: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Each run once to warm up (allocator, kernels), then ``repeats`` rounds of all of them in
    turn, so drifting machine load hits all alike: the seconds of each run, round by round."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeats):
        for label, fn in runs.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[label].append(time.perf_counter() - start)
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> str:
    """The ratios of two runs within each round (the load they shared cancels): median and
    quartiles, as text."""
    ratios = [n / d for n, d in zip(numerator, denominator, strict=True)]
    if len(ratios) < 2:
        return f"{ratios[0]:.3f}"
    low, median, high = statistics.quantiles(ratios, n=4)
    return f"{median:.3f} (quartiles {low:.3f}-{high:.3f})"


def path_without_slurm(folder: Path) -> str:
    """A PATH for Snakemake runs that need no SLURM: a stub `scontrol` (in ``folder/bin``), then
    this Python's bin, then the PATH. Snakemake imports every executor plugin, and the SLURM
    plugin runs `scontrol` at import: where a SLURM client has no controller, that waits 10 s."""
    stub = folder / "bin" / "scontrol"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    return os.pathsep.join([str(stub.parent), str(Path(sys.executable).parent), os.environ["PATH"]])
