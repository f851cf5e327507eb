"""Tiny network used as the architecture of test bioimage.io model packages.

A ``pytorch_state_dict`` package names this file as its architecture source
(``callable: TinyNet``).  The network is a single 3x3(x3) convolution with
reflect padding, a ReLU and a 1x1(x1) convolution: its receptive field radius
is 1, so with a halo >= 1 every patch computes exact values and tiling cannot
change the result.  Reflect padding makes the output at a volume's edge equal
to running the network on the input reflect-padded by 1.

The file only imports ``torch`` so that it can be copied into a package and
imported on its own.
"""

from __future__ import annotations

import torch


class TinyNet(torch.nn.Module):
    """Conv(3, reflect) -> ReLU -> Conv(1) in 2D or 3D."""

    def __init__(self, in_channels: int = 1, out_channels: int = 2, ndim: int = 3) -> None:
        super().__init__()
        if ndim == 2:
            conv: type[torch.nn.Conv2d] | type[torch.nn.Conv3d] = torch.nn.Conv2d
        elif ndim == 3:
            conv = torch.nn.Conv3d
        else:
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        hidden = 4
        self.conv1 = conv(in_channels, hidden, kernel_size=3, padding=1, padding_mode="reflect")
        self.relu = torch.nn.ReLU()
        self.conv2 = conv(hidden, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (b, c_in, [z,] y, x) to (b, c_out, [z,] y, x)."""
        return self.conv2(self.relu(self.conv1(x)))
