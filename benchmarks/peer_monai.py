"""chunkflow's engine against MONAI's ``sliding_window_inference``, side by side in one run.

The same volume (in memory), model, patch size, overlap, batch size and device go through both;
both blend with constant weights (a plain average of the overlapping patches), so their outputs
must agree to float rounding. MONAI needs an output patch the size of its input patch, so the
demo net (valid convolutions) runs behind a wrapper that pads its input by the context (replicating the edge) that makes it "same".
Prints the median times, their ratio (chunkflow ÷ MONAI), each one's time over that of the bare
batched forward passes of the same patches (measured interleaved with them), and the max
|difference|; then the ratio within each round (median and quartiles).

    .venv/bin/pip install monai   # benchmark-only dependency
    .venv/bin/python benchmarks/peer_monai.py [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from common import interleaved_rounds, machine, paired_ratio, parse_args, patch_batches  # noqa: E402
from unet import UNet3D  # noqa: E402

from chunkflow.app.demo import boundary_net, synthetic_em  # noqa: E402
from chunkflow.engine.inference import Predictor  # noqa: E402
from chunkflow.geometry.boxes import Box  # noqa: E402
from chunkflow.geometry.placement import PatchGeometry, exact_patches  # noqa: E402


class SamePadded(nn.Module):
    """A valid-convolution net made "same": the input is edge-padded by its context first."""

    def __init__(self, net: nn.Module, context: tuple[int, int, int]) -> None:
        super().__init__()
        self.net = net
        z, y, x = context
        self.pad = (x, x, y, y, z, z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(nn.functional.pad(x, self.pad, mode="replicate"))


# name: (model factory, volume shape, patch, overlap in voxels, batch size)
CASES = {
    "demo net": (
        lambda: SamePadded(boundary_net(), (2, 3, 3)),
        (64, 512, 512),
        (16, 128, 128),
        (4, 32, 32),
        4,
    ),
    "3D U-Net": (
        lambda: UNet3D(width=(32, 64, 128)),
        (16, 168, 168),
        (16, 96, 96),
        (4, 24, 24),
        2,
    ),
}


def measure(name: str, device: torch.device, repeats: int) -> dict:
    from monai.inferers import sliding_window_inference

    factory, shape, patch, overlap, batch = CASES[name]
    model = factory().eval().to(device)
    volume = synthetic_em(shape).astype(np.float32) / 255
    whole = Box.from_shape((0, 0, 0), shape)
    geometry = PatchGeometry(patch, patch, overlap)
    patches = exact_patches(whole, whole, geometry)
    predictor = Predictor(model, geometry, "constant", batch, device)
    fraction = [o / p for o, p in zip(overlap, patch, strict=True)]
    tensor = torch.from_numpy(volume)[None, None]

    def ours() -> np.ndarray:
        return predictor.predict(volume, whole, patches, whole)

    def monai() -> np.ndarray:
        with torch.inference_mode():
            out = sliding_window_inference(
                tensor,
                patch,
                batch,
                model,
                overlap=fraction,
                mode="constant",
                device=device,
                sw_device=device,
            )
        return out[0].cpu().numpy()

    batches = patch_batches(volume, whole, patches, geometry, batch, device)

    def bare() -> None:
        with torch.inference_mode():
            for inputs in batches:
                model(inputs)

    difference = float(np.abs(ours() - monai()).max())
    runs = {"chunkflow": ours, "monai": monai, "bare": bare}
    times = interleaved_rounds(runs, repeats, device)
    ours_s, monai_s, bare_s = (statistics.median(t) for t in times.values())
    return {
        "model": name,
        "shape": shape,
        "patches": len(patches),
        "ours": ours_s,
        "monai": monai_s,
        "bare": bare_s,
        "ratio": ours_s / monai_s,
        "paired_ratio": paired_ratio(times["chunkflow"], times["monai"]),
        "difference": difference,
    }


def main() -> None:
    args, device = parse_args(__doc__)
    import monai

    print(f"{machine(device)}, monai {monai.__version__}")
    print(
        f"{'model':10} {'volume':>14} {'patches':>7} {'chunkflow s':>11} {'monai s':>8} "
        f"{'ratio':>6} {'bare s':>7} {'chunkflow/bare':>14} {'monai/bare':>10} {'max |diff|':>10}"
    )
    for name in CASES:
        r = measure(name, device, args.repeats)
        shape = "x".join(map(str, r["shape"]))
        print(
            f"{r['model']:10} {shape:>14} {r['patches']:>7} {r['ours']:>11.3f} {r['monai']:>8.3f} "
            f"{r['ratio']:>6.3f} {r['bare']:>7.3f} {r['ours'] / r['bare']:>14.3f} "
            f"{r['monai'] / r['bare']:>10.3f} {r['difference']:>10.2e}"
        )
        print(f"  within each round: chunkflow / monai {r['paired_ratio']}")


if __name__ == "__main__":
    main()
