"""The run configuration: schema validation with one-line errors, defaults, typed settings."""

from __future__ import annotations

import copy
import difflib
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from chunkflow.errors import ConfigError
from chunkflow.geometry.boxes import Vec, misaligned_axes, vec
from chunkflow.settings import (
    InferenceSettings,
    InputSettings,
    MaskSettings,
    ModelSettings,
    OutputSettings,
    Settings,
)
from chunkflow.volumes import check_output_options
from chunkflow.volumes.stores import check_storage_options
from chunkflow.zoo.package import ZooModel, choose_weights, is_package, read_package

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


@cache
def schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(f"'{key}' appears twice (lines {first} and {second})")


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:  # the keys as written: merged ones (<<) may be overridden
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: the schema reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise _DuplicateKey(key, first, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep)


def default(key: str) -> Any:
    """The schema's default of the top-level ``key``."""
    return schema()["properties"][key]["default"]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file; a missing or malformed file is a ConfigError."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file '{path}' is a directory; pass the YAML file itself")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found; pass an existing YAML file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except _DuplicateKey as err:
        raise ConfigError(f"config file '{path}': key {err}; keep one of them") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"config file '{path}' is not valid YAML{where}; fix its syntax"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file '{path}' cannot be read ({err}); check the file") from None
    if data is None:
        raise ConfigError(
            f"config file '{path}' is empty; write the settings (see config/README.md)"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file '{path}' must hold a mapping of keys, not {type(data).__name__}"
        )
    return data


def _key(path: list[Any]) -> str:
    return ".".join(str(p) for p in path)


def _explain(error: Any) -> str:
    """One line for a jsonschema error: what is wrong, and how to fix it."""
    path = list(error.absolute_path)
    key = _key(path)
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        parts = []
        for name in sorted(set(error.instance) - set(known)):
            close = difflib.get_close_matches(name, known, n=1)
            parts.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        where = f" in '{key}'" if path else ""
        return f"unknown config key {', '.join(parts)}{where}; valid keys: {', '.join(known)}"
    if error.validator == "required":
        missing = error.message.split("'")[1]
        full = f"{key}.{missing}" if path else missing
        return f"config key '{full}' is missing; add it (see config/README.md)"
    if error.validator == "enum":
        options = ", ".join("null" if o is None else str(o) for o in error.validator_value)
        return f"config key '{key}' is {error.instance!r}; use one of: {options}"
    if path and isinstance(path[-1], int):  # one entry of a [z, y, x] list
        minimum = error.schema.get("minimum")
        bound = f" ≥ {minimum}" if minimum is not None else ""
        return (
            f"config key '{_key(path[:-1])}' must be a list of 3 integers{bound} [z, y, x]; "
            f"entry {path[-1]} is {error.instance!r}"
        )
    if error.validator in ("minItems", "maxItems") or error.validator_value == "array":
        return f"config key '{key}' must be a list of 3 integers [z, y, x], got {error.instance!r}"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"config key '{key or '(top level)'}' must be of type {expected}, got {error.instance!r}"
    if error.validator == "minimum":
        return f"config key '{key}' must be ≥ {error.validator_value}, got {error.instance!r}"
    return f"config key '{key}': {error.message}"


def _error_rank(error: Any) -> tuple[int, int]:
    """Report shallow errors first and, at one depth, unknown keys before missing ones: a typo
    (``blocksize``) is what explains the missing key (``block_size``)."""
    return len(error.absolute_path), 0 if error.validator == "additionalProperties" else 1


def _apply_defaults(node: dict[str, Any], data: dict[str, Any]) -> None:
    for name, sub in node.get("properties", {}).items():
        if name not in data and "default" in sub:
            data[name] = copy.deepcopy(sub["default"])
        if isinstance(data.get(name), dict) and sub.get("type") == "object":
            _apply_defaults(sub, data[name])


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Check ``config`` against the schema; return a copy with defaults filled in."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=_error_rank)
    if errors:
        raise ConfigError(_explain(errors[0]))
    data = copy.deepcopy(config)
    _apply_defaults(schema(), data)
    return data


def _quarter(size: Vec) -> Vec:
    return vec(s // 4 for s in size)


def _output_settings(output: dict[str, Any]) -> OutputSettings:
    chunk = vec(output["chunk_size"])
    shard = vec(output["shard_size"]) if "shard_size" in output else None
    if shard is not None:
        bad = misaligned_axes(shard, chunk)
        if bad:
            raise ConfigError(
                f"output.shard_size {list(shard)} is not a whole multiple of output.chunk_size "
                f"{list(chunk)} along {', '.join(bad)}; make each shard hold whole chunks"
            )
    settings = OutputSettings(**{**output, "chunk_size": chunk, "shard_size": shard})
    check_output_options(settings)
    return settings


def _check_tta(model: dict[str, Any], tta: str, input_patch: Vec, output_patch: Vec) -> None:
    """Test-time augmentation transposes y and x: square patches, and y/x affinities in pairs."""
    axes = model["affinity_axes"]
    channels = model["output_channels"]
    if axes is not None and channels is not None and len(axes) != channels:
        raise ConfigError(
            f"model.affinity_axes has {len(axes)} entries but model.output_channels is {channels}; "
            "give one entry (z, y, x or null) per output channel"
        )
    if tta == "none":
        return
    if input_patch[1] != input_patch[2] or output_patch[1] != output_patch[2]:
        raise ConfigError(
            f"inference.tta {tta} transposes y and x, which needs equal y and x patch sizes "
            f"(model.input_patch_size {list(input_patch)}, model.output_patch_size "
            f"{list(output_patch)}); make them square in y, x or set inference.tta: none"
        )
    if axes is not None and axes.count("y") != axes.count("x"):
        raise ConfigError(
            f"model.affinity_axes has {axes.count('y')} y and {axes.count('x')} x entries; "
            f"inference.tta {tta} transposes y and x, swapping those channels in pairs: give as "
            "many of each"
        )


def _patch_sizes(model: dict[str, Any], package: ZooModel | None) -> tuple[Vec, Vec]:
    """The model's input and output patch sizes; for a bioimage.io ``package``, its defaults
    filled in (``model`` is completed in place: the weights format chosen, the channels)."""
    if package is None:
        for key in ("weights_format", "statistics"):
            if model[key] is not None:
                raise ConfigError(
                    f"model.{key} is only used with a bioimage.io model package; "
                    f"model.path '{model['path']}' is a model file: remove model.{key}"
                )
        if "input_patch_size" not in model:
            raise ConfigError(
                "config key 'model.input_patch_size' is missing: add it (the [z, y, x] patch "
                "your network takes; only a bioimage.io package has a default)"
            )
        input_patch = vec(model["input_patch_size"])
        return input_patch, vec(model.get("output_patch_size", input_patch))
    if model["weights"] is not None:
        raise ConfigError(
            "model.weights is only used with a .py model; a bioimage.io package carries its own "
            "weights (model.weights_format picks among them): remove model.weights"
        )
    model["weights_format"] = choose_weights(package, model["weights_format"], model["path"])
    if model["output_channels"] is None:
        model["output_channels"] = package.output_channels
    input_patch = vec(model.get("input_patch_size", package.default_input_patch()))
    package.check_input_patch(input_patch)
    output_patch = vec(model.get("output_patch_size", package.output_patch(input_patch)))
    package.check_output_patch(input_patch, output_patch)
    return input_patch, output_patch


def parse(config: dict[str, Any]) -> Settings:
    """Validate a config mapping and turn it into Settings, checking the patch geometry."""
    if "blocks_per_job" in config:
        raise ConfigError(
            "blocks_per_job is gone: a block job streams its block through memory piece by "
            "piece, so make block_size larger (piece_size bounds the memory), or group small "
            "block jobs with snakemake --groups infer_block=blocks --group-components "
            "blocks=<n>; remove blocks_per_job"
        )
    data = validate(config)
    for key in ("input", "output", "mask"):
        if key in data:
            volume = data[key]
            check_storage_options(
                f"{key}.storage_options", volume["path"], volume.get("storage_options")
            )
    model, inference, roi = data["model"], data["inference"], data.get("roi", {})
    package = read_package(model["path"]) if is_package(model["path"]) else None
    input_patch, output_patch = _patch_sizes(model, package)
    data["input"].setdefault("padding", "reflect" if package is None else package.padding)
    for axis, pi, po in zip("zyx", input_patch, output_patch, strict=True):
        if po > pi:
            raise ConfigError(
                f"model.output_patch_size {list(output_patch)} is larger than "
                f"model.input_patch_size {list(input_patch)} along {axis}; the output patch must fit in the input"
            )
        if (pi - po) % 2:
            raise ConfigError(
                f"model.input_patch_size - model.output_patch_size is odd along {axis} ({pi} - {po}); "
                "the context must be the same on both sides: make the difference even"
            )
    overlap = vec(inference.get("overlap", _quarter(output_patch)))
    for axis, o, po in zip("zyx", overlap, output_patch, strict=True):
        if o >= po:
            raise ConfigError(
                f"inference.overlap {list(overlap)} must be smaller than model.output_patch_size "
                f"{list(output_patch)} along {axis}; use e.g. {list(_quarter(output_patch))}"
            )
    if "crop_margin" in inference and inference["placement"] != "crop":
        raise ConfigError(
            "inference.crop_margin is only used with inference.placement: crop; "
            "remove it, or set the placement to crop"
        )
    onnx = model["path"].endswith(".onnx") or model["weights_format"] == "onnx"
    if inference["precision"] != "float32" and onnx:
        raise ConfigError(
            f"inference.precision {inference['precision']} needs a PyTorch model (autocast); "
            "ONNX Runtime runs an .onnx model as exported: set precision: float32"
        )
    _check_tta(model, inference["tta"], input_patch, output_patch)
    return Settings(
        input=InputSettings(**data["input"]),
        output=_output_settings(data["output"]),
        roi_offset=vec(roi["offset"]) if "offset" in roi else None,
        roi_size=vec(roi["size"]) if "size" in roi else None,
        block_size=vec(data["block_size"]),
        model=ModelSettings(
            path=model["path"],
            weights=model["weights"],
            input_patch_size=input_patch,
            output_patch_size=output_patch,
            output_channels=model["output_channels"],
            affinity_axes=None if model["affinity_axes"] is None else tuple(model["affinity_axes"]),
            weights_format=model["weights_format"],
            statistics=model["statistics"],
        ),
        inference=InferenceSettings(
            placement=inference["placement"],
            overlap=overlap,
            crop_margin=vec(inference.get("crop_margin", _quarter(output_patch))),
            blend=inference["blend"],
            batch_size=inference["batch_size"],
            device=inference["device"],
            precision=inference["precision"],
            threads=inference["threads"],
            tta=inference["tta"],
            non_finite=inference["non_finite"],
        ),
        state_dir=data["state_dir"],
        piece_size=vec(data["piece_size"]) if "piece_size" in data else None,
        mask=MaskSettings(**data["mask"]) if "mask" in data else None,
        job_voxels_per_second=float(data["job"]["voxels_per_second"]),
        verify=data["verify"],
    )


def load(path: str | Path) -> Settings:
    return parse(load_yaml(path))
