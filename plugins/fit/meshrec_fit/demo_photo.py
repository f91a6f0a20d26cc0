"""``meshrec demo --photo [PATH]``: a real photo in, one fitted body per person out.

The chain: an installed keypoint detector (plugin meshrec-detect: MediaPipe BlazePose, whose
weights ship inside the mediapipe wheel) finds the people and their COCO-17 keypoints; the
``fit`` method fits SMPL (the user's files, else meshrec's synthetic mannequin) to each person's
keypoints; the meshes are drawn over the photo and from the side. The demo prints, per person,
the mean reprojection error in pixels on the confident keypoints, and the time of each step.

Without a path it uses ultralytics' sample photo ``ultralytics/assets/bus.jpg`` (found in the
installed ``ultralytics`` package, which is not imported: ``pip install --no-deps ultralytics``
provides the file in seconds). Nothing is downloaded.

The detector is reached through meshrec's detector registry, never imported: meshrec-fit does
not depend on meshrec-detect, and without a keypoint detector the demo says what to install.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import meshrec
from meshrec.body import KeypointModel, get_layout
from meshrec.camera import default_intrinsics
from meshrec.errors import MeshrecError

__all__ = ["CONFIDENT", "reprojection_errors", "run_photo_demo", "sample_photo"]

CONFIDENT = 0.5  # keypoints with a detector confidence above this count towards the error
LAYOUT = "coco17"  # what the fit reads; BlazePose observes all 17
PICTURE_HEIGHT = 480  # the side-by-side picture (photo with meshes | side view), pixels
DETECT_INSTALL = ("pip install --no-build-isolation ./plugins/detect, then BlazePose's weights: "
                  "pip install --no-deps mediapipe==0.10.21 && pip install './plugins/detect[blazepose]' "
                  "(plugins/detect/README.md says why --no-deps)")


def _say(message: str) -> None:
    print(message, flush=True)


def sample_photo() -> Path:
    """ultralytics' ``bus.jpg`` (810x1080, people in front of a bus) from the installed
    ``ultralytics`` package, located without importing it (its ``__init__`` needs torchvision)."""
    spec = importlib.util.find_spec("ultralytics")
    path = Path(spec.origin).parent / "assets" / "bus.jpg" if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "the photo demo's sample photo is ultralytics/assets/bus.jpg, and the ultralytics package is not "
            "installed: pip install ultralytics --no-deps (the photo only, in seconds), or give a photo: "
            "meshrec demo --photo PATH")
    return path


def _keypoint_detector(name: str | None) -> tuple[Any, str, float]:
    """An instance of the keypoint detector ``name`` (None: the first installed that loads), its
    name and the seconds it took to start; a MeshrecError saying what to install otherwise."""
    from meshrec.plugins import get_plugin_manager

    registry = get_plugin_manager().detectors()
    if name is not None:
        if name not in registry:
            known = ", ".join(f"{n} ({registry.kind_of(n)})" for n in registry.names()) or "none"
            raise MeshrecError(f"unknown detector {name!r}; installed detectors: {known}. {DETECT_INSTALL}")
        if registry.kind_of(name) != "keypoints":
            raise MeshrecError(f"detector {name!r} finds boxes only; the photo demo fits keypoints: pick a keypoint "
                               f"detector ({', '.join(registry.of_kind('keypoints')) or 'none installed'})")
        names = [name]
    else:
        names = registry.of_kind("keypoints")
    if not names:
        raise MeshrecError(f"the photo demo needs a keypoint detector and none is installed: {DETECT_INSTALL}")
    failures = []
    for candidate in names:
        started = time.perf_counter()
        try:
            return registry.create(candidate, layout=LAYOUT), candidate, time.perf_counter() - started
        except ImportError as error:
            failures.append(f"{candidate}: {error}")
    raise MeshrecError("the photo demo's keypoint detector cannot run: " + "; ".join(failures))


def reprojection_errors(prediction: meshrec.Prediction, keypoints: np.ndarray, intrinsics: Any,
                        layout: str = LAYOUT, min_confidence: float = CONFIDENT) -> list[float]:
    """Per person, the mean distance in pixels between the keypoints with confidence above
    ``min_confidence`` and the fitted body's keypoints projected with ``intrinsics``.

    Args:
        prediction: P people, in the order of ``keypoints``.
        keypoints: (P, K, 3) pixels and confidence, in ``layout``.
        intrinsics: (3, 3) pixels.

    Returns:
        P floats (NaN for a person without confident keypoints).
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 3 or len(keypoints) != prediction.num_people:
        raise ValueError(f"keypoints must be (P={prediction.num_people}, K, 3), got {keypoints.shape}")
    model = KeypointModel(get_layout(layout))
    with torch.no_grad():
        points = model(prediction.vertices.double(), prediction.joints.double())  # (P, K, 3) camera frame
    K = torch.as_tensor(np.asarray(intrinsics, dtype=np.float64))
    projected = points @ K.T
    uv = (projected[..., :2] / projected[..., 2:]).numpy()
    errors = []
    for person, observed in zip(uv, keypoints):
        confident = observed[:, 2] > min_confidence
        distance = np.linalg.norm(person[confident] - observed[confident, :2], axis=1)
        errors.append(float(distance.mean()) if confident.any() else float("nan"))
    return errors


def _write_people(path: Path, prediction: meshrec.Prediction) -> None:
    """All bodies in one PLY, each in its overlay colour."""
    from meshrec.io.meshes import write_ply
    from meshrec.io.overlay import PERSON_COLORS

    vertices = prediction.vertices.detach().cpu().numpy()
    faces = prediction.faces.cpu().numpy()
    count = len(vertices[0])
    write_ply(path, vertices.reshape(-1, 3), np.concatenate([faces + i * count for i in range(len(vertices))]),
              colors=np.concatenate([np.tile(PERSON_COLORS[i % len(PERSON_COLORS)], (count, 1))
                                     for i in range(len(vertices))]))


def _side_by_side(overlay: np.ndarray, side: np.ndarray, height: int = PICTURE_HEIGHT):
    """The overlay and the side view next to each other, scaled to ``height`` pixels, in 256
    colours (a picture for a web page: about 130 KB for bus.jpg instead of 380 KB in RGB)."""
    from PIL import Image

    width = round(overlay.shape[1] * height / overlay.shape[0])
    canvas = Image.new("RGB", (2 * width, height), (255, 255, 255))
    for index, picture in enumerate((overlay, side)):
        canvas.paste(Image.fromarray(picture).resize((width, height), Image.LANCZOS), (index * width, 0))
    return canvas.quantize(256, method=Image.Quantize.MEDIANCUT)


def run_photo_demo(photo: str | Path | None = None, out: str | Path = "meshrec-demo", fast: bool = False,
                   body_model: str | Path | None = None, progress: bool | None = None,
                   detector: str | None = None, camera: Any = None) -> dict[str, Any]:
    """Runs the photo demo (see the module docstring) and returns its numbers; files go to ``out``.

    Args:
        photo: the photo (a path); None: ultralytics' ``bus.jpg`` (:func:`sample_photo`).
        out: output folder (created). Writes ``<stem>_overlay.png`` (the meshes over the photo),
            ``<stem>_side.png`` (seen from the right), ``<stem>_demo.png`` (the two side by side,
            480 px high), ``<stem>_people.ply`` (every body, metres, camera frame) and
            ``<stem>_results.json``.
        fast: the fit's shorter schedule (for CI; the fit is looser).
        body_model: where to look for SMPL files first (else the usual search order, then the
            synthetic mannequin).
        progress: the fit's progress bar (default: on a terminal).
        detector: a registered keypoint detector's name (default: the first installed that loads).
        camera: (3, 3) intrinsics of the photo in pixels; default: focal length = image diagonal.

    Returns:
        A dict: photo, image_size, body_model, detector, schedule, intrinsics, people (per person:
        box, confident_keypoints, reprojection_error_px), seconds (detector_start, detect, fit,
        render, total), files.
    """
    from PIL import Image

    from meshrec.io.images import read_image
    from meshrec.io.overlay import render_overlay, render_side_view
    from meshrec_fit.demo import _body_model

    started = time.perf_counter()
    path = sample_photo() if photo is None else Path(photo)
    if not path.is_file():
        raise FileNotFoundError(f"photo {path} not found; give an image file: meshrec demo --photo PATH")
    image = read_image(path)
    height, width = image.shape[:2]
    _say(f"photo: {path} ({width}x{height})")
    # The detector first: without one there is nothing to fit, and loading the body is wasted.
    found_by, detector_name, start_seconds = _keypoint_detector(detector)
    body, body_description = _body_model(body_model)
    _say(f"body model: {body_description}")

    seconds: dict[str, float] = {"detector_start": start_seconds}
    clock = time.perf_counter()
    try:
        found = found_by.detect(image)
    finally:
        # a MediaPipe graph keeps its worker threads until closed: they would compete with the fit
        getattr(found_by, "close", lambda: None)()
    seconds["detect"] = time.perf_counter() - clock
    _say(f"detector: {detector_name} ({getattr(found_by, 'summary', '')}), {found.layout} keypoints: "
         f"{len(found)} {'person' if len(found) == 1 else 'people'} in {seconds['detect']:.1f} s "
         f"(+ {start_seconds:.1f} s to start it)")

    if camera is not None:
        intrinsics = np.asarray(camera, dtype=np.float64)
        if intrinsics.shape != (3, 3) or not np.isfinite(intrinsics).all() or min(intrinsics[0, 0], intrinsics[1, 1]) <= 0:
            raise ValueError(f"camera must be finite (3, 3) intrinsics with positive focal lengths, got {camera!r}")
        _say(f"camera: fx {intrinsics[0, 0]:.0f}, fy {intrinsics[1, 1]:.0f}, centre ({intrinsics[0, 2]:.0f}, "
             f"{intrinsics[1, 2]:.0f}) px")
    else:
        # A photo has no intrinsics: meshrec's default, focal length = image diagonal (CLIFF's).
        intrinsics = default_intrinsics(height, width, torch.float64).numpy()
        _say(f"camera: the photo has no intrinsics; meshrec's default focal length = image diagonal = "
             f"{intrinsics[0, 0]:.0f} px (a 53 degree diagonal field of view; --camera FX FY CX CY for yours)")
    stem = path.stem
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    schedule = "fast" if fast else "default"
    results: dict[str, Any] = {"photo": str(path), "image_size": [width, height], "body_model": body_description,
                               "detector": detector_name, "keypoint_layout": found.layout, "schedule": schedule,
                               "intrinsics": intrinsics.tolist(), "min_confidence": CONFIDENT, "people": []}
    if len(found) == 0:
        _say("no person found in the photo: nothing to fit")
        prediction = None
        seconds["fit"] = 0.0
    else:
        bodies = "body" if len(found) == 1 else "bodies"
        _say(f"fitting {len(found)} {bodies} to the keypoints ({schedule} schedule) ...")
        show = sys.stderr.isatty() if progress is None else progress
        method = meshrec.load_method("fit", body_model=body, device="cpu", keypoint_layout=found.layout,
                                     schedule=schedule, progress=show)
        clock = time.perf_counter()
        prediction = meshrec.predict(path, method=method, keypoints=found.keypoints, camera=intrinsics, detector=None)
        seconds["fit"] = time.perf_counter() - clock
        errors = reprojection_errors(prediction, found.keypoints, intrinsics, found.layout)
        for box, points, error in zip(found.boxes, found.keypoints, errors):
            results["people"].append({"box": [round(float(v), 1) for v in box],
                                      "confident_keypoints": int((points[:, 2] > CONFIDENT).sum()),
                                      "reprojection_error_px": round(error, 2)})

    clock = time.perf_counter()
    files = [out / f"{stem}_overlay.png", out / f"{stem}_side.png", out / f"{stem}_demo.png"]
    if prediction is None:
        overlay, side = image, np.full_like(image, 255)
    else:
        overlay = render_overlay(prediction, image, camera=intrinsics)
        side = render_side_view(prediction, (width, height), camera=intrinsics)
    seconds["render"] = time.perf_counter() - clock
    Image.fromarray(overlay).save(files[0])
    Image.fromarray(side).save(files[1])
    _side_by_side(overlay, side).save(files[2], optimize=True)
    if prediction is not None:
        files.append(out / f"{stem}_people.ply")
        _write_people(files[-1], prediction)
    seconds["total"] = time.perf_counter() - started
    results["seconds"] = {key: round(value, 2) for key, value in seconds.items()}
    files.append(out / f"{stem}_results.json")
    results["files"] = [file.name for file in files]
    files[-1].write_text(json.dumps(results, indent=2) + "\n")

    if results["people"]:
        _say("")
        _say(f"{'person':8s}{'box x1 y1 x2 y2 (px)':>26s}{'confident keypoints':>22s}{'reprojection error':>21s}")
        for index, person in enumerate(results["people"], 1):
            box = " ".join(f"{v:.0f}" for v in person["box"])
            _say(f"{index:<8d}{box:>26s}{person['confident_keypoints']:>16d} / {len(get_layout(found.layout))}"
                 f"{person['reprojection_error_px']:>18.1f} px")
        _say(f"(reprojection error: mean distance between the detected keypoints with confidence > {CONFIDENT} and "
             "the fitted body's keypoints projected into the photo)")
    s = results["seconds"]
    _say(f"time: detect {s['detect']:.1f} s (+ {s['detector_start']:.1f} s to start the detector), "
         f"fit {s['fit']:.1f} s, render {s['render']:.1f} s; {s['total']:.1f} s in all")
    _say(f"wrote {', '.join(results['files'])} to {out}")
    return results
