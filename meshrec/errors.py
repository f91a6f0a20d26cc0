"""Exceptions raised by meshrec. Each message says what went wrong and what to do about it."""

from __future__ import annotations

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
]

SMPL_REGISTRATION_URL = "https://smpl.is.tue.mpg.de"


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
            "body_model=..., or set MESHREC_BODY_MODELS, or put them in ~/.cache/meshrec/body_models."
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
