"""What a block job holds in memory, estimated from its piece size; the default piece size.

A block job streams its block piece by piece (``chunkflow.geometry.pieces``), so its memory follows from
the piece, not the block. At the largest piece it holds:

- the input of the piece's patches twice (the next piece is read ahead), as stored and as
  float32: the piece's reach grown by one output patch before it and the context all round;
- the float32 accumulator over the piece's reach (the piece grown by one output patch at its
  far sides, within the block), plus up
  to as much again in partial sums carried in and out, and the previous piece's accumulator
  while it is written behind;
- the runtime: Python, PyTorch, the model and its activations (``RUNTIME_BYTES``).

On a GPU node (values on the device, ``chunkflow.engine.device_values``) the float32 input and
the accumulators of two pieces sit in GPU memory instead; the host holds the inputs as stored,
the carried sums and the output as stored: this estimate stays an upper bound.
"""

from __future__ import annotations

from chunkflow.geometry.boxes import Vec, add, ceil_div, minimum

RUNTIME_BYTES = 1 << 30  # Python, PyTorch, the model, a batch's activations: measured ~0.6 GiB
PIECE_BUDGET_BYTES = 2 << 30  # the default piece's data, beyond the runtime


def _voxels(size: Vec) -> int:
    return size[0] * size[1] * size[2]


def piece_bytes(
    piece: Vec,
    block: Vec,
    output_patch: Vec,
    context: Vec,
    input_channels: int,
    input_itemsize: int,
    output_channels: int,
) -> int:
    """The data a block job holds at once with pieces of ``piece`` (see the module docstring)."""
    reach = minimum(add(piece, output_patch), block)
    # the first piece's patches may start up to a patch before the block
    chunk = add(add(reach, output_patch), add(context, context))
    chunk_bytes = _voxels(chunk) * input_channels * (input_itemsize + 4)  # stored + float32
    accumulator = _voxels(reach) * output_channels * 4
    return 2 * chunk_bytes + 3 * accumulator


def job_memory_bytes(
    piece: Vec,
    block: Vec,
    output_patch: Vec,
    context: Vec,
    input_channels: int,
    input_itemsize: int,
    output_channels: int,
) -> int:
    """The estimated peak memory of a block job (RSS), runtime included."""
    data = piece_bytes(
        piece, block, output_patch, context, input_channels, input_itemsize, output_channels
    )
    return RUNTIME_BYTES + data


def default_piece_size(
    block: Vec,
    unit: Vec,
    output_patch: Vec,
    context: Vec,
    input_channels: int,
    input_itemsize: int,
    output_channels: int,
    budget: int = PIECE_BUDGET_BYTES,
) -> Vec:
    """The largest piece within ``budget``: the block, halved (in whole storage ``unit``s) along
    the axis where it is longest in output patches, until its data fits, or one unit. Pieces so
    keep the shape of a patch, which keeps the sums they carry to each other small."""
    piece = block
    while (
        piece_bytes(
            piece, block, output_patch, context, input_channels, input_itemsize, output_channels
        )
        > budget
    ):
        units = [ceil_div(p, u) for p, u in zip(piece, unit, strict=True)]
        axis = max(range(3), key=lambda a: (units[a] > 1, piece[a] / output_patch[a]))
        if units[axis] == 1:
            break
        smaller = list(piece)
        smaller[axis] = ceil_div(units[axis], 2) * unit[axis]
        piece = minimum(tuple(smaller), block)  # type: ignore[arg-type]
    return piece
