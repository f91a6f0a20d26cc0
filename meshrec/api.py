"""The front door: ``list_methods``, ``load_method``, ``predict``, ``evaluate``."""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from meshrec.errors import (
    BodyModelNotFoundError,
    CheckpointError,
    closest,
    spell,
    ImageReadError,
    MissingInputError,
    UnknownDatasetError,
    UnknownMethodError,
)
from meshrec.io.checkpoints import identify_checkpoint
from meshrec.io.images import IMAGE_SUFFIXES, check_image_file
from meshrec.methods import Input, Method, Prediction, Sample
from meshrec.plugins import get_plugin_manager
from meshrec.registry import Registry

__all__ = ["evaluate", "get_method_class", "list_datasets", "list_methods", "load_method", "predict", "resolve_device"]

# Methods and datasets the project's own plugin packages provide, for install hints. The
# packages live in the meshrec repository (plugins/<folder>); they are not on PyPI yet.
KNOWN_METHOD_PACKAGES = {
    "example": "meshrec-example",
    "hmr": "meshrec-hmr",
    "fit": "meshrec-fit",
    "sahmr": "meshrec-sahmr",
    "mahmr": "meshrec-mahmr",
    "sathmr": "meshrec-mahmr",
    "egohmr": "meshrec-egohmr",
    "prohmr-scene": "meshrec-egohmr",
    "motionbert": "meshrec-motionbert",
}
KNOWN_DATASET_PACKAGES = {
    "pw3d": "meshrec-hmr",
    "pw3d-motionbert": "meshrec-motionbert",
    "rich-sahmr": "meshrec-sahmr",
    "prox-sahmr": "meshrec-sahmr",
    "egobody-egohmr": "meshrec-egohmr",
    "relative-human": "meshrec-mahmr",
}


def install_hint(package: str) -> str:
    """How to install one of the project's plugin packages."""
    folder = package.removeprefix("meshrec-")
    return (f"It is provided by the plugin package {package}: from a clone of the meshrec repository, "
            f"pip install --no-build-isolation ./plugins/{folder}")


def list_methods() -> list[str]:
    """Names of the methods installed plugins provide, sorted."""
    return get_plugin_manager().methods().names()


def list_datasets() -> list[str]:
    """Names of the datasets / evaluation protocols installed plugins provide, sorted."""
    return get_plugin_manager().datasets().names()


def _lookup(registry: Registry, name: str, known_packages: dict[str, str], error: type[Exception]) -> Any:
    """The registered object for ``name``, or ``error`` listing what is installed and, for a
    name a known package provides, how to install it (or why its plugin failed to load)."""
    if name in registry:
        return registry[name].load()
    installed = ", ".join(registry.names()) or "none"
    message = f"unknown {registry.kind} {name!r}."
    suggestion = closest(name, [*registry.names(), *known_packages])
    if suggestion:
        message += f" Did you mean {suggestion!r}?"
    message += f" Installed {registry.kind}s: {installed}."
    package = known_packages.get(name)
    broken = [info for info in get_plugin_manager().plugins()
              if info.error and (info.name == name or (package is not None and info.distribution == package))]
    if broken:
        message += f" The plugin {broken[0].name!r} that provides it failed to load: {broken[0].error}."
    elif package:
        message += " " + install_hint(package)
    raise error(message)


def get_method_class(name: str) -> type[Method]:
    """The :class:`Method` subclass registered as ``name`` (nothing is built)."""
    return _lookup(get_plugin_manager().methods(), name, KNOWN_METHOD_PACKAGES, UnknownMethodError)


def resolve_device(device: str | int | torch.device | None) -> torch.device:
    """``None`` means CUDA when available, else CPU. Refuses CUDA when there is none."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"invalid device {device!r}: {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here; use device='cpu'")
    return resolved


def _resolve_body_model(method_class: type[Method], body_model: Any, device: torch.device) -> nn.Module | None:
    if method_class.body_model_type is None:
        return None
    if isinstance(body_model, nn.Module):
        return body_model.to(device)
    from meshrec.body import SMPL

    if method_class.body_model_type != "smpl":
        raise ValueError(f"method {method_class.name!r} needs a {method_class.body_model_type!r} body model")
    if isinstance(body_model, (str, Path)) and str(body_model) == MANNEQUIN and not Path(body_model).exists():
        return _mannequin(method_class, device)
    try:
        return SMPL(model_path=body_model, gender=method_class.body_model_gender, create_transl=False).to(device)
    except BodyModelNotFoundError:
        # A method that works on any SMPL-format body (the fit) runs on the mannequin rather than
        # not at all, and says so; networks regress SMPL's own parameters and need the real files.
        if body_model is not None or not method_class.mannequin_fallback:
            raise
        warnings.warn(f"meshrec: no SMPL files found, so method {method_class.name!r} uses meshrec's synthetic "
                      "mannequin (licence-free, SMPL's layout, not SMPL's shapes); for real SMPL bodies pass "
                      "body_model= / --body-models DIR (body_model='mannequin' chooses the mannequin without "
                      "this warning)", stacklevel=3)
        return _mannequin(method_class, device)


MANNEQUIN = "mannequin"  # body_model= value: meshrec's synthetic SMPL-format body (meshrec.body.mannequin)


def _mannequin(method_class: type[Method], device: torch.device) -> nn.Module:
    from meshrec.body.mannequin import mannequin_smpl

    return mannequin_smpl(gender=method_class.body_model_gender or "neutral", create_transl=False).to(device)


def load_method(
    name: str,
    checkpoint: str | Path | Mapping[str, str | Path] | None = None,
    body_model: str | Path | nn.Module | None = None,
    device: str | torch.device | None = None,
    **config: Any,
) -> Method:
    """Loads a method, ready to predict.

    Args:
        name: a registered method (see :func:`list_methods`).
        checkpoint: the method's weights (the upstream's released file) when it needs them; a
            release folder, or a mapping of files by role (``{"stage1": ..., "stage2": ...}``),
            for methods whose weights come in several files.
        body_model: a folder or file with the SMPL files, or a body-model module; None searches
            ``MESHREC_BODY_MODELS`` and ``~/.cache/meshrec/body_models`` (a method with
            ``mannequin_fallback``, such as ``fit``, then falls back to meshrec's synthetic
            mannequin with a warning); ``"mannequin"`` chooses the mannequin.
        device: None for CUDA when available, else CPU.
        **config: the method's declared options (``Method.options``; ``meshrec plugins``
            lists them).

    Raises:
        UnknownMethodError, CheckpointError, BodyModelNotFoundError: with what to do.
        TypeError: for an option the method does not declare.
    """
    method_class = get_method_class(name)
    options = method_class.resolve_options(config)
    resolved_device = resolve_device(device)
    checkpoint_path: Any = None
    if isinstance(checkpoint, Mapping):  # several files by role, e.g. {"stage1": ..., "stage2": ...}
        checkpoint_path = {str(role): Path(path).expanduser() for role, path in checkpoint.items()}
        for path in checkpoint_path.values():
            identify_checkpoint(path)
    elif checkpoint is not None:
        checkpoint_path = Path(checkpoint).expanduser()
        if not checkpoint_path.is_dir():  # a release folder (EgoHMR's) is the method's to read
            identify_checkpoint(checkpoint_path)  # cheap: a wrong file is named before the body model loads
    elif method_class.needs_checkpoint:
        raise CheckpointError(
            f"method {name!r} needs a checkpoint: pass {spell('checkpoint', 'PATH')}. "
            + (method_class.checkpoint_help or "")
        )
    body = _resolve_body_model(method_class, body_model, resolved_device)
    method = method_class.build(checkpoint_path, body, resolved_device, **options)
    method.model.eval()
    return method


# ---------------------------------------------------------------------------------------------
# predict


def _expand_inputs(inputs: Any, extras: dict[str, Any]) -> tuple[list[tuple[str, Any]], bool]:
    """(source name, image source) per item, and whether the input was a single item. Without
    images (``inputs=None``, for methods that need none) the items are counted from the
    per-input lists among the extras."""
    if inputs is None:
        lengths = {len(value) for value in extras.values() if isinstance(value, (list, tuple))}
        if len(lengths) > 1:
            raise ValueError(f"per-input lists have different lengths {sorted(lengths)}")
        count = lengths.pop() if lengths else 1
        return [(f"input[{i}]", None) for i in range(count)], not lengths and count == 1
    if isinstance(inputs, (str, Path)):
        path = Path(inputs).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                raise ImageReadError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            return [(str(p), p) for p in files], False
        return [(str(path), path)], True
    if torch.is_tensor(inputs):
        if inputs.dim() == 4:
            return [(f"input[{i}]", image) for i, image in enumerate(inputs)], False
        return [("input[0]", inputs)], True
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 4:
            return [(f"input[{i}]", image) for i, image in enumerate(inputs)], False
        return [("input[0]", inputs)], True
    if isinstance(inputs, (list, tuple)):
        items: list[tuple[str, Any]] = []
        for i, item in enumerate(inputs):
            if isinstance(item, (str, Path)):
                items.append((str(item), Path(item).expanduser()))
            elif isinstance(item, (np.ndarray, torch.Tensor)) or item is None:
                items.append((f"input[{i}]", item))
            else:
                raise TypeError(f"input[{i}] must be a path, a numpy image or a tensor, got {type(item).__name__}")
        return items, False
    raise TypeError(
        "inputs must be an image path, a folder, a list of paths, a numpy image (H, W, 3) uint8 or a "
        f"tensor (3, H, W), got {type(inputs).__name__}"
    )


def _as_array(name: str, source: str, value: Any) -> np.ndarray:
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} for {source} must be numeric, got {type(value).__name__}") from None
    if not np.isfinite(array).all():
        raise ValueError(f"{name} for {source} contains NaN or infinite values")
    return array


def _bbox(value: Any, source: str, bbox_format: str) -> np.ndarray:
    boxes = _as_array("bbox", source, value)
    if boxes.ndim == 1:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"bbox for {source} must have shape (4,) or (P, 4), got {boxes.shape}")
    if bbox_format == "xywh":
        boxes = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
        raise ValueError(f"bbox for {source} has a box with zero or negative width or height ({bbox_format})")
    return boxes


def _camera(value: Any, source: str) -> np.ndarray:
    camera = _as_array("camera", source, value)
    if camera.shape != (3, 3):
        raise ValueError(f"camera for {source} must be a (3, 3) intrinsics matrix K, got shape {camera.shape}")
    if camera[0, 0] <= 0 or camera[1, 1] <= 0:
        raise ValueError(f"camera for {source} must have positive focal lengths K[0,0], K[1,1]")
    return camera


def _points(name: str, value: Any, source: str, layouts: Sequence[int], width: Sequence[int]) -> np.ndarray:
    array = _as_array(name, source, value)
    if array.ndim not in layouts or array.shape[-1] not in width:
        raise ValueError(f"{name} for {source} has shape {array.shape}; see meshrec.Input for the layout")
    return array


def _scene(value: Any, source: str) -> np.ndarray:
    """(N, 3) scene points in metres: given as points, or as a mesh / point-cloud file (.obj, .ply)."""
    from meshrec.scene.points import check_scene_scale, sample_mesh_points

    if isinstance(value, (str, Path)):
        value = sample_mesh_points(value)
    points = _points("scene", value, source, (2,), (3,))
    try:
        check_scene_scale(torch.from_numpy(points))
    except ValueError as error:
        raise ValueError(f"scene for {source}: {error}") from None
    return points


def _keypoints(value: Any, source: str, sequence: bool) -> np.ndarray:
    name = "keypoint_sequence" if sequence else "keypoints"
    array = _points(name, value, source, (3, 4) if sequence else (2, 3), (2, 3))
    if array.shape[-1] == 2:
        array = np.concatenate([array, np.ones((*array.shape[:-1], 1))], axis=-1)
    if sequence and array.ndim == 3:
        array = array[:, None]
    if not sequence and array.ndim == 2:
        array = array[None]
    return array


def _split_per_input(name: str, value: Any, count: int, single: bool) -> list[Any]:
    if value is None:
        return [None] * count
    if single:
        return [value]
    if isinstance(value, (list, tuple)) and len(value) == count:
        return list(value)
    if isinstance(value, (list, tuple)):
        raise ValueError(
            f"{name} is a list of {len(value)} entries for {count} inputs: give one entry per input, "
            "or a numpy array / tensor to use the same value for every input"
        )
    return [value] * count


def _make_samples(items: list[tuple[str, Any]], single: bool, extras: dict[str, Any], bbox_format: str) -> list[Sample]:
    count = len(items)
    split = {name: _split_per_input(name, value, count, single) for name, value in extras.items()}
    samples = []
    for index, (source, image_source) in enumerate(items):
        values = {name: split[name][index] for name in split}
        sample = Sample(index=index, source=source, image_source=image_source)
        if values.get("bbox") is not None:
            sample.bbox = _bbox(values["bbox"], source, bbox_format)
        if values.get("camera") is not None:
            sample.camera = _camera(values["camera"], source)
        if values.get("scene") is not None:
            sample.scene = _scene(values["scene"], source)
        if values.get("keypoints") is not None:
            sample.keypoints = _keypoints(values["keypoints"], source, sequence=False)
        if values.get("keypoint_sequence") is not None:
            sample.keypoint_sequence = _keypoints(values["keypoint_sequence"], source, sequence=True)
        samples.append(sample)
    return samples


def _check_required_inputs(method_class: type[Method], samples: list[Sample]) -> None:
    """Missing inputs and unreadable image files, found before any model is loaded."""
    for needed in sorted(method_class.inputs, key=lambda item: item.value):
        missing = [sample.source for sample in samples if not sample.has(needed)]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            how = spell(needed.value)
            raise MissingInputError(
                f"method {method_class.name!r} needs {needed.value} for every input; missing for {shown} (pass {how})"
            )
    for sample in samples:
        if isinstance(sample.image_source, Path):
            check_image_file(sample.image_source, sample.source)


def predict(
    inputs: Any,
    method: str | Method = "hmr",
    checkpoint: str | Path | None = None,
    body_model: str | Path | nn.Module | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    bbox_format: str = "xywh",
    refine: str | Method | None = None,
    detector: str | None = "auto",
    **per_input: Any,
) -> Prediction | list[Prediction]:
    """Recovers human meshes from images (and whatever else the method needs).

    Args:
        inputs: an image path, a folder of images, a list of paths or arrays, a numpy image
            (H, W, 3) uint8 RGB (or a batch (B, H, W, 3)), or a tensor (3, H, W) / (B, 3, H, W)
            float in [0, 1].
        method: a method name (see :func:`list_methods`) or a method from :func:`load_method`.
        checkpoint, body_model, device, **config: see :func:`load_method` (used with a name).
        batch_size: items per batch (default: the method's).
        progress: show a progress bar (default: on a terminal, when there is more than a batch).
        bbox_format: "xywh" (default) or "xyxy", for ``bbox=``.
        refine: a method (name or loaded) that refines the predictions, e.g. ``"fit"`` to tighten
            a network's bodies against ``keypoints=`` (and the scene); it is loaded with the same
            body model and device.
        detector: for images given without ``bbox=`` / ``keypoints=`` that the method (or the
            refiner) accepts, an installed detector finds them (``meshrec plugins`` lists
            detectors; ``pip install ./plugins/detect``): a name, "auto" (a keypoint detector
            when keypoints are accepted, else the first that loads) or None (off).
        **per_input: extras per input item, by keyword: ``bbox=`` (4,) or (P, 4) pixels,
            ``camera=`` (3, 3) intrinsics, ``scene=`` (N, 3) points in metres (or an .obj / .ply
            file, sampled with :func:`meshrec.scene.sample_mesh_points`), ``keypoints=``
            (P, K, 3) pixels and confidence, ``keypoint_sequence=`` (T, P, K, 3). With several
            inputs, a list gives one value per input and an array is shared by all. Keywords
            that are not extras are passed to :func:`load_method` as method options.

    Returns:
        One :class:`Prediction` for a single image, else a list in input order.
    """
    if bbox_format not in ("xywh", "xyxy"):
        raise ValueError(f"bbox_format must be 'xywh' or 'xyxy', got {bbox_format!r}")
    extras = {key: per_input.pop(key) for key in list(per_input) if key in Input.keywords()}
    items, single = _expand_inputs(inputs, extras)

    if isinstance(method, Method):
        if per_input:
            raise TypeError(f"unexpected keyword arguments for an already loaded method: {sorted(per_input)}")
        method_class = type(method)
    else:
        method_class = get_method_class(method)
    refiner_class = None
    if refine is not None:
        refiner_class = type(refine) if isinstance(refine, Method) else get_method_class(refine)
    accepted = method_class.accepted_inputs() | (refiner_class.accepted_inputs() if refiner_class else frozenset())
    unused = [key for key, value in extras.items() if value is not None and Input(key) not in accepted]
    if unused:
        raise ValueError(f"method {method_class.name!r} does not use {unused}; it accepts "
                         f"{sorted(item.value for item in accepted)}")
    samples = _make_samples(items, single, extras, bbox_format)
    if detector is not None:
        from meshrec.detectors import detect_missing_inputs

        layout = per_input.get("keypoint_layout") or (method.options.get("keypoint_layout") if isinstance(method, Method) else None)
        detect_missing_inputs(accepted, samples, detector, keypoint_layout=layout)
    # Every check that needs no network runs before the (slow) model load.
    _check_required_inputs(method_class, samples)
    if refiner_class is not None:
        _check_required_inputs(refiner_class, samples)
    loaded = method if isinstance(method, Method) else load_method(
        method, checkpoint=checkpoint, body_model=body_model, device=device, **per_input)
    refiner = None
    if refine is not None:
        refiner = refine if isinstance(refine, Method) else load_method(
            refine, body_model=loaded.body_model if loaded.body_model is not None else body_model, device=loaded.device)
    for sample in samples:
        loaded.check_sample(sample)
        if refiner is not None:
            refiner.check_sample(sample)

    batch_size = batch_size or loaded.batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    show = progress if progress is not None else (len(samples) > batch_size and sys.stderr.isatty())
    predictions: list[Prediction] = []
    with tqdm(total=len(samples), disable=not show, unit="img", desc=f"meshrec {loaded.name}") as bar:
        for start in range(0, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            with torch.inference_mode():
                results = loaded.predict_batch(batch)
            if len(results) != len(batch):
                raise RuntimeError(f"method {loaded.name!r} returned {len(results)} predictions for {len(batch)} inputs")
            for sample, result in zip(batch, results):
                result.source = result.source or sample.source
                result.method = result.method or loaded.name
            if refiner is not None:
                # outside inference mode: refining optimises, which needs autograd
                results = refiner.refine(batch, [result.detach().clone() for result in results])
                for sample, result in zip(batch, results):
                    result.source = result.source or sample.source
            for sample in batch:
                sample.release()
            predictions.extend(results)
            bar.update(len(batch))
    return predictions[0] if single else predictions


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate(
    method: str | Method,
    dataset: str,
    data_root: str | Path,
    checkpoint: str | Path | None = None,
    body_model: str | Path | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    output: str | Path | None = None,
    method_options: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Evaluates a method on a registered dataset (see :func:`list_datasets`).

    The dataset's :class:`~meshrec.datasets.DatasetEvaluation` runs the method over the data and
    feeds a :class:`meshrec.metrics.Evaluator` built for its protocol (named settings, see
    docs/metrics.md); ``options`` go to the dataset's evaluation, ``method_options`` to
    :func:`load_method` (a method given by name).

    Returns the protocol's metrics (millimetres for distances) with run metadata; writes them
    as JSON to ``output`` when given.
    """
    from meshrec import __version__

    evaluation = _lookup(get_plugin_manager().datasets(), dataset, KNOWN_DATASET_PACKAGES, UnknownDatasetError)
    root = Path(data_root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data root {root} does not exist")
    if isinstance(method, Method) and method_options:
        raise TypeError("method_options are for a method given by name; this one is already loaded")
    from meshrec import distributed

    shard: dict[str, Any] = {}
    if distributed.is_torchrun():  # each rank evaluates its share; the evaluation merges (meshrec/distributed.py)
        job = distributed.init(device)
        if job.distributed:
            import inspect

            if "shard" not in inspect.signature(evaluation).parameters:
                from meshrec.errors import MeshrecError

                raise MeshrecError(f"the evaluation of dataset {dataset!r} cannot be split among torchrun "
                                   "ranks (it takes no shard= argument); run it without torchrun")
            shard, device = {"shard": (job.rank, job.world_size)}, job.device
    loaded = method if isinstance(method, Method) else load_method(
        method, checkpoint=checkpoint, body_model=body_model, device=device, **(method_options or {}))
    started = time.perf_counter()
    metrics = evaluation(
        method=loaded,
        data_root=root,
        body_model=Path(body_model).expanduser() if isinstance(body_model, (str, Path)) else None,
        batch_size=batch_size or loaded.batch_size,
        progress=progress if progress is not None else sys.stderr.isatty(),
        **shard,
        **options,
    )
    result = {
        "method": loaded.name,
        "dataset": dataset,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "metrics": metrics,
        "meshrec_version": __version__,
        "device": str(loaded.device),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if shard:
        result["world_size"] = shard["shard"][1]
    if output is not None and distributed.job().is_main:
        Path(output).write_text(json.dumps(result, indent=2) + "\n")
    return result
