"""What a bioimage.io model package says, as chunkflow's own values (``ZooModel``).

A package is a folder holding ``rdf.yaml`` (or ``bioimageio.yaml``), that file itself, or the
package's ``.zip``. It is read with ``bioimageio.spec`` (the optional ``bioimageio`` extra):
its axes, sizes and halo become patch sizes, its weights a network
(``chunkflow.engine.package_network``), its pre- and post-processing ``chunkflow.zoo.processing``
steps. Only a package's files are read; nothing is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from chunkflow.errors import ConfigError, first_line
from chunkflow.zoo import processing as proc

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: weights formats chunkflow runs, in the order a format is chosen when the config names none
WEIGHTS_FORMATS = ("torchscript", "pytorch_state_dict", "onnx")
#: the input patch a package's sizes default to (the smallest valid size at least this), z, y, x
DEFAULT_PATCH_3D = (32, 128, 128)
DEFAULT_PATCH_2D = (1, 256, 256)
SPACE = ("z", "y", "x")


def is_package(path: str) -> bool:
    """Whether ``model.path`` names a bioimage.io package rather than a model file."""
    p = Path(path)
    return p.suffix == ".zip" or p.name in RDF_NAMES or p.is_dir()


def package_root(path: str) -> Path:
    """The package's folder or zip (``model.path`` may name its rdf.yaml)."""
    p = Path(path)
    return p.parent if p.name in RDF_NAMES else p


def read_members(path: str) -> dict[str, bytes]:
    """Every file of the package, by its path inside the package (posix)."""
    root = package_root(path)
    try:
        if root.suffix == ".zip":
            with zipfile.ZipFile(root) as archive:
                return {
                    name: archive.read(name)
                    for name in archive.namelist()
                    if not name.endswith("/")
                }
        files = sorted(f for f in root.rglob("*") if f.is_file())
        return {f.relative_to(root).as_posix(): f.read_bytes() for f in files}
    except (OSError, zipfile.BadZipFile) as err:
        raise ConfigError(
            f"model.path '{path}': cannot read the package: {first_line(err)}"
        ) from None


def members_sha256(path: str, members: dict[str, bytes]) -> str:
    """A package's digest: of the name and content of each file that makes its results (its
    description, every weights file, every architecture source), in name order; its
    documentation, covers and test tensors are left out (editing them reruns nothing)."""
    rdf = rdf_of(members)
    model = read_package(path, rdf)
    used = {n for n in RDF_NAMES if n in members}
    for weights in model.weights.values():
        used |= {weights.file, weights.architecture_file} - {None}  # type: ignore[arg-type]
    digest = hashlib.sha256()
    for name in sorted(used):
        content = members.get(name, b"")  # a missing file fails when it is loaded
        digest.update(f"{name}\0{hashlib.sha256(content).hexdigest()}\n".encode())
    return digest.hexdigest()


def package_sha256(path: str) -> str:
    """``members_sha256`` of the package at ``path``."""
    return members_sha256(path, read_members(path))


@dataclass(frozen=True)
class Weights:
    """One weights entry: its format, its file in the package and, for a state dict, the
    architecture (a source file in the package, the callable in it, its keyword arguments)."""

    format: str
    file: str
    architecture_file: str | None = None
    architecture_callable: str | None = None
    architecture_kwargs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ZooModel:
    """A package's single input and output, as chunkflow runs them.

    ``input_axes`` / ``output_axes`` name the tensors' axes in their order (``batch``,
    ``channel``, ``z``, ``y``, ``x``); ``space`` the space axes (2D: ``y, x``: run slice by
    slice over a volume). Per space axis: ``min_size``/``step`` (step 0: a fixed size),
    ``offset`` (the output's size minus the input's) and ``halo`` (the output's border to drop).
    """

    name: str
    input_axes: tuple[str, ...]
    output_axes: tuple[str, ...]
    input_channels: int
    output_channels: int
    min_size: dict[str, int]
    step: dict[str, int]
    offset: dict[str, int]
    halo: dict[str, int]
    weights: dict[str, Weights]
    preprocessing: tuple[proc.Step, ...]
    postprocessing: tuple[proc.Step, ...]
    padding: str  # what the network sees beyond a volume's bounds (``input.padding``'s spelling)
    test_input: str | None
    test_output: str | None
    # per weights format: relative, absolute, mismatched values per million (``_tolerance``)
    tolerance: dict[str, tuple[float, float, float]]

    @property
    def space(self) -> tuple[str, ...]:
        """The space axes, in chunkflow's order (z, y, x)."""
        return tuple(a for a in SPACE if a in self.input_axes)

    @property
    def is_2d(self) -> bool:
        return "z" not in self.space

    def valid_size(self, axis: str, size: int) -> bool:
        low, step = self.min_size[axis], self.step[axis]
        return size == low if step == 0 else size >= low and (size - low) % step == 0

    def nearest_sizes(self, axis: str, size: int) -> list[int]:
        """The valid input sizes nearest ``size`` along ``axis`` (one or two)."""
        low, step = self.min_size[axis], self.step[axis]
        if step == 0 or size <= low:
            return [low]
        below = low + (size - low) // step * step
        return sorted({below, below + step})

    def default_input_patch(self) -> tuple[int, int, int]:
        """The smallest valid input patch at least ``DEFAULT_PATCH_3D`` (2D: ``_2D``) whose
        output keeps voxels once the halo is dropped."""
        target = DEFAULT_PATCH_2D if self.is_2d else DEFAULT_PATCH_3D
        sizes = []
        for axis, wanted in zip(SPACE, target, strict=True):
            if axis not in self.space:
                sizes.append(1)
                continue
            low, step = self.min_size[axis], self.step[axis]
            need = max(wanted, 2 * self.halo[axis] - self.offset[axis] + 1)
            size = low if step == 0 or need <= low else low + -(-(need - low) // step) * step
            sizes.append(size)
        return (sizes[0], sizes[1], sizes[2])

    def output_patch(self, input_patch: tuple[int, int, int]) -> tuple[int, int, int]:
        """The trusted output of ``input_patch``: the network's output less its halo."""
        out = [
            size + self.offset.get(axis, 0) - 2 * self.halo.get(axis, 0)
            for axis, size in zip(SPACE, input_patch, strict=True)
        ]
        return (out[0], out[1], out[2])

    def check_input_patch(self, input_patch: tuple[int, int, int]) -> None:
        """Refuse, in one line, an input patch the package does not take."""
        for axis, size in zip(SPACE, input_patch, strict=True):
            if axis not in self.space:
                continue
            if not self.valid_size(axis, size):
                near = " or ".join(map(str, self.nearest_sizes(axis, size)))
                raise ConfigError(
                    f"model.input_patch_size is {size} along {axis} but the package takes "
                    f"{self._size_rule(axis)}; use {near}"
                )
        output = self.output_patch(input_patch)
        if min(output) < 1:
            raise ConfigError(
                f"model.input_patch_size {list(input_patch)} leaves no output once the package's "
                f"halo {[self.halo.get(a, 0) for a in SPACE]} is dropped; use a larger patch"
            )

    def check_output_patch(
        self, input_patch: tuple[int, int, int], output_patch: tuple[int, int, int]
    ) -> None:
        """Refuse, in one line, an output patch that is not a centred part of what the network
        returns for ``input_patch`` less its halo (the halo is never written); a 2D package's
        z patch is its input's."""
        returned = self.output_patch(input_patch)
        for axis, want, most in zip(SPACE, output_patch, returned, strict=True):
            have = most if axis in self.space else input_patch[SPACE.index(axis)]
            exact = axis not in self.space
            if want > have or (have - want) % 2 or (exact and want != have):
                fix = f"{have}" if exact else f"at most {have} (its output less its halo)"
                raise ConfigError(
                    f"model.output_patch_size is {want} along {axis} but the package gives {have} "
                    f"voxels there for model.input_patch_size {list(input_patch)}; use {fix}, or "
                    "leave it out"
                )

    def _size_rule(self, axis: str) -> str:
        low, step = self.min_size[axis], self.step[axis]
        return f"exactly {low}" if step == 0 else f"{low} + a multiple of {step}"


def _member(source: Any) -> str:
    """The path inside the package of a file ``source`` of the description."""
    for attribute in ("path", "at"):  # a RelativeFilePath; a zipfile.Path
        value = getattr(source, attribute, None)
        if value is not None and not callable(value):
            return PurePosixPath(str(value)).as_posix()
    return PurePosixPath(str(source)).name


def _unsupported(what: str, path: str) -> ConfigError:
    return ConfigError(f"model.path '{path}': {what}; chunkflow cannot run this package")


def _space_size(axis: Any, input_id: str, path: str) -> tuple[int, int]:
    size = axis.size
    if isinstance(size, int):
        return size, 0
    if hasattr(size, "min") and hasattr(size, "step"):
        return int(size.min), int(size.step)
    raise _unsupported(f"its input's {axis.id} axis has a size of kind {type(size).__name__}", path)


def _output_offset(
    axis: Any, input_id: str, input_sizes: dict[str, tuple[int, int]], path: str
) -> int:
    """The output's size minus the input's along ``axis`` (the same scale, referenced size)."""
    size = axis.size
    if hasattr(size, "tensor_id"):
        if str(size.tensor_id) != input_id or str(size.axis_id) != str(axis.id):
            raise _unsupported(f"its output's {axis.id} size refers to another axis", path)
        if getattr(axis, "scale", 1.0) != 1.0:
            raise _unsupported(f"its output's {axis.id} axis is rescaled", path)
        return int(size.offset)
    low, step = input_sizes[str(axis.id)]
    if isinstance(size, int) and step == 0:
        return size - low
    raise _unsupported(
        f"its output's {axis.id} axis has a size of kind {type(size).__name__}", path
    )


def _steps(descrs: Any, where: str, path: str) -> tuple[proc.Step, ...]:
    return tuple(_step(d, where, path) for d in descrs)


def _along_channel(kwargs: Any, name: str, path: str) -> None:
    axis = getattr(kwargs, "axis", None)
    if axis is not None and str(axis) != "channel":
        raise _unsupported(
            f"its {name} step varies along axis '{axis}' (only channel is supported)", path
        )


def _values(value: Any) -> float | tuple[float, ...]:
    return float(value) if isinstance(value, int | float) else tuple(float(v) for v in value)


def _step(descr: Any, where: str, path: str) -> proc.Step:
    """One processing step of the description as ours."""
    name = str(descr.id)
    kwargs = getattr(descr, "kwargs", None)
    if name in ("zero_mean_unit_variance", "scale_range") and getattr(
        kwargs, "reference_tensor", None
    ):
        if where == "postprocessing":
            raise _unsupported(f"its postprocessing {name} refers to another tensor", path)
    if name == "scale_linear":
        _along_channel(kwargs, name, path)
        return proc.ScaleLinear(_values(kwargs.gain), _values(kwargs.offset))
    if name == "fixed_zero_mean_unit_variance":
        _along_channel(kwargs, name, path)
        return proc.ZeroMeanUnitVariance(proc.EPS, _values(kwargs.mean), _values(kwargs.std))
    if name == "binarize":
        _along_channel(kwargs, name, path)
        return proc.Binarize(_values(kwargs.threshold))
    if name == "sigmoid":
        return proc.Sigmoid()
    if name == "softmax":
        _along_channel(kwargs, name, path)
        return proc.Softmax()
    if name == "ensure_dtype":
        return proc.EnsureDtype(str(kwargs.dtype))
    axes = None if getattr(kwargs, "axes", None) is None else tuple(map(str, kwargs.axes))
    if name == "zero_mean_unit_variance":
        step: proc.Step = proc.ZeroMeanUnitVariance(float(kwargs.eps), axes=axes)
    elif name == "scale_range":
        step = proc.ScaleRange(
            float(kwargs.min_percentile), float(kwargs.max_percentile), float(kwargs.eps), axes
        )
    elif name == "clip":
        step = proc.Clip(kwargs.min, kwargs.max, kwargs.min_percentile, kwargs.max_percentile, axes)
    else:
        raise _unsupported(f"its {where} step '{name}' is not one chunkflow implements", path)
    if step.needs and where == "postprocessing":
        raise _unsupported(
            f"its postprocessing step '{name}' normalises by the output's own statistics, which a "
            "block of a large volume cannot know",
            path,
        )
    return step


def _padding(tensor: Any, path: str) -> str:
    """The input's padding mode (bioimage.io's default: symmetric) as ``input.padding``."""
    pad = getattr(tensor, "pad", None)
    mode = "symmetric" if pad is None else str(pad.mode)
    if mode == "constant":
        if float(getattr(pad, "value", 0)) != 0:
            raise _unsupported(
                f"its input pads with the constant {pad.value} (only 0 is supported)", path
            )
        return "zero"
    return mode


def _tolerance(descr: Any, weights_format: str) -> tuple[float, float, float]:
    """The package's stated reproducibility tolerance for ``weights_format``: relative,
    absolute, mismatched values per million (bioimage.io's defaults where none is stated)."""
    config = getattr(descr, "config", None)
    stated = getattr(getattr(config, "bioimageio", None), "reproducibility_tolerance", ())
    for entry in stated or ():
        if not entry.weights_formats or weights_format in entry.weights_formats:
            return (
                float(entry.relative_tolerance),
                float(entry.absolute_tolerance),
                float(entry.mismatched_elements_per_million),
            )
    return 1e-3, 1e-3, 100.0


def read_rdf(path: str) -> bytes:
    """The package's description file (rdf.yaml), read alone (a zip's member)."""
    root = package_root(path)
    if not root.exists():
        raise ConfigError(f"model.path '{path}' not found; point it at your model package")
    try:
        if root.suffix == ".zip":
            with zipfile.ZipFile(root) as archive:
                names = [n for n in RDF_NAMES if n in archive.namelist()]
                return archive.read(names[0]) if names else b""
        names = [n for n in RDF_NAMES if (root / n).is_file()]
        return (root / names[0]).read_bytes() if names else b""
    except (OSError, zipfile.BadZipFile) as err:
        raise ConfigError(
            f"model.path '{path}': cannot read the package: {first_line(err)}"
        ) from None


def rdf_of(members: dict[str, bytes]) -> bytes:
    """The description file among a package's ``members`` (empty when there is none)."""
    return next((members[n] for n in RDF_NAMES if n in members), b"")


def _error_line(error: Any) -> str:
    """A validation error of ``bioimageio.spec`` in one line: where, and what."""
    where = ".".join(map(str, getattr(error, "loc", ()) or ()))
    message = first_line(Exception(str(getattr(error, "msg", error))))
    return f"{where}: {message}" if where else message


def read_package(path: str, rdf: bytes | None = None) -> ZooModel:
    """The package at ``path`` as a ``ZooModel``, from its description ``rdf`` (read from
    ``path`` when not given); one-line ``ConfigError`` when it cannot be read or holds what
    chunkflow cannot run (several inputs or outputs, other axes, ...)."""
    return _describe(path, read_rdf(path) if rdf is None else rdf)


@functools.lru_cache(maxsize=16)
def _describe(path: str, rdf: bytes) -> ZooModel:
    """``read_package`` of the description ``rdf`` (the same bytes are read once)."""
    try:
        from bioimageio.spec import InvalidDescr, ValidationContext, build_description
    except ImportError:
        raise ConfigError(
            f"model.path '{path}' is a bioimage.io package: install the optional extra "
            "with pip install 'chunkflow[bioimageio]' (bioimageio.spec)"
        ) from None
    if not rdf:
        raise ConfigError(
            f"model.path '{path}' holds no rdf.yaml: name a bioimage.io package (its folder "
            "or .zip) or a model file"
        )
    try:
        content = yaml.safe_load(rdf)
        with ValidationContext(root=package_root(path), perform_io_checks=False):
            descr = build_description(content)
    except Exception as err:
        raise ConfigError(
            f"model.path '{path}': cannot read the package: {first_line(err)}"
        ) from None
    if isinstance(descr, InvalidDescr) or getattr(descr, "type", None) != "model":
        errors = getattr(descr.validation_summary, "errors", None) or ["not a model description"]
        raise ConfigError(f"model.path '{path}': the package is invalid: {_error_line(errors[0])}")
    if not hasattr(descr.inputs[0], "axes") or isinstance(descr.inputs[0].axes, str):
        raise _unsupported(
            "its description is of format 0.4 (update it to 0.5 with bioimageio.spec)", path
        )
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise _unsupported(
            f"it has {len(descr.inputs)} inputs and {len(descr.outputs)} outputs (one of each is supported)",
            path,
        )
    inp, out = descr.inputs[0], descr.outputs[0]
    input_id = str(inp.id)

    def axis_names(tensor: Any, which: str) -> tuple[str, ...]:
        names = tuple(str(a.id) if str(a.type) == "space" else str(a.type) for a in tensor.axes)
        other = set(names) - {"batch", "channel", *SPACE}
        if other or not {"y", "x"} <= set(names):
            raise _unsupported(
                f"its {which} has axes {list(names)} (batch, channel, [z,] y, x are supported)",
                path,
            )
        return names

    input_axes, output_axes = axis_names(inp, "input"), axis_names(out, "output")
    if {a for a in input_axes if a in SPACE} != {a for a in output_axes if a in SPACE}:
        raise _unsupported("its output's space axes differ from its input's", path)
    sizes = {str(a.id): _space_size(a, input_id, path) for a in inp.axes if str(a.type) == "space"}
    offsets = {
        str(a.id): _output_offset(a, input_id, sizes, path)
        for a in out.axes
        if str(a.type) == "space"
    }
    halo = {str(a.id): int(getattr(a, "halo", 0) or 0) for a in out.axes if str(a.type) == "space"}
    for axis, offset in offsets.items():
        if offset > 0 or offset % 2:
            raise _unsupported(
                f"its output is {offset} voxels larger than its input along {axis} (only equal or evenly smaller outputs are supported)",
                path,
            )

    def channels(tensor: Any) -> int:
        for a in tensor.axes:
            if str(a.type) == "channel":
                return len(a.channel_names)
        return 1

    weights = {}
    for fmt in WEIGHTS_FORMATS:
        entry = getattr(descr.weights, fmt, None)
        if entry is None:
            continue
        arch = getattr(entry, "architecture", None)
        if arch is not None and not hasattr(arch, "source"):
            continue  # an architecture from an installed library: not runnable from the package
        weights[fmt] = Weights(
            fmt,
            _member(entry.source),
            None if arch is None else _member(arch.source),
            None if arch is None else str(arch.callable),
            () if arch is None else tuple(sorted(dict(arch.kwargs).items())),
        )
    if not weights:
        raise _unsupported(
            f"it has no weights in a format chunkflow runs ({', '.join(WEIGHTS_FORMATS)})", path
        )

    def test_file(tensor: Any) -> str | None:
        tensor_source = getattr(tensor, "test_tensor", None)
        return None if tensor_source is None else _member(tensor_source.source)

    return ZooModel(
        name=str(descr.name),
        input_axes=input_axes,
        output_axes=output_axes,
        input_channels=channels(inp),
        output_channels=channels(out),
        min_size={a: s[0] for a, s in sizes.items()},
        step={a: s[1] for a, s in sizes.items()},
        offset=offsets,
        halo=halo,
        weights=weights,
        preprocessing=_steps(inp.preprocessing, "preprocessing", path),
        postprocessing=_steps(out.postprocessing, "postprocessing", path),
        padding=_padding(inp, path),
        test_input=test_file(inp),
        test_output=test_file(out),
        tolerance={fmt: _tolerance(descr, fmt) for fmt in weights},
    )


def choose_weights(model: ZooModel, wanted: str | None, path: str) -> str:
    """The weights format to run: ``model.weights_format`` if given, else the first of
    ``WEIGHTS_FORMATS`` the package has."""
    if wanted is None:
        return next(f for f in WEIGHTS_FORMATS if f in model.weights)
    if wanted not in model.weights:
        raise ConfigError(
            f"model.weights_format is {wanted} but the package '{path}' has weights as "
            f"{', '.join(model.weights)}; choose one of those"
        )
    return wanted


def check_fits(model: ZooModel, input_channels: int, path: str) -> None:
    """Refuse, in one line, a package whose input channels the volume cannot give."""
    if model.input_channels != input_channels:
        raise ConfigError(
            f"model.path '{path}': the package takes {model.input_channels} input channel(s) but "
            f"the input volume has {input_channels}; use a package for this data"
        )
