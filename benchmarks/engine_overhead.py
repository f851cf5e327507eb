"""Engine overhead and memory, measured side by side in one run.

Time: for each model and block position, the time chunkflow's engine takes to infer one block
(patch extraction, batched forward passes, blending into the block) divided by the time of the
bare batched forward passes of exactly the same patches (same batch size, device, precision),
interleaved, medians compared; the block's positions are listed in ``POSITIONS``. Beside them,
two floors. The floor: the bare forward passes plus copying each patch's output into a
block-sized array (no input cut out, no weights, no sums). With the cut: the same, but each
batch is first cut out of the chunk as the engine cuts it (and on CUDA the chunk goes to the
device and the block comes back, as in the engine): what an engine that cuts patches out of a
chunk and assembles a block out of their outputs pays, less the weights and the sums. Below
them, the same ratios taken within each round (median and quartiles), which cancel the load the
runs of one round shared. Then the bytes the engine moves outside the forward passes (cutting
inputs, zeroing, blending) timed at the machine's streaming rate (measured first): what that
traffic costs if none of it hits a cache, which is how it goes when forward passes stream larger
activations in between.

Memory: for each model, the peak memory of a fresh process that infers one (larger) block from a
chunk it holds, minus that of a fresh process that only runs the bare forward passes of as many
batches (the runtime, the weights and the network's activations: what any engine needs), divided
by (input chunk + channels x block) as float32. Host: peak RSS (VmHWM), once with glibc's
defaults (freed memory goes back to the system: RSS follows what is live) and once with glibc
keeping freed memory, as block jobs have it; GPU: torch's peak allocated bytes. Peak RSS depends
on how the heap happens to be laid out, which differs from process to process, so each peak is
the median of ``--repeats`` processes, and the spread (max - min) is printed too. Beside it, the
host's counterpart of the GPU number, which the heap's layout does not move: the peak of the bytes
malloc holds for live allocations (glibc's ``mallinfo2``: heap in use + mmapped blocks), read
before and after every torch operation.

    .venv/bin/python benchmarks/engine_overhead.py [--device cpu|cuda] [--repeats 3] [--no-memory]
        [--models "demo net" "3D U-Net"] [--positions single first interior]
"""

from __future__ import annotations

import ctypes
import multiprocessing
import re
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).parent))

from common import (  # noqa: E402
    interleaved_rounds,
    machine,
    paired_ratio,
    parse_args,
    patch_batches,
    sync,
)
from unet import UNet3D, parameter_count  # noqa: E402

from chunkflow.app.demo import boundary_net  # noqa: E402
from chunkflow.engine.inference import (  # noqa: E402
    Predictor,
    chunk_on_device,
    keep_freed_memory,
    patch_inputs,
)
from chunkflow.geometry.boxes import Box  # noqa: E402
from chunkflow.geometry.placement import PatchGeometry, exact_patches  # noqa: E402

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


# where the timed block lies: (the ROI's size in blocks, the block's index)
POSITIONS = {
    # the ROI is this one block: every patch output lies inside it, and the last patch along an
    # axis is shifted back onto its neighbour (the most blending per forward pass)
    "single": ((1, 1, 1), (0, 0, 0)),
    # the first block of a 2 x 2 x 2 grid, like each block of the demo run
    "first": ((2, 2, 2), (0, 0, 0)),
    # a block inside a 4 x 4 x 4 grid: what nearly every block of a large run is
    "interior": ((4, 4, 4), (1, 1, 1)),
}


class Case:
    """One model at one block: its predictor, patches and a random input chunk. The block whose
    memory is measured is a single-block ROI."""

    def __init__(
        self, name: str, device: torch.device, position: str = "single", for_memory: bool = False
    ) -> None:
        factory, pi, po, overlap, batch, self.channels, timed, measured = CASES[name]
        shape = measured if for_memory else timed
        grid, index = POSITIONS[position]
        self.model = factory().eval().to(device)
        self.geometry = PatchGeometry(pi, po, overlap)
        roi = Box.from_shape((0, 0, 0), [n * b for n, b in zip(grid, shape, strict=True)])
        self.block = Box.from_shape([i * b for i, b in zip(index, shape, strict=True)], shape)
        self.patches = exact_patches(roi, self.block, self.geometry)
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

    def traffic_mb(self) -> float:
        """The bytes the engine moves outside the forward passes when nothing stays in a cache:
        cutting the inputs out (read + write), zeroing the accumulator, and blending each patch
        (read its output, read and write the accumulator)."""
        inputs = sum(self.geometry.input_box(p).size for p in self.patches)
        blended = sum(p.intersect(self.block).size for p in self.patches)
        return 4 * (2 * inputs + self.channels * (self.block.size + 3 * blended)) / 2**20


def streaming_rate(device: torch.device, repeats: int) -> float:
    """The machine's pace (MB/s) at memory traffic that misses every cache: a streaming ``add_``
    (read two arrays, write one) over arrays far larger than any cache."""
    a, b = (torch.ones(2**25, device=device) for _ in range(2))
    seconds = interleaved_rounds({"add": lambda: a.add_(b)}, repeats, device)["add"]
    return 3 * a.numel() * 4 / 2**20 / statistics.median(seconds)


def timing(name: str, position: str, device: torch.device, repeats: int) -> dict:
    case = Case(name, device, position)
    chunk = case.chunk()
    batch_inputs = patch_batches(
        chunk, case.chunk_box, case.patches, case.geometry, case.batch, device
    )
    block = torch.empty((case.channels, *case.block.shape), device=device)
    overlaps = [p.intersect(case.block) for p in case.patches]
    places = [  # (in the patch, in the block) for each patch
        ((slice(None), *o.slices(p.start)), (slice(None), *o.slices(case.block.start)))
        for p, o in zip(case.patches, overlaps, strict=True)
    ]

    buffer = torch.empty_like(batch_inputs[0])

    def bare(copy: bool = False, cut: bool = False) -> None:
        """``cut``: as the engine does, the chunk goes to the device, each batch's views are
        stacked into a reused buffer, and the block comes back to the host."""
        source = chunk_on_device(chunk, device) if cut else None
        with torch.inference_mode():
            for first, inputs in zip(range(0, len(places), case.batch), batch_inputs, strict=True):
                if cut:
                    group = case.patches[first : first + case.batch]
                    views = patch_inputs(source, case.chunk_box, group, case.geometry)
                    inputs = torch.stack(views, out=buffer[: len(group)])
                outputs = case.model(inputs)
                if copy:
                    where = places[first : first + case.batch]
                    for (src, dst), output in zip(where, outputs, strict=True):
                        block[dst].copy_(output[src])
        if cut:
            block.cpu()

    runs = {
        "engine": lambda: case.engine(chunk),
        "bare": bare,
        "floor": lambda: bare(copy=True),
        "cut_floor": lambda: bare(copy=True, cut=True),
    }
    times = interleaved_rounds(runs, repeats, device)
    return {
        "params": parameter_count(case.model),
        "patches": len(case.patches),
        "traffic_mb": case.traffic_mb(),
        **{f"{label}_s": statistics.median(t) for label, t in times.items()},
        "paired_overhead": paired_ratio(times["engine"], times["bare"]),
        "paired_floor": paired_ratio(times["floor"], times["bare"]),
        "paired_cut_floor": paired_ratio(times["cut_floor"], times["bare"]),
    }


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (malloc.h, glibc >= 2.33)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


class HeapPeak(TorchDispatchMode):
    """The peak, above its start, of the bytes glibc's malloc holds for live allocations (heap
    chunks in use + mmapped blocks, all arenas), read before and after every torch operation.
    Unlike RSS, it does not depend on how the heap is laid out; what an operation allocates and
    frees within itself is not seen. ``peak_mb`` is None where malloc is not glibc's (no
    ``mallinfo2``, or it reports nothing in use: another allocator preloaded)."""

    def __init__(self) -> None:
        super().__init__()
        try:
            self._mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
            self._mallinfo2.restype = _MallInfo2
        except (OSError, AttributeError):
            self._mallinfo2 = None
        self._peak = 0
        with self:  # the first dispatch imports torch's Python dispatch machinery (~20 MB)
            torch.zeros(1)
        self._start = self._peak = self._in_use()
        if self._start == 0:
            self._mallinfo2 = None

    def _in_use(self) -> int:
        if self._mallinfo2 is None:
            return 0
        info = self._mallinfo2()
        return info.uordblks + info.hblkhd

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._peak = max(self._peak, self._in_use())
        out = func(*args, **(kwargs or {}))
        self._peak = max(self._peak, self._in_use())
        return out

    @property
    def peak_mb(self) -> float | None:
        return None if self._mallinfo2 is None else (self._peak - self._start) / 2**20


def peak_memory(name: str, device_name: str, threads: int, engine: bool, keep: bool) -> dict:
    """In a fresh process, the peak host RSS, heap in use and GPU memory (MB) of inferring the
    memory block (``engine``), or of only the bare forward passes of as many batches (the
    baseline); ``keep``: with glibc keeping freed memory, as block jobs have it."""
    torch.set_num_threads(threads)
    if keep:
        keep_freed_memory()
    device = torch.device(device_name)
    case = Case(name, device, for_memory=True)
    with HeapPeak() as heap:
        if engine:
            case.engine(case.chunk())
        else:
            batch = torch.zeros((case.batch, 1, *case.geometry.input_size), device=device)
            with torch.inference_mode():
                for _ in range(0, len(case.patches), case.batch):
                    case.model(batch)
            sync(device)
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return {
        "block": case.block.shape,
        "data_mb": case.data_mb(),
        "rss_mb": _peak_rss_mb(),
        "heap_mb": heap.peak_mb,
        "gpu_mb": gpu,
    }


def _peak_rss_mb() -> float:
    """This process's peak RSS. Not ``ru_maxrss``: on Linux that survives ``exec``, so a spawned
    worker would report the larger RSS of the process that forked it."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def memory(name: str, device: torch.device, repeats: int, keep: bool) -> dict:
    """The engine's peak memory above the bare forward passes': medians over ``repeats`` fresh
    processes of each kind, interleaved. Peak RSS depends on how the heap happens to be laid out,
    which differs from process to process; the spreads (max - min) show by how much."""
    spawn = multiprocessing.get_context("spawn")
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(repeats):
        for engine in (False, True):
            with spawn.Pool(1, maxtasksperchild=1) as pool:
                args = (name, str(device), torch.get_num_threads(), engine, keep)
                runs[engine].append(pool.apply(peak_memory, args))

    def median(engine: bool, key: str) -> float:
        return statistics.median(r[key] for r in runs[engine])

    def spread(engine: bool, key: str) -> float:
        values = [r[key] for r in runs[engine]]
        return max(values) - min(values)

    def measured(key: str) -> bool:  # GPU and heap numbers exist only on some machines
        return runs[True][0][key] is not None

    def difference(key: str) -> float | None:
        return median(True, key) - median(False, key) if measured(key) else None

    def spreads(key: str) -> tuple[float, float] | None:
        return (spread(False, key), spread(True, key)) if measured(key) else None

    return {
        **runs[True][0],
        "rss_mb": difference("rss_mb"),
        "spreads": spreads("rss_mb"),
        "heap_mb": difference("heap_mb"),
        "heap_spreads": spreads("heap_mb"),
        "gpu_mb": difference("gpu_mb"),
    }


def main() -> None:
    args, device = parse_args(
        __doc__,
        {"--no-memory": "time only, skip the memory runs"},
        {"--models": list(CASES), "--positions": list(POSITIONS)},
    )
    print(machine(device))
    rate = streaming_rate(device, args.repeats)
    print(f"streaming rate (add_ over 2 x 128 MB): {rate / 1024:.1f} GB/s")
    for name in args.models:
        for position in args.positions:
            t = timing(name, position, device, args.repeats)
            print(
                f"{name}, {position} block: {t['params']:,} parameters, {t['patches']} patches;"
                f" engine {t['engine_s']:.3f} s, bare forward passes {t['bare_s']:.3f} s:"
                f" overhead {t['engine_s'] / t['bare_s']:.3f}; floor {t['floor_s']:.3f} s:"
                f" {t['floor_s'] / t['bare_s']:.3f}; with the cut {t['cut_floor_s']:.3f} s:"
                f" {t['cut_floor_s'] / t['bare_s']:.3f}"
            )
            print(
                f"  within each round: overhead {t['paired_overhead']}, floor {t['paired_floor']},"
                f" with the cut {t['paired_cut_floor']}"
            )
            traffic_s = t["traffic_mb"] / rate
            print(
                f"  the engine's memory traffic outside the forward passes: {t['traffic_mb']:.0f} MB,"
                f" {1000 * traffic_s:.1f} ms at the streaming rate:"
                f" {100 * traffic_s / t['bare_s']:.2f} % of the bare passes"
            )
        for keep in () if args.no_memory else (False, True):
            m = memory(name, device, args.repeats, keep)
            allocator = "glibc keeping freed memory" if keep else "glibc defaults"
            extra = ""
            if m["heap_mb"] is not None:
                extra += (
                    f"; host heap+ {m['heap_mb']:.1f} MB, heap+/data "
                    f"{m['heap_mb'] / m['data_mb']:.2f} (spread baseline "
                    f"{m['heap_spreads'][0]:.1f} MB, engine {m['heap_spreads'][1]:.1f} MB)"
                )
            if m["gpu_mb"] is not None:
                extra += f"; GPU+ {m['gpu_mb']:.1f} MB, GPU+/data {m['gpu_mb'] / m['data_mb']:.2f}"
            print(
                f"{name}, memory, {allocator}: block {'x'.join(map(str, m['block']))}, data "
                f"{m['data_mb']:.1f} MB, RSS+ {m['rss_mb']:.1f} MB, RSS+/data "
                f"{m['rss_mb'] / m['data_mb']:.2f} (RSS spread baseline {m['spreads'][0]:.0f} MB, "
                f"engine {m['spreads'][1]:.0f} MB){extra}"
            )


if __name__ == "__main__":
    main()
