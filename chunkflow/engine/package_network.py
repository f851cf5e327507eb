"""A package's weights as a network on chunkflow's patches: (batch, channel, z, y, x) in,
the package's output cropped to the configured output patch out. A 2D package's network sees
each z-slice of a patch as one image of its batch."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import torch

from chunkflow.engine.model_bytes import load_torchscript, module_from_source
from chunkflow.errors import ModelError, first_line
from chunkflow.zoo.package import SPACE, ZooModel

if TYPE_CHECKING:
    from chunkflow.settings import ModelSettings


class PackageNetwork(torch.nn.Module):
    """``network`` (a torch module, or an ONNX Runtime session called like one) between
    chunkflow's axis order and the package's, its output centre-cropped to ``output_size``."""

    def __init__(self, network: Any, model: ZooModel, output_size: tuple[int, int, int]) -> None:
        super().__init__()
        self.network = network
        self.model = model
        self.output_size = output_size

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        model = self.model
        n, c, z = batch.shape[:3]
        if model.is_2d:  # slices as images: (n * z, c, y, x)
            batch = batch.transpose(1, 2).reshape(n * z, c, *batch.shape[3:])
        ours = ("batch", "channel", *model.space)
        inputs = batch if "channel" in model.input_axes else batch[:, 0]
        present = [a for a in ours if a == "batch" or a in model.input_axes]
        wanted = model.input_axes
        if "batch" not in wanted:  # kept first here, and unbound below
            wanted = ("batch", *wanted)
        inputs = inputs.permute([present.index(a) for a in wanted])
        if "batch" in model.input_axes:
            out = self.network(inputs)
        else:  # a package without a batch axis: one patch at a time
            out = torch.stack([self.network(one) for one in inputs.unbind(0)])
        given = model.output_axes  # the batch axis where the network puts it, or first (stacked)
        if "batch" not in given:
            given = ("batch", *given)
        out = out.permute([given.index(a) for a in ours if a in given])
        if "channel" not in model.output_axes:
            out = out.unsqueeze(1)
        if model.is_2d:
            out = out.reshape(n, z, *out.shape[1:]).transpose(1, 2)
        crops = []
        for axis, have, want in zip(SPACE, out.shape[2:], self.output_size, strict=True):
            margin = (have - want) // 2
            crops.append(slice(margin, margin + want) if axis in model.space else slice(None))
        return out[(slice(None), slice(None), *crops)]


def _architecture(members: dict[str, bytes], source: str, name: str) -> Any:
    """The callable ``name`` of the package's architecture file ``source``."""
    code = members.get(source)
    if code is None:
        raise ModelError(f"the package lacks its architecture file '{source}'")
    module = module_from_source(code, source)
    if not hasattr(module, name):
        raise ModelError(f"the package's architecture '{source}' defines no '{name}'")
    return getattr(module, name)


def load_package_network(
    members: dict[str, bytes],
    settings: ModelSettings,
    model: ZooModel,
    output_size: tuple[int, int, int],
    device: torch.device,
) -> PackageNetwork:
    """The package's network in the weights format ``model.weights_format`` names, on
    ``device``, from the package's files ``members`` (by name)."""
    fmt = settings.weights_format
    assert fmt is not None
    weights = model.weights[fmt]
    data = members.get(weights.file)
    path = settings.path
    if data is None:
        raise ModelError(f"model package '{path}' lacks its {fmt} weights file '{weights.file}'")
    try:
        if fmt == "onnx":
            from chunkflow.engine.onnx_engine import OnnxModel

            network: Any = OnnxModel(
                f"{path}/{weights.file}", device, torch.get_num_threads(), data
            )
        elif fmt == "torchscript":
            network = load_torchscript(data)
        else:
            assert weights.architecture_file is not None and weights.architecture_callable
            build = _architecture(members, weights.architecture_file, weights.architecture_callable)
            network = build(**dict(weights.architecture_kwargs))
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            network.load_state_dict(state)
    except ModelError:
        raise
    except Exception as err:
        raise ModelError(
            f"cannot load the {fmt} weights of model package '{path}': {first_line(err)}"
        ) from None
    wrapped = PackageNetwork(network, model, output_size).to(device)
    return wrapped.eval()
