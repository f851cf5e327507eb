"""Loading models: TorchScript, torch.export archives, ONNX files (ONNX Runtime), a Python file
plus a weights file, or a bioimage.io package (``chunkflow.zoo``)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from chunkflow.engine.model_bytes import load_torchscript, module_from_source
from chunkflow.errors import ConfigError, ModelError, first_line
from chunkflow.settings import ModelSettings
from chunkflow.zoo.package import (
    ZooModel,
    is_package,
    members_sha256,
    package_sha256,
    rdf_of,
    read_members,
    read_package,
    read_rdf,
)

if TYPE_CHECKING:
    import torch

    from chunkflow.engine.onnx_engine import OnnxModel


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def _combined(model_digest: str, weights_digest: str | None) -> str:
    """The model's digest: its file's sha256; for a .py model, of its source and weights."""
    if weights_digest is None:
        return model_digest
    return hashlib.sha256(f"{model_digest}:{weights_digest}".encode()).hexdigest()


def model_sha256(settings: ModelSettings) -> str:
    """sha256 of the model file; for a .py model, of its source and weights file together
    (read in pieces: the digest a plan records without holding the model in memory); for a
    bioimage.io package, of its files (``zoo.package.members_sha256``)."""
    if is_package(settings.path):
        return package_sha256(settings.path)
    weights = None if settings.weights is None else file_sha256(settings.weights)
    return _combined(file_sha256(settings.path), weights)


@dataclass(frozen=True)
class ModelFiles:
    """A model's file and weights file as bytes, read once: the bytes that are hashed
    (``sha256``, as ``model_sha256`` hashes the files) are the bytes that are loaded."""

    settings: ModelSettings
    data: bytes
    weights: bytes | None = None
    members: dict[str, bytes] = field(default_factory=dict)  # a package's files, by name

    @classmethod
    def read(cls, settings: ModelSettings) -> ModelFiles:
        check_model_files(settings)
        if is_package(settings.path):
            members = read_members(settings.path)
            return cls(settings, rdf_of(members), members=members)
        weights = None if settings.weights is None else Path(settings.weights).read_bytes()
        return cls(settings, Path(settings.path).read_bytes(), weights)

    @cached_property
    def package(self) -> ZooModel:
        """What the package says (its description as read with these bytes)."""
        return read_package(self.settings.path, self.data)

    @cached_property
    def sha256(self) -> str:
        if self.members:
            return members_sha256(self.settings.path, self.members)
        weights = None if self.weights is None else hashlib.sha256(self.weights).hexdigest()
        return _combined(hashlib.sha256(self.data).hexdigest(), weights)


def check_model_files(settings: ModelSettings) -> None:
    """Fail early, with one line, when the model files named in the config cannot be used."""
    if is_package(settings.path):
        read_rdf(settings.path)  # the package is there, and readable
        return
    if not Path(settings.path).is_file():
        raise ConfigError(f"model.path '{settings.path}' not found; point it at your model file")
    is_python = settings.path.endswith(".py")
    if is_python and settings.weights is None:
        raise ConfigError(f"model.path '{settings.path}' is a Python file: set model.weights too")
    if not is_python and settings.weights is not None:
        raise ConfigError(
            "model.weights is only used with a .py model; a TorchScript, torch.export or ONNX "
            "file carries its own weights: remove model.weights"
        )
    if settings.weights is not None and not Path(settings.weights).is_file():
        raise ConfigError(f"model.weights '{settings.weights}' not found; check the path")


def _from_python_source(files: ModelFiles) -> torch.nn.Module:
    import torch

    path, weights = files.settings.path, files.settings.weights
    module = module_from_source(files.data, path)
    build = getattr(module, "build_model", None)
    if build is None:
        raise ModelError(f"'{path}' defines no build_model(); add one returning the network")
    network = build()
    try:
        state = torch.load(io.BytesIO(files.weights), map_location="cpu", weights_only=True)  # type: ignore[arg-type]
        network.load_state_dict(state)
    except Exception as err:
        raise ModelError(
            f"cannot load weights '{weights}' into the network of '{path}': {first_line(err)}"
        ) from None
    return network


def holds_only_weights(data: bytes) -> bool:
    """Whether ``data`` is a torch.save'd state dict (names to tensors), or a training
    checkpoint holding one: weights without the network, which users often give as model.path."""
    import torch

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        return False

    def has_tensors(value: object) -> bool:
        return isinstance(value, dict) and any(isinstance(v, torch.Tensor) for v in value.values())

    return has_tensors(state) or (
        isinstance(state, dict) and any(has_tensors(v) for v in state.values())
    )


def load_model(
    model: ModelSettings | ModelFiles, device: torch.device
) -> torch.nn.Module | OnnxModel:
    """The network in eval mode on ``device``, loaded from the ``ModelFiles`` bytes (read now
    when given the settings).

    An .onnx model runs in ONNX Runtime with ``torch.get_num_threads()`` intra-op threads on the
    CPU (the block runner sets that from ``inference.threads``).
    """
    import torch

    files = model if isinstance(model, ModelFiles) else ModelFiles.read(model)
    path = files.settings.path
    if files.members:
        from chunkflow.engine.package_network import load_package_network

        output_size = files.settings.output_patch_size
        return load_package_network(
            files.members, files.settings, files.package, output_size, device
        )
    if path.endswith(".onnx"):
        from chunkflow.engine.onnx_engine import OnnxModel

        return OnnxModel(path, device, torch.get_num_threads(), files.data)
    try:
        if path.endswith(".py"):
            network = _from_python_source(files)
        elif path.endswith(".pt2"):
            network = torch.export.load(io.BytesIO(files.data)).module()
        else:
            network = load_torchscript(files.data)
    except ModelError:
        raise
    except Exception as err:
        if holds_only_weights(files.data):
            raise ModelError(
                f"model.path '{path}' holds weights only (a state dict), not a network: set "
                "model.path to a .py file whose build_model() returns the network, and "
                "model.weights to this file"
            ) from None
        raise ModelError(f"cannot load model '{path}': {first_line(err)}") from None
    network = network.to(device)
    # an exported program keeps the mode it was exported in (its module refuses eval())
    if hasattr(network, "eval") and not path.endswith(".pt2"):
        network.eval()
    return network
