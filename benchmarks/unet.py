"""A realistic residual 3D U-Net for benchmarks (random weights): anisotropic, 'same' convolutions.
Also a chunkflow model file: `model.path: benchmarks/unet.py` with `model.weights`.

Three levels (16, 32, 64 features by default), pooling (1, 2, 2) then (2, 2, 2), two residual
blocks per level: ``parameter_count(build_model())`` is 429,955 (end_to_end.py's U-Net);
``UNet3D(width=(32, 64, 128))``, engine_overhead.py's and peer_monai.py's, has 1,718,019.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()
        self.body = nn.Sequential(
            nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1)),
            nn.ELU(),
            nn.Conv3d(cout, cout, 3, padding=1),
            nn.ELU(),
            nn.Conv3d(cout, cout, 3, padding=1),
        )
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class UNet3D(nn.Module):
    def __init__(
        self, cin: int = 1, cout: int = 3, width: tuple[int, int, int] = (16, 32, 64)
    ) -> None:
        super().__init__()
        a, b, c = width
        self.enc1, self.enc2, self.bottom = ResBlock(cin, a), ResBlock(a, b), ResBlock(b, c)
        self.down1, self.down2 = nn.MaxPool3d((1, 2, 2)), nn.MaxPool3d(2)
        self.up2 = nn.ConvTranspose3d(c, b, 2, stride=2)
        self.up1 = nn.ConvTranspose3d(b, a, (1, 2, 2), stride=(1, 2, 2))
        self.dec2, self.dec1 = ResBlock(2 * b, b), ResBlock(2 * a, a)
        self.head = nn.Conv3d(a, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.down1(e1))
        m = self.bottom(self.down2(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return torch.sigmoid(self.head(d1))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model() -> nn.Module:
    """The network, for chunkflow's `.py` model files (``model.path`` = this file)."""
    return UNet3D()


MODEL_FILE = """\
import sys

sys.path.insert(0, {benchmarks!r})
from unet import UNet3D


def build_model():
    return UNet3D(width={width!r})
"""


def write_model(folder: Path, width: tuple[int, int, int]) -> tuple[Path, Path]:
    """A chunkflow model file of ``UNet3D(width=width)`` and its seeded random weights, in
    ``folder``: (``model.path``, ``model.weights``)."""
    net, weights = folder / "unet_net.py", folder / "unet.pth"
    net.write_text(MODEL_FILE.format(benchmarks=str(Path(__file__).parent), width=tuple(width)))
    torch.manual_seed(0)
    torch.save(UNet3D(width=tuple(width)).state_dict(), weights)
    return net, weights
