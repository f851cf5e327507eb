"""Test-time augmentation (``inference.tta``): flips and the y<->x transpose, each inverted before
averaging; affinity channels shift by one voxel under a flip of their axis and swap y<->x."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import ValidConvNet, config_with, save_torchscript
from run_helpers import run_as_well
from torch import nn

from chunkflow import config as config_mod
from chunkflow.engine.inference import Predictor
from chunkflow.engine.tta import Variant, invert, transform, variants
from chunkflow.errors import ConfigError, ModelError
from chunkflow.geometry.boxes import Box
from chunkflow.geometry.placement import PatchGeometry

SQUARE = {
    "model.input_patch_size": [8, 18, 18],
    "model.output_patch_size": [6, 16, 16],
    "inference.overlap": [2, 4, 4],
}


class SymmetricNet(nn.Module):
    """A valid 3x3x3 convolution whose kernels are unchanged by flips of z, y, x and by the y<->x
    transpose, then pointwise layers: flipping or transposing the input does the same to the output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv3d(1, 3, 3)
        with torch.no_grad():
            kernel = self.conv.weight
            group = [transform(kernel, v) for v in variants("xyz")]
            kernel.copy_(torch.stack(group).mean(0))
        self.head = nn.Sequential(nn.Tanh(), nn.Conv3d(3, 2, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x))


class AffinityNet(nn.Module):
    """Channels (x, plain, z, y): ``|v - (v - e_a)|`` of the input for an axis a, and the input
    itself; context 1 voxel, so every output voxel's neighbour is in the input patch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x[:, :, 1:-1, 1:-1, 1:-1]
        z = (centre - x[:, :, :-2, 1:-1, 1:-1]).abs()
        y = (centre - x[:, :, 1:-1, :-2, 1:-1]).abs()
        x_ = (centre - x[:, :, 1:-1, 1:-1, :-2]).abs()
        return torch.cat([x_, centre, z, y], 1)


AFFINITY_AXES = ["x", None, "z", "y"]


def run(base: dict[str, Any], name: str, **changes: Any) -> np.ndarray:
    """The whole volume through the block path with square patches, into its own output."""
    return run_as_well(base, name, **{**SQUARE, **changes})


def test_flip_equivariant_model_is_unchanged_by_tta(small_config: dict, tmp_path: Path) -> None:
    model = save_torchscript(SymmetricNet(), tmp_path / "symmetric.pt")
    plain = run(small_config, "none", **{"model.path": model})
    for mode in ("xy", "xyz"):
        augmented = run(small_config, mode, **{"model.path": model, "inference.tta": mode})
        np.testing.assert_allclose(augmented, plain, atol=1e-5, rtol=0)


def test_tta_reaches_the_model_through_the_block_path(small_config: dict, tmp_path: Path) -> None:
    """A model that is not flip-equivariant gives another output with TTA: the option is used."""
    model = save_torchscript(ValidConvNet(channels_out=2), tmp_path / "net.pt")
    plain = run(small_config, "none", **{"model.path": model})
    augmented = run(small_config, "xy", **{"model.path": model, "inference.tta": "xy"})
    assert np.abs(augmented - plain).max() > 1e-3


def test_affinities_are_unchanged_by_tta(small_config: dict, tmp_path: Path) -> None:
    model = {"model.path": save_torchscript(AffinityNet(), tmp_path / "aff.pt")}
    model["model.affinity_axes"] = AFFINITY_AXES
    plain = run(small_config, "none", **model)
    augmented = run(small_config, "xyz", **model, **{"inference.tta": "xyz"})
    assert plain[[0, 2, 3]].max() > 0.02  # real affinities, not zeros
    np.testing.assert_allclose(augmented, plain, atol=1e-6, rtol=0)


def test_a_missing_shift_or_swap_would_be_caught() -> None:
    """Each variant, inverted, equals the plain prediction; inverting affinities like plain
    channels (no shift, no y/x swap) does not."""
    batch = torch.rand(2, 1, 6, 10, 10)
    net = AffinityNet()
    expected = net(batch)
    for variant in variants("xyz"):
        got = invert(net(transform(batch, variant)), variant, tuple(AFFINITY_AXES))
        missing = torch.zeros_like(expected, dtype=torch.bool)
        for c, axis in enumerate(AFFINITY_AXES):  # no value at the first voxel of a flipped axis
            if axis and "zyx".index(axis) in variant.flips:
                missing[:, c].narrow(1 + "zyx".index(axis), 0, 1).fill_(True)
        torch.testing.assert_close(got[~missing], expected[~missing])
        assert not got[missing].any()
    for variant in (Variant((1,), False), Variant((), True)):  # y flip: shift; transpose: swap
        wrong = invert(net(transform(batch, variant)), variant, None)
        assert (wrong - expected).abs().max() > 0.1, variant


def reference_tta(
    net: nn.Module, patch: np.ndarray, mode: str, axes: list[str | None] | None
) -> np.ndarray:
    """The TTA mean of one patch, voxel by voxel from the geometry of each variant (numpy).

    A variant maps an original voxel p to the variant frame by flipping (p_a -> N_a - 1 - p_a)
    and then swapping y, x. An affinity at v links v and v - e_a; in the variant frame it is
    stored at whichever of the two mapped voxels is further along the mapped axis, in the
    channel of that axis (the same rank among channels of that axis). It counts only if that
    voxel is inside the patch.
    """
    with torch.no_grad():
        size = net(torch.from_numpy(patch)[None]).shape[2:]
    size_arr = np.array(size)[:, None, None, None]

    def to_variant(p: np.ndarray, flips: list[int], swap: bool) -> np.ndarray:
        p = p.copy()
        for a in flips:
            p[a] = size_arr[a] - 1 - p[a]
        return p[[0, 2, 1]] if swap else p

    grid = np.indices(size)
    flippable = {"xy": [1, 2], "xyz": [0, 1, 2]}[mode]
    total = count = 0
    for bits in itertools.product([False, True], repeat=len(flippable)):
        flips = [a for a, on in zip(flippable, bits, strict=True) if on]
        for swap in (False, True):
            x = patch
            for a in flips:
                x = np.flip(x, 1 + a)
            if swap:
                x = np.swapaxes(x, 2, 3)
            with torch.no_grad():
                out = net(torch.from_numpy(x.copy())[None])[0].numpy()
            labels = axes or [None] * out.shape[0]
            values = np.zeros(out.shape, np.float64)
            given = np.zeros(out.shape, np.float64)
            for c, axis in enumerate(labels):
                if axis is None:
                    src, source_channel = to_variant(grid, flips, swap), c
                else:
                    a = "zyx".index(axis)
                    step = np.zeros((3, 1, 1, 1), int)
                    step[a] = 1
                    p, q = to_variant(grid, flips, swap), to_variant(grid - step, flips, swap)
                    mapped = [0, 2, 1][a] if swap else a
                    src = np.where(p[mapped] > q[mapped], p, q)
                    mapped_axis = "zyx"[mapped]
                    rank = [i for i, s in enumerate(labels) if s == axis].index(c)
                    source_channel = [i for i, s in enumerate(labels) if s == mapped_axis][rank]
                inside = np.all((src >= 0) & (src < size_arr), axis=0)
                values[c][inside] = out[source_channel][tuple(s[inside] for s in src)]
                given[c][inside] = 1
            total = total + values
            count = count + given
    return total / count


@pytest.mark.parametrize(
    ("mode", "axes"),
    [
        ("xy", None),
        ("xyz", None),
        ("xy", ["y", None, "x", "z"]),
        ("xyz", ["z", "x", "y", "y", "x"]),
    ],
)
def test_tta_of_one_patch_matches_numpy(mode: str, axes: list[str | None] | None) -> None:
    channels = len(axes) if axes else 3
    net = ValidConvNet(channels_out=channels, seed=3).eval()
    geometry = PatchGeometry((6, 10, 10), (4, 8, 8), (0, 0, 0))
    patch = np.random.default_rng(0).random((1, 6, 10, 10), dtype=np.float32)
    predictor = Predictor(
        net,
        geometry,
        "constant",
        1,
        torch.device("cpu"),
        tta=mode,
        affinity_axes=tuple(axes) if axes else None,
    )
    box = Box.from_shape((0, 0, 0), (4, 8, 8))
    got = predictor.predict(patch, geometry.input_box(box), [box], box)
    expected = reference_tta(net, patch, mode, axes)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    with torch.no_grad():
        plain = net(torch.from_numpy(patch)[None])[0].numpy()
    assert np.abs(got - plain).max() > 1e-3  # the model is not equivariant: TTA changes it


def one_line_error(error: type[Exception], config: dict[str, Any]) -> str:
    with pytest.raises(error) as caught:
        config_mod.parse(config)
    message = str(caught.value)
    assert "\n" not in message and message
    return message


def test_config_errors_are_one_line(small_config: dict) -> None:
    # small_config's patches are 18 x 20 in y, x: no transpose
    assert "inference.tta" in one_line_error(
        ConfigError, config_with(small_config, **{"inference.tta": "xy"})
    )
    square = config_with(small_config, **SQUARE)
    assert "model.affinity_axes" in one_line_error(
        ConfigError,
        config_with(square, **{"model.affinity_axes": ["z", "y"], "model.output_channels": 3}),
    )
    assert "as many" in one_line_error(
        ConfigError,
        config_with(square, **{"model.affinity_axes": ["z", "y", "y"], "inference.tta": "xyz"}),
    )
    assert "affinity_axes" in one_line_error(
        ConfigError, config_with(square, **{"model.affinity_axes": ["z", "w"]})
    )


def test_affinity_count_is_checked_on_the_first_output() -> None:
    geometry = PatchGeometry((6, 10, 10), (4, 8, 8), (0, 0, 0))
    net = ValidConvNet(channels_out=2).eval()
    predictor = Predictor(
        net, geometry, "constant", 1, torch.device("cpu"), tta="xy", affinity_axes=("z", "y", "x")
    )
    box = Box.from_shape((0, 0, 0), (4, 8, 8))
    with pytest.raises(ModelError) as caught:
        predictor.predict(np.zeros((1, 6, 10, 10), np.float32), geometry.input_box(box), [box], box)
    assert "\n" not in str(caught.value) and "affinity_axes has 3" in str(caught.value)


def test_fingerprint_follows_tta_and_affinities_only_when_used(small_config: dict) -> None:
    square = config_with(small_config, **SQUARE)

    def fingerprint(**changes: Any) -> str:
        return config_mod.parse(config_with(square, **changes)).result_fingerprint("sha", {})

    base = fingerprint()
    assert fingerprint(**{"model.affinity_axes": ["y", "x"]}) == base  # unused without TTA
    xy = fingerprint(**{"inference.tta": "xy"})
    assert xy != base
    assert fingerprint(**{"inference.tta": "xy", "model.affinity_axes": ["y", "x"]}) != xy
