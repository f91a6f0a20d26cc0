"""The detectors plugins register: person detectors (boxes) and 2D keypoint detectors.

A detector is a class registered by name through the ``meshrec_register_detectors`` hook, as a
lazy ``"package.module:Class"`` target (imported only when the detector is used). The class has:

- ``name`` (str) and ``summary`` (one line, shown by ``meshrec plugins``);
- ``kind``: ``"person"`` (finds people, returns boxes) or ``"keypoints"`` (returns 2D keypoints in
  the named meshrec layout ``layout``, e.g. ``"coco17"``, see :mod:`meshrec.body.keypoints`);
- a constructor taking keyword options only (all with defaults);
- ``detect(image)``: ``image`` is an (H, W, 3) uint8 RGB array; it returns a :class:`Detections`.

:func:`meshrec.predict` uses the installed detectors when an image comes without boxes or
keypoints (see its ``detector=`` argument).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from meshrec.registry import Registry, RegistryEntry

__all__ = ["DETECTOR_KINDS", "DetectorRegistry", "DetectorSpec", "Detections", "check_image"]

DETECTOR_KINDS = ("person", "keypoints")


@dataclass
class Detections:
    """What ``detect`` returns for one image, people sorted by decreasing score.

    Attributes:
        boxes: (P, 4) float32 ``x1, y1, x2, y2`` in pixels.
        scores: (P,) float32 detector confidences (higher is more certain; scale is detector's own).
        keypoints: (P, K, 3) float32 ``x, y`` pixels + confidence in [0, 1] (keypoint detectors),
            or None.
        layout: name of the keypoint layout of ``keypoints``, or None.
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray | None = None
    layout: str | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(self.scores) != len(self.boxes):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.scores)} scores")
        if self.keypoints is not None:
            self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
            if self.keypoints.ndim != 3 or self.keypoints.shape[0] != len(self.boxes) or self.keypoints.shape[2] != 3:
                raise ValueError(f"keypoints must be (P={len(self.boxes)}, K, 3), got {self.keypoints.shape}")
            if self.layout is None:
                raise ValueError("keypoints need the name of their layout")

    def __len__(self) -> int:
        return len(self.boxes)


def check_image(image: Any) -> np.ndarray:
    """``image`` as a C-contiguous (H, W, 3) uint8 array, or a ValueError that says what to pass."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"a detector takes an (H, W, 3) RGB image, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"a detector takes a uint8 image (0..255), got {array.dtype}; convert with "
                         "(image * 255).round().clip(0, 255).astype(np.uint8) if it is in [0, 1]")
    if array.shape[0] < 8 or array.shape[1] < 8:
        raise ValueError(f"image {array.shape[1]}x{array.shape[0]} is too small to detect people in")
    return np.ascontiguousarray(array)


class DetectorSpec(RegistryEntry):
    """A registered detector; its target is a class with ``kind``, ``detect`` (module docstring)."""

    def check(self, target: Any) -> None:
        if not isinstance(target, type) or not callable(getattr(target, "detect", None)):
            raise TypeError(f"detector {self.name!r} (plugin {self.plugin!r}): {target!r} is not a class with detect()")
        kind = getattr(target, "kind", None)
        if kind not in DETECTOR_KINDS:
            raise TypeError(f"detector {self.name!r} (plugin {self.plugin!r}): kind must be one of "
                            f"{DETECTOR_KINDS}, got {kind!r}")
        if kind == "keypoints" and not isinstance(getattr(target, "layout", None), str):
            raise TypeError(f"keypoint detector {self.name!r} (plugin {self.plugin!r}) must name its "
                            "keypoint layout in a class attribute 'layout'")

    def create(self, **options: Any) -> Any:
        """An instance of the detector (imports its module on first use)."""
        return self.load()(**options)


class DetectorRegistry(Registry[DetectorSpec]):
    """The detectors plugins add through the ``meshrec_register_detectors`` hook.

    >>> registry.add("hog", "meshrec_detect.hog:HOGPersonDetector", kind="person", summary="OpenCV HOG people")

    ``kind`` is recorded at registration so that meshrec can pick a detector of the needed kind
    without importing any; it is checked against the class when the detector is loaded.
    """

    kind: ClassVar[str] = "detector"
    entry_class = DetectorSpec

    def __init__(self) -> None:
        super().__init__()
        self._kinds: dict[str, str] = {}

    def add(self, name: str, target: Any, summary: str = "", kind: str | None = None) -> DetectorSpec:  # type: ignore[override]
        if kind is None:
            if isinstance(target, str):
                raise ValueError(f"detector {name!r}: pass kind='person' or kind='keypoints' with a lazy target")
            kind = getattr(target, "kind", None)
        if kind not in DETECTOR_KINDS:
            raise ValueError(f"detector {name!r}: kind must be one of {DETECTOR_KINDS}, got {kind!r}")
        entry = super().add(name, target, summary=summary)
        self._kinds.setdefault(name, kind)
        return entry

    def kind_of(self, name: str) -> str:
        """``"person"`` or ``"keypoints"``, as registered."""
        return self._kinds[name]

    def of_kind(self, kind: str) -> list[str]:
        """Names of the registered detectors of ``kind``, sorted."""
        return [name for name in self.names() if self._kinds[name] == kind]

    def create(self, name: str, **options: Any) -> Any:
        """An instance of detector ``name``; a KeyError lists the installed ones."""
        if name not in self:
            known = ", ".join(f"{n} ({self._kinds[n]})" for n in self.names()) or "none (pip install ./plugins/detect)"
            raise KeyError(f"unknown detector {name!r}; installed detectors: {known}")
        detector = self[name].create(**options)
        if detector.kind != self._kinds[name]:
            raise TypeError(f"detector {name!r} was registered as {self._kinds[name]!r} but its class says {detector.kind!r}")
        return detector


# ---------------------------------------------------------------------------------------------
# used by meshrec.predict: boxes / keypoints for images that come without them

_instances: dict[tuple, Any] = {}
_instances_lock = __import__("threading").Lock()
AUTO = "auto"


def _instance(registry: DetectorRegistry, name: str, **options: Any) -> Any:
    """One instance per detector class and options (loading a network per call would be slow)."""
    key = (name, registry[name].load() if name in registry else None, tuple(sorted(options.items())))
    with _instances_lock:
        if key not in _instances:
            _instances[key] = registry.create(name, **options)
        return _instances[key]


def _candidates(registry: DetectorRegistry, want_keypoints: bool, want_boxes: bool) -> list[str]:
    # Keypoint detectors first even for boxes: their boxes come from the body's landmarks, which
    # beats a sliding-window person detector (HOG) wherever both are installed. A person
    # detector still gives boxes when no keypoint detector can run.
    names = registry.of_kind("keypoints") if (want_keypoints or want_boxes) else []
    return names + (registry.of_kind("person") if want_boxes else [])


def detect_missing_inputs(accepted: Any, samples: list[Any], detector: str | None = AUTO,
                          keypoint_layout: str | None = None, registry: DetectorRegistry | None = None) -> str | None:
    """Fills ``bbox`` / ``keypoints`` of ``samples`` (meshrec.Sample) that have an image but lack
    them, when the method accepts them, with an installed detector.

    Args:
        accepted: the meshrec.Input kinds the method(s) that will run accept.
        samples: the inputs; changed in place.
        detector: a registered detector name, "auto" (a keypoint detector when keypoints are
            needed, else a keypoint or person detector, whichever loads first) or None (off).
        keypoint_layout: the layout the method reads keypoints in (e.g. the fitter's
            ``keypoint_layout`` option); default "coco17".
        registry: the detector registry (default: the installed plugins').

    Returns:
        The name of the detector used, or None when none ran.
    """
    if detector is None:
        return None
    from meshrec.methods import Input

    want_boxes = [s for s in samples if Input.BBOX in accepted and s.has(Input.IMAGE) and s.bbox is None]
    want_points = [s for s in samples if Input.KEYPOINTS in accepted and s.has(Input.IMAGE) and s.keypoints is None
                   and s.keypoint_sequence is None]
    if not want_boxes and not want_points:
        return None
    if registry is None:
        from meshrec.plugins import get_plugin_manager

        registry = get_plugin_manager().detectors()
    layout = keypoint_layout or "coco17"
    if detector == AUTO:
        names = _candidates(registry, bool(want_points), bool(want_boxes))
    else:
        if detector not in registry:
            known = ", ".join(f"{n} ({registry.kind_of(n)})" for n in registry.names()) or "none"
            raise KeyError(f"unknown detector {detector!r}; installed detectors: {known} "
                           "(pip install ./plugins/detect; detector=None turns detection off)")
        names = [detector]
    chosen = None
    for name in names:
        options = {"layout": layout} if registry.kind_of(name) == "keypoints" else {}
        try:
            chosen = _instance(registry, name, **options)
            break
        except ImportError as error:
            if detector != AUTO:
                raise
            import warnings

            warnings.warn(f"meshrec: detector {name!r} is installed but cannot run: {error}", stacklevel=3)
    if chosen is None:
        return None
    gives_points = chosen.kind == "keypoints"
    for sample in samples:
        fill_boxes = sample in want_boxes
        fill_points = gives_points and sample in want_points
        if not (fill_boxes or fill_points):
            continue
        found = chosen.detect(sample.image())
        sample.release()  # decoded again with its batch: a long folder must not pile up in memory
        if not len(found):
            import warnings

            warnings.warn(f"meshrec: detector {chosen.name!r} found no person in {sample.source}", stacklevel=3)
            continue
        if fill_boxes:
            sample.bbox = found.boxes.astype(np.float32)
        if fill_points:
            if found.layout != layout:
                raise ValueError(f"detector {chosen.name!r} returns {found.layout} keypoints, the method reads {layout}")
            sample.keypoints = found.keypoints.astype(np.float32)
    return getattr(chosen, "name", None)
