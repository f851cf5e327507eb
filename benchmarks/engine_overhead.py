"""Engine overhead and memory, measured side by side in one run.

Time: for each model, the time chunkflow's engine takes to infer one block (patch extraction,
batched forward passes, blending into the block, normalisation) divided by the time of the bare
batched forward passes of exactly the same patches (same batch size, device, precision),
interleaved, medians compared.

Memory: for each model, the peak memory of a fresh process that infers one (larger) block from a
chunk it holds, minus the peak of a fresh process that only runs the model's forward pass on one
batch (the runtime, the weights and the network's activations: what any engine needs), divided
by (input chunk + channels x block) as float32. Host: peak RSS (ru_maxrss); GPU: torch's peak
allocated bytes.

    .venv/bin/python benchmarks/engine_overhead.py [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import machine, parse_args, patch_batches, sync  # noqa: E402
from unet import UNet3D, parameter_count  # noqa: E402

from chunkflow.demo import boundary_net  # noqa: E402
from chunkflow.geometry import Box  # noqa: E402
from chunkflow.inference import Predictor, keep_freed_memory  # noqa: E402
from chunkflow.placement import PatchGeometry, exact_patches  # noqa: E402

# name: (model factory, input patch, output patch, overlap, batch size, output channels,
#        block timed, block whose memory is measured)
CASES = {
    "demo net": (
        boundary_net,
        (20, 134, 134),
        (16, 128, 128),
        (4, 32, 32),
        4,
        3,
        (32, 256, 256),
        (64, 512, 512),
    ),
    "3D U-Net": (
        lambda: UNet3D(width=(32, 64, 128)),
        (16, 96, 96),
        (16, 96, 96),
        (4, 24, 24),
        2,
        3,
        (28, 168, 168),
        (32, 384, 384),
    ),
}


class Case:
    """One model at one block: its predictor, patches and a random input chunk."""

    def __init__(self, name: str, device: torch.device, for_memory: bool = False) -> None:
        factory, pi, po, overlap, batch, self.channels, timed, measured = CASES[name]
        block_shape = measured if for_memory else timed
        self.model = factory().eval().to(device)
        self.geometry = PatchGeometry(pi, po, overlap)
        self.block = Box.from_shape((0, 0, 0), block_shape)
        self.patches = exact_patches(self.block, self.block, self.geometry)
        self.chunk_box = self.geometry.input_box(Box(self.patches[0].start, self.patches[-1].stop))
        self.predictor = Predictor(
            self.model, self.geometry, "bump", batch, device, output_channels=self.channels
        )
        self.batch, self.device = batch, device

    def chunk(self) -> np.ndarray:
        return np.random.default_rng(0).random((1, *self.chunk_box.shape), dtype=np.float32)

    def engine(self, chunk: np.ndarray) -> None:
        self.predictor.predict(chunk, self.chunk_box, self.patches, self.block)
        sync(self.device)

    def data_mb(self) -> float:
        return (self.chunk_box.size + self.channels * self.block.size) * 4 / 2**20


def timing(name: str, device: torch.device, repeats: int) -> dict:
    case = Case(name, device)
    chunk = case.chunk()
    batches = patch_batches(chunk, case.chunk_box, case.patches, case.geometry, case.batch, device)

    def bare() -> None:
        with torch.inference_mode():
            for b in batches:
                case.model(b)
        sync(device)

    times: dict[str, list[float]] = {"engine": [], "bare": []}
    bare(), case.engine(chunk)  # warm-up (allocator, kernels)
    for _ in range(repeats):  # interleaved, so drifting machine load hits both alike
        for label, fn in (("engine", lambda: case.engine(chunk)), ("bare", bare)):
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    engine_s, bare_s = statistics.median(times["engine"]), statistics.median(times["bare"])
    return {
        "params": parameter_count(case.model),
        "patches": len(case.patches),
        "engine_s": engine_s,
        "bare_s": bare_s,
    }


def peak_memory(name: str, device_name: str, threads: int, engine: bool) -> dict:
    """Run in a fresh process: the peak host RSS and GPU memory of inferring the memory block
    (``engine``), or of only the model's forward pass of one batch (the baseline)."""
    torch.set_num_threads(threads)
    keep_freed_memory()
    device = torch.device(device_name)
    case = Case(name, device, for_memory=True)
    if engine:
        case.engine(case.chunk())
    else:
        batch = torch.zeros((case.batch, 1, *case.geometry.input_size), device=device)
        with torch.inference_mode():
            for _ in range(2):
                case.model(batch)
        sync(device)
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"block": case.block.shape, "data_mb": case.data_mb(), "rss_mb": rss, "gpu_mb": gpu}


def memory(name: str, device: torch.device) -> dict:
    """Peak memory of the engine on the memory block above that of the bare forward pass."""
    spawn = multiprocessing.get_context("spawn")
    args = (name, str(device), torch.get_num_threads())
    with spawn.Pool(1, maxtasksperchild=1) as pool:
        base = pool.apply(peak_memory, (*args, False))
    with spawn.Pool(1, maxtasksperchild=1) as pool:
        used = pool.apply(peak_memory, (*args, True))
    gpu = None if used["gpu_mb"] is None else used["gpu_mb"] - base["gpu_mb"]
    return {**used, "rss_mb": used["rss_mb"] - base["rss_mb"], "gpu_mb": gpu}


def main() -> None:
    args, device = parse_args(__doc__)
    print(machine(device))
    print(
        f"{'model':10} {'params':>9} {'patches':>7} {'engine s':>9} {'bare s':>8} {'overhead':>8} "
        f"{'memory block':>13} {'data MB':>8} {'RSS+ MB':>8} {'RSS+/data':>9} {'GPU+ MB':>8} "
        f"{'GPU+/data':>9}"
    )
    for name in CASES:
        t = timing(name, device, args.repeats)
        m = memory(name, device)
        gpu = "-" if m["gpu_mb"] is None else f"{m['gpu_mb']:.1f}"
        gpu_ratio = "-" if m["gpu_mb"] is None else f"{m['gpu_mb'] / m['data_mb']:.2f}"
        print(
            f"{name:10} {t['params']:>9,} {t['patches']:>7} {t['engine_s']:>9.3f} {t['bare_s']:>8.3f} "
            f"{t['engine_s'] / t['bare_s']:>8.3f} {'x'.join(map(str, m['block'])):>13} "
            f"{m['data_mb']:>8.1f} {m['rss_mb']:>8.1f} "
            f"{m['rss_mb'] / m['data_mb']:>9.2f} {gpu:>8} {gpu_ratio:>9}"
        )


if __name__ == "__main__":
    main()
