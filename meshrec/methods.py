"""Methods, their inputs and their predictions.

A *method* (HMR, SA-HMR, fitting, ...) is a subclass of :class:`Method` that a plugin registers
in a :class:`MethodRegistry`. It declares the inputs it needs, builds its network from a
checkpoint and a body model, and turns a batch of :class:`Sample` into :class:`Prediction`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch import nn

from meshrec.errors import ImageReadError, closest
from meshrec.registry import Registry, RegistryEntry, import_target

__all__ = [
    "Input",
    "Method",
    "MethodRegistry",
    "MethodSpec",
    "Option",
    "Prediction",
    "Sample",
]


class Input(str, Enum):
    """What a method may need per input item (the keyword of ``meshrec.predict`` in brackets)."""

    IMAGE = "image"  # the positional input: (H, W, 3) uint8 RGB
    BBOX = "bbox"  # (P, 4) person boxes in pixels, stored as x1, y1, x2, y2
    CAMERA = "camera"  # (3, 3) intrinsics K in pixels
    SCENE = "scene"  # (N, 3) scene points, camera frame, metres
    KEYPOINTS = "keypoints"  # (P, K, 3) 2D keypoints in pixels with confidence
    KEYPOINT_SEQUENCE = "keypoint_sequence"  # (T, P, K, 3) keypoints over T frames

    @classmethod
    def keywords(cls) -> tuple[str, ...]:
        """Keyword names ``meshrec.predict`` accepts for per-input extras."""
        return tuple(member.value for member in cls if member is not cls.IMAGE)


@dataclass
class Sample:
    """One input item handed to :meth:`Method.predict_batch`.

    ``image_source`` is a path or an array; :meth:`image` decodes it on first use, so that a
    long list of files is read batch by batch. Extras are numpy arrays in the layouts of
    :class:`Input` (boxes always x1, y1, x2, y2).
    """

    index: int
    source: str
    image_source: Any = None
    bbox: np.ndarray | None = None
    camera: np.ndarray | None = None
    scene: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    keypoint_sequence: np.ndarray | None = None
    _image: np.ndarray | None = field(default=None, repr=False)

    def has(self, item: Input) -> bool:
        if item is Input.IMAGE:
            return self.image_source is not None
        return getattr(self, item.value) is not None

    def image(self) -> np.ndarray:
        """The image as (H, W, 3) uint8 RGB, decoded once."""
        if self._image is None:
            from meshrec.io.images import read_image

            if self.image_source is None:
                raise ImageReadError(f"input {self.source} has no image")
            self._image = read_image(self.image_source, name=self.source)
        return self._image

    def release(self) -> None:
        """Drops the decoded image (after its batch) so long inputs do not pile up in memory."""
        if isinstance(self.image_source, (str, Path)):
            self._image = None


@dataclass
class Prediction:
    """Bodies recovered from one input item.

    Attributes:
        vertices: (P, V, 3) mesh of each of the P people, camera frame, metres.
        joints: (P, J, 3) joints, camera frame, metres (layout in ``joint_names`` when known).
        global_orient: (P, 3, 3) root rotation, camera frame.
        body_pose: (P, Jb, 3, 3) local joint rotations (23 for SMPL).
        betas: (P, NB) shape coefficients.
        transl: (P, 3) translation added to the body model output, metres.
        scores: (P,) confidence per person (1 when the method has none).
        method: name of the method that produced it.
        faces: (F, 3) int64 triangles of the mesh, or None.
        samples: (P, S, V, 3) sampled meshes of probabilistic methods, or None.
        extras: method-specific outputs (e.g. the weak-perspective camera).
        source: the input it came from (path, or "input[i]").
        joint_names: names of the J joints, when the method states them.
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    global_orient: torch.Tensor
    body_pose: torch.Tensor
    betas: torch.Tensor
    transl: torch.Tensor
    scores: torch.Tensor
    method: str = ""
    faces: torch.Tensor | None = None
    samples: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    joint_names: tuple[str, ...] | None = None

    _CONTEXT_FIELDS: ClassVar[tuple[str, ...]] = ("method", "source", "joint_names")

    @property
    def num_people(self) -> int:
        return int(self.vertices.shape[0])

    def _map(self, fn: Callable[[torch.Tensor], Any]) -> "Prediction":
        def convert(value: Any) -> Any:
            if torch.is_tensor(value):
                return fn(value)
            if isinstance(value, dict):
                return {key: convert(item) for key, item in value.items()}
            return value

        return replace(self, **{f.name: convert(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: str | torch.device) -> "Prediction":
        return self._map(lambda tensor: tensor.to(device))

    def cpu(self) -> "Prediction":
        return self.to("cpu")

    def detach(self) -> "Prediction":
        return self._map(lambda tensor: tensor.detach())

    def clone(self) -> "Prediction":
        """A copy with its own tensors (tensors made under inference mode cannot enter autograd;
        clones made outside it can)."""
        return self._map(lambda tensor: tensor.clone())

    def numpy(self) -> dict[str, Any]:
        """All fields as numpy arrays (extras flattened as ``extras/<key>``), for saving."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extras":
                for key, item in value.items():
                    out[f"extras/{key}"] = item.detach().cpu().numpy() if torch.is_tensor(item) else np.asarray(item)
            elif torch.is_tensor(value):
                out[f.name] = value.detach().cpu().numpy()
            elif value is not None:
                out[f.name] = np.asarray(value)
        return out

    def save_npz(self, path: str | Path) -> Path:
        """Writes every field (see :meth:`numpy`) as an ``.npz``, atomically."""
        from meshrec.io.meshes import atomic_path

        path = Path(path)
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, **self.numpy())
        return path

    def merged_mesh(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Every person's mesh in one: vertices (P * V, 3) metres and faces (P * F, 3) int64
        (or None when the method gives no faces), for writing one file per input."""
        vertices = self.vertices.detach().cpu().numpy()
        if self.faces is None:
            return vertices.reshape(-1, 3), None
        faces = self.faces.detach().cpu().numpy().astype(np.int64)
        offsets = np.arange(len(vertices))[:, None, None] * vertices.shape[1]
        return vertices.reshape(-1, 3), (faces[None] + offsets).reshape(-1, 3)

    def save(self, path: str | Path) -> Path:
        """Writes the prediction by the file's suffix: ``.npz`` (every field, see :meth:`numpy`),
        ``.ply`` (binary) or ``.obj`` (every person's mesh, camera frame, metres). Atomic."""
        from meshrec.io.meshes import write_obj, write_ply

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return self.save_npz(path)
        if suffix in (".ply", ".obj"):
            vertices, faces = self.merged_mesh()
            return (write_ply if suffix == ".ply" else write_obj)(path, vertices, faces)
        raise ValueError(f"cannot save a prediction as {path.name!r}: use a .npz, .ply or .obj file name")

    _PER_PERSON_FIELDS: ClassVar[tuple[str, ...]] = (
        "vertices", "joints", "global_orient", "body_pose", "betas", "transl", "scores", "samples")

    def split(self, owner: torch.Tensor, count: int, shared: Iterable[str] = ()) -> list["Prediction"]:
        """Splits a prediction of every person of a batch back into one prediction per input.

        Args:
            owner: (P,) integer index of the input each of the P people belongs to.
            count: number of inputs (inputs without people get empty predictions).
            shared: keys of ``extras`` that belong to the whole batch (copied to every part);
                every other tensor extra is per person and sliced like the fields (nested dicts
                of tensors too).

        Returns:
            ``count`` predictions, in input order.
        """
        owner = torch.as_tensor(owner, device=self.vertices.device)
        people = self.num_people
        if owner.shape != (people,):
            raise ValueError(f"owner must have shape ({people},), one index per person; got {tuple(owner.shape)}")
        if people and (int(owner.min()) < 0 or int(owner.max()) >= count):
            raise ValueError(f"owner indices must lie in [0, {count}); got {int(owner.min())}..{int(owner.max())}")
        shared = set(shared)

        def take(value: Any, mask: torch.Tensor, key: str) -> Any:
            if isinstance(value, dict):
                return {name: take(item, mask, f"{key}/{name}") for name, item in value.items()}
            if torch.is_tensor(value):
                if value.dim() == 0 or value.shape[0] != people:
                    raise ValueError(f"extras[{key!r}] has shape {tuple(value.shape)}, not one row per person "
                                     f"({people}); list it in shared= if it belongs to the whole batch")
                return value[mask]
            return value

        parts = []
        for index in range(count):
            mine = owner == index
            values = {name: (getattr(self, name)[mine] if getattr(self, name) is not None else None)
                      for name in self._PER_PERSON_FIELDS}
            extras = {key: (value if key in shared else take(value, mine, key)) for key, value in self.extras.items()}
            parts.append(replace(self, **values, extras=extras))
        return parts


def _flatten_prediction(prediction: Prediction) -> tuple[list[Any], tuple]:
    names = [f.name for f in fields(prediction) if f.name not in Prediction._CONTEXT_FIELDS]
    children = [getattr(prediction, name) for name in names]
    context = (tuple(names), *(getattr(prediction, name) for name in Prediction._CONTEXT_FIELDS))
    return children, context


def _unflatten_prediction(children: Any, context: tuple) -> Prediction:
    names, *constants = context
    values = dict(zip(names, children))
    values.update(zip(Prediction._CONTEXT_FIELDS, constants))
    return Prediction(**values)


def _flatten_prediction_with_keys(prediction: Prediction):
    children, context = _flatten_prediction(prediction)
    return [(pytree.GetAttrKey(name), child) for name, child in zip(context[0], children)], context


pytree.register_pytree_node(
    Prediction,
    _flatten_prediction,
    _unflatten_prediction,
    serialized_type_name="meshrec.Prediction",
    flatten_with_keys_fn=_flatten_prediction_with_keys,
)


_NO_DEFAULT = object()


@dataclass(frozen=True)
class Option:
    """An option a method declares (``meshrec.load_method(name, option=value)``,
    ``meshrec predict --option name=value``).

    Args:
        name: the keyword.
        default: the value when not given.
        help: one line: what it does, with units.
        choices: the allowed values, when they are few.
        type: converts (and checks) a given value, raising ValueError or TypeError; default:
            the type of ``default`` for bool, int, float and str defaults, else none.
    """

    name: str
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    type: Callable[[Any], Any] | None = None

    def converter(self) -> Callable[[Any], Any] | None:
        if self.type is not None:
            return self.type
        if isinstance(self.default, bool):
            return _as_bool
        if isinstance(self.default, (int, float, str)):
            return type(self.default) if not isinstance(self.default, int) else _as_int
        return None

    def convert(self, value: Any, method: str) -> Any:
        converter = self.converter()
        if converter is not None and value is not None:
            try:
                value = converter(value)
            except (TypeError, ValueError) as error:
                raise ValueError(f"option {self.name!r} of method {method!r}: {error}") from None
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"option {self.name!r} of method {method!r} must be one of "
                             f"{', '.join(map(repr, self.choices))}; got {value!r}")
        return value


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if isinstance(value, (bool, int, np.bool_)) and value in (0, 1):
        return bool(value)
    raise TypeError(f"expected a bool, got {value!r}")


def _as_int(value: Any) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


class Method:
    """Base class of every method.

    A subclass sets the class attributes below and implements :meth:`build` and
    :meth:`predict_batch`; :func:`meshrec.load_method` does the rest (resolving the checkpoint,
    the body model and the device, and checking inputs before any work).

    Class attributes:
        name: registry name, e.g. "hmr".
        summary: one line for ``meshrec plugins``.
        inputs: inputs every item must have.
        optional_inputs: inputs used when given.
        needs_checkpoint: whether a checkpoint path is required.
        checkpoint_help: where users get the weights (shown when the checkpoint is missing).
        body_model_type: "smpl" (an SMPL module is loaded and passed to build) or None.
        body_model_gender: which SMPL the method runs.
        mannequin_fallback: True for a method that works on any SMPL-format body (nothing it
            holds was learnt on SMPL's shape space, e.g. the fit): without SMPL files it then runs
            on meshrec's synthetic mannequin, with a warning, instead of stopping.
        batch_size: default items per batch in ``meshrec.predict``.
        joint_names: names of the joints in ``Prediction.joints``.
        options: the declared :class:`Option` s; :func:`meshrec.load_method` refuses others,
            converts values and fills defaults before :meth:`build` sees them.

    Instance attributes:
        model: the network, a ``torch.nn.Module`` (in eval mode after loading).
        body_model: the body model module, or None.
        device: where ``model`` lives.
        options: every declared option's value.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    inputs: ClassVar[frozenset[Input]] = frozenset({Input.IMAGE})
    optional_inputs: ClassVar[frozenset[Input]] = frozenset()
    needs_checkpoint: ClassVar[bool] = False
    checkpoint_help: ClassVar[str] = ""
    body_model_type: ClassVar[str | None] = "smpl"
    body_model_gender: ClassVar[str] = "neutral"
    mannequin_fallback: ClassVar[bool] = False
    batch_size: ClassVar[int] = 16
    joint_names: ClassVar[tuple[str, ...] | None] = None
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, model: nn.Module, body_model: nn.Module | None, device: torch.device, **options: Any):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__}.model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.body_model = body_model
        self.device = torch.device(device)
        self.options = options

    @classmethod
    def resolve_options(cls, given: dict[str, Any]) -> dict[str, Any]:
        """Every declared option's value: ``given`` checked and converted, defaults for the rest.

        Raises:
            TypeError: for an option the method does not declare (naming the ones it has).
            ValueError: for a value of the wrong type or outside the choices.
        """
        declared = {option.name: option for option in cls.options}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            close = [match for match in (closest(name, declared) for name in unknown) if match]
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            listed = ", ".join(f"{o.name} (default {o.default!r}): {o.help}" for o in cls.options) or "none"
            raise TypeError(f"method {cls.name!r} has no option {', '.join(map(repr, unknown))}{hint}. "
                            f"Its options: {listed}")
        return {name: option.convert(given[name], cls.name) if name in given else option.default
                for name, option in declared.items()}

    @classmethod
    def build(
        cls, checkpoint: Path | None, body_model: nn.Module | None, device: torch.device, **options: Any
    ) -> "Method":
        """Creates the method: its network with the checkpoint's weights, on ``device``.

        ``options`` holds every declared option (checked, defaults filled)."""
        raise NotImplementedError(f"{cls.__name__} must implement build()")

    def predict_batch(self, samples: list[Sample]) -> list[Prediction]:
        """One :class:`Prediction` per sample, in order. Runs under ``torch.inference_mode``."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict_batch()")

    def check_sample(self, sample: Sample) -> None:
        """Extra per-item checks before any work (raise ValueError with what to do)."""

    def refine(self, samples: list[Sample], predictions: list[Prediction]) -> list[Prediction]:
        """Improves other methods' predictions of ``samples`` (``meshrec.predict(..., refine=name)``).
        Methods that can refine override this; the default refuses."""
        raise NotImplementedError(f"method {self.name!r} cannot refine predictions")

    @classmethod
    def demo(cls, out: Path, fast: bool = False, body_model: Any = None, progress: bool | None = None) -> dict[str, Any]:
        """Runs the method's self-contained demo (``meshrec demo --method NAME``), writing into
        ``out``; returns its numbers. Methods with a demo override this; the default refuses."""
        raise NotImplementedError(f"method {cls.name!r} has no demo")

    @classmethod
    def accepted_inputs(cls) -> frozenset[Input]:
        return cls.inputs | cls.optional_inputs

    def to(self, device: str | torch.device) -> "Method":
        """Moves the method to ``device``: every module and tensor it holds, attributes set
        after construction included (in lists, tuples and dicts too)."""
        self.device = torch.device(device)

        def move(value: Any) -> Any:
            if isinstance(value, nn.Module):
                return value.to(self.device)
            if torch.is_tensor(value):
                return value.to(self.device)
            if isinstance(value, dict):
                return {key: move(item) for key, item in value.items()}
            if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
                return type(value)(move(item) for item in value)
            return value

        for name, value in vars(self).items():
            if name != "device":
                setattr(self, name, move(value))
        return self

    def __repr__(self) -> str:
        return f"<meshrec method {self.name!r} on {self.device}>"


class MethodSpec(RegistryEntry):
    """A registered method; its target is a :class:`Method` subclass or ``"module:Class"``."""

    def check(self, target: Any) -> None:
        if not (isinstance(target, type) and issubclass(target, Method)):
            raise TypeError(f"method {self.name!r} (plugin {self.plugin!r}): {target!r} is not a meshrec.Method subclass")


class MethodRegistry(Registry[MethodSpec]):
    """The methods plugins add through the ``meshrec_register_methods`` hook.

    >>> registry.add("meshrec_hmr.method:HMR")     # name and summary come from the class
    """

    kind = "method"
    entry_class = MethodSpec

    def add(self, target: type[Method] | str) -> MethodSpec:  # type: ignore[override]
        """Registers a :class:`Method` subclass (or ``"module:Class"``, imported here: keep the
        module free of network construction) under its ``name``, with its ``summary``."""
        method_class = import_target(target)
        if not (isinstance(method_class, type) and issubclass(method_class, Method)):
            raise TypeError(f"{target!r} is not a meshrec.Method subclass")
        if not method_class.name:
            raise ValueError(f"{method_class.__qualname__} sets no name; give the Method subclass a `name`")
        return super().add(method_class.name, target, summary=method_class.summary)
