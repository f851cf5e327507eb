"""Loading models: TorchScript, torch.export archives, ONNX files (ONNX Runtime), or a Python file
plus a weights file."""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from chunkflow.errors import ConfigError, ModelError, first_line
from chunkflow.settings import ModelSettings

if TYPE_CHECKING:
    import torch

    from chunkflow.engine.onnx_engine import OnnxModel


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def model_sha256(settings: ModelSettings) -> str:
    """sha256 of the model file; for a .py model, of its source and weights file together."""
    digest = file_sha256(settings.path)
    if settings.weights is None:
        return digest
    return hashlib.sha256(f"{digest}:{file_sha256(settings.weights)}".encode()).hexdigest()


def check_model_files(settings: ModelSettings) -> None:
    """Fail early, with one line, when the model files named in the config cannot be used."""
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


def _from_python_file(path: str, weights: str) -> torch.nn.Module:
    import torch

    spec = importlib.util.spec_from_file_location(f"chunkflow_user_model_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    build = getattr(module, "build_model", None)
    if build is None:
        raise ModelError(f"'{path}' defines no build_model(); add one returning the network")
    network = build()
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as err:
        raise ModelError(
            f"cannot load weights '{weights}' into the network of '{path}': {first_line(err)}"
        ) from None
    return network


def holds_only_weights(path: str) -> bool:
    """Whether ``path`` is a torch.save'd state dict (names to tensors), or a training
    checkpoint holding one: weights without the network, which users often give as model.path."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False

    def has_tensors(value: object) -> bool:
        return isinstance(value, dict) and any(isinstance(v, torch.Tensor) for v in value.values())

    return has_tensors(state) or (
        isinstance(state, dict) and any(has_tensors(v) for v in state.values())
    )


def load_model(settings: ModelSettings, device: torch.device) -> torch.nn.Module | OnnxModel:
    """The network in eval mode on ``device``.

    An .onnx model runs in ONNX Runtime with ``torch.get_num_threads()`` intra-op threads on the
    CPU (the block runner sets that from ``inference.threads``).
    """
    import torch

    check_model_files(settings)
    path = settings.path
    if path.endswith(".onnx"):
        from chunkflow.engine.onnx_engine import OnnxModel

        return OnnxModel(path, device, torch.get_num_threads())
    try:
        if path.endswith(".py"):
            network = _from_python_file(path, settings.weights)  # type: ignore[arg-type]
        elif path.endswith(".pt2"):
            network = torch.export.load(path).module()
        else:
            with warnings.catch_warnings():  # TorchScript is deprecated, but users have such files
                warnings.filterwarnings(
                    "ignore", r"`torch\.jit\.load` is deprecated", DeprecationWarning
                )
                network = torch.jit.load(path, map_location="cpu")
    except ModelError:
        raise
    except Exception as err:
        if holds_only_weights(path):
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
