"""A package's processing steps against their formulas written out in numpy (float64), the
statistics against numpy's, and which chunks the plan measures them over."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import write_volume

from chunkflow.volumes import open_volume
from chunkflow.zoo import processing as proc
from chunkflow.zoo.statistics import measure_input, statistics_boxes

RNG = np.random.default_rng(7)
DATA = (RNG.normal(100.0, 30.0, (3, 4, 5, 6))).astype(np.float32)  # channel, z, y, x
STATS = proc.Statistics(101.5, 29.0, {"2": 40.0, "98": 160.0, "50": 99.0})
X = DATA.astype(np.float64)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (proc.ScaleLinear(0.5, -3.0), X * 0.5 - 3.0),
        (
            proc.ScaleLinear((1.0, 2.0, 3.0), (0.0, 1.0, 2.0)),
            X * np.array([1, 2, 3.0])[:, None, None, None]
            + np.array([0, 1, 2.0])[:, None, None, None],
        ),
        (proc.ZeroMeanUnitVariance(1e-3), (X - 101.5) / (29.0 + 1e-3)),
        (proc.ZeroMeanUnitVariance(proc.EPS, 90.0, 20.0), (X - 90.0) / (20.0 + 1e-6)),
        (proc.ScaleRange(2.0, 98.0, 1e-6), (X - 40.0) / (160.0 - 40.0 + 1e-6)),
        (proc.Clip(min=80.0, max=120.0), np.clip(X, 80.0, 120.0)),
        (proc.Clip(min_percentile=2.0, max=120.0), np.clip(X, 40.0, 120.0)),
        (proc.Binarize(99.0), (X > 99.0).astype(np.float64)),
        (proc.Sigmoid(), 1.0 / (1.0 + np.exp(-(X - 100.0) / 30.0))),
        (proc.EnsureDtype("uint8"), np.clip(X, 0, 255).astype(np.uint8).astype(np.float64)),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, np.ndarray) else "",
)
def test_a_step_is_its_formula(step, expected):
    data = DATA.copy()
    if isinstance(step, proc.Sigmoid):
        data = ((DATA.astype(np.float64) - 100.0) / 30.0).astype(np.float32)
    if isinstance(step, proc.EnsureDtype):
        data = np.clip(data, 0, 255)
    got = step.apply(data, STATS)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-6)


def test_softmax_is_over_the_channels():
    got = proc.Softmax().apply(DATA / 50, STATS)
    exp = np.exp(X / 50)
    np.testing.assert_allclose(got, exp / exp.sum(axis=0), rtol=1e-5)


def test_statistics_are_numpys_and_named_as_the_config_names_them():
    needs = proc.Needs(True, frozenset({1.0, 99.5}))
    got = proc.measure(DATA, needs)
    assert got.mean == pytest.approx(X.mean()) and got.std == pytest.approx(X.std())
    q = np.quantile(DATA.ravel(), [0.01, 0.995])
    assert got.percentiles == {"1": pytest.approx(q[0]), "99.5": pytest.approx(q[1])}
    assert proc.Statistics.from_config(got.as_config()) == got
    given = proc.Statistics.from_config({"percentiles": {"99.50": 3.0}})
    assert given.percentiles == {"99.5": 3.0}
    assert given.missing(needs) == ["mean", "std", "percentiles.1"]


def test_a_small_volume_is_measured_whole_a_large_one_over_spread_chunks(tmp_path):
    data = RNG.integers(0, 255, (32, 48, 64), dtype=np.uint8)
    volume = open_volume(write_volume(tmp_path / "v.zarr", data, chunks=(8, 16, 16)))
    assert statistics_boxes(volume) == [volume.bounds]
    needs = proc.Needs(True, frozenset({50.0}))
    whole = measure_input(volume, needs)
    assert whole.mean == pytest.approx(data.mean()) and whole.std == pytest.approx(data.std())

    boxes = statistics_boxes(volume, voxels=6 * 8 * 16 * 16)  # 6 of the 4 x 3 x 4 chunks
    assert len(boxes) == 6 == len(set(boxes))
    grid = [tuple(s // c for s, c in zip(b.start, (8, 16, 16), strict=True)) for b in boxes]
    flat = [np.ravel_multi_index(g, (4, 3, 4)) for g in grid]
    assert flat == [0, 8, 16, 24, 32, 40]  # evenly spaced in storage order, every z reached
    assert all(b.shape == (8, 16, 16) for b in boxes)
    assert statistics_boxes(volume, voxels=6 * 8 * 16 * 16) == boxes  # always the same


def zoo_model(input_axes: tuple[str, ...], output_axes: tuple[str, ...], halo: int) -> Any:
    from chunkflow.zoo.package import ZooModel

    space = [a for a in input_axes if a in "zyx"]
    return ZooModel(
        name="layout",
        input_axes=input_axes,
        output_axes=output_axes,
        input_channels=1,
        output_channels=2 if "channel" in output_axes else 1,
        min_size=dict.fromkeys(space, 1),
        step=dict.fromkeys(space, 1),
        offset=dict.fromkeys(space, 0),
        halo=dict.fromkeys(space, halo),
        weights={},
        preprocessing=(),
        postprocessing=(),
        padding="symmetric",
        test_input=None,
        test_output=None,
        tolerance={},
    )


@pytest.mark.parametrize(
    ("axes", "output_axes"),
    [
        (("batch", "channel", "z", "y", "x"), None),
        (("batch", "z", "y", "x", "channel"), None),
        (("channel", "x", "y", "z"), None),  # no batch axis, space axes reversed
        (("batch", "channel", "y", "x"), None),  # 2D: slice by slice
        (("y", "x"), None),  # 2D without batch or channel
        (("batch", "channel", "z", "y", "x"), ("channel", "x", "batch", "z", "y")),
    ],
)
def test_a_package_network_sees_its_own_axis_order(axes, output_axes):
    """The network gets patches in the package's axis order (checked by its shape, against the
    patch's) and its output comes back as (batch, channel, z, y, x) less the halo: here a
    network whose channel 1 is twice its channel 0 and whose voxels are the input's."""
    import torch

    from chunkflow.engine.package_network import PackageNetwork

    patch = torch.from_numpy(DATA[:1, None, :, :, :5].repeat(2, axis=0))  # (2, 1, 4, 5, 5)
    seen = []

    def network(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape))
        out = t * 1.0 if "channel" not in axes else torch.cat([t, 2 * t], dim=axes.index("channel"))
        if output_axes is None:
            return out
        return out.permute([axes.index(a) for a in output_axes])

    model = zoo_model(axes, output_axes or axes, halo=1)
    out = PackageNetwork(network, model, (2, 3, 3) if "z" in axes else (4, 3, 3))(patch)
    sizes = {"batch": 2, "channel": 1, "z": 4, "y": 5, "x": 5}
    if "z" not in axes:
        sizes["batch"] *= 4  # every slice an image
    want = tuple(sizes[a] for a in axes if a != "batch" or "batch" in axes)
    if "batch" not in axes:
        assert seen == [want] * sizes["batch"]
    else:
        assert seen == [want]
    z = slice(1, 3) if "z" in axes else slice(None)
    first = patch[:, :, z, 1:4, 1:4]
    expected = first if "channel" not in axes else torch.cat([first, 2 * first], dim=1)
    assert out.shape == expected.shape and torch.equal(out, expected)
