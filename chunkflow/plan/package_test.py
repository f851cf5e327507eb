"""A package's own test, run when planning: its test input through our preprocessing (with the
test input's own statistics, as bioimage.io computes a test output), its network on the CPU and
our postprocessing must give its test output within the package's stated tolerance."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from chunkflow.errors import ModelError
from chunkflow.zoo.package import SPACE, ZooModel
from chunkflow.zoo.processing import Processing, measure

if TYPE_CHECKING:
    from chunkflow.settings import ModelSettings


def _ours(array: np.ndarray, axes: tuple[str, ...], space: tuple[str, ...]) -> np.ndarray:
    """A test tensor with ``axes`` as (batch, channel, z, y, x): missing axes of size 1."""
    order = ("batch", "channel", *space)
    for axis in order:
        if axis not in axes:
            array, axes = array[..., None], (*axes, axis)
    array = np.transpose(array, [axes.index(a) for a in order])
    return array if "z" in space else array[:, :, None]


def _tensor(members: dict[str, bytes], path: str, name: str | None, which: str) -> np.ndarray:
    data = members.get(name or "")
    if data is None:
        raise ModelError(f"model package '{path}' lacks its test {which} '{name}'")
    return np.load(io.BytesIO(data), allow_pickle=False)


def run_package_test(members: dict[str, bytes], settings: ModelSettings, model: ZooModel) -> None:
    """Raise ``ModelError`` in one line unless the package ``model`` (its files ``members``, run
    as ``settings`` say) reproduces its test output."""
    import torch

    from chunkflow.engine.package_network import PackageNetwork, load_package_network

    path = settings.path
    if model.test_input is None or model.test_output is None:
        return
    given = _ours(_tensor(members, path, model.test_input, "input"), model.input_axes, model.space)
    expected = _ours(
        _tensor(members, path, model.test_output, "output"), model.output_axes, model.space
    )
    # as bioimage.io runs a test: the test input as it is (no padding; its own statistics), the
    # network's whole output (no halo dropped)
    pre = Processing(model.preprocessing)
    data = given.astype(np.float32)
    data = Processing(pre.steps, measure(data, pre.needs))(data)
    whole = tuple(s + model.offset.get(a, 0) for a, s in zip(SPACE, data.shape[2:], strict=True))
    network = load_package_network(members, settings, model, whole, torch.device("cpu"))
    assert isinstance(network, PackageNetwork)
    with torch.inference_mode():
        out = network(torch.from_numpy(np.ascontiguousarray(data))).float().numpy().copy()
    post = Processing(model.postprocessing)
    got = np.stack([post(sample) for sample in out])
    if got.shape != expected.shape:
        raise ModelError(
            f"model package '{path}' gives shape {list(got.shape)} for its test input, but its "
            f"test output has shape {list(expected.shape)}; the package is inconsistent"
        )
    fmt = settings.weights_format
    assert fmt is not None
    relative, absolute, per_million = model.tolerance[fmt]
    wrong = np.abs(got - expected) > absolute + relative * np.abs(expected)
    if wrong.sum() > per_million * wrong.size / 1e6:
        worst = float(np.abs(got - expected).max())
        raise ModelError(
            f"model package '{path}' does not reproduce its test output with its "
            f"{fmt} weights: {int(wrong.sum())} of {wrong.size} values "
            f"differ (largest difference {worst:.3g}, allowed {absolute:g} + {relative:g} x "
            "|expected|); check the package, or choose other weights with model.weights_format"
        )
