"""A package's pre- and post-processing as pointwise steps on float32 numpy arrays.

Every step is applied with dataset-wide statistics (``Statistics``): where a package asks for a
sample's own mean, standard deviation or percentiles, a block of a large volume cannot have them
(each block would be normalised differently: seams), so the volume's are used, measured once
at plan time (``chunkflow.zoo.statistics``) or given in the config (``model.statistics``).
Steps work in place where they can; arrays are (z, y, x) or (channel, z, y, x).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chunkflow.errors import ModelError

EPS = 1e-6  # bioimage.io's default epsilon


def percentile_key(percentile: float) -> str:
    """How a percentile is named in ``model.statistics.percentiles`` ("1", "99.8")."""
    return f"{float(percentile):g}"


@dataclass(frozen=True)
class Needs:
    """The statistics of the input that a package's preprocessing uses."""

    mean_std: bool = False
    percentiles: frozenset[float] = frozenset()

    def __bool__(self) -> bool:
        return self.mean_std or bool(self.percentiles)

    def __or__(self, other: Needs) -> Needs:
        return Needs(self.mean_std or other.mean_std, self.percentiles | other.percentiles)


@dataclass(frozen=True)
class Statistics:
    """Dataset-wide statistics of the input's values: mean, (population) standard deviation and
    percentiles (0-100, numpy's linear interpolation), as ``model.statistics`` spells them."""

    mean: Any = None  # float; for a package's test, arrays that broadcast (``measure_along``)
    std: Any = None
    percentiles: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, given: dict[str, Any] | None) -> Statistics:
        given = given or {}
        percentiles = {
            percentile_key(float(k)): float(v) for k, v in given.get("percentiles", {}).items()
        }
        return cls(given.get("mean"), given.get("std"), percentiles)

    def as_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {}
        if self.mean is not None:
            config.update(mean=self.mean, std=self.std)
        if self.percentiles:
            config["percentiles"] = dict(self.percentiles)
        return config

    def missing(self, needs: Needs) -> list[str]:
        """The names of what ``needs`` asks for and these statistics lack."""
        lacking = (
            ["mean", "std"] if needs.mean_std and (self.mean is None or self.std is None) else []
        )
        return lacking + [
            f"percentiles.{percentile_key(p)}"
            for p in sorted(needs.percentiles)
            if percentile_key(p) not in self.percentiles
        ]

    def percentile(self, percentile: float) -> Any:
        return self.percentiles[percentile_key(percentile)]


def measure(values: np.ndarray, needs: Needs) -> Statistics:
    """The statistics ``needs`` asks for, of ``values`` (any shape), in float64."""
    flat = values.reshape(-1)
    mean = std = None
    if needs.mean_std:
        mean = float(np.mean(flat, dtype=np.float64))
        std = float(np.std(flat, dtype=np.float64))
    percentiles: dict[str, float] = {}
    if needs.percentiles:
        wanted = sorted(needs.percentiles)
        found = np.quantile(flat, np.array(wanted) / 100.0)
        percentiles = {percentile_key(p): float(v) for p, v in zip(wanted, found, strict=True)}
    return Statistics(mean, std, percentiles)


def measure_along(
    values: np.ndarray, needs: Needs, axes: tuple[int, ...], method: str
) -> Statistics:
    """The statistics ``needs`` asks for, of ``values`` reduced over ``axes`` only (kept as
    size-1 axes, to broadcast back), quantiles by numpy's ``method``: a sample's statistics
    as bioimage.io computes a package's test output."""
    mean = std = None
    if needs.mean_std:
        mean = np.mean(values, axis=axes, keepdims=True, dtype=np.float64)
        std = np.std(values, axis=axes, keepdims=True, dtype=np.float64)
    percentiles = {
        percentile_key(p): np.quantile(values, p / 100.0, axis=axes, keepdims=True, method=method)
        for p in sorted(needs.percentiles)
    }
    return Statistics(mean, std, percentiles)


def _per_channel(values: Any, data: np.ndarray) -> np.float32 | np.ndarray:
    """A scalar, or per-channel values shaped to broadcast over (channel, z, y, x) ``data``
    (an array of statistics as it is)."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float32)
    if isinstance(values, float):
        return np.float32(values)
    if len(values) == 1:
        return np.float32(values[0])
    if data.ndim != 4 or data.shape[0] != len(values):
        raise ModelError(
            f"a processing step has {len(values)} per-channel values but the data has "
            f"{data.shape[0] if data.ndim == 4 else 1} channel(s); fix the package"
        )
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1, 1)


@dataclass(frozen=True)
class ScaleLinear:
    gain: float | tuple[float, ...] = 1.0
    offset: float | tuple[float, ...] = 0.0
    needs = Needs()

    def apply(self, data: np.ndarray, stats: Statistics) -> np.ndarray:
        data *= _per_channel(self.gain, data)
        data += _per_channel(self.offset, data)
        return data


@dataclass(frozen=True)
class ZeroMeanUnitVariance:
    """(x - mean) / (std + eps): the dataset's mean and std, or fixed ones (``fixed``)."""

    eps: float = EPS
    mean: float | tuple[float, ...] | None = None
    std: float | tuple[float, ...] | None = None
    axes: tuple[str, ...] | None = None  # what a sample's statistics reduce over (the test's)

    @property
    def needs(self) -> Needs:
        return Needs(mean_std=self.mean is None)

    def apply(self, data: np.ndarray, stats: Statistics) -> np.ndarray:
        mean, std = (stats.mean, stats.std) if self.mean is None else (self.mean, self.std)
        data -= _per_channel(mean, data)
        data /= _per_channel(std, data) + np.float32(self.eps)
        return data


@dataclass(frozen=True)
class ScaleRange:
    """(x - p_min) / (p_max - p_min + eps), with the dataset's percentiles."""

    min_percentile: float = 0.0
    max_percentile: float = 100.0
    eps: float = EPS
    axes: tuple[str, ...] | None = None  # what a sample's statistics reduce over (the test's)

    @property
    def needs(self) -> Needs:
        return Needs(percentiles=frozenset({self.min_percentile, self.max_percentile}))

    def apply(self, data: np.ndarray, stats: Statistics) -> np.ndarray:
        low = _per_channel(stats.percentile(self.min_percentile), data)
        high = _per_channel(stats.percentile(self.max_percentile), data)
        data -= low
        data /= high - low + np.float32(self.eps)
        return data


@dataclass(frozen=True)
class Clip:
    """Clip to [min, max]; either bound may be a percentile of the dataset instead."""

    min: float | None = None
    max: float | None = None
    min_percentile: float | None = None
    max_percentile: float | None = None
    axes: tuple[str, ...] | None = None  # what a sample's statistics reduce over (the test's)

    @property
    def needs(self) -> Needs:
        wanted = {p for p in (self.min_percentile, self.max_percentile) if p is not None}
        return Needs(percentiles=frozenset(wanted))

    def apply(self, data: np.ndarray, stats: Statistics) -> np.ndarray:
        low = self.min if self.min_percentile is None else stats.percentile(self.min_percentile)
        high = self.max if self.max_percentile is None else stats.percentile(self.max_percentile)
        np.clip(data, low, high, out=data)
        return data


@dataclass(frozen=True)
class Binarize:
    """1 where x > threshold, else 0 (as float32)."""

    threshold: float | tuple[float, ...]
    needs = Needs()

    def apply(self, data: np.ndarray, stats: Statistics) -> np.ndarray:
        above = data > _per_channel(self.threshold, data)
        np.copyto(data, above, casting="unsafe")
        return data


@dataclass(frozen=True)
class Sigmoid:
    needs = Needs()

    def apply(self, data: np.ndarray, stats: Statistics) -> np.ndarray:
        np.negative(data, out=data)
        np.exp(data, out=data)
        data += np.float32(1.0)
        np.reciprocal(data, out=data)
        return data


@dataclass(frozen=True)
class Softmax:
    """Softmax over the channels of (channel, z, y, x) data."""

    needs = Needs()

    def apply(self, data: np.ndarray, stats: Statistics) -> np.ndarray:
        data -= data.max(axis=0, keepdims=True)
        np.exp(data, out=data)
        data /= data.sum(axis=0, keepdims=True)
        return data


@dataclass(frozen=True)
class EnsureDtype:
    """Values as ``dtype`` would hold them (kept as float32: the engine computes in it)."""

    dtype: str
    needs = Needs()

    def apply(self, data: np.ndarray, stats: Statistics) -> np.ndarray:
        if np.dtype(self.dtype) != np.float32:
            np.copyto(data, data.astype(self.dtype), casting="unsafe")
        return data


Step = (
    ScaleLinear
    | ZeroMeanUnitVariance
    | ScaleRange
    | Clip
    | Binarize
    | Sigmoid
    | Softmax
    | EnsureDtype
)


@dataclass(frozen=True)
class Processing:
    """Steps applied in order, with the statistics they need bound."""

    steps: tuple[Step, ...]
    statistics: Statistics = field(default_factory=Statistics)

    @property
    def needs(self) -> Needs:
        needs = Needs()
        for step in self.steps:
            needs |= step.needs
        return needs

    def __call__(self, data: np.ndarray) -> np.ndarray:
        """``data`` (float32, consumed) processed."""
        for step in self.steps:
            data = step.apply(data, self.statistics)
        return data
