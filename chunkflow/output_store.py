"""The output store: created once with the geometry and channel count the run will write, and
finished once every block is written (a no-op except for formats that assemble parts: HDF5)."""

from __future__ import annotations

from chunkflow.geometry import Box
from chunkflow.plan import RunPlan
from chunkflow.volumes import Volume, create_or_check, open_volume, output_backend


def model_output_channels(plan: RunPlan) -> int:
    """Channels of the model's output, from one forward pass of a zero patch on the CPU.

    The pass also checks that the model's output patch has the configured size.
    """
    import numpy as np
    import torch

    from chunkflow.inference import Predictor
    from chunkflow.models import load_model

    settings = plan.settings
    device = torch.device("cpu")
    predictor = Predictor(
        model=load_model(settings.model, device),
        geometry=plan.geometry,
        blend="constant",
        batch_size=1,
        device=device,
        output_channels=settings.model.output_channels,
        affinity_axes=settings.model.affinity_axes,  # its length is checked against the model
    )
    channels = plan.input_info.channels or 1
    probe = np.zeros((channels, *plan.geometry.input_size), dtype=np.float32)
    box = Box.from_shape((0, 0, 0), plan.geometry.output_size)
    return int(predictor.predict(probe, plan.geometry.input_box(box), [box], box).shape[0])


def create_output(plan: RunPlan) -> tuple[Volume, bool]:
    """Create the output volume, or reuse a matching existing one; refuse a mismatching one."""
    channels = model_output_channels(plan)
    info = plan.output_info(channels)
    return create_or_check(plan.settings.output.path, info, plan.settings.output)


def needs_finish(plan: RunPlan) -> bool:
    """Whether the output's format has a finishing step after the blocks (HDF5: the VDS)."""
    return output_backend(plan.settings.output.path).finish is not Volume.finish


def finish_output(plan: RunPlan) -> Volume:
    """Make the output whole over every block of the plan; the output must match the plan."""
    plan.check_existing_output()
    volume = open_volume(plan.settings.output.path, mode="r+")
    volume.finish([block.box for block in plan.blocks])
    return volume
