"""The run's settings as typed values, and the fingerprint of those that shape the result.

A leaf module: it imports nothing of the package at run time, so the config parser, the volume
backends and the plan all import it downward.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chunkflow.geometry.boxes import Vec


@dataclass(frozen=True)
class InputSettings:
    path: str
    scale: str
    padding: str
    mip: int = 0
    background: float | None = 0
    storage_options: dict[str, Any] | None = None  # how to reach an object store
    fill_missing: bool = False  # a chunk missing from the store reads as the fill value


@dataclass(frozen=True)
class OutputSettings:
    path: str
    dtype: str
    chunk_size: Vec
    zarr_format: int
    encoding: str = "raw"
    shard_size: Vec | None = None
    zstd_level: int | None = None  # zarr outputs' compression (None: 1), set at creation
    replace: bool = False  # recompute into a store holding another run's results
    storage_options: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelSettings:
    path: str
    weights: str | None
    input_patch_size: Vec
    output_patch_size: Vec
    output_channels: int | None
    affinity_axes: tuple[str | None, ...] | None = None
    weights_format: str | None = None  # a bioimage.io package's weights to run
    statistics: dict[str, Any] | None = None  # a package's input statistics (zoo.processing)

    @property
    def runs_in_onnx(self) -> bool:
        """Whether ONNX Runtime runs the model (an .onnx file, or a package's onnx weights)."""
        return self.path.endswith(".onnx") or self.weights_format == "onnx"


@dataclass(frozen=True)
class InferenceSettings:
    placement: str
    overlap: Vec
    crop_margin: Vec
    blend: str
    batch_size: int
    device: str
    precision: str
    threads: int
    tta: str = "none"
    non_finite: str = "fail"


@dataclass(frozen=True)
class MaskSettings:
    path: str
    mip: int = 0
    storage_options: dict[str, Any] | None = None


@dataclass(frozen=True)
class Settings:
    """A validated configuration; paths as written (relative to the run directory)."""

    input: InputSettings
    output: OutputSettings
    roi_offset: Vec | None
    roi_size: Vec | None
    block_size: Vec
    model: ModelSettings
    inference: InferenceSettings
    state_dir: str
    piece_size: Vec | None = None
    mask: MaskSettings | None = None
    job_voxels_per_second: float = 5e7
    verify: bool = False

    def result_fingerprint(self, model_sha256: str, input_volume: dict[str, Any]) -> str:
        """A hash of every setting that can change the written numbers, of the model file and
        of what the input is (``result_settings``)."""
        relevant = self._result_relevant(model_sha256, input_volume)
        text = json.dumps(relevant, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def result_settings(self, model_sha256: str, input_volume: dict[str, Any]) -> dict[str, Any]:
        """What the result fingerprint hashes, as dotted keys of the config (``inference.overlap``)
        and JSON values; the model file's content is ``model.sha256``, the input's metadata and
        sampled chunks' digest ``input.volume.*`` (``RunPlan.input_volume``)."""
        relevant = self._result_relevant(model_sha256, input_volume)
        offset, size = relevant.pop("roi")
        relevant["roi"] = {"offset": offset, "size": size}
        return _dotted(json.loads(json.dumps(relevant, default=list)))

    def _result_relevant(self, model_sha256: str, input_volume: dict[str, Any]) -> dict[str, Any]:
        """The settings that can change the written numbers, nested as the fingerprint hashes them.

        The input is identified by what it is, ``input_volume`` (its metadata and a digest of
        sampled chunks: ``RunPlan.input_volume``), not by ``input.path``: the same text over
        other data is another run, and a moved input (its path changed) is the same. So is the
        model, by the sha256 of its files, not by ``model.path`` and ``model.weights``.

        Batch size, device, threads, the piece size, the job's resources, the mask (which picks
        blocks, not their values), ``verify``, ``output.replace`` and the state directory are
        left out: changing them must not rerun finished blocks; so are the volumes'
        ``storage_options`` (endpoints, credentials: where the data is reached, not what it
        is) and ``input.fill_missing`` (whether a missing chunk fails a block or reads as the
        fill value; each marker counts those it read). Without test-time augmentation,
        ``tta`` and ``model.affinity_axes`` cannot change the numbers and are left out too.
        """
        inference = asdict(self.inference)
        for key in ("batch_size", "device", "threads"):
            inference.pop(key)
        model = {**_without(asdict(self.model), "path", "weights"), "sha256": model_sha256}
        if self.inference.tta == "none":
            inference.pop("tta")
            model.pop("affinity_axes")
        if self.inference.non_finite == "fail":  # the default: earlier fingerprints stay valid
            inference.pop("non_finite")
        for key in ("weights_format", "statistics"):  # a package's; model files' stay valid
            if model[key] is None:
                model.pop(key)
        return {
            "input": {
                **_without(asdict(self.input), "path", "storage_options", "fill_missing"),
                "volume": input_volume,
            },
            "output": _without(asdict(self.output), "replace", "storage_options", "zstd_level"),
            "roi": [self.roi_offset, self.roi_size],
            "block_size": self.block_size,
            "model": model,
            "inference": inference,
        }


def _without(settings: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``settings`` less ``keys``."""
    return {k: v for k, v in settings.items() if k not in keys}


def _dotted(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``; lists are values."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
