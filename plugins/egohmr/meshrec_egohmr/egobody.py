"""Reader of EgoBody's egocentric annotations and EgoHMR's scene point clouds.

Layout under the data root (EgoBody release + EgoHMR's preprocessed scenes)::

    annotation_egocentric_smpl_npz/egocapture_{split}_smpl.npz
    egocentric_color/<recording>/<date>/PV/<timestamp>_frame_<id>.jpg
    transf_matrices_all_seqs.pkl
    Egohmr_scene_preprocess_s1_release/pcd_verts_dict_{split}.pkl, map_dict_{split}.pkl

The npz holds per frame: ``imgname``, ``center`` (2) and ``scale`` (box side / 200) of the person
box, ``pose`` (69) / ``shape`` (10) / ``global_orient_pv`` (3) / ``transl_pv`` (3) of the
interactee's SMPL in the HoloLens PV camera frame (OpenCV axes), intrinsics ``fx fy cx cy``,
OpenPose BODY_25 ``valid_keypoints`` (25, 3) and ``gender`` ('m' / 'f').

Scene points of stage 1 are stored in the master Kinect's frame every 15th frame
(``map_dict`` maps each frame to its stored key); they are brought into the PV frame as EgoHMR's
loader does: ``diag(1, -1, -1, 1) @ trans_world2pv[timestamp] @ trans_kinect2holo``. Pickles are
read with meshrec's restricted unpickler (arrays and plain containers only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meshrec.io.safe_pickle import load_npz, restricted_load

__all__ = ["EgoBodyAnnotations", "EgoBodyScenes", "annotation_file", "read_annotations"]

ADD_TRANS = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL-style HoloLens PV -> OpenCV


def annotation_file(data_root: Path, split: str = "test") -> Path:
    return Path(data_root) / "annotation_egocentric_smpl_npz" / f"egocapture_{split}_smpl.npz"


@dataclass
class EgoBodyAnnotations:
    """Per-frame arrays (N frames); ``gender`` is 0 male, 1 female (EgoHMR's mapping)."""

    imgname: list[str]
    center: np.ndarray
    scale: np.ndarray
    pose: np.ndarray
    shape: np.ndarray
    global_orient: np.ndarray
    transl: np.ndarray
    fx: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    keypoints: np.ndarray
    gender: np.ndarray

    def __len__(self) -> int:
        return len(self.imgname)

    def boxes_xyxy(self) -> np.ndarray:
        """(N, 4) square boxes: centre +- scale * 200 / 2 (the method scales them by 1.2)."""
        half = self.scale[:, None] * 100.0
        return np.concatenate([self.center - half, self.center + half], 1)

    def intrinsics(self, index: int) -> np.ndarray:
        """K with fx on both axes, as EgoHMR projects (fy is ignored upstream)."""
        return np.array([[self.fx[index], 0.0, self.cx[index]], [0.0, self.fx[index], self.cy[index]], [0.0, 0.0, 1.0]])


def read_annotations(data_root: Path, split: str = "test") -> EgoBodyAnnotations:
    path = annotation_file(data_root, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: EgoBody's annotation_egocentric_smpl_npz folder must be in the data "
                                "root (EgoBody release, 'EgoSet' egocentric SMPL annotations)")
    data = load_npz(path)
    missing = [key for key in ("imgname", "center", "scale", "pose", "shape", "global_orient_pv", "transl_pv", "fx", "cx",
                               "cy", "valid_keypoints", "gender") if key not in data]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing} of EgoBody's egocentric SMPL annotations")
    gender = np.array([0 if str(g).lower().startswith("m") else 1 for g in data["gender"]])
    return EgoBodyAnnotations(
        imgname=[str(name) for name in data["imgname"]], center=np.asarray(data["center"], dtype=np.float64),
        scale=np.asarray(data["scale"], dtype=np.float64), pose=np.asarray(data["pose"], dtype=np.float64),
        shape=np.asarray(data["shape"], dtype=np.float64),
        global_orient=np.asarray(data["global_orient_pv"], dtype=np.float64),
        transl=np.asarray(data["transl_pv"], dtype=np.float64), fx=np.asarray(data["fx"], dtype=np.float64),
        cx=np.asarray(data["cx"], dtype=np.float64), cy=np.asarray(data["cy"], dtype=np.float64),
        keypoints=np.asarray(data["valid_keypoints"], dtype=np.float64), gender=gender)


def _load_pickle(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (EgoHMR's scene preprocessing release / EgoBody's transforms)")
    with open(path, "rb") as stream:
        return restricted_load(stream, source=str(path))


class EgoBodyScenes:
    """Stage-1 scene clouds (20000 points) of a split, in each frame's PV camera frame."""

    def __init__(self, data_root: Path, split: str = "test"):
        root = Path(data_root)
        self.transforms = _load_pickle(root / "transf_matrices_all_seqs.pkl")
        folder = root / "Egohmr_scene_preprocess_s1_release"
        self.clouds = _load_pickle(folder / f"pcd_verts_dict_{split}.pkl")
        self.map = _load_pickle(folder / f"map_dict_{split}.pkl")

    def kinect_to_pv(self, imgname: str) -> np.ndarray:
        parts = imgname.split("/")
        recording, timestamp = parts[-4], parts[-1].split("_")[0]
        sequence = self.transforms[recording]
        world_to_pv = np.asarray(sequence["trans_world2pv"][timestamp], dtype=np.float64)
        return ADD_TRANS @ world_to_pv @ np.asarray(sequence["trans_kinect2holo"], dtype=np.float64)

    def points(self, imgname: str) -> np.ndarray:
        """(20000, 3) scene points in the PV camera frame (OpenCV axes), metres."""
        key = "/".join(imgname.split("/")[-5:])
        cloud = np.asarray(self.clouds[self.map[key]], dtype=np.float64)
        transform = self.kinect_to_pv(imgname)
        return cloud @ transform[:3, :3].T + transform[:3, 3]
