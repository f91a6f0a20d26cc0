"""mmhuman3d's preprocessed 3DPW test set: a HumanData ``pw3d_test.npz``.

Layout (mmhuman3d's ``Pw3dConverter`` and ``HumanData.dump``; ``np.savez_compressed`` with
object arrays for the dicts, read here through meshrec's restricted unpickler):

===================  ===========================  ============================================
key                  value                        meaning
===================  ===========================  ============================================
``image_path``       (N,) str                     image, relative to the 3DPW folder
                                                  (``imageFiles/<sequence>/image_00000.jpg``)
``bbox_xywh``        (N, 5) float                 person box x, y, w, h (already enlarged by
                                                  the converter) and a confidence
``smpl``             dict                         ``global_orient`` (N, 3) axis-angle in the
                                                  camera frame, ``body_pose`` (N, 23, 3),
                                                  ``betas`` (N, 10)
``meta``             dict                         ``gender`` (N,) ``'m'`` / ``'f'``
``cam_param``        (N,) dicts (optional)        per-frame camera parameters
``config``           ``'3dpw'`` / ``'pw3d'``
===================  ===========================  ============================================

One entry per person and frame (frames with valid camera poses only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meshrec.io.safe_pickle import load_npz, npz_keys

__all__ = ["PW3DAnnotations", "find_pw3d_annotations", "read_pw3d_humandata"]

ANNOTATION_FILE = "pw3d_test.npz"


@dataclass
class PW3DAnnotations:
    """Ground truth of the 3DPW test set, one row per person and frame."""

    image_paths: list[str]
    boxes_xywh: np.ndarray  # (N, 4) pixels
    global_orient: np.ndarray  # (N, 3) axis-angle, camera frame
    body_pose: np.ndarray  # (N, 23, 3) axis-angle
    betas: np.ndarray  # (N, 10)
    genders: np.ndarray  # (N,) "m" or "f"

    def __len__(self) -> int:
        return len(self.image_paths)

    def subset(self, indices: np.ndarray | slice) -> "PW3DAnnotations":
        return PW3DAnnotations(
            image_paths=list(np.asarray(self.image_paths)[indices]), boxes_xywh=self.boxes_xywh[indices],
            global_orient=self.global_orient[indices], body_pose=self.body_pose[indices], betas=self.betas[indices],
            genders=self.genders[indices],
        )


def find_pw3d_annotations(data_root: Path, annotations: str | Path | None = None) -> Path:
    """The HumanData file: ``annotations`` if given, else ``pw3d_test.npz`` in the 3DPW folder,
    or in mmhuman3d's layout (``data/datasets/pw3d`` and ``data/preprocessed_datasets``)."""
    if annotations is not None:
        path = Path(annotations).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"3DPW annotations {path} do not exist")
        return path
    candidates = [data_root / ANNOTATION_FILE, data_root.parent / "preprocessed_datasets" / ANNOTATION_FILE,
                  data_root.parent.parent / "preprocessed_datasets" / ANNOTATION_FILE]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = "\n".join(f"  - {candidate}" for candidate in candidates)
    raise FileNotFoundError(
        f"3DPW annotations {ANNOTATION_FILE} not found. Searched:\n{searched}\n"
        "Download mmhuman3d's preprocessed pw3d_test.npz (docs/preprocess_dataset.md in open-mmlab/mmhuman3d) "
        "or pass annotations=PATH."
    )


def read_pw3d_humandata(path: str | Path) -> PW3DAnnotations:
    """Reads ``pw3d_test.npz`` (HumanData). Raises ValueError naming what is missing or wrong,
    including NaN or infinite values (file and key named). Only the members used are read, after
    the archive's directory shows they are all there (an unrelated huge member costs nothing);
    every member is bounded in size (:mod:`meshrec.io.safe_pickle`)."""
    path = Path(path)
    keys = set(npz_keys(path))
    if "smpl" not in keys and {"imgname", "pose", "shape"} <= keys:
        raise ValueError(f"{path} is in SPIN's npz layout (imgname, pose, shape); meshrec reads mmhuman3d's "
                         "HumanData layout (image_path, bbox_xywh, smpl, meta)")
    missing = [key for key in ("image_path", "bbox_xywh", "smpl", "meta") if key not in keys]
    if missing:
        raise ValueError(f"{path}: not a HumanData file of 3DPW: missing keys {missing} (found {sorted(keys)})")
    data = load_npz(path, keys=("image_path", "bbox_xywh", "smpl", "meta"))
    smpl, meta = data["smpl"], data["meta"]
    if not isinstance(smpl, dict) or not {"global_orient", "body_pose", "betas"} <= set(smpl):
        raise ValueError(f"{path}: 'smpl' must be a dict with global_orient, body_pose and betas")
    if not isinstance(meta, dict) or "gender" not in meta:
        raise ValueError(f"{path}: 'meta' must be a dict with 'gender' (3DPW ground truth is gendered)")
    count = len(data["image_path"])
    arrays = {
        "boxes_xywh": np.asarray(data["bbox_xywh"], dtype=np.float64)[:, :4],
        "global_orient": np.asarray(smpl["global_orient"], dtype=np.float64).reshape(-1, 3),
        "body_pose": np.asarray(smpl["body_pose"], dtype=np.float64).reshape(-1, 23, 3),
        "betas": np.asarray(smpl["betas"], dtype=np.float64).reshape(count, -1)[:, :10],
    }
    for name, array in arrays.items():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            key = "bbox_xywh" if name == "boxes_xywh" else f"smpl.{name}"
            raise ValueError(f"{path}: key {key!r} holds {bad} NaN or infinite values; the annotation file is corrupt")
    genders = np.asarray([str(g).lower()[:1] for g in np.asarray(meta["gender"]).reshape(-1)], dtype=object)
    for name, array in {**arrays, "genders": genders}.items():
        if len(array) != count:
            raise ValueError(f"{path}: {name} has {len(array)} rows for {count} images")
    if arrays["betas"].shape[1] != 10:
        raise ValueError(f"{path}: smpl betas must have 10 columns, got {arrays['betas'].shape[1]}")
    unknown = sorted(set(genders.tolist()) - {"m", "f"})
    if unknown:
        raise ValueError(f"{path}: genders must be 'm' or 'f', found {unknown}")
    return PW3DAnnotations(image_paths=[str(p) for p in data["image_path"]], genders=genders, **arrays)
