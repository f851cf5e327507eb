"""Engine overhead and memory, measured side by side in one run.

For each model: the time chunkflow's engine takes to infer one block (patch extraction, batched
forward passes, blending into the block, division) divided by the time of the bare batched
forward passes of exactly the same patches (same batch size, device, precision); and the peak
memory growth while inferring that block divided by (input chunk + channels x block) as float32.

    .venv/bin/python benchmarks/engine_overhead.py [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

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
from chunkflow.inference import Predictor  # noqa: E402
from chunkflow.placement import PatchGeometry, exact_patches  # noqa: E402

# name: (model factory, input patch, output patch, overlap, block, batch size)
CASES = {
    "demo net": (boundary_net, (20, 134, 134), (16, 128, 128), (4, 32, 32), (32, 256, 256), 4),
    "3D U-Net": (
        lambda: UNet3D(width=(32, 64, 128)),
        (16, 96, 96),
        (16, 96, 96),
        (4, 24, 24),
        (28, 168, 168),
        2,
    ),
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str, device: torch.device, repeats: int) -> dict:
    factory, pi, po, overlap, block_shape, batch = CASES[name]
    model = factory().eval().to(device)
    geometry = PatchGeometry(pi, po, overlap)
    block = Box.from_shape((0, 0, 0), block_shape)
    patches = exact_patches(block, block, geometry)
    chunk_box = geometry.input_box(Box(patches[0].start, patches[-1].stop))
    rng = np.random.default_rng(0)
    chunk = rng.random((1, *chunk_box.shape), dtype=np.float32)
    predictor = Predictor(model, geometry, "bump", batch, device)

    batches = patch_batches(chunk, chunk_box, patches, geometry, batch, device)

    def bare() -> None:
        with torch.inference_mode():
            for b in batches:
                model(b)
        sync(device)

    def engine() -> None:
        predictor.predict(chunk, chunk_box, patches, block)
        sync(device)

    bare()  # warm-up (allocator, kernels)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = _peak_rss_mb()
    engine()
    rss_growth = _peak_rss_mb() - rss_before
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    times = {"engine": [], "bare": []}
    for _ in range(repeats):  # interleaved, so drifting machine load hits both alike
        for label, fn in (("engine", engine), ("bare", bare)):
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    channels = 3
    data_mb = (chunk.nbytes + channels * block.size * 4) / 2**20
    engine_s, bare_s = statistics.median(times["engine"]), statistics.median(times["bare"])
    return {
        "model": name,
        "params": parameter_count(model),
        "patches": len(patches),
        "engine_s": engine_s,
        "bare_s": bare_s,
        "overhead": engine_s / bare_s,
        "data_mb": data_mb,
        "rss_growth_mb": rss_growth,
        "gpu_peak_mb": gpu_peak,
    }


def main() -> None:
    args, device = parse_args(__doc__)
    print(machine(device))
    print(
        f"{'model':10} {'params':>9} {'patches':>7} {'engine s':>9} {'bare s':>8} {'overhead':>8} {'data MB':>8} {'RSS+ MB':>8} {'RSS+/data':>9} {'GPU peak MB':>11}"
    )
    for name in CASES:
        r = measure(name, device, args.repeats)
        gpu_peak = f"{r['gpu_peak_mb']:.0f}" if r["gpu_peak_mb"] is not None else "-"
        print(
            f"{r['model']:10} {r['params']:>9,} {r['patches']:>7} {r['engine_s']:>9.3f} {r['bare_s']:>8.3f} "
            f"{r['overhead']:>8.3f} {r['data_mb']:>8.1f} {r['rss_growth_mb']:>8.1f} "
            f"{r['rss_growth_mb'] / r['data_mb']:>9.2f} {gpu_peak:>11}"
        )


if __name__ == "__main__":
    main()
