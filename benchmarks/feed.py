"""The feed: a block job's non-network path, with the network's cost removed.

A free model (one 1x1x1 convolution, 1 -> 3 channels, as issue 26 defines it; ``--sigmoid``: then a
sigmoid, as the runs before 2026-12-07 evening had it), patches without overlap or context, a
uint8 input (the demo volume tiled, zstd chunks of 32x256x256) and a 3-channel uint8 output with
the same chunks: what is left of a block job is reading, decoding, scaling, digests,
blending, conversion, encoding and writing. Three parts, in one run:

1. whole `chunkflow run-block` processes of a small and a large block (``--small``,
   ``--large``) for each of ``--threads`` (``inference.threads``): the marginal rate between the
   two sizes (start-up cancels out), in Mvoxel/s per job and per thread, and CPU seconds (user +
   system) per Gvoxel, marginal too; with ``--before DIR`` also the jobs of another checkout
   (its package on PYTHONPATH, e.g. a `git worktree` of an earlier commit), in the same rounds;
2. the floor: the same input read and the same output written by zarr alone (all threads), timed
   in the same rounds as part 1 (``--repeats`` rounds, each: every job, then the floor), so both
   see the same machine; ours ÷ the floor, of the medians and within each round; then the bare
   zstd decode and encode of the same chunks;
3. CPU seconds per Gvoxel by stage, each stage of one piece (``--piece``) done in this process
   with the functions the block job calls, its values on the host and on the device (as a
   block job keeps them on CUDA: ``chunkflow.engine.device_values``), with wall seconds beside
   (on CUDA a wait for the GPU can spin a core).

    .venv/bin/python benchmarks/feed.py [--small 32 256 256] [--large 128 1024 1024]
        [--piece 64 512 512] [--threads 1 2] [--repeats 3] [--device cpu|cuda] [--before DIR]
        [--sigmoid]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
import zarr
from streamed_block import write_volume

BIN = Path(sys.executable).parent
CHUNK = [32, 256, 256]
FREE_NET = """\
import torch
from torch import nn


def build_model():
    conv = nn.Conv3d(1, 3, 1)  # weights that keep a [0, 1] input inside [0, 1]: nothing clipped
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.9, 0.6, 0.3]).reshape(3, 1, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.05, 0.2, 0.35]))
    return conv
"""
SIGMOID_NET = """\
import torch
from torch import nn


def build_model():
    return nn.Sequential(nn.Conv3d(1, 3, 1), nn.Sigmoid())
"""


def make_config(
    root: Path, name: str, block: list[int], threads: int, device: str, env: dict[str, str]
) -> Path:
    """A config of the free model over ``root/raw.zarr``, one block of ``block``; its output
    made by `chunkflow create-output` run with ``env``."""
    config = {
        "input": {"path": str(root / "raw.zarr")},
        "output": {"path": str(root / f"{name}.zarr"), "dtype": "uint8", "chunk_size": CHUNK},
        "block_size": block,
        "model": {
            "path": str(root / "free.py"),
            "weights": str(root / "free.pt"),
            "input_patch_size": CHUNK,
            "output_patch_size": CHUNK,
            "output_channels": 3,
        },
        "inference": {"overlap": [0, 0, 0], "batch_size": 1, "device": device, "threads": threads},
        "state_dir": str(root / f"state_{name}"),
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    subprocess.run(
        [str(BIN / "chunkflow"), "create-output", "--config", str(path)],
        check=True,
        capture_output=True,
        env=env,
    )
    return path


def run_block(config: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one `chunkflow run-block` of block z0_y0_x0,
    run with ``env``, its state cleared first."""
    state = yaml.safe_load(config.read_text())["state_dir"]
    subprocess.run(["rm", "-rf", state], check=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "chunkflow"), "run-block", "--config", str(config), "z0_y0_x0"],
        check=True,
        capture_output=True,
        env=env,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def marginal(small: int, large: int, small_s: float, large_s: float) -> float:
    """Mvoxel/s between a job of ``small`` voxels taking ``small_s`` and one of ``large``."""
    return (large - small) / (large_s - small_s) / 1e6


@dataclass
class Jobs:
    """One checkout's block jobs at one thread count: a small and a large block, and each
    round's (wall, CPU) seconds of both."""

    checkout: str  # "this", or the --before checkout's path
    threads: int
    env: dict[str, str]
    configs: list[Path]
    runs: list[list[tuple[float, float]]] = field(default_factory=lambda: [[], []])

    def one_round(self) -> None:
        for config, runs in zip(self.configs, self.runs, strict=True):
            runs.append(run_block(config, self.env))

    def rates(self, small: int, large: int) -> list[float]:
        """The marginal Mvoxel/s of each round."""
        return [marginal(small, large, sm[0], lg[0]) for sm, lg in zip(*self.runs, strict=True)]


def whole_jobs(root: Path, args: argparse.Namespace) -> None:
    """Parts 1 and 2, in rounds: each round runs the small and the large block job of each
    checkout (this one, and ``--before``) at each thread count, then the floor (``Floor``)."""
    small, large = int(np.prod(args.small)), int(np.prod(args.large))
    checkouts = {"this": dict(os.environ)}
    if args.before:
        checkouts[str(args.before)] = {**os.environ, "PYTHONPATH": str(args.before)}
    jobs = [
        Jobs(
            checkout,
            threads,
            env,
            [
                make_config(root, f"{n}{threads}_{k}", b, threads, args.device, env)
                for n, b in (("small", args.small), ("large", args.large))
            ],
        )
        for k, (checkout, env) in enumerate(checkouts.items())
        for threads in args.threads
    ]
    floor_runs: list[tuple[float, float]] = []
    floor = None
    for _ in range(args.repeats):
        for job in jobs:
            job.one_round()
        floor = floor or Floor(root, args.large, jobs[0].configs[1])
        floor_runs.append(floor.one_round())
    print(f"1. whole run-block processes, {args.small} and {args.large} blocks, medians of")
    print(f"   {args.repeats} rounds (each round: every job, then the floor of part 2); marginal")
    print("   between the two sizes:")
    print(
        f"   {'checkout':>8} {'threads':>7} {'small s':>8} {'large s':>8} {'Mvoxel/s':>9} "
        f"{'per thread':>10} {'CPU s/Gvoxel':>12}"
    )
    rates = {}
    for job in jobs:
        wall = [statistics.median(w for w, _ in r) for r in job.runs]
        cpu = [statistics.median(c for _, c in r) for r in job.runs]
        rate = marginal(small, large, *wall)
        cpu_per_gvox = (cpu[1] - cpu[0]) / ((large - small) / 1e9)
        rates[job.checkout, job.threads] = rate
        name = job.checkout if job.checkout == "this" else "before"
        print(
            f"   {name:>8} {job.threads:>7} {wall[0]:>8.2f} {wall[1]:>8.2f} {rate:>9.1f} "
            f"{rate / job.threads:>10.1f} {cpu_per_gvox:>12.1f}"
        )
    assert floor is not None
    zarr_rate = floor.report(floor_runs)
    floors = [large / (r + w) / 1e6 for r, w in floor_runs]
    print()
    for checkout in checkouts:
        job = max(
            (j for j in jobs if j.checkout == checkout), key=lambda j: rates[checkout, j.threads]
        )
        rate = rates[checkout, job.threads]
        within = sorted(o / f for o, f in zip(job.rates(small, large), floors, strict=True))
        name = "this checkout" if checkout == "this" else f"before ({checkout})"
        print(
            f"{name}: {rate:.1f} Mvoxel/s ({job.threads} thread(s), its best) ÷ zarr alone: "
            f"{rate / zarr_rate:.2f}; within rounds: {', '.join(f'{x:.2f}' for x in within)}"
        )


def stages(root: Path, piece: list[int], rounds: int, device: str) -> None:
    """Part 3: each stage of one piece, CPU seconds per Gvoxel (process time: every thread) and
    wall seconds per Gvoxel, medians of ``rounds`` (the first round also pays for fresh memory,
    later ones reuse it, as a block job's later pieces do); the piece's values on the host, then
    on the device."""
    import torch

    from chunkflow import config as config_mod
    from chunkflow.engine.device_values import DeviceValues
    from chunkflow.geometry.boxes import Box
    from chunkflow.geometry.pieces import PieceLayout
    from chunkflow.job import piece_state
    from chunkflow.job.block_job import BlockRunner
    from chunkflow.job.piece_values import HostValues
    from chunkflow.plan.run_plan import make_plan
    from chunkflow.state.run_state import RunState
    from chunkflow.volumes import open_input, open_output

    config = make_config(root, "stages", piece, 2, device, dict(os.environ))
    plan = make_plan(config_mod.parse(yaml.safe_load(config.read_text())))
    torch.set_num_threads(2)
    volume, output = open_input(plan.settings.input), open_output(plan.settings.output, "r+")
    box = Box((0, 0, 0), tuple(piece))
    runner = BlockRunner(plan, RunState.of(plan))  # the model loaded as a block job loads it
    block = plan.blocks[0]
    layout = PieceLayout(block, plan.piece_size, plan.patch_intervals(block))
    patches = plan.patches(block)
    check = lambda values: runner._check_finite(layout, layout.pieces[0], values)  # noqa: E731
    host = HostValues(plan, runner.predictor)
    on_device = DeviceValues(runner.predictor, "auto", "uint8")
    gvox = int(np.prod(piece)) / 1e9
    times: dict[str, list[tuple[float, float]]] = {}

    def timed(name: str, work):
        started, wall = time.process_time(), time.perf_counter()
        value = work()
        if runner.predictor.device.type == "cuda":
            torch.cuda.synchronize()
        cpu, wall = time.process_time() - started, time.perf_counter() - wall
        times.setdefault(name, []).append((cpu / gvox, wall / gvox))
        return value

    def one_round() -> None:
        raw = timed("read + decode input", lambda: volume.read(box))
        timed("input digest (sha256)", lambda: piece_state.input_digest(raw))
        scaled = timed("host: scale to float32", lambda: host.network_input(raw))
        summed = timed(
            "host: to device, forward, blend, back",
            lambda: host.predict(scaled, box, patches, box, layout.intervals),
        )
        converted = timed("host: check, convert to uint8", lambda: host.output(summed, check))
        sent = timed("device: send as stored, scale", lambda: on_device.network_input(raw))
        total = timed(
            "device: forward, blend",
            lambda: on_device.predict(sent, box, patches, box, layout.intervals),
        )
        back = timed(
            "device: check, convert, back",
            lambda: on_device.output(on_device.hand_over(total), check),
        )
        assert back.tobytes() == converted.tobytes()  # the same bytes either way
        timed("output sha256", lambda: piece_state.output_digest(converted))
        timed("encode + write output", lambda: output.write(box, converted))

    for _ in range(rounds):
        one_round()
    medians = {
        name: tuple(statistics.median(t[i] for t in seconds) for i in (0, 1))
        for name, seconds in times.items()
    }
    print(
        f"\n3. one piece {piece} on {runner.predictor.device}, 2 torch threads, medians of "
        f"{rounds}: seconds per Gvoxel by stage"
    )
    print(f"   {'stage':38s} {'CPU':>7} {'wall':>7}")
    for name, (cpu, wall) in medians.items():
        print(f"   {name:38s} {cpu:7.1f} {wall:7.1f}")
    shared = sum(cpu for name, (cpu, _) in medians.items() if ":" not in name)
    for side, forward in (
        ("host", "host: to device, forward, blend, back"),
        ("device", "device: forward, blend"),
    ):
        cpu = shared + sum(c for name, (c, _) in medians.items() if name.startswith(f"{side}:"))
        print(
            f"   values on the {side}: CPU {cpu:.1f} s/Gvoxel, all but the forward pass "
            f"{cpu - medians[forward][0]:.1f}"
        )


class Floor:
    """Part 2: zarr alone reads the input and writes the values our large block job wrote (read
    back from its output first, untimed) into an array made as ours is (the same chunks and
    codecs), with all threads; then the bare codec on the same chunks."""

    def __init__(self, root: Path, block: list[int], config: Path) -> None:
        from chunkflow.volumes.zarr_volume import ZarrVolume, create_array

        self.raw = zarr.open_array(str(root / "raw.zarr"), mode="r")
        ours = ZarrVolume(yaml.safe_load(config.read_text())["output"]["path"])
        create_array(str(root / "floor.zarr"), ours.info)
        self.out = zarr.open_array(str(root / "floor.zarr"), mode="r+")
        self.block = block
        self.region = tuple(slice(0, b) for b in block)
        self.values = ours.array[(slice(None), *self.region)]

    def one_round(self) -> tuple[float, float]:
        """Seconds to read the input and to write the output, once."""
        started = time.perf_counter()
        self.raw[self.region]
        read = time.perf_counter() - started
        started = time.perf_counter()
        self.out[(slice(None), *self.region)] = self.values
        return read, time.perf_counter() - started

    def report(self, rounds: list[tuple[float, float]]) -> float:
        """Print the floor's rates (medians of ``rounds``) and the bare codec's; return zarr's
        Mvoxel/s (read + write)."""
        read = statistics.median(r for r, _ in rounds)
        write = statistics.median(w for _, w in rounds)
        voxels = int(np.prod(self.block))
        rate = voxels / (read + write) / 1e6
        print(
            f"\n2. the floor, block {self.block}: zarr alone ({zarr.__version__}, all threads), "
            f"medians of {len(rounds)} rounds"
        )
        print(f"   read + decode input  {voxels / read / 1e6:8.1f} Mvoxel/s")
        print(f"   encode + write output (3 x uint8) {voxels / write / 1e6:8.1f} Mvoxel/s")
        print(f"   both: {rate:.1f} Mvoxel/s")
        self.bare_codec()
        return rate

    def bare_codec(self) -> None:
        """zstd alone on one core: an output chunk at our level and at zarr's default."""
        import numcodecs

        chunk = np.ascontiguousarray(self.values[:, : CHUNK[0], : CHUNK[1], : CHUNK[2]]).tobytes()
        ours = self.out.compressors[0].level
        print(
            f"   zstd alone, one core, an output chunk (3 x {CHUNK} uint8); ours is level {ours}:"
        )
        for level in sorted({ours, 3}):  # 3: zarr's default
            codec = numcodecs.Zstd(level=level)
            encoded = codec.encode(chunk)
            reps = 20
            started = time.process_time()
            for _ in range(reps):
                codec.decode(encoded)
            decode = len(chunk) * reps / (time.process_time() - started) / 1e6
            started = time.process_time()
            for _ in range(reps):
                codec.encode(chunk)
            encode = len(chunk) * reps / (time.process_time() - started) / 1e6
            print(
                f"   level {level}: decode {decode:.0f} MB/s, encode {encode:.0f} MB/s, ratio "
                f"{len(chunk) / len(encoded):.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, nargs=3, default=[32, 256, 256])
    parser.add_argument("--large", type=int, nargs=3, default=[128, 1024, 1024])
    parser.add_argument("--piece", type=int, nargs=3, default=[64, 512, 512])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--before", type=Path, help="another checkout whose jobs run in the same rounds"
    )
    parser.add_argument("--sigmoid", action="store_true", help="the free model ends in a sigmoid")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        root = Path(tmp)
        write_volume(root / "raw.zarr", tuple(args.large))
        net = SIGMOID_NET if args.sigmoid else FREE_NET
        (root / "free.py").write_text(net)
        import torch

        namespace: dict = {}
        exec(net, namespace)
        torch.manual_seed(0)
        torch.save(namespace["build_model"]().state_dict(), root / "free.pt")
        whole_jobs(root, args)
        stages(root, args.piece, args.repeats, args.device)


if __name__ == "__main__":
    main()
