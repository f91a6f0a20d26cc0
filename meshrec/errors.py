"""Exceptions raised by meshrec. Each message says what went wrong and what to do about it."""

from __future__ import annotations

import contextvars
import pickle

__all__ = [
    "BodyModelNotFoundError",
    "CheckpointError",
    "ImageReadError",
    "MeshrecError",
    "MissingInputError",
    "UnknownDatasetError",
    "UnknownMethodError",
    "UnsafePickleError",
    "closest",
    "front_door",
    "spell",
]

SMPL_REGISTRATION_URL = "https://smpl.is.tue.mpg.de"

# Which front door the user came through ("python" or "cli"): errors name the argument as that
# door spells it (``keypoints=...`` in Python, ``--keypoints FILE`` on the command line).
front_door: contextvars.ContextVar[str] = contextvars.ContextVar("meshrec_front_door", default="python")

CLI_SPELLINGS = {
    "checkpoint": "--checkpoint PATH",
    "body_model": "--body-models DIR",
    "device": "--device DEVICE",
    "bbox": "--bbox X Y W H (or per image in --annotations FILE)",
    "camera": "--camera FX FY CX CY (or per image in --annotations FILE)",
    "scene": "--scene FILE (N x 3 points in metres: .npy or .ply)",
    "keypoints": "--keypoints FILE (or per image in --annotations FILE)",
    "keypoint_sequence": "--keypoint-sequence FILE",
    "keypoint_layout": "--keypoint-layout NAME",
    "trust_checkpoint": "--trust-checkpoint",
    "refine": "--refine METHOD",
    "batch_size": "--batch-size N",
    "image": "an image file or folder argument",
}


def closest(name: str, candidates) -> str | None:
    """The candidate ``name`` was most likely meant to be (typos, swapped letters: "3dpw" for
    "pw3d", a part of the name: "scale" for "bbox_scale"), or None when none is close."""
    from difflib import SequenceMatcher

    def similarity(other: str) -> float:
        contained = 0.75 if min(len(name), len(other)) >= 3 and (name in other or other in name) else 0.0
        return max(SequenceMatcher(None, name, other).ratio(), SequenceMatcher(None, sorted(name), sorted(other)).ratio(),
                   contained)

    scored = sorted(((similarity(other), other) for other in set(candidates) if other != name), reverse=True)
    return scored[0][1] if scored and scored[0][0] >= 0.7 else None


def spell(name: str, value: str = "...") -> str:
    """How the user passes argument ``name`` through the front door they came in by."""
    if front_door.get() == "cli":
        return CLI_SPELLINGS.get(name, f"--option {name}={value}")
    if name == "image":
        return "an image input"
    return f"{name}={value}"


class MeshrecError(Exception):
    """Base class of meshrec's own errors."""


class BodyModelNotFoundError(MeshrecError, FileNotFoundError):
    """A body-model file (SMPL, SMPL-H, a joint regressor) is in none of the places searched."""

    def __init__(self, filename: str, searched: list[str]):
        self.missing_file = filename
        self.searched = list(searched)
        places = "\n".join(f"  - {place}" for place in searched) or "  (nowhere: no location given)"
        super().__init__(
            f"body model file {filename!r} was not found. Searched:\n{places}\n"
            "SMPL files are licensed and meshrec never downloads them: register at "
            f"{SMPL_REGISTRATION_URL}, download the model files, and pass their folder as "
            f"{spell('body_model')}, or set MESHREC_BODY_MODELS, or put them in ~/.cache/meshrec/body_models."
        )

    def __str__(self) -> str:  # OSError's own formatting would print "[Errno None]"
        return str(self.args[0])


class UnsafePickleError(MeshrecError, pickle.UnpicklingError):
    """A pickle refers to something other than the array types body-model files contain."""


class UnknownMethodError(MeshrecError, KeyError):
    """No installed plugin provides the requested method."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class UnknownDatasetError(MeshrecError, KeyError):
    """No installed plugin provides the requested dataset or evaluation protocol."""

    def __str__(self) -> str:
        return str(self.args[0])


class MissingInputError(MeshrecError, ValueError):
    """A method needs an input (bbox, camera, scene, keypoints, ...) that was not given."""


class CheckpointError(MeshrecError, ValueError):
    """A checkpoint is missing, unreadable, or does not match the method's network."""


class ImageReadError(MeshrecError, OSError):
    """An input image cannot be read or decoded."""

    def __str__(self) -> str:
        return str(self.args[0])
