"""A package's own test, run when planning: its test input through our preprocessing (with the
test input's own statistics, as bioimage.io computes a test output), its network on the CPU and
our postprocessing must give its test output within the package's stated tolerance."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from chunkflow.errors import ModelError, first_line
from chunkflow.zoo.package import SPACE, ZooModel
from chunkflow.zoo.processing import Clip, Processing, Statistics, Step, measure_along

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


LAYOUT = ("batch", "channel", *SPACE)  # the test tensors' axes here (``_ours``)


def _sample_statistics(raw: np.ndarray, step: Step) -> Statistics:
    """What ``step`` needs of the test input ``raw`` (batch, channel, z, y, x), reduced over the
    axes it names (bioimageio.core: a per-sample clip's percentiles by numpy's inverted_cdf)."""
    axes = getattr(step, "axes", None)
    reduce = tuple(range(raw.ndim)) if axes is None else tuple(LAYOUT.index(a) for a in axes)
    per_sample = axes is not None and "batch" not in axes
    method = "inverted_cdf" if per_sample and isinstance(step, Clip) else "linear"
    return measure_along(raw, step.needs, reduce, method)


def _tensor(members: dict[str, bytes], path: str, name: str | None, which: str) -> np.ndarray:
    data = members.get(name or "")
    if data is None:
        raise ModelError(f"model package '{path}' lacks its test {which} '{name}'")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as err:
        raise ModelError(
            f"model package '{path}': its test {which} '{name}' is not a readable .npy file "
            f"({first_line(err)}); fix the package"
        ) from None


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
    # as bioimage.io runs a test: the test input as it is (no padding), each step with the
    # statistics of the unprocessed input over the axes the step names (all, if none), the
    # network's whole output (no halo dropped)
    raw = given.astype(np.float32)
    data = raw.copy()
    for step in model.preprocessing:
        data = step.apply(data, _sample_statistics(raw, step))
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
